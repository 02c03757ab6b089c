"""OTLP/HTTP payloads → capture rows. Pure functions: no server, no I/O.

* `decode_body` undoes Content-Encoding (gzip, deflate or none) within a size limit.
* `parse_traces` / `parse_metrics` / `parse_logs` read protobuf or OTLP/JSON. OTLP/JSON writes trace
  and span ids as hex, while `google.protobuf.json_format` reads bytes fields as base64 and would
  silently turn a 32-hex id into 24 wrong bytes: the ids are converted to base64 *before* parsing.
* `span_rows` validates each span (id lengths, non-zero ids) and turns the good ones into rows of
  `shadow.capture.schema.SPANS`; the others are counted for the response's `partial_success`.
* `SeenSpans` remembers recent (trace_id, span_id) keys so a retried export is not stored twice.
"""

from __future__ import annotations

import base64
import collections
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = [
    "BodyTooLarge",
    "PayloadError",
    "SeenSpans",
    "SpanBatch",
    "decode_body",
    "hex_ids_to_base64",
    "is_json",
    "log_record_count",
    "metric_rows",
    "parse_logs",
    "parse_metrics",
    "parse_traces",
    "span_rows",
]

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


class PayloadError(ValueError):
    """The body cannot be decoded (answered 400)."""


class BodyTooLarge(ValueError):
    """The body, or what it inflates to, exceeds the limit (answered 413)."""


