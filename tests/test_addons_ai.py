"""The AI gateway end to end: a real gateway, fake OpenAI-compatible models on 127.0.0.1, and the
official `openai` SDK as the client (buffered, streamed, tool calls, the Responses API), Anthropic
Messages passed through, model routing, governance, credentials, token limits and capture columns."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from shadow.demo.model_server import ModelBehaviour, ModelServer
from tests.conftest import GatewayProcess, capture_rows

PROVIDER_KEY = "sk-provider-secret"
CANDIDATE_KEY = "sk-candidate-secret"

CONFIG = """
http:
  routers:
    gpt: {{rule: "PathPrefix(`/v1`) && Model(`gpt-*`)", service: gpt, middlewares: [llm]}}
    claude: {{rule: "PathPrefix(`/v1`) && Model(`claude-*`)", service: claude, middlewares: [anthropic]}}
    locked: {{rule: "PathPrefix(`/locked`)", service: gpt, middlewares: [strip, lock]}}
    limited: {{rule: "PathPrefix(`/limited`)", service: gpt, middlewares: [strip, tokens, llm]}}
    shadowed: {{rule: "PathPrefix(`/shadowed`)", service: shadowed, middlewares: [strip, llm]}}
    guarded: {{rule: "PathPrefix(`/guarded`)", service: gpt, middlewares: [strip, guard, llm]}}
    cached: {{rule: "PathPrefix(`/cached`)", service: gpt, middlewares: [strip, cache, llm]}}
  services:
    gpt: {{loadBalancer: {{servers: [{{url: "{gpt}"}}]}}}}
    claude: {{loadBalancer: {{servers: [{{url: "{claude}"}}]}}}}
    next: {{loadBalancer: {{servers: [{{url: "{next}"}}]}}}}
    shadowed: {{mirroring: {{service: gpt, mirrors: [{{name: next, percent: 100}}]}}}}
  middlewares:
    strip: {{stripPrefix: {{prefixes: [/locked, /limited, /shadowed, /guarded, /cached]}}}}
    cache:
      semanticCache: {{threshold: 0.85, ttl: 10m}}
    guard:
      contentGuard:
        request:
          block: {{pii: [credit_card], regex: ["(?i)project[ -]?x"]}}
          mask: {{pii: [email], secrets: [all]}}
        response:
          block: {{keywords: [photosynthesis]}}
          mask: {{keywords: [france]}}
    llm:
      chatCompletion:
        token: {{env: AI_TEST_KEY}}
        allowedModels: ["gpt-4o*", "gpt-4.1*"]
        maxParams: {{temperature: 1.0}}
        prices: {{"gpt-4o-mini*": {{input: 0.15, output: 0.6}}, "gpt-4o*": {{input: 2.5, output: 10}}}}
        candidates:
          next: {{model: gpt-4o-mini, token: {{env: AI_TEST_CANDIDATE_KEY}}}}
    anthropic:
      chatCompletion: {{provider: anthropic, token: {{file: anthropic.key}}}}
    lock:
      chatCompletion:
        token: {{env: AI_TEST_KEY}}
        model: gpt-4o
        allowModelOverride: false
        params: {{temperature: 0.0}}
        allowParamsOverride: false
        maxParams: {{maxTokens: 64}}
    tokens:
      tokenRateLimit:
        limits: [{{tokens: {limit}, period: 1h}}]
        sourceCriterion: {{requestHeaderName: X-Team}}
