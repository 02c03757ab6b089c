"""A model switch judged end to end: a real gateway mirrors chat traffic (sent with the openai SDK) to
the primary model once more (the noise floor) and to candidate models that are equivalent (other
wording), break JSON, call tools wrongly or cost 2×; `judge_model_switch` and `shadow gate --ai`."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from analyzers.ai_verdict import AiPolicy, judge_model_switch, load_ai_policy
from analyzers.policy import Margins, Policy
from analyzers.verdict import GuardrailResult, Verdict
from shadow.demo.model_server import ModelBehaviour, ModelServer
from tests.conftest import GatewayProcess, shadow_cli

CANDIDATES = {
    "equivalent": ModelBehaviour(style="alt", seed=1),
    "brokenjson": ModelBehaviour(broken_json=0.6, seed=2),
    "wrongtools": ModelBehaviour(wrong_tools=0.6, seed=3),
    "costly": ModelBehaviour(cost_factor=2.0, seed=4),
}
PROMPTS = ["What is the capital of France and its population?", "Explain how photosynthesis works in green plants",
           "Compare python and rust for systems programming", "Summarize the history of the roman empire briefly",
           "How do vaccines train the immune system response"]
TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "delete_account", "parameters": {"type": "object"}}}]
PER_ROUTE = 120  # 40 of each kind: text, JSON, tools (20 left the semantic PASS to chance: ~1 run in 4)
POLICY = Policy(defaults=Margins(min_samples=20))


def config(primary: str, candidates: dict[str, str]) -> str:
    routers = "\n".join(f"    {n}: {{rule: \"PathPrefix(`/{n}`)\", service: via-{n}, middlewares: [strip, llm]}}"
                        for n in candidates)
    services = "\n".join(
        f"    cand-{n}: {{loadBalancer: {{servers: [{{url: \"{url}\"}}]}}}}\n"
        f"    via-{n}: {{mirroring: {{service: gpt, mirrors: [{{name: gpt-again, percent: 100}}, {{name: cand-{n}, percent: 100}}]}}}}"
        for n, url in candidates.items())
    targets = "\n".join(f"      cand-{n}: {{role: candidate, allowUnsafe: true}}" for n in candidates)
    cands = ", ".join(f"cand-{n}: {{model: gpt-4o-mini}}" for n in candidates)
    return f"""
http:
  routers:
{routers}
  services:
    gpt: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
    gpt-again: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
{services}
  middlewares:
    strip: {{stripPrefix: {{prefixes: [{", ".join("/" + n for n in candidates)}]}}}}
    llm:
      chatCompletion:
        prices: {{"*": {{input: 1.0, output: 2.0}}}}
        candidates: {{{cands}}}
shadow:
  capture: {{dir: capture}}
  mirroring:
    targets:
      gpt-again: {{role: secondary, allowUnsafe: true}}
{targets}
"""


def send(client: openai.OpenAI, i: int) -> None:
    prompt = PROMPTS[i % len(PROMPTS)]
    messages = [{"role": "user", "content": prompt}]
    kind = i % 3
    if kind == 0:
        client.chat.completions.create(model="gpt-4o", messages=messages, temperature=1.0)  # type: ignore[arg-type]
    elif kind == 1:
        client.chat.completions.create(model="gpt-4o", messages=messages, temperature=1.0,  # type: ignore[arg-type]
                                       response_format={"type": "json_object"})
    else:
        client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("ai-verdict")
    servers = {n: ModelServer(b).start() for n, b in CANDIDATES.items()}
    try:
        with ModelServer(ModelBehaviour(seed=9)) as primary:
            cfg = root / "gw.yaml"
            cfg.write_text(config(primary.url, {n: s.url for n, s in servers.items()}))
            with GatewayProcess(cfg) as gw:
                for name in CANDIDATES:
                    client = openai.OpenAI(base_url=f"{gw.url}/{name}/v1", api_key="k", max_retries=0)
                    for i in range(PER_ROUTE):
                        send(client, i)
                for server in servers.values():  # every copy answered before the capture is sealed
                    for _ in itertools.repeat(None, 200):
                        if len(server.received()) >= PER_ROUTE:
                            break
                        time.sleep(0.02)
                    assert len(server.received()) == PER_ROUTE
                assert gw.stop() == 0
    finally:
        for server in servers.values():
            server.stop()
    yield root / "capture"


@pytest.fixture(scope="module")
def verdict(capture: Path) -> Verdict:
    return judge_model_switch(capture, POLICY, AiPolicy())


def results(verdict: Verdict, candidate: str) -> dict[str, GuardrailResult]:
    return {r.metric: r for r in verdict.results if r.candidate == f"cand-{candidate}"}


def test_equivalent_candidate_is_not_failed(verdict: Verdict) -> None:
    own = results(verdict, "equivalent")
    assert {"semantic_distance", "json_invalid_rate", "tool_call_disagreement_rate", "refusal_rate", "cost",
            "latency_bulk", "error_rate"} <= set(own)
    assert all(r.cls != "FAIL" for r in own.values()), {m: (r.cls, r.reason) for m, r in own.items()}
    # Other wording, same content: within the semantic margin (its distance from the primary's answers
    # is ≈ 2× the primary model's own), as cheap; no JSON or tool call broken (rates of 0, which at
    # n = 40 are not yet proven under 1 pp: INCONCLUSIVE, with the n still needed).
    for metric in ("semantic_distance", "cost"):
        assert own[metric].cls == "PASS", (metric, own[metric].reason, own[metric].test)
    assert own["json_invalid_rate"].candidate_value == 0.0 and own["tool_call_disagreement_rate"].estimate == 0.0
    assert own["json_invalid_rate"].cls == "INCONCLUSIVE" and own["json_invalid_rate"].needed_n


def test_broken_json_fails(verdict: Verdict) -> None:
    r = results(verdict, "brokenjson")["json_invalid_rate"]
    assert r.cls == "FAIL" and r.candidate_value is not None and r.candidate_value > 0.3


def test_wrong_tool_calls_fail(verdict: Verdict) -> None:
    r = results(verdict, "wrongtools")["tool_call_disagreement_rate"]
    assert r.cls == "FAIL" and r.primary_value == 0.0  # the primary model agrees with itself on tools


def test_costlier_candidate_fails_on_cost(verdict: Verdict) -> None:
    own = results(verdict, "costly")
    assert own["cost"].cls == "FAIL" and own["cost"].estimate is not None and own["cost"].estimate > 1.25
    assert own["semantic_distance"].cls != "FAIL"  # same answers, only dearer


def test_overall_verdict_and_gate_exit_code(verdict: Verdict, capture: Path, tmp_path: Path) -> None:
    assert verdict.overall == "FAIL"
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"defaults": {"min_samples": 20}, "ai": {"cost_ratio": 1.25}}))
    assert load_ai_policy(policy).cost_ratio == 1.25
    run = shadow_cli("gate", str(capture), "--ai", "--policy", str(policy), timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "verdict: FAIL" in run.stdout and "cand-costly cost" in run.stdout


def test_policy_errors_name_the_key(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("ai: {semantic_ration: 2}\n")
    run = shadow_cli("gate", str(tmp_path), "--ai", "--policy", str(policy))
    assert run.returncode == 2 and "ai.semantic_ration" in run.stderr
