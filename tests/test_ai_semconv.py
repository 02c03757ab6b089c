"""GenAI semantic conventions on the gateway's spans: the attribute mapping (pure), and a real gateway
exporting OTLP to a collector on 127.0.0.1 while the official `openai` SDK calls a model through it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from shadow.ai.protocol import Answer
from shadow.ai.semconv import genai_attributes, genai_span_name
from shadow.demo.model_server import ModelServer
from tests.conftest import GatewayProcess
from tests.upstream import ReceivedRequest, Response, Upstream


def test_attributes_follow_the_conventions() -> None:
    request = {"model": "gpt-4o", "temperature": 0.2, "max_completion_tokens": 64, "top_p": 1, "seed": 7,
               "stop": "END", "messages": []}
    answer = Answer(model="gpt-4o-2024-08-06", input_tokens=12, output_tokens=30, finish_reason="stop")
    attrs = dict(genai_attributes(operation="chat", provider="openai", request=request, requested_model=None,
                                  answer=answer))
    assert attrs == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                     "gen_ai.request.model": "gpt-4o", "gen_ai.request.temperature": 0.2,
                     "gen_ai.request.top_p": 1.0, "gen_ai.request.max_tokens": 64, "gen_ai.request.seed": 7,
                     "gen_ai.request.stop_sequences": ("END",), "gen_ai.response.model": "gpt-4o-2024-08-06",
                     "gen_ai.response.finish_reasons": ("stop",), "gen_ai.usage.input_tokens": 12,
                     "gen_ai.usage.output_tokens": 30}
    assert genai_span_name("chat", "gpt-4o") == "chat gpt-4o"
    assert genai_span_name("embeddings", None) == "embeddings"
    embed = dict(genai_attributes(operation="embeddings", provider="openai", request={"input": "x"},
                                  requested_model="text-embedding-3-small", answer=Answer(input_tokens=1)))
    assert embed["gen_ai.operation.name"] == "embeddings" and "gen_ai.usage.output_tokens" not in embed
    anthropic = dict(genai_attributes(operation="messages", provider="anthropic",
                                      request={"model": "claude-x", "max_tokens": 100, "stop_sequences": ["a", "b"]},
                                      requested_model=None, answer=Answer()))
    assert anthropic["gen_ai.request.max_tokens"] == 100 and anthropic["gen_ai.request.stop_sequences"] == ("a", "b")
    assert dict(genai_attributes(operation="chat", provider="openai", request={"temperature": True},
                                 requested_model=None, answer=Answer())).keys() == {"gen_ai.operation.name",
                                                                                   "gen_ai.provider.name"}


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    return getattr(v, kind)


def test_a_model_call_through_the_gateway_is_a_genai_span(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMCONV_KEY", "sk-x")
    bodies: list[bytes] = []

    def collect(req: ReceivedRequest) -> Response:
        if req.path.startswith("/v1/traces"):
            bodies.append(req.body)
        return 200, {}, b""

    with ModelServer() as model, Upstream("collector", handler=collect) as collector:
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(f"""
http:
  routers: {{llm: {{rule: "PathPrefix(`/v1`)", service: model, middlewares: [chat]}}}}
  services: {{model: {{loadBalancer: {{servers: [{{url: "{model.url}"}}]}}}}}}
  middlewares: {{chat: {{chatCompletion: {{token: {{env: SEMCONV_KEY}}}}}}}}
shadow:
  capture: {{dir: capture, mode: thread}}
  telemetry: {{endpoint: "{collector.url}", serviceName: gw-semconv, sampling: 1.0}}
""")
        with GatewayProcess(cfg, env={"SEMCONV_KEY": "sk-x"}) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="client", max_retries=0)
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}],
                                           temperature=0.0, max_tokens=40)
            stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                    messages=[{"role": "user", "content": "tell a story"}])
            for _ in stream:
                pass
            spans: list[Any] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(1 for s in spans if s.name.startswith("chat ")) < 2:
                time.sleep(0.2)
                spans = [s for body in list(bodies)
                         for rs in ExportTraceServiceRequest.FromString(body).resource_spans
                         for ss in rs.scope_spans for s in ss.spans]
    calls = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(calls) == 2, [s.name for s in spans]
    buffered, streamed = ({a.key: _value(a.value) for a in s.attributes} for s in calls)
    for attrs in (buffered, streamed):
        assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "openai"
        assert attrs["gen_ai.request.model"] == "gpt-4o-mini" and attrs["gen_ai.response.model"]
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["http.response.status_code"] == 200 and attrs["shadow.role"] == "primary"
    assert buffered["gen_ai.request.temperature"] == 0.0 and buffered["gen_ai.request.max_tokens"] == 40
    assert buffered["gen_ai.response.finish_reasons"] and streamed["gen_ai.response.finish_reasons"]
    server = [s for s in spans if s.name.startswith("POST ")]
    assert {c.parent_span_id for c in calls} <= {s.span_id for s in server}  # children of the request's span
