"""shadow.ai.config through the gateway's loader: the AI middlewares' options and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadow.ai.config import ChatCompletionSettings, TokenRateLimitSettings
from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.gateway.rules import RequestView, compile_rule

BASE = """
http:
  routers:
    r: {{rule: "PathPrefix(`/`)", service: s, middlewares: [m]}}
  services:
    s: {{loadBalancer: {{servers: [{{url: "http://127.0.0.1:9"}}]}}}}
  middlewares:
    m:
{body}
"""


def load(body: str, tmp_path: Path | None = None) -> object:
    text = BASE.format(body="\n".join("      " + line for line in body.strip().splitlines()))
    source = str(tmp_path / "gw.yaml") if tmp_path else "gw.yaml"
    return parse_config(text, source).middlewares["m"]


def test_chat_completion_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K", "sk-1")
    (tmp_path / "key.txt").write_text("sk-2\n")
    mw = load("""
chatCompletion:
  token: {env: K}
  model: gpt-4o
  allowModelOverride: false
  allowedModels: ["gpt-4o*"]
  params: {temperature: 0.2, maxTokens: 100}
  maxParams: {maxTokens: 500}
  prices: {"gpt-4o*": {input: 2.5, output: 10}}
  candidates: {s: {model: gpt-4o-mini, provider: anthropic, token: {file: key.txt}}}
""", tmp_path)
    assert isinstance(mw, ChatCompletionSettings)
    assert mw.token is not None and mw.token.value == "sk-1" and "sk-1" not in repr(mw)
    assert mw.model == "gpt-4o" and not mw.allow_model_override and mw.allowed_models == ("gpt-4o*",)
    assert dict(mw.params) == {"temperature": 0.2, "maxTokens": 100.0}
    price = mw.price("gpt-4o-2024-08-06")
    assert price is not None and price.output_per_million == 10
    cand = mw.candidates["s"]
    assert cand.model == "gpt-4o-mini" and cand.token is not None and cand.token.value == "sk-2"
    assert cand.token.headers("anthropic") == (("x-api-key", "sk-2"),)


def test_token_rate_limit_options() -> None:
    mw = load("""
tokenRateLimit:
  limits: [{tokens: 100, period: 1m}, {tokens: 5000, period: 24h, count: output}]
  sourceCriterion: {claim: sub}
""")
    assert isinstance(mw, TokenRateLimitSettings)
    assert [(x.tokens, x.period_s, x.count) for x in mw.limits] == [(100, 60.0, "total"), (5000, 86400.0, "output")]
    assert mw.key_claim == "sub" and mw.key_header is None


@pytest.mark.parametrize(("body", "message"), [
    ("chatCompletion: {token: {env: SHADOW_TEST_UNSET_VAR}}", "m.chatCompletion.token.env: environment variable"),
    ("chatCompletion: {token: {env: A, file: b}}", "name exactly one of env or file"),
    ("chatCompletion: {token: {file: /nonexistent/key}}", "cannot read"),
    ("chatCompletion: {allowModelOverride: false}", "needs a model to lock to"),
    ("chatCompletion: {model: gpt-4, allowedModels: [claude-*]}", "not in allowedModels"),
    ("chatCompletion: {provider: mistral}", "must be one of openai, anthropic"),
    ("chatCompletion: {params: {temprature: 1}}", "did you mean 'temperature'"),
    ("tokenRateLimit: {limits: []}", "needs at least one limit"),
    ("tokenRateLimit: {limits: [{period: 1m}]}", "limits[0].tokens: required"),
    ("tokenRateLimit: {limits: [{tokens: 5, count: both}]}", "must be total, input or output"),
    ("tokenRateLimit: {limits: [{tokens: 5}], sourceCriterion: {claim: sub, requestHeaderName: X}}", "name one of"),
    ("semanticCache: {threshold: 1.5}", "must be at most 1"),
    ("semanticCache: {ttl: 0s}", "m.semanticCache.ttl: must be positive"),
])
def test_errors_name_the_field(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"gw\.yaml:") as err:
        load(body)
    assert message in str(err.value)


def test_model_rule_matcher() -> None:
    exact, glob = compile_rule("Model(`gpt-4o`)"), compile_rule("Model(`claude-*`) && PathPrefix(`/v1`)")

    def view(body: bytes) -> RequestView:
        return RequestView(method="POST", host="h", path="/v1/chat/completions", body=body)

    assert exact.matches(view(b'{"model": "gpt-4o"}')) and not exact.matches(view(b'{"model": "gpt-4o-mini"}'))
    assert glob.matches(view(b'{"model": "claude-sonnet-4"}')) and not glob.matches(view(b'{"model": "gpt-4o"}'))
    assert not exact.matches(view(b"not json")) and not exact.matches(view(b""))


def test_the_documented_examples_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from analyzers.ai_verdict import load_ai_policy
    from shadow.gateway.config import load_config

    examples = Path(__file__).resolve().parent.parent / "docs" / "examples"
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "NEXT_API_KEY"):
        monkeypatch.setenv(var, "sk-x")
    cfg = load_config(examples / "ai-gateway.yaml")
    assert isinstance(cfg.middlewares["openai"], ChatCompletionSettings)
    assert cfg.middlewares["openai"].candidates["gpt-next"].model == "gpt-4o-mini"
    policy = load_ai_policy(examples / "ai-policy.yaml")
    assert policy.semantic_ratio == 3.0 and policy.price("gpt-4o-mini-2024") is not None
