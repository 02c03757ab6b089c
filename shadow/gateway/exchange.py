"""Capture rows for the gateway's exchanges, built from plain values (no proxy types here).

The addons turn a mitmproxy flow into an `ExchangeRecord` and the mirror dispatcher's result into
another; `to_row` makes the dict `shadow.capture.writer.CaptureWriter.submit` takes (keys are columns of
shadow.capture.schema.EXCHANGES; the writer decodes, hashes, truncates and redacts bodies off the loop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from shadow.gateway.mirror import MirrorResult

Headers = list[tuple[str, str]]

# flow.metadata key: more columns for a flow's primary row (a dict; the AI gateway's token counts).
EXTRA_COLUMNS_METADATA = "shadow.extra_columns"
# A model call's (span name, gen_ai.* attributes) for the telemetry concern (shadow.ai.semconv)
GENAI_SPAN_METADATA = "shadow.genai_span"
# flow.metadata key: True when a streamed answer reached the client whole before the connection ended
# (an MCP SSE answer whose client hung up once it had its JSON-RPC response): the flow ends in mitmproxy's
# `error` hook, yet it is captured and mirrored like an answered one.
ANSWER_COMPLETE_METADATA = "shadow.answer_complete"

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


_ZERO_TRACE_ID, _ZERO_SPAN_ID = "0" * 32, "0" * 16


def traceparent_ids(value: str | None) -> tuple[str | None, str | None]:
    """(trace_id, span_id) from a W3C traceparent header; (None, None) when absent or invalid
    (all-zero ids and version ff are invalid per the spec)."""
    if not value:
        return None, None
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None:
        return None, None
    version, trace_id, span_id = m.group(1, 2, 3)
    if version == "ff" or trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None, None
    return trace_id, span_id


def header_value(headers: Headers, name: str) -> str | None:
    lower = name.lower()
    for k, v in headers:
        if k.lower() == lower:
            return v
    return None


def base_url(url: str) -> str:
    """scheme://host:port of a URL (the `upstream` column)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class ExchangeRecord:
    """One observed exchange. `ts_ns`: when the request went upstream; latency until response end."""

    request_id: str
    role: str  # primary | candidate | secondary
    mode: str  # serve | mirror
    service: str | None
    router: str | None
    ts_ns: int
    latency_ms: float | None
    method: str
    url: str
    host: str  # the client's Host
    path: str  # without query
    query: str
    upstream: str | None
    req_headers: Headers
    req_body: bytes | None
    status: int | None
    resp_headers: Headers
    resp_body: bytes | None
    error: str | None
    trace_id: str | None
    span_id: str | None
    client_key: str | None
    gateway: str | None
    extra: dict[str, object] | None = None  # more columns of the schema (e.g. ai_*), written as they are
    # The response body kept is a prefix: the gateway streamed or stopped reading it (issue 17);
    # `body_size` is then the whole body's size when known (the writer measures it otherwise).
    truncated: bool = False
    body_size: int | None = None

    def to_row(self) -> dict[str, object]:
        # exchange_id, endpoint, resp_content_type, body_hash, body_size and truncated are filled
        # by the capture writer's thread, off the proxy's event loop.
        row: dict[str, object] = {
            "request_id": self.request_id,
            "role": self.role,
            "mode": self.mode,
            "service": self.service,
            "router": self.router,
            "ts": self.ts_ns,
            "latency_ms": self.latency_ms,
            "method": self.method,
            "url": self.url,
            "host": self.host,
            "path": self.path,
            "query": self.query,
            "upstream": self.upstream,
            "req_headers": self.req_headers,
            "req_body": self.req_body,
            "status": self.status,
            "resp_headers": self.resp_headers,
            "resp_body": self.resp_body,
            "error": self.error,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "client_key": self.client_key,
            "gateway": self.gateway,
        }
        if self.truncated:
            row["truncated"] = True
        if self.body_size is not None:
            row["body_size"] = self.body_size
        if self.extra:
            row.update(self.extra)
        return row


def mirror_record(result: MirrorResult, primary: ExchangeRecord) -> ExchangeRecord:
    """The capture record of a mirror copy: the primary's identity, the copy's request and answer."""
    req = result.request
    parts = urlsplit(req.url)
    # A copy that carries its own traceparent (the telemetry addon gives each copy a client span) is
    # captured with that span; otherwise it shares the primary's ids.
    trace_id, span_id = traceparent_ids(header_value(list(req.headers), "traceparent"))
    if trace_id is None:
        trace_id, span_id = primary.trace_id, primary.span_id
    return ExchangeRecord(
        request_id=primary.request_id, role=req.role, mode="mirror", service=req.target,
        router=primary.router, ts_ns=result.ts_ns, latency_ms=result.latency_ms, method=req.method,
        url=req.url, host=primary.host, path=parts.path.removeprefix(req.path_prefix) or "/", query=parts.query,
        upstream=req.upstream,
        req_headers=list(req.headers), req_body=req.body, status=result.status,
        resp_headers=result.headers, resp_body=result.body if result.error is None else None,
        error=result.error, trace_id=trace_id, span_id=span_id,
        client_key=primary.client_key, gateway=primary.gateway, truncated=result.truncated,
    )