def is_json(content_type: str | None) -> bool:
    return bool(content_type) and "json" in (content_type or "").split(";", 1)[0].lower()


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its Content-Encoding; BodyTooLarge if the result would exceed `limit` bytes
    (a small gzip bomb must not take the receiver's memory)."""
    coding = (encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        if len(body) > limit:
            raise BodyTooLarge(f"body of {len(body)} bytes exceeds the limit of {limit}")
        return body
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise PayloadError(f"unsupported Content-Encoding {encoding!r} (gzip, deflate or none)")
    wbits = 16 + zlib.MAX_WBITS if "gzip" in coding else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise PayloadError(f"body is not valid {coding}: {e}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"body inflates beyond the limit of {limit} bytes")
    if not inflater.eof:
        raise PayloadError(f"body is truncated {coding}")
    return out


def _hex_to_b64(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return value  # not hex: left as is (base64 from a non-conforming client, or garbage → rejected)
    return base64.b64encode(raw).decode("ascii")


def hex_ids_to_base64(node: Any) -> Any:
    """Rewrite every traceId/spanId/parentSpanId (spans, links, log records, exemplars) from OTLP/JSON hex
    to the base64 protobuf's JSON parser expects. Works in place on parsed JSON; returns it."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS:
                node[key] = _hex_to_b64(value)
            elif isinstance(value, (dict, list)):
                hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            hex_ids_to_base64(item)
    return node


def _parse(message: Message, body: bytes, json: bool) -> None:
    if json:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise PayloadError(f"body is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise PayloadError("body is not a JSON object")
        try:
            json_format.ParseDict(hex_ids_to_base64(doc), message, ignore_unknown_fields=True)
        except (json_format.ParseError, TypeError, ValueError) as e:
            raise PayloadError(f"body is not OTLP/JSON: {str(e).splitlines()[0]}") from None
        return
    try:
        message.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise PayloadError(f"body is not an OTLP protobuf message: {e}") from None


def parse_traces(body: bytes, *, json: bool) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    _parse(request, body, json)
    return request


def parse_metrics(body: bytes, *, json: bool) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    _parse(request, body, json)
    return request


def parse_logs(body: bytes, *, json: bool) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    _parse(request, body, json)
    return request


# -- values ----------------------------------------------------------------------------------------


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as a plain Python value (bytes as hex)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes_dict(attributes: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in attributes}


def _json_text(d: dict[str, Any]) -> str:
    return orjson.dumps(d, option=orjson.OPT_SORT_KEYS).decode()


# -- spans -------------------------------------------------------------------------------------------


@dataclass
class SpanBatch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)  # distinct reasons, for partial_success.error_message

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if reason not in self.errors and len(self.errors) < 5:
            self.errors.append(reason)

    @property
    def error_message(self) -> str:
        return "; ".join(self.errors)


class SeenSpans:
    """A bounded LRU set of (trace_id, span_id): exports retried after a lost answer are stored once.
    Bounded, so an exact answer needs the store too (`SELECT DISTINCT` / `QUALIFY` on the two ids)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._keys: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()

    def add(self, key: tuple[str, str]) -> bool:
        """True when `key` is new (and now remembered); False for a duplicate."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True

    def discard(self, key: tuple[str, str]) -> None:
        """Forget `key` (its span was not stored after all, so a retry must be accepted)."""
        self._keys.pop(key, None)

    def __len__(self) -> int:
        return len(self._keys)


def _valid_id(raw: bytes, size: int) -> bool:
    return len(raw) == size and any(raw)


def span_rows(request: ExportTraceServiceRequest, received_ns: int, seen: SeenSpans | None = None) -> SpanBatch:
    """Rows of shadow.capture.schema.SPANS for the valid spans; invalid ones counted with their reason."""
    batch = SpanBatch()
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        service = resource.get("service.name")
        service_name = str(service) if service is not None else None
        resource_text = _json_text(resource)
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name or None
            for span in scope_spans.spans:
                if not _valid_id(span.trace_id, 16):
                    batch.reject(f"span {span.name!r}: trace_id must be 16 bytes, not all zero "
                                 f"(got {len(span.trace_id)} bytes)")
                    continue
                if not _valid_id(span.span_id, 8):
                    batch.reject(f"span {span.name!r}: span_id must be 8 bytes, not all zero "
                                 f"(got {len(span.span_id)} bytes)")
                    continue
                if span.parent_span_id and len(span.parent_span_id) != 8:
                    batch.reject(f"span {span.name!r}: parent_span_id must be empty or 8 bytes "
                                 f"(got {len(span.parent_span_id)} bytes)")
                    continue
                if span.end_time_unix_nano and span.end_time_unix_nano < span.start_time_unix_nano:
                    batch.reject(f"span {span.name!r}: ends before it starts")
                    continue
                trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
                if seen is not None and not seen.add((trace_id, span_id)):
                    batch.duplicates += 1
                    continue
                start, end = span.start_time_unix_nano, span.end_time_unix_nano or span.start_time_unix_nano
                batch.rows.append({
                    "trace_id": trace_id,
                    "span_id": span_id,
                    "parent_span_id": span.parent_span_id.hex() if any(span.parent_span_id) else None,
                    "name": span.name,
                    "kind": SPAN_KINDS[span.kind] if 0 <= span.kind < len(SPAN_KINDS) else str(span.kind),
                    "service_name": service_name,
                    "start_ts": start,
                    "end_ts": end,
                    "duration_ms": (end - start) / 1e6,
                    "status_code": (STATUS_CODES[span.status.code] if 0 <= span.status.code < len(STATUS_CODES)
                                    else str(span.status.code)),
                    "status_message": span.status.message or None,
                    "attributes": _json_text(attributes_dict(span.attributes)),
                    "resource_attributes": resource_text,
                    "scope_name": scope_name,
                    "ts": start or received_ns,
                    "received_ts": received_ns,
                })
    return batch


# -- metrics and logs ------------------------------------------------------------------------------------


def metric_rows(request: ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    """One row of shadow.capture.schema.METRICS per data point."""
    rows: list[dict[str, Any]] = []
    for resource_metrics in request.resource_metrics:
        service = attributes_dict(resource_metrics.resource.attributes).get("service.name")
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                base = {"name": metric.name, "kind": kind, "unit": metric.unit or None,
                        "service_name": str(service) if service is not None else None}
                for point in getattr(metric, kind).data_points:
                    row = {**base, "attributes": _json_text(attributes_dict(point.attributes)),
                           "ts": point.time_unix_nano or None}
                    if kind in ("gauge", "sum"):
                        which = point.WhichOneof("value")
                        row["value"] = float(getattr(point, which)) if which else None
                    elif kind in ("histogram", "exponential_histogram", "summary"):
                        row["count"] = int(point.count)
                        row["sum"] = float(point.sum)
                        if kind == "histogram":
                            row["bucket_counts"] = [int(c) for c in point.bucket_counts]
                            row["explicit_bounds"] = [float(b) for b in point.explicit_bounds]
                    rows.append(row)
    return rows


def log_record_count(request: ExportLogsServiceRequest) -> int:
    return sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)

