"""Per-answer measures for judging a model switch (pure): is a JSON answer valid, do two answers call
the same tools with the same arguments, is an answer a refusal, what did the request ask for."""

from __future__ import annotations

import re
from typing import Any

import orjson

from shadow.ai.protocol import Answer

__all__ = ["json_request", "json_valid", "looks_refused", "tools_agree", "wants_tools"]

# A refusal flagged by the provider, or worded as one at the start of the answer.
_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|sorry|i can(?:no|')t|i cannot|i'?m not able|i am not able|"
                      r"i won'?t|as an ai)\b[^.]{0,80}\b(help|assist|comply|provide|do that|answer)", re.I)


def _request(body: bytes | None) -> dict[str, Any]:
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def json_request(body: bytes | None) -> tuple[bool, dict[str, Any] | None]:
    """(asked for JSON output, the JSON schema when one was given) — Chat Completions
    `response_format`, Responses `text.format`."""
    obj = _request(body)
    fmt = obj.get("response_format")
    if not isinstance(fmt, dict):
        text = obj.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return False, None
    schema = fmt.get("json_schema", fmt) if fmt.get("type") == "json_schema" else None
    inner = schema.get("schema") if isinstance(schema, dict) else None
    return True, inner if isinstance(inner, dict) else None


def wants_tools(body: bytes | None) -> bool:
    tools = _request(body).get("tools")
    return isinstance(tools, list) and bool(tools)


_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
                                       "integer": (int,), "number": (int, float), "null": (type(None),)}


def _holds(value: Any, schema: dict[str, Any], depth: int = 0) -> bool:
    """The common core of JSON Schema: type, required, properties, items, enum (enough to catch a model
    that drops or mistypes fields; not a full validator)."""
    if depth > 32:
        return True
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    if kinds and not any(isinstance(value, _TYPES.get(k, (object,))) and not (
            k in ("integer", "number") and isinstance(value, bool)) for k in kinds):
        return False
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        required = schema.get("required")
        if isinstance(required, list) and any(k not in value for k in required):
            return False
        props = schema.get("properties")
        if isinstance(props, dict):
            for key, sub in props.items():
                if key in value and isinstance(sub, dict) and not _holds(value[key], sub, depth + 1):
                    return False
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return all(_holds(v, schema["items"], depth + 1) for v in value)
    return True


def json_valid(answer: Answer, schema: dict[str, Any] | None) -> bool:
    """The answer's text parses as JSON (an object or array) and, when given, holds the schema."""
    try:
        value = orjson.loads(answer.text)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(value, dict | list):
        return False
    return schema is None or _holds(value, schema)


def tools_agree(a: Answer, b: Answer) -> bool:
    """Same functions called, in the same order, with equal arguments (as JSON values)."""
    if len(a.tool_calls) != len(b.tool_calls):
        return False
    return all(x.name == y.name and x.parsed_arguments() == y.parsed_arguments()
               for x, y in zip(a.tool_calls, b.tool_calls, strict=True))


def looks_refused(answer: Answer) -> bool:
    return answer.refusal or (not answer.tool_calls and _REFUSAL.search(answer.text[:300]) is not None)
