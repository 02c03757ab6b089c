"""The shared vocabulary of the diff engine: one difference, one side of a pair, pointer tokens.

A base module with no dependency on the engine, so the engine (analyzers/diff.py), the other body
kinds (analyzers/bodies.py), the diffs table (analyzers/diffs_table.py), noise cancellation
(analyzers/noise.py) and the gateway-change rules all speak it without importing one another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

__all__ = ["MAX_VALUE_CHARS", "Difference", "ExchangeSide", "escape_token", "render_value"]

MAX_VALUE_CHARS = 256  # old/new are JSON text cut to this many characters (a "…" marks the cut)


class Difference(NamedTuple):
    """One difference between the primary's (old) and the candidate's (new) answer."""

    kind: str  # status | header | body
    op: str  # added | removed | changed | type_changed | reordered | renamed | truncated
    pointer: str  # RFC 6901 pointer into the body ("" = the whole body / the status); /name for headers
    pointer_template: str  # the pointer with array indices (and line numbers) as "*"
    old: str | None  # the primary's value as JSON text (None when added; renamed: the old key's pointer)
    new: str | None  # the candidate's value as JSON text (None when removed; renamed: the new key's pointer)
    noise: bool = False
    noise_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ExchangeSide:
    """One side of a pair: what a service answered. Bodies are decoded unless `content_encoding` says
    otherwise (the capture stores decoded bodies; raw input from elsewhere may still be gzip'd)."""

    status: int | None
    headers: Sequence[tuple[str, str]] | Sequence[Mapping[str, str]] = ()
    body: bytes | None = None
    content_type: str | None = None
    body_hash: str | None = None  # canonical hash of the full body (shadow.capture.canonical.body_hash)
    truncated: bool = False  # body was cut at capture: compared by hash only
    error: str | None = None  # transport error (status is then None)
    content_encoding: str | None = None  # still to be decoded (gzip, deflate, br, ...)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], prefix: str = "") -> ExchangeSide:
        """From a `pairs` row (prefix "p_", "c_", "s_") or an `exchanges` row (no prefix)."""
        return cls(
            status=row.get(prefix + "status"), headers=row.get(prefix + "resp_headers") or (),
            body=row.get(prefix + "resp_body"), content_type=row.get(prefix + "resp_content_type"),
            body_hash=row.get(prefix + "body_hash"), truncated=bool(row.get(prefix + "truncated")),
            error=row.get(prefix + "error"),
        )


def escape_token(token: str) -> str:
    """RFC 6901: `~` → `~0` first, then `/` → `~1`."""
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def render_value(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"
