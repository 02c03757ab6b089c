"""OpenAI-compatible wire formats: what a request asks and what an answer says, buffered or streamed.

Three request formats share one gateway (reference: Traefik Hub's AI gateway):

- Chat Completions: `POST /v1/chat/completions`, `messages[]`; answer `choices[].message`, usage
  `prompt_tokens` / `completion_tokens`; streamed as `data: {chat.completion.chunk}` lines ending with
  `data: [DONE]`, usage in a last chunk when the client asked `stream_options.include_usage`.
- Responses: `POST /v1/responses`, `input` / `instructions`; answer `output[]` (message / function_call),
  usage `input_tokens` / `output_tokens`; streamed as typed events, usage in `response.completed`.
- Anthropic Messages: `POST /v1/messages`; answer `content[]` (text / tool_use), usage in `message_start`
  (input) and `message_delta` (output) when streamed.

`AnswerParser` reads an answer in pieces as they arrive (SSE events may be cut anywhere) and keeps
only what the gateway needs: model, token counts, the answer's text and tool calls. The same parser
reads a captured body afterwards, so the gateway and the analyzers agree on what an answer said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from shadow.gateway.sse import SseEventFilter

__all__ = [
    "Answer",
    "AnswerParser",
    "ToolCall",
    "operation_for_path",
    "parse_answer",
    "request_model",
    "request_streams",
]

CHAT, RESPONSES, MESSAGES, EMBEDDINGS, COMPLETIONS = "chat", "responses", "messages", "embeddings", "completions"

# Path suffix → operation (a gateway route may add a prefix such as /openai).
_OPERATIONS = (
    ("/chat/completions", CHAT),
    ("/responses", RESPONSES),
    ("/messages", MESSAGES),
    ("/embeddings", EMBEDDINGS),
    ("/completions", COMPLETIONS),
)

# OpenTelemetry GenAI `gen_ai.operation.name` for each operation.
GENAI_OPERATION = {CHAT: "chat", RESPONSES: "chat", MESSAGES: "chat", EMBEDDINGS: "embeddings",
                   COMPLETIONS: "text_completion"}


def operation_for_path(path: str) -> str | None:
    """The operation a request path names (query ignored), or None for anything else."""
    path = path.partition("?")[0].rstrip("/")
    for suffix, op in _OPERATIONS:
        if path.endswith(suffix):
            return op
    return None


def _json_object(body: bytes | None) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def request_model(body: bytes | None) -> str | None:
    """The `model` field of a JSON request body (None when absent, not a string, or not JSON)."""
    obj = _json_object(body)
    model = obj.get("model") if obj is not None else None
    return model if isinstance(model, str) else None


def request_streams(body: bytes | None) -> bool:
    obj = _json_object(body)
    return obj is not None and obj.get("stream") is True


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text as the model wrote it

    def parsed_arguments(self) -> Any:
        """The arguments as a value (None when they are not JSON)."""
        try:
            return orjson.loads(self.arguments) if self.arguments else {}
        except orjson.JSONDecodeError:
            return None


@dataclass(frozen=True)
class Answer:
    """What one model answer said, whatever the format."""

    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    refusal: bool = False  # the provider flagged a refusal (OpenAI `refusal`, Anthropic stop_reason "refusal")
    error: str | None = None  # an error object in the body (`{"error": {"message": ...}}`)
    streamed: bool = False
    events: int = 0  # SSE events seen (0 for a buffered answer)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class _ToolDraft:
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class AnswerParser:
    """Incremental reader of one answer. `feed(chunk)` with the bytes as they arrive (SSE or a buffered
    JSON body), `finish()` for the `Answer`. `feed` returns True when the chunk carried answer content
    (text or a tool call): the caller stamps the time to first token then.

    Memory is bounded by the answer's text plus the current unfinished SSE line; `max_text` caps the
    text kept (token counts are read whatever the size)."""

    def __init__(self, *, max_text: int = 1 << 20) -> None:
        self.max_text = max_text
        self._buffer = bytearray()
        self._sse: bool | None = None  # decided on the first non-blank byte
        self._model: str | None = None
        self._input: int | None = None
        self._output: int | None = None
        self._text: list[str] = []
        self._text_len = 0
        self._tools: dict[str, _ToolDraft] = {}
        self._finish: str | None = None
        self._refusal = False
        self._error: str | None = None
        self._events = 0
        self._event_name = ""

    # -- input -------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bool:
        if not chunk:
            return False
        if self._sse is None:
            head = bytes(self._buffer + chunk).lstrip()
            if not head:
                self._buffer += chunk
                return False
            self._sse = not head.startswith((b"{", b"["))
        self._buffer += chunk
        if not self._sse:
            return False  # a buffered JSON body is read whole in finish()
        content = False
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[:end + 1]
            content = self._sse_line(line) or content
        return content

    def finish(self) -> Answer:
        if self._sse:
            if self._buffer:  # a last line without its newline
                self._sse_line(bytes(self._buffer).rstrip(b"\r"))
                self._buffer.clear()
        else:
            self._buffered(_json_object(bytes(self._buffer)))
        tools = tuple(ToolCall(d.name, "".join(d.arguments)) for d in self._tools.values())
        return Answer(model=self._model, input_tokens=self._input, output_tokens=self._output,
                      text="".join(self._text), tool_calls=tools, finish_reason=self._finish,
                      refusal=self._refusal, error=self._error, streamed=bool(self._sse), events=self._events)

    # -- pieces --------------------------------------------------------------------------------------
    def _add_text(self, text: Any) -> bool:
        if not isinstance(text, str) or not text:
            return False
        room = self.max_text - self._text_len
        if room > 0:
            self._text.append(text[:room])
            self._text_len += min(room, len(text))
        return True

    def _tool(self, key: str) -> _ToolDraft:
        draft = self._tools.get(key)
        if draft is None:
            draft = self._tools[key] = _ToolDraft()
        return draft

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key in ("prompt_tokens", "input_tokens"):
            if (n := _int(usage.get(key))) is not None:
                self._input = n
        for key in ("completion_tokens", "output_tokens"):
            if (n := _int(usage.get(key))) is not None:
                self._output = n

    def _set_model(self, model: Any) -> None:
        if isinstance(model, str) and model:
            self._model = model

    def _set_error(self, obj: dict[str, Any]) -> None:
        err = obj.get("error")
        if isinstance(err, dict):
            message = err.get("message")
            self._error = str(message) if message else str(err.get("type") or "error")
        elif isinstance(err, str) and err:
            self._error = err

    # -- SSE -------------------------------------------------------------------------------------
    def _sse_line(self, line: bytes) -> bool:
        if not line:
            self._event_name = ""
            return False
        if line.startswith(b"event:"):
            self._event_name = line[6:].strip().decode("utf-8", "replace")
            return False
        if not line.startswith(b"data:"):
            return False  # comments (": ping"), id:, retry:
        data = line[5:].strip()
        if data == b"[DONE]":
            return False
        obj = _json_object(data)
        if obj is None:
            return False
        self._events += 1
        kind = obj.get("type")
        if isinstance(kind, str) and kind:
            return self._typed_event(kind, obj)
        return self._chat_chunk(obj)

    def _chat_chunk(self, obj: dict[str, Any]) -> bool:
        self._set_model(obj.get("model"))
        self._usage(obj.get("usage"))
        self._set_error(obj)
        content = False
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            content = self._add_text(delta.get("content")) or content
            if delta.get("refusal"):
                self._refusal = True
                content = True
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, dict):
                    continue
                draft = self._tool(f"{choice.get('index', 0)}:{call.get('index', 0)}")
                function = call.get("function") or {}
                if isinstance(function.get("name"), str):
                    draft.name += function["name"]
                if isinstance(function.get("arguments"), str):
                    draft.arguments.append(function["arguments"])
                content = True
        return content

    def _typed_event(self, kind: str, obj: dict[str, Any]) -> bool:
        # Responses API events
        if kind in ("response.created", "response.in_progress", "response.completed", "response.incomplete",
                    "response.failed"):
            response = obj.get("response")
            if isinstance(response, dict):
                self._set_model(response.get("model"))
                self._usage(response.get("usage"))
                if response.get("error"):
                    self._set_error(response)
                if kind != "response.created" and isinstance(response.get("status"), str):
                    self._finish = response["status"]
            return False
        if kind == "response.output_text.delta":
            return self._add_text(obj.get("delta"))
        if kind == "response.refusal.delta":
            self._refusal = True
            return True
        if kind == "response.output_item.added":
            item = obj.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                draft = self._tool(f"r{obj.get('output_index', 0)}")
                draft.name = str(item.get("name") or "")
                return True
            return False
        if kind == "response.function_call_arguments.delta":
            self._tool(f"r{obj.get('output_index', 0)}").arguments.append(str(obj.get("delta") or ""))
            return True
        # Anthropic Messages events
        if kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self._set_model(message.get("model"))
                self._usage(message.get("usage"))
            return False
        if kind == "content_block_start":
            block = obj.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                self._tool(f"a{obj.get('index', 0)}").name = str(block.get("name") or "")
                return True
            return self._add_text(block.get("text")) if isinstance(block, dict) else False
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if not isinstance(delta, dict):
                return False
            if delta.get("type") == "input_json_delta":
                self._tool(f"a{obj.get('index', 0)}").arguments.append(str(delta.get("partial_json") or ""))
                return True
            return self._add_text(delta.get("text"))
        if kind == "message_delta":
            self._usage(obj.get("usage"))
            delta = obj.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self._finish = delta["stop_reason"]
                self._refusal = self._refusal or delta["stop_reason"] == "refusal"
            return False
        if kind == "error":
            self._set_error(obj)
        return False

    # -- buffered JSON ---------------------------------------------------------------------------------
    def _buffered(self, obj: dict[str, Any] | None) -> None:
        if obj is None:
            return
        self._set_model(obj.get("model"))
        self._usage(obj.get("usage"))
        self._set_error(obj)
        for choice in obj.get("choices") or ():  # Chat Completions
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]
            message = choice.get("message")
            if not isinstance(message, dict):
                continue
            self._add_text(message.get("content"))
            if message.get("refusal"):
                self._refusal = True
            for i, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    draft = self._tool(f"{choice.get('index', 0)}:{i}")
                    draft.name = str(function.get("name") or "")
                    draft.arguments.append(str(function.get("arguments") or ""))
        for i, item in enumerate(obj.get("output") or ()):  # Responses
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call":
                draft = self._tool(f"r{i}")
                draft.name = str(item.get("name") or "")
                draft.arguments.append(str(item.get("arguments") or ""))
            for part in item.get("content") or ():
                if isinstance(part, dict):
                    if part.get("type") == "refusal":
                        self._refusal = True
                    self._add_text(part.get("text"))
        if obj.get("object") == "response" and isinstance(obj.get("status"), str):
            self._finish = obj["status"]
        if obj.get("type") == "message":  # Anthropic
            for i, block in enumerate(obj.get("content") or ()):
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    draft = self._tool(f"a{i}")
                    draft.name = str(block.get("name") or "")
                    draft.arguments.append(orjson.dumps(block.get("input", {})).decode())
                else:
                    self._add_text(block.get("text"))
            if isinstance(obj.get("stop_reason"), str):
                self._finish = obj["stop_reason"]
                self._refusal = self._refusal or obj["stop_reason"] == "refusal"


def parse_answer(body: bytes | None) -> Answer:
    """An answer read whole (a captured body, buffered JSON or SSE text)."""
    parser = AnswerParser()
    if body:
        parser.feed(body)
    return parser.finish()


class UsageChunkFilter(SseEventFilter):
    """Drops the usage-only Chat Completions chunk (`"choices": []` with `usage`) from an SSE stream whose
    client did not ask for it (the gateway asked on its behalf). Events are passed on whole as soon as
    their blank line arrives, so nothing waits for more than the rest of its own event."""

    def __init__(self) -> None:
        super().__init__(lambda event: b"" if self._usage_only(event) else event)

    @staticmethod
    def _usage_only(event: bytes) -> bool:
        if b'"usage"' not in event:
            return False
        for line in event.splitlines():
            if line.startswith(b"data:"):
                obj = _json_object(line[5:].strip())
                return obj is not None and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)
        return False
