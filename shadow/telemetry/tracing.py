"""The gateway's own telemetry: settings (`shadow.telemetry:`), W3C trace context and sampling.

Pure parts only (no OpenTelemetry SDK import here): the addon (addons/telemetry.py) records spans
and metrics with the SDK, and uses these to decide ids and sampling *before* the request leaves, so
the `traceparent` sent upstream, the capture's trace_id/span_id and the exported spans agree.

YAML (every key optional; no endpoint and no receiver = telemetry off, which costs nothing)::

    shadow:
      telemetry:
        endpoint: http://127.0.0.1:4318        # OTLP/HTTP base URL (/v1/traces, /v1/metrics, /v1/logs)
        serviceName: shadow-gateway
        sampling: 1.0                          # parent-based ratio: an incoming sampled flag wins
        headers: {X-Api-Key: secret}           # sent with every export
        exportInterval: 5s                     # metrics export period
        logs: true                             # WARNING+ gateway log lines exported as OTLP logs
        receiver:                              # an OTLP receiver inside the gateway process
          listen: 127.0.0.1:4318               # spans land in the capture folder's spans/
          maxBodyBytes: 8388608
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from shadow.yamlconfig import YamlReader

__all__ = [
    "TelemetrySettings",
    "TraceContext",
    "continue_or_start",
    "format_traceparent",
    "parse_telemetry",
    "ratio_sampled",
]

_MAX_ID = 1 << 64


@dataclass(frozen=True)
class TelemetrySettings:
    endpoint: str | None = None  # OTLP/HTTP base URL; None: the gateway exports nothing
    service_name: str = "shadow-gateway"
    sampling: float = 1.0
    headers: tuple[tuple[str, str], ...] = ()
    export_interval_s: float = 5.0
    logs: bool = True
    receiver_listen: str | None = None  # HOST:PORT of an embedded OTLP receiver
    receiver_max_body_bytes: int = 8 * 1024 * 1024

    @property
    def exporting(self) -> bool:
        return self.endpoint is not None


class TraceContext(NamedTuple):
    """One request's trace: ids as ints (hex is made only when needed) and the sampling decision.
    (A NamedTuple: one is made per request on the event loop, at half a frozen dataclass's cost.)"""

    trace_id: int
    parent_span_id: int  # the caller's span (0: the gateway's server span is the trace's root)
    server_span_id: int
    sampled: bool
    remote_parent: bool  # the trace came in with the request


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def _parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace_id, span_id, sampled) of a valid W3C traceparent (version 00 and future versions)."""
    if not value:
        return None
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    if parts[0] == "ff" or (parts[0] == "00" and len(parts) != 4):
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
        int(parts[0], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, bool(flags & 1)


def ratio_sampled(trace_id: int, ratio: float) -> bool:
    """The OpenTelemetry TraceIdRatioBased decision (lower 64 bits of the trace id under a bound), so
    the SDK's own ParentBased(TraceIdRatioBased(ratio)) sampler agrees with what we propagate."""
    if ratio >= 1.0:
        return True
    if ratio <= 0.0:
        return False
    return (trace_id & (_MAX_ID - 1)) < round(ratio * _MAX_ID)


def new_span_id(rng: random.Random) -> int:
    while True:
        value = rng.getrandbits(64)
        if value:
            return value


def continue_or_start(traceparent: str | None, ratio: float, rng: random.Random) -> TraceContext:
    """Continue the caller's trace (its sampled flag decides) or start one (the ratio decides)."""
    parsed = _parse_traceparent(traceparent)
    if parsed is not None:
        trace_id, parent, sampled = parsed
        return TraceContext(trace_id, parent, new_span_id(rng), sampled, True)
    trace_id = 0
    while not trace_id:
        trace_id = rng.getrandbits(128)
    return TraceContext(trace_id, 0, new_span_id(rng), ratio_sampled(trace_id, ratio), False)


def parse_telemetry(reader: YamlReader, node: Any, line: int | None) -> TelemetrySettings:
    """The `shadow.telemetry` mapping (the shared YamlReader of shadow/yamlconfig.py gives every error its file, line and field)."""
    where = "shadow.telemetry"
    tel = reader.mapping(node, where, line)
    reader.check_keys(tel, where, ("endpoint", "serviceName", "sampling", "headers", "exportInterval", "logs",
                                   "receiver"))
    defaults = TelemetrySettings()
    endpoint = reader.string(tel, "endpoint", where)
    if endpoint is not None:
        endpoint = endpoint.rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            reader.fail(f"must be an http:// or https:// URL, got {endpoint!r}", f"{where}.endpoint",
                        reader.value_line(tel, "endpoint"))
    sampling = reader.number(tel, "sampling", where, defaults.sampling, minimum=0.0)
    if sampling > 1.0:
        reader.fail(f"must be between 0 and 1, got {sampling:g}", f"{where}.sampling",
                    reader.value_line(tel, "sampling"))
    headers_node = reader.mapping(tel.get("headers"), f"{where}.headers", reader.value_line(tel, "headers"))
    headers = tuple((str(k), str(reader.string(headers_node, str(k), f"{where}.headers", allow_empty=True) or ""))
                    for k in headers_node)
    interval = reader.duration(tel, "exportInterval", where, defaults.export_interval_s)
    if interval <= 0:
        reader.fail("must be positive", f"{where}.exportInterval", reader.value_line(tel, "exportInterval"))
    rec_where = f"{where}.receiver"
    rec = reader.mapping(tel.get("receiver"), rec_where, reader.value_line(tel, "receiver"))
    reader.check_keys(rec, rec_where, ("listen", "maxBodyBytes"))
    listen = reader.string(rec, "listen", rec_where)
    if listen is not None:
        from shadow.errors import ShadowError
        from shadow.telemetry.receiver import parse_listen

        try:
            parse_listen(listen)
        except ShadowError as e:
            reader.fail(e.message, f"{rec_where}.listen", reader.value_line(rec, "listen"))
    return TelemetrySettings(
        endpoint=endpoint,
        service_name=reader.string(tel, "serviceName", where, default=defaults.service_name) or defaults.service_name,
        sampling=sampling,
        headers=headers,
        export_interval_s=interval,
        logs=reader.boolean(tel, "logs", where, defaults.logs),
        receiver_listen=listen,
        receiver_max_body_bytes=reader.integer(rec, "maxBodyBytes", rec_where, defaults.receiver_max_body_bytes,
                                               minimum=1),
    )
