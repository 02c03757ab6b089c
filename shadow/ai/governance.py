"""Model and parameter governance of the `chatCompletion` middleware: a pure rewrite of the request body.

Order: the model (default when absent, forced when `allowModelOverride: false`), the allow list, the
parameter defaults (forced when `allowParamsOverride: false`), then the caps of `maxParams` (a larger
value is lowered; an absent `maxTokens` is set to its cap, or the answer's length would be unbounded).
The body is re-serialised only when something changed, so an untouched request is forwarded byte for byte.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import orjson

from shadow.ai.config import PARAMS, ChatCompletionSettings
from shadow.ai.protocol import MESSAGES, RESPONSES

__all__ = ["Governed", "govern_request", "wire_param"]


@dataclass(frozen=True)
class Governed:
    body: bytes | None  # the new body; None: forward the original unchanged
    model: str | None
    status: int = 0  # non-zero: refuse the request with this status and `message`
    message: str = ""
    code: str = ""  # OpenAI-style error code


def wire_param(name: str, operation: str | None, obj: dict[str, Any]) -> str:
    """The JSON field of a YAML parameter name in this API's request."""
    if name != "maxTokens":
        return PARAMS[name][0]
    if operation == RESPONSES:
        return "max_output_tokens"
    if operation == MESSAGES:
        return "max_tokens"
    return "max_completion_tokens" if "max_completion_tokens" in obj else "max_tokens"


def _number(value: float, like: str) -> float | int:
    return int(value) if like in ("maxTokens", "seed") else value


def govern_request(settings: ChatCompletionSettings, body: bytes | None, operation: str | None) -> Governed:
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return Governed(None, None, 400, "the request body must be a JSON object", "invalid_request_body")
    changed = False
    model = obj.get("model")
    if settings.model is not None and (not settings.allow_model_override or not isinstance(model, str) or not model):
        changed = changed or model != settings.model
        model = obj["model"] = settings.model
    if not isinstance(model, str) or not model:
        return Governed(None, None, 400, "the request names no model", "model_required")
    if settings.allowed_models and not any(fnmatch.fnmatchcase(model, p) for p in settings.allowed_models):
        return Governed(None, model, 403, f"the model {model!r} is not allowed on this route", "model_not_allowed")
    for name, value in settings.params.items():
        key = wire_param(name, operation, obj)
        if key not in obj or not settings.allow_params_override:
            new = _number(value, name)
            if obj.get(key) != new:
                obj[key], changed = new, True
    for name, cap in settings.max_params.items():
        key = wire_param(name, operation, obj)
        current = obj.get(key)
        limit = _number(cap, name)
        absent_length = current is None and name == "maxTokens"
        if absent_length or (isinstance(current, int | float) and not isinstance(current, bool) and current > limit):
            obj[key], changed = limit, True
    return Governed(orjson.dumps(obj) if changed else None, model)


def set_model(body: bytes | None, model: str) -> bytes | None:
    """The body with its `model` replaced (a mirror copy to another model); None when not a JSON object."""
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    obj["model"] = model
    return orjson.dumps(obj)


def ensure_stream_usage(body: bytes | None) -> bytes | None:
    """A streamed Chat Completions request that did not ask for `stream_options.include_usage`, with it
    asked (the gateway needs the usage to count tokens); None when nothing needs changing. The gateway
    then drops the usage-only chunk the client did not ask for (`UsageChunkFilter`)."""
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("stream") is not True:
        return None
    options = obj.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    obj["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(obj)