shadow:
  capture: {{dir: capture, segmentSeconds: 0.3}}
  mirroring:
    targets: {{next: {{allowUnsafe: true}}}}
{extra}"""

LIMIT = 60
USER = [{"role": "user", "content": "What is the capital of France and its population?"}]


@dataclass
class Env:
    gw: GatewayProcess
    gpt: ModelServer
    claude: ModelServer
    next: ModelServer
    cfg: Path
    write: Callable[[str], None]

    def client(self, prefix: str = "", **headers: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.gw.url}{prefix}/v1", api_key="sk-client-token",
                             default_headers=headers or None, max_retries=0)

    def rows(self, where: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, object]]:
        """Captured rows matching `where`, waiting until `count` are sealed."""
        return capture_rows(self.cfg.parent / "capture", where, count, timeout)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, gateway_factory: Callable[..., GatewayProcess],
        monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("ai")
    (root / "anthropic.key").write_text("sk-ant-from-file\n")
    monkeypatch_module.setenv("AI_TEST_KEY", PROVIDER_KEY)
    monkeypatch_module.setenv("AI_TEST_CANDIDATE_KEY", CANDIDATE_KEY)
    with ModelServer(ModelBehaviour(chunk_delay_s=0.05)) as gpt, ModelServer() as claude, \
            ModelServer(ModelBehaviour(style="alt")) as nxt:
        cfg = root / "gw.yaml"

        def write(extra: str) -> None:
            cfg.write_text(CONFIG.format(gpt=gpt.url, claude=claude.url, next=nxt.url, limit=LIMIT, extra=extra))

        write("")
        gw = gateway_factory(cfg, extra_args=("--set", "shadow_reload_interval=200ms"),
                             env={"AI_TEST_KEY": PROVIDER_KEY, "AI_TEST_CANDIDATE_KEY": CANDIDATE_KEY})
        yield Env(gw, gpt, claude, nxt, cfg, write)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_buffered_chat_gets_the_provider_key_and_is_captured_with_tokens_and_cost(env: Env) -> None:
    answer = env.client().chat.completions.create(model="gpt-4o", messages=USER, temperature=0,
                                                  extra_headers={"X-Case": "buffered"})
    assert "capital" in (answer.choices[0].message.content or "")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    _, headers, _ = env.gpt.received()[-1]
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"  # the client's token never reaches the provider
    (row,) = env.rows("req_headers::varchar like '%buffered%'")
    assert row["ai_operation"] == "chat" and row["ai_model"] == "gpt-4o" and row["ai_streamed"] is False
    assert row["ai_input_tokens"] == answer.usage.prompt_tokens
    assert row["ai_output_tokens"] == answer.usage.completion_tokens
    expected = (answer.usage.prompt_tokens * 2.5 + answer.usage.completion_tokens * 10) / 1e6
    assert row["ai_cost_usd"] == pytest.approx(expected)
    assert PROVIDER_KEY not in json.dumps(row["req_headers"], default=str)  # redacted in the capture


def test_stream_reaches_the_client_before_the_model_finished_and_usage_is_counted(env: Env) -> None:
    done_before = env.gpt.streams_done
    stream = env.client().chat.completions.create(model="gpt-4o", messages=USER, stream=True,
                                                  extra_headers={"X-Case": "streamed"})
    first_seen_while_streaming = None
    pieces, chunks = [], []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            if first_seen_while_streaming is None:
                first_seen_while_streaming = env.gpt.streams_done == done_before
            pieces.append(chunk.choices[0].delta.content)
    assert first_seen_while_streaming is True  # the first token arrived while the model was still sending
    assert "capital" in "".join(pieces)
    # The client did not ask for usage: the gateway asked for it and kept the usage chunk to itself.
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    _, _, sent = env.gpt.received()[-1]
    assert sent["stream_options"] == {"include_usage": True}
    (row,) = env.rows("req_headers::varchar like '%streamed%'")
    assert row["ai_streamed"] is True and row["ai_input_tokens"] > 0 and row["ai_output_tokens"] > 0
    assert row["ai_ttft_ms"] is not None and 0 < row["ai_ttft_ms"] <= row["latency_ms"]
    assert b"data: [DONE]" in row["resp_body"]  # the stream as it went by


def test_filtered_streams_keep_the_connection_usable(env: Env) -> None:
    # The usage chunk is held back until its event is whole: no empty chunk may go out (on a chunked
    # HTTP/1.1 answer it would end the body early and corrupt the next answer on the connection).
    body = {"model": "gpt-4o", "messages": USER, "stream": True}
    with httpx.Client(base_url=env.gw.url, timeout=30.0) as client:
        for _ in range(3):  # one keep-alive connection
            with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                text = b"".join(resp.iter_bytes())
            assert resp.status_code == 200 and text.endswith(b"data: [DONE]\n\n") and b'"usage"' not in text


def test_stream_with_usage_asked_by_the_client_keeps_the_usage_chunk(env: Env) -> None:
    stream = env.client().chat.completions.create(model="gpt-4o", messages=USER, stream=True,
                                                  stream_options={"include_usage": True})
    usage = [c.usage for c in stream if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens > 0


def test_streamed_tool_call_arrives_whole(env: Env) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    stream = env.client().chat.completions.create(model="gpt-4o", messages=USER, tools=tools, stream=True)  # type: ignore[arg-type]
    name, args = "", ""
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name += call.function.name or "" if call.function else ""
            args += call.function.arguments or "" if call.function else ""
    assert name == "lookup" and json.loads(args) == {"query": "capital", "limit": 3}


def test_responses_api_buffered_and_streamed(env: Env) -> None:
    client = env.client()
    answer = client.responses.create(model="gpt-4.1", input="Weather in Oslo today?", temperature=0)
    assert "weather" in answer.output_text.lower() and answer.usage is not None
    events = [e.type for e in client.responses.create(model="gpt-4.1", input="Weather in Oslo today?", temperature=0,
                                                        stream=True)]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    rows = env.rows("ai_operation = 'responses'", count=2)
    assert {r["ai_streamed"] for r in rows} == {True, False}
    assert all(r["ai_output_tokens"] == answer.usage.output_tokens for r in rows)


def test_anthropic_messages_pass_through_with_the_key_from_a_file(env: Env) -> None:
    body = {"model": "claude-sonnet-4", "max_tokens": 100, "messages": USER, "stream": True}
    with httpx.stream("POST", f"{env.gw.url}/v1/messages", json=body, headers={"x-api-key": "client"}) as resp:
        text = b"".join(resp.iter_bytes()).decode()
    assert "event: message_stop" in text
    _, headers, _ = env.claude.received()[-1]
    assert headers["x-api-key"] == "sk-ant-from-file"
    (row,) = env.rows("ai_operation = 'messages'")
    assert row["ai_model"] == "claude-sonnet-4" and row["ai_input_tokens"] > 0 and row["ai_output_tokens"] > 0


def test_model_routing_and_allow_list(env: Env) -> None:
    before = len(env.claude.received())
    env.client().chat.completions.create(model="claude-haiku", messages=USER)
    assert len(env.claude.received()) == before + 1  # Model(`claude-*`) → the claude service
    with pytest.raises(openai.PermissionDeniedError, match="not allowed"):
        env.client().chat.completions.create(model="gpt-3.5-turbo", messages=USER)
    with pytest.raises(openai.NotFoundError):  # no router matches a model no rule names
        env.client().chat.completions.create(model="llama-3", messages=USER)


def test_locked_model_and_parameters(env: Env) -> None:
    answer = env.client("/locked").chat.completions.create(model="gpt-4o-mini", messages=USER, temperature=1.5,
                                                           max_tokens=500)
    assert answer.model == "gpt-4o"
    _, _, sent = env.gpt.received()[-1]
    assert sent["model"] == "gpt-4o" and sent["temperature"] == 0.0 and sent["max_tokens"] == 64
    env.client().chat.completions.create(model="gpt-4o", messages=USER, temperature=1.7)
    assert env.gpt.received()[-1][2]["temperature"] == 1.0  # capped by maxParams


def _spend(client: openai.OpenAI, *, stream: bool) -> int:
    """One request; the tokens it used (input + output)."""
    if stream:
        chunks = list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True,
                                                     stream_options={"include_usage": True}))
        usage = next(c.usage for c in chunks if c.usage is not None)
    else:
        answer = client.chat.completions.create(model="gpt-4o", messages=USER)
        assert answer.usage is not None
        usage = answer.usage
    return usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_token_limit_refuses_exactly_once_the_limit_is_used(env: Env, stream: bool) -> None:
    team = f"team-{stream}"
    client = env.client("/limited", **{"X-Team": team})
    used = 0
    for _ in range(20):  # bounded: each request uses ≥ 10 tokens, the limit is 60
        if used >= LIMIT:
            break
        used += _spend(client, stream=stream)
    assert used >= LIMIT
    with pytest.raises(openai.RateLimitError) as refused:
        _spend(client, stream=stream)
    retry_after = int(refused.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    assert f"{used} of {LIMIT}" in str(refused.value)
    _spend(env.client("/limited", **{"X-Team": team + "-other"}), stream=stream)  # another key is not limited


def test_token_counters_survive_a_hot_reload(env: Env) -> None:
    client = env.client("/limited", **{"X-Team": "reload"})
    for _ in range(20):
        try:
            _spend(client, stream=False)
        except openai.RateLimitError:
            break
    else:
        pytest.fail("the limit was never reached")
    env.write("  endpoints: [/v1/chat/completions]\n")  # an unrelated change: the file is reloaded
    assert env.gw.wait_for_output("reloaded")
    with pytest.raises(openai.RateLimitError):
        _spend(client, stream=False)


def test_mirror_to_a_candidate_model_gets_its_own_model_and_key(env: Env) -> None:
    answer = env.client("/shadowed").chat.completions.create(model="gpt-4o", messages=USER,
                                                             extra_headers={"X-Case": "mirrored"})
    assert answer.model == "gpt-4o"  # the client gets the primary's answer
    deadline = time.monotonic() + 5
    while not env.next.received() and time.monotonic() < deadline:
        time.sleep(0.02)
    _, headers, sent = env.next.received()[-1]
    assert sent["model"] == "gpt-4o-mini" and headers["authorization"] == f"Bearer {CANDIDATE_KEY}"
    rows = env.rows("req_headers::varchar like '%mirrored%'", count=2)
    by_role = {r["role"]: r for r in rows}
    assert by_role["primary"]["ai_model"] == "gpt-4o" and by_role["candidate"]["ai_model"] == "gpt-4o-mini"
    assert by_role["candidate"]["request_id"] == by_role["primary"]["request_id"]
    assert by_role["candidate"]["ai_cost_usd"] == pytest.approx(
        (by_role["candidate"]["ai_input_tokens"] * 0.15 + by_role["candidate"]["ai_output_tokens"] * 0.6) / 1e6)


def test_content_guard_blocks_and_masks_requests_and_answers(env: Env) -> None:
    client = env.client("/guarded")
    with pytest.raises(openai.PermissionDeniedError, match=r"request was blocked \(pii.credit_card\)"):
        client.chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": "charge card 4111 1111 1111 1111 please"}])
    with pytest.raises(openai.PermissionDeniedError, match=r"regex.0"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "status of Project X?"}])
    before = len(env.gpt.received())
    answer = client.chat.completions.create(
        model="gpt-4o", temperature=0, extra_headers={"X-Case": "guard-masked"},
        messages=[{"role": "user", "content": "Capital of France? Reply to bob@example.com, key sk-abcdefghijklmnopqrstuvwxyz"}])
    _, _, sent = env.gpt.received()[-1]
    assert len(env.gpt.received()) == before + 1  # the blocked requests never reached the model
    content = sent["messages"][0]["content"]
    assert "bob@example.com" not in content and "[MASKED:pii.email]" in content and "[MASKED:secret.openai_key]" in content
    assert "[MASKED:keyword.france]" in (answer.choices[0].message.content or "")  # the answer masked too
    with pytest.raises(openai.PermissionDeniedError, match=r"answer was blocked \(keyword.photosynthesis\)"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Explain photosynthesis"}])
    (row,) = env.rows("ai_guard like 'request masked%'")
    assert row["ai_guard"] == "request masked: pii.email×1, secret.openai_key×1; answer masked: keyword.france×1"
    blocked = env.rows("ai_guard like '%blocked%'", count=3)
    assert {r["ai_guard"] for r in blocked} >= {"request blocked: pii.credit_card", "answer blocked: keyword.photosynthesis"}


def test_semantic_cache_answers_similar_requests_buffered_and_streamed(env: Env) -> None:
    client = env.client("/cached")
    ask = "Tell me the capital city of Portugal and its population today"
    first = client.chat.completions.create(model="gpt-4o", temperature=0, messages=[{"role": "user", "content": ask}])
    sent = len(env.gpt.received())
    similar = [{"role": "user", "content": "tell me the capital city of Portugal and its population, today?"}]
    hit = client.chat.completions.with_raw_response.create(model="gpt-4o", temperature=0, messages=similar)
    assert hit.headers["x-shadow-cache"] == "hit" and len(env.gpt.received()) == sent  # the model was not asked
    assert hit.parse().choices[0].message.content == first.choices[0].message.content
    stream = client.chat.completions.create(model="gpt-4o", temperature=0, messages=similar, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == first.choices[0].message.content and len(env.gpt.received()) == sent  # a stream from the cache
    client.chat.completions.create(model="gpt-4o", temperature=0.5, messages=similar)  # other parameters: a miss
    client.chat.completions.create(model="gpt-4o", temperature=0, messages=[
        {"role": "user", "content": "Explain how volcanoes erupt under the ocean"}])  # other content: a miss
    assert len(env.gpt.received()) == sent + 2
    rows = env.rows("ai_cache is not null", count=5)
    assert sorted(r["ai_cache"] for r in rows) == ["hit", "hit", "miss", "miss", "miss"]
    assert all(r["ai_cost_usd"] == 0.0 for r in rows if r["ai_cache"] == "hit")



def test_semantic_cache_answers_the_responses_and_messages_apis_in_kind(env: Env) -> None:
    client = env.client("/cached")
    ask = "Name the largest river of Brazil and the ocean it flows into"
    first = client.responses.create(model="gpt-4o", input=ask)
    sent = len(env.gpt.received())
    similar = "name the largest river of Brazil, and the ocean it flows into?"
    hit = client.responses.with_raw_response.create(model="gpt-4o", input=similar)
    assert hit.headers["x-shadow-cache"] == "hit" and len(env.gpt.received()) == sent
    assert hit.parse().output_text == first.output_text
    with client.responses.stream(model="gpt-4o", input=similar) as stream:  # the SDK's accumulating helper
        final = stream.get_final_response()
    assert final.output_text == first.output_text and len(env.gpt.received()) == sent
    # Anthropic Messages (no Anthropic SDK here: the raw API, as its SDK sends it)
    body = {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": ask}]}
    headers = {"x-api-key": "client", "anthropic-version": "2023-06-01"}
    answer = httpx.post(f"{env.gw.url}/cached/v1/messages", json=body, headers=headers, timeout=30).json()
    sent = len(env.gpt.received())
    body["messages"] = [{"role": "user", "content": similar}]
    again = httpx.post(f"{env.gw.url}/cached/v1/messages", json=body, headers=headers, timeout=30)
    assert again.headers["x-shadow-cache"] == "hit" and again.json()["content"] == answer["content"]
    streamed = httpx.post(f"{env.gw.url}/cached/v1/messages", json={**body, "stream": True}, headers=headers,
                          timeout=30)
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == answer["content"][0]["text"] and len(env.gpt.received()) == sent
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
