"""OpenTelemetry's GenAI semantic conventions for a model call the gateway forwarded.

The gateway's client span for an AI route carries what the conventions name (gen_ai.operation.name,
gen_ai.provider.name, gen_ai.request.*, gen_ai.response.*, gen_ai.usage.*), so a tracing backend
that understands them (Jaeger, Tempo, Langfuse, Phoenix…) shows model, tokens and finish reasons
without reading the capture. Span name: "{operation} {request model}", as the conventions say.
"""

from __future__ import annotations

from typing import Any

from shadow.ai.protocol import Answer

__all__ = ["genai_attributes", "genai_span_name", "operation_name"]

# shadow's operations (the ai_operation column) → gen_ai.operation.name
_OPERATIONS = {"chat": "chat", "responses": "chat", "messages": "chat", "embeddings": "embeddings",
               "completions": "text_completion"}
# request body field → gen_ai.request.* attribute (the first of several names wins)
_REQUEST_NUMBERS = (
    (("temperature",), "gen_ai.request.temperature", float),
    (("top_p",), "gen_ai.request.top_p", float),
    (("top_k",), "gen_ai.request.top_k", float),
    (("max_tokens", "max_completion_tokens", "max_output_tokens"), "gen_ai.request.max_tokens", int),
    (("frequency_penalty",), "gen_ai.request.frequency_penalty", float),
    (("presence_penalty",), "gen_ai.request.presence_penalty", float),
    (("seed",), "gen_ai.request.seed", int),
    (("n",), "gen_ai.request.choice.count", int),
)


def operation_name(operation: str | None) -> str:
    return _OPERATIONS.get(operation or "", operation or "chat")


def genai_span_name(operation: str | None, request_model: str | None) -> str:
    name = operation_name(operation)
    return f"{name} {request_model}" if request_model else name


def genai_attributes(*, operation: str | None, provider: str, request: dict[str, Any] | None,
                     requested_model: str | None, answer: Answer) -> tuple[tuple[str, Any], ...]:
    """The gen_ai.* attributes of one model call (absent values left out, as the conventions ask)."""
    out: list[tuple[str, Any]] = [("gen_ai.operation.name", operation_name(operation)),
                                  ("gen_ai.provider.name", provider)]
    body = request or {}
    model = requested_model or (body.get("model") if isinstance(body.get("model"), str) else None)
    if model:
        out.append(("gen_ai.request.model", model))
    for names, attribute, kind in _REQUEST_NUMBERS:
        value = next((body[n] for n in names if n in body), None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append((attribute, kind(value)))
    stop = body.get("stop", body.get("stop_sequences"))
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        out.append(("gen_ai.request.stop_sequences", tuple(stop)))
    if answer.model:
        out.append(("gen_ai.response.model", answer.model))
    if answer.finish_reason:
        out.append(("gen_ai.response.finish_reasons", (answer.finish_reason,)))
    if answer.input_tokens is not None:
        out.append(("gen_ai.usage.input_tokens", answer.input_tokens))
    if answer.output_tokens is not None:
        out.append(("gen_ai.usage.output_tokens", answer.output_tokens))
    return tuple(out)
