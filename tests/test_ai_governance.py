"""shadow.ai.governance: model and parameter rules applied to request bodies."""

from __future__ import annotations

import json
from types import MappingProxyType

from shadow.ai.config import ChatCompletionSettings
from shadow.ai.governance import ensure_stream_usage, govern_request, set_model


def settings(**kw: object) -> ChatCompletionSettings:
    for key in ("params", "max_params"):
        if key in kw:
            kw[key] = MappingProxyType(kw[key])  # type: ignore[arg-type]
    return ChatCompletionSettings(name="m", **kw)  # type: ignore[arg-type]


def body(**kw: object) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hi"}], **kw}).encode()


def test_untouched_request_is_forwarded_byte_for_byte() -> None:
    result = govern_request(settings(), body(model="gpt-4o", temperature=0.5), "chat")
    assert result.body is None and result.model == "gpt-4o" and not result.status


def test_default_and_locked_model() -> None:
    assert json.loads(govern_request(settings(model="d"), body(), "chat").body or b"")["model"] == "d"
    assert govern_request(settings(model="d"), body(model="x"), "chat").body is None  # override allowed
    locked = govern_request(settings(model="d", allow_model_override=False), body(model="x"), "chat")
    assert json.loads(locked.body or b"")["model"] == "d" and locked.model == "d"


def test_refusals() -> None:
    assert govern_request(settings(), body(), "chat").status == 400  # no model anywhere
    assert govern_request(settings(), b"[1, 2]", "chat").status == 400
    denied = govern_request(settings(allowed_models=("gpt-4o*",)), body(model="gpt-3.5"), "chat")
    assert (denied.status, denied.code) == (403, "model_not_allowed")
    assert not govern_request(settings(allowed_models=("gpt-4o*",)), body(model="gpt-4o-mini"), "chat").status


def test_params_defaults_forced_and_caps_per_api() -> None:
    s = settings(params={"temperature": 0.2}, max_params={"maxTokens": 100, "topP": 0.9})
    chat = json.loads(govern_request(s, body(model="m", temperature=0.7, top_p=1.0), "chat").body or b"")
    assert chat["temperature"] == 0.7 and chat["top_p"] == 0.9 and chat["max_tokens"] == 100
    newer = json.loads(govern_request(s, body(model="m", max_completion_tokens=5000), "chat").body or b"")
    assert newer["max_completion_tokens"] == 100 and "max_tokens" not in newer
    responses = json.loads(govern_request(s, body(model="m", max_output_tokens=50), "responses").body or b"")
    assert responses["max_output_tokens"] == 50 and responses["temperature"] == 0.2
    forced = settings(params={"temperature": 0.0}, allow_params_override=False)
    assert json.loads(govern_request(forced, body(model="m", temperature=1.0), "messages").body or b"")["temperature"] == 0.0


def test_stream_usage_and_model_rewrite() -> None:
    assert ensure_stream_usage(body(model="m")) is None  # not streamed
    asked = ensure_stream_usage(body(model="m", stream=True, stream_options={"include_obfuscation": False}))
    assert json.loads(asked or b"")["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert ensure_stream_usage(body(model="m", stream=True, stream_options={"include_usage": True})) is None
    assert json.loads(set_model(body(model="a"), "b") or b"")["model"] == "b"
    assert set_model(b"oops", "b") is None
