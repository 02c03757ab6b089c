"""Settings of the capture and its redaction (the `shadow.capture` and `shadow.redaction` config sections).

The gateway's config loader (shadow/gateway/config.py) builds these from YAML; replay, the OTLP
receiver and tests build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_REDACTED_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")


@dataclass(frozen=True)
class RedactionSettings:
    # Header names (case-insensitive) always include DEFAULT_REDACTED_HEADERS.
    headers: tuple[str, ...] = DEFAULT_REDACTED_HEADERS
    # JSON body fields: a bare name matches that key at any depth; "/a/b" is an RFC 6901 pointer
    # ("*" matches any one key or index). Applied to request and response bodies.
    json_fields: tuple[str, ...] = ()
    # "hash": replace by "redacted:" + 16 hex of HMAC-SHA256(key, value), so equality survives;
    # "remove": drop the header / JSON field.
    mode: Literal["hash", "remove"] = "hash"
    # HMAC key. None: taken from $SHADOW_REDACTION_KEY, else generated once per capture folder.
    key: bytes | None = None
    # Query parameter names (case-insensitive) redacted in the `query` and `url` columns (api_key, token...).
    query_params: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaptureSettings:
    dir: Path = Path("capture")
    enabled: bool = True
    max_body_bytes: int = 1_048_576  # bodies longer than this are cut and the row flagged `truncated`
    segment_rows: int = 100_000  # seal a Parquet segment after this many rows...
    segment_seconds: float = 60.0  # ...or this long after its first row
    max_queue: int = 20_000  # rows waiting for the writer thread; beyond it rows are shed and counted
    # "process": the gateway's rows are prepared and written by a child process (own GIL, see
    # shadow.capture.process); "thread": by a thread of the proxy's process (CaptureWriter).
    mode: Literal["process", "thread"] = "process"
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
