"""JSON-RPC 2.0 as MCP's Streamable HTTP carries it: what a POST body holds, what an answer says.

Only what the gateway needs is read (method, id, params' name / uri / arguments); a body that is not
valid JSON-RPC is refused whole with the error the JSON-RPC spec names (-32700 parse error, -32600
invalid request), never forwarded in part. Pure: bytes in, values out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from shadow.gateway.sse import SseEventFilter, event_data

__all__ = [
    "FORBIDDEN",
    "INVALID_REQUEST",
    "LISTINGS",
    "PARSE_ERROR",
    "InvalidBody",
    "McpBody",
    "McpMessage",
    "answer_for",
    "answers_in",
    "endpoint_for",
    "error_body",
    "error_object",
    "filter_listing",
    "parse_body",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
FORBIDDEN = -32003  # implementation-defined server error range (-32000..-32099): refused by a gateway policy

Kind = Literal["request", "notification", "response"]
RequestId = str | int


class InvalidBody(ValueError):
    """A POST body that is not JSON-RPC: answered with `code` and nothing is forwarded."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class McpMessage:
    kind: Kind
    method: str | None  # None for a response (the client answering a server's request)
    id: RequestId | None  # None for a notification
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str | None:
        """The tool or prompt name (`params.name`) or the resource URI (`params.uri`) the call is about."""
        value = self.params.get("name") if "name" in self.params else self.params.get("uri")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class McpBody:
    messages: tuple[McpMessage, ...]
    batch: bool  # a JSON array (protocol 2025-03-26); later revisions send one message per POST

    @property
    def requests(self) -> tuple[McpMessage, ...]:
        return tuple(m for m in self.messages if m.kind == "request")


def _message(obj: Any) -> McpMessage:
    if not isinstance(obj, dict):
        raise InvalidBody(INVALID_REQUEST, "a JSON-RPC message must be an object")
    if obj.get("jsonrpc") != "2.0":
        raise InvalidBody(INVALID_REQUEST, 'jsonrpc must be "2.0"')
    has_id = "id" in obj
    ident = obj.get("id")
    if has_id and (isinstance(ident, bool) or not isinstance(ident, str | int)):
        raise InvalidBody(INVALID_REQUEST, "id must be a string or an integer")
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str) or not method:
            raise InvalidBody(INVALID_REQUEST, "method must be a non-empty string")
        params = obj.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict | list):
            raise InvalidBody(INVALID_REQUEST, "params must be an object or an array")
        return McpMessage("request" if has_id else "notification", method, ident if has_id else None,
                          params if isinstance(params, dict) else {})
    if has_id and (("result" in obj) != ("error" in obj)):
        return McpMessage("response", None, ident)
    raise InvalidBody(INVALID_REQUEST, "neither a request (method) nor a response (id with result or error)")


def parse_body(body: bytes) -> McpBody:
    """The messages of a POST body; raises InvalidBody for anything that is not JSON-RPC 2.0."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidBody(PARSE_ERROR, "the body is not valid JSON") from None
    if isinstance(obj, list):
        if not obj:
            raise InvalidBody(INVALID_REQUEST, "an empty batch")
        return McpBody(tuple(_message(o) for o in obj), batch=True)
    return McpBody((_message(obj),), batch=False)


def error_object(ident: RequestId | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}}


def error_body(ident: RequestId | None, code: int, message: str) -> bytes:
    return orjson.dumps(error_object(ident, code, message))


def answers_in(body: bytes, *, sse: bool) -> list[dict[str, Any]]:
    """The JSON-RPC objects of an answer: a JSON body (one object or a batch), or one SSE event."""
    raw = event_data(body) if sse else body
    if not raw:
        return []
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    items = obj if isinstance(obj, list) else [obj]
    return [o for o in items if isinstance(o, dict)]


# list method → (the result's list key, the item key naming it)
LISTINGS: dict[str, tuple[str, str]] = {
    "tools/list": ("tools", "name"),
    "prompts/list": ("prompts", "name"),
    "resources/list": ("resources", "uri"),
}


def filter_listing(answer: dict[str, Any], method: str, visible: Callable[[str], bool]) -> tuple[dict[str, Any], int]:
    """`answer` (a JSON-RPC response to `method`, one of LISTINGS) with the items `visible` refuses
    removed, and how many were removed."""
    result = answer.get("result")
    key, name_key = LISTINGS[method]
    items = result.get(key) if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(items, list):
        return answer, 0
    kept = [item for item in items if not (isinstance(item, dict) and isinstance(item.get(name_key), str)
                                           and not visible(item[name_key]))]
    if len(kept) == len(items):
        return answer, 0
    return {**answer, "result": {**result, key: kept}}, len(items) - len(kept)


def answer_for(body: bytes, ident: RequestId | None, *, sse: bool) -> dict[str, Any] | None:
    """The response to request `ident` in an answer (a JSON body, or an SSE stream whose other events
    are the server's notifications and requests), None when it holds none."""
    found: list[dict[str, Any]] = []
    if sse:
        def collect(event: bytes) -> bytes:
            found.extend(answers_in(event, sse=True))
            return event

        events = SseEventFilter(collect)
        events.feed(body)
        found.extend(answers_in(events.feed(b""), sse=True))
    else:
        found = answers_in(body, sse=False)
    return next((a for a in found if a.get("id") == ident and ("result" in a or "error" in a)), None)


NAMED_ENDPOINTS = frozenset({"tools/call", "prompts/get"})


def endpoint_for(path: str, message: McpMessage) -> str:
    """The capture's endpoint for one MCP call: the path, the method and, for a tool or a prompt, its
    name (`/mcp tools/call add`), so the analyses and the verdict judge each tool on its own."""
    if message.method in NAMED_ENDPOINTS and message.target:
        return f"{path} {message.method} {message.target}"
    return f"{path} {message.method}"
