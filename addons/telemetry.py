"""Telemetry addon: the gateway's own traces, metrics and logs over OTLP, and an embedded OTLP receiver.

Off unless `shadow.telemetry.endpoint` is set: every hook then returns at its first line and no
OpenTelemetry object exists (the SDK is not even imported).

On: in `request` (after the router), the addon continues the client's W3C `traceparent` or starts a
trace (shadow.telemetry.continue_or_start: parent-based ratio sampling), picks the server span's id
and the primary call's client span id, and sets ``traceparent: 00-<trace>-<client span>-<flags>``
on the upstream request; the capture addon reads that header, so the primary row's trace_id/span_id
are the gateway's client span. Each mirror copy gets its own client span id the same way (the addon
is the gateway's `mirror_tracer`: the Mirror concern asks it for each copy's `traceparent` and hands
it the copy's result), so every upstream's own spans hang under the call that reached it. Spans are
recorded in the `response`/`error` hook with the measured times (a tuple queued: cheaper than
scheduling a callback for later), and built, encoded and exported on the span exporter's own thread
(shadow.telemetry.export).

`shadow.telemetry.receiver.listen` starts an OTLP receiver on the proxy's event loop that writes spans
into the gateway's capture folder (CAPTURE/spans/), so upstream services can export to the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from typing import TYPE_CHECKING

from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState
from shadow.gateway.exchange import GENAI_SPAN_METADATA
from shadow.gateway.mirror import RateLimitedLog, describe_error
from shadow.telemetry.tracing import (
    TelemetrySettings,
    TraceContext,
    continue_or_start,
    format_traceparent,
    new_span_id,
)

if TYPE_CHECKING:
    from shadow.gateway.mirror import MirrorResult
    from shadow.telemetry.export import GatewayTelemetry
    from shadow.telemetry.receiver import OtlpReceiver

logger = logging.getLogger(__name__)


def with_header(fields: tuple[tuple[bytes, bytes], ...], name: bytes, value: bytes, *,
                present: bool) -> tuple[tuple[bytes, bytes], ...]:
    """`fields` with every `name` line (any case) replaced by one `name: value` at the first one's
    place, else appended: what mitmproxy's `headers[name] = value` does. `present`: whether a line
    of that name is there (the caller has scanned already)."""
    if not present:
        return (*fields, (name, value))
    out: list[tuple[bytes, bytes]] = []
    placed = False
    for k, v in fields:
        if len(k) == len(name) and k.lower() == name:
            if not placed:
                out.append((k, value))
                placed = True
        else:
            out.append((k, v))
    return tuple(out)


class _FlowTrace:
    """A flow's trace, kept as long as the flow (mirror copies are built after its spans are recorded)."""

    __slots__ = ("client_span_id", "ctx", "recorded", "start_ns")

    def __init__(self, ctx: TraceContext, start_ns: int, client_span_id: int) -> None:
        self.ctx, self.start_ns, self.client_span_id = ctx, start_ns, client_span_id
        self.recorded = False


class Telemetry:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.settings: TelemetrySettings | None = None
        self.export: GatewayTelemetry | None = None
        self.receiver: OtlpReceiver | None = None
        self.errors = 0
        self._warn = RateLimitedLog(logger.warning)
        self._rng = random.Random()
        self._flows: weakref.WeakKeyDictionary[http.HTTPFlow, _FlowTrace] = weakref.WeakKeyDictionary()
        state.on_activate.append(self._on_activate)
        state.extra_counters.append(self.counters)

    def counters(self) -> dict[str, int]:
        out = {"telemetry_errors": self.errors}
        if self.export is not None:
            spans = self.export.spans
            out.update(telemetry_spans_exported=spans.exported, telemetry_spans_dropped=spans.dropped,
                       telemetry_spans_failed=spans.failed)
        return out

    # -- configuration ------------------------------------------------------------------------------
    def _on_activate(self, active: ActiveConfig, previous: ActiveConfig | None) -> None:
        settings = active.config.shadow.telemetry
        if previous is not None:
            if settings != self.settings:
                logger.warning("shadow gateway: telemetry settings changed; they apply after a restart")
            return
        self.settings = settings
        if settings.exporting:
            from shadow.telemetry.export import GatewayTelemetry

            self.export = GatewayTelemetry(settings, gateway_id=self.state.gateway_id or "shadow",
                                           counters=self.state.counters)
            self.state.mirror_tracer = self
            logger.info(f"shadow gateway: telemetry to {settings.endpoint} (sampling {settings.sampling:g})")

    # -- mirror copies (the gateway's MirrorTracer) ---------------------------------------------------
    def trace_copy(self, flow: http.HTTPFlow) -> tuple[str, object] | None:
        """A mirror copy of `flow` about to be sent: its own client span, child of the server span."""
        try:
            traced = self._flows.get(flow)
            if traced is None:
                return None
            ctx = traced.ctx
            span_id = new_span_id(self._rng)
            return format_traceparent(ctx.trace_id, span_id, ctx.sampled), (ctx, span_id)
        except Exception as exc:  # telemetry never fails a mirror copy: it then goes untraced
            self.errors += 1
            self._warn(f"telemetry failed ({self.errors} so far): {describe_error(exc)}")
            return None

    def copy_done(self, result: MirrorResult, traced: object) -> None:
        export = self.export
        if export is None or not isinstance(traced, tuple):
            return
        try:
            from shadow.telemetry.export import ClientCall

            ctx, span_id = traced
            req = result.request
            export.record_mirror(ctx, ClientCall(
                span_id=span_id, role=req.role, service=req.target, method=req.method,
                start_ns=result.ts_ns, end_ns=result.ts_ns + int(result.latency_ms * 1e6),
                status=result.status, error=result.error))
        except Exception as exc:
            self.errors += 1
            self._warn(f"telemetry failed ({self.errors} so far): {describe_error(exc)}")

    # -- hooks ------------------------------------------------------------------------------------------
    def flow_hooks(self, _active: ActiveConfig) -> frozenset[str]:
        """Exporting is decided at startup (settings changes apply after a restart)."""
        return frozenset({"request", "response", "error"} if self.export is not None else ())

    def request(self, flow: http.HTTPFlow) -> None:
        if self.export is None or flow.error or not flow.live:
            return
        try:
            req = flow.request
            settings = self.settings
            assert settings is not None
            # The raw header lines, not mitmproxy's multidict (≈ 6 µs of this hook's 10): same values.
            fields = req.headers.fields
            incoming = [v for k, v in fields if len(k) == 11 and k.lower() == b"traceparent"]
            ctx = continue_or_start(", ".join(v.decode("latin-1") for v in incoming) if incoming else None,
                                    settings.sampling, self._rng)
            client_span_id = 0
            route = self.state.routes.get(flow)
            if flow.response is None and route is not None and route.upstream is not None:
                client_span_id = new_span_id(self._rng)
                req.headers.fields = with_header(fields, b"traceparent", format_traceparent(
                    ctx.trace_id, client_span_id, ctx.sampled).encode("ascii"), present=bool(incoming))
            self._flows[flow] = _FlowTrace(ctx, int(req.timestamp_start * 1e9), client_span_id)
        except Exception as exc:  # telemetry never fails a request
            self.errors += 1
            self._warn(f"telemetry failed ({self.errors} so far): {describe_error(exc)}")

    def response(self, flow: http.HTTPFlow) -> None:
        if self.export is None:
            return
        self._record(flow, time.time_ns())

    def error(self, flow: http.HTTPFlow) -> None:
        if self.export is None or flow.response is not None:
            return
        self._record(flow, time.time_ns())

    # -- recording ----------------------------------------------------------------------------------------
    def _record(self, flow: http.HTTPFlow, end_ns: int) -> None:
        export, traced = self.export, self._flows.get(flow)
        if export is None or traced is None or traced.recorded:
            return
        traced.recorded = True
        try:
            from shadow.telemetry.export import ClientCall

            route = self.state.routes.get(flow)
            resp = flow.response
            status = resp.status_code if resp is not None else None
            error = flow.error.msg if flow.error is not None and resp is None else None
            client = None
            if traced.client_span_id and route is not None:
                ended = resp.timestamp_end if resp is not None and resp.timestamp_end else None
                client_end = int(ended * 1e9) if ended else end_ns
                start = int(route.sent_at * 1e9) if route.sent_at else traced.start_ns
                genai = flow.metadata.get(GENAI_SPAN_METADATA)  # a model call (addons/ai.py)
                client = ClientCall(span_id=traced.client_span_id, role="primary", service=route.service,
                                    method=flow.request.method, start_ns=start, end_ns=client_end,
                                    status=status, error=error, genai_name=genai[0] if genai else None,
                                    genai=genai[1] if genai else ())
            export.record_exchange(traced.ctx, method=flow.request.method, router=route.router if route else None,
                                   service=route.service if route else None, status=status, error=error,
                                   start_ns=traced.start_ns, end_ns=max(end_ns, traced.start_ns), client=client)
        except Exception as exc:
            self.errors += 1
            self._warn(f"telemetry failed ({self.errors} so far): {describe_error(exc)}")

    # -- lifecycle ------------------------------------------------------------------------------------
    async def running(self) -> None:
        settings = self.settings
        active = self.state.active
        if settings is None or settings.receiver_listen is None or self.receiver is not None or active is None:
            return
        from shadow.telemetry.receiver import OtlpReceiver, parse_listen

        try:
            host, port = parse_listen(settings.receiver_listen)
            receiver = OtlpReceiver(active.config.shadow.capture.dir,
                                    max_body_bytes=settings.receiver_max_body_bytes,
                                    segment_seconds=active.config.shadow.capture.segment_seconds,
                                    writer_id=self.state.gateway_id or None)
            bound = await receiver.start(host, port)
        except Exception as exc:
            logger.error(f"shadow gateway: OTLP receiver not started: {describe_error(exc)}")
            return
        self.receiver = receiver
        logger.info(f"shadow gateway: OTLP receiver on http://{host}:{bound}")

    async def done(self) -> None:
        export, self.export = self.export, None
        if export is not None:
            # Blocking flushes off the loop; the embedded receiver (same loop) keeps answering meanwhile.
            try:
                await asyncio.to_thread(export.shutdown)
            except Exception as exc:
                logger.error(f"shadow gateway: flushing telemetry failed: {describe_error(exc)}")
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            await receiver.stop()
