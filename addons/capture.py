"""Capture addon: every exchange the gateway serves becomes one row for shadow.capture.

Thin: it reads the flow into a `shadow.gateway.exchange.ExchangeRecord` and hands the row to the
`CaptureWriter`, which only enqueues (decoding, hashing, redaction and I/O happen on the writer's
thread). Capture never fails or delays the client: any error here is counted and logged at a
limited rate, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState, RouteContext, after_hooks
from addons.streaming import STREAMED_METADATA
from shadow.capture.settings import CaptureSettings
from shadow.gateway.exchange import (
    ANSWER_COMPLETE_METADATA,
    EXTRA_COLUMNS_METADATA,
    ExchangeRecord,
    traceparent_ids,
)
from shadow.gateway.mirror import RateLimitedLog, describe_error

logger = logging.getLogger(__name__)

COUNTERS_INTERVAL_S = 1.0


def primary_record(flow: http.HTTPFlow, route: RouteContext | None, gateway_id: str) -> ExchangeRecord:
    """The primary exchange of a flow (answered by an upstream, locally, or failed)."""
    req = flow.request
    resp = flow.response
    # `ts` and `latency_ms` start when the request leaves for the upstream (after routing), as the
    # mirror copies' do, so primary and mirror latencies compare like for like; a locally answered
    # flow starts when the client's request started.
    started = route.sent_at if route is not None and route.sent_at else req.timestamp_start
    ended = resp.timestamp_end if resp is not None else None
    if ended is None:
        ended = (flow.error.timestamp if flow.error is not None else None) or time.time()
    # The path as routed, before a server's preserved path prefix (a multi-cluster uplink's
    # /.hub/uplink/NAME): what the client asked for is what the analyzers compare.
    path, _, query = (route.path if route is not None and route.path else req.path).partition("?")
    req_fields = req.headers.fields
    # A scan of the raw fields: the multidict lookup costs a third of building the record.
    traceparent = next((v for k, v in req_fields if len(k) == 11 and k.lower() == b"traceparent"), None)
    trace_id, span_id = traceparent_ids(traceparent.decode("latin-1") if traceparent else None)
    peer = flow.client_conn.peername
    streamed = flow.metadata.get(STREAMED_METADATA)
    # Split traffic (a weighted / HRW choice): role by shadow.split.candidates, client_key = the
    # client (shadow.split.clientKey or its IP), the unit the analyzers cluster on.
    split_role = route.split_role if route is not None else None
    split_key = route.client_key if route is not None else None
    # raw_content: bytes as they travelled (possibly compressed); the writer decodes them.
    return ExchangeRecord(
        request_id=route.request_id if route else flow.id,
        role=split_role or "primary",
        mode="split" if split_role else "mirror" if route is not None and route.mirrored else "serve",
        service=route.service if route else None,
        router=route.router if route else None,
        ts_ns=int(started * 1e9),
        latency_ms=(ended - started) * 1000.0,
        method=req.method,
        url=req.url if route is not None and route.upstream else req.path,
        host=route.client_host if route else (req.host_header or ""),
        path=path,
        query=query,
        upstream=route.upstream if route else None,
        req_headers=list(req_fields),  # type: ignore[arg-type]  # bytes pairs: decoded by the writer
        req_body=req.raw_content,
        status=resp.status_code if resp is not None else None,
        resp_headers=list(resp.headers.fields) if resp is not None else [],  # type: ignore[arg-type]
        resp_body=resp.raw_content if resp is not None else None,
        error=flow.error.msg if flow.error is not None and resp is None else None,
        trace_id=trace_id,
        span_id=span_id,
        client_key=_identity_key(flow) or (split_key if split_role else peer[0] if peer else None),
        gateway=gateway_id,
        extra=flow.metadata.get(EXTRA_COLUMNS_METADATA),
        # A streamed answer (addons/streaming.py): the body is the prefix kept, the size the whole one's.
        truncated=bool(streamed is not None and streamed.truncated),
        body_size=streamed.total if streamed is not None else None,
    )


def _identity_key(flow: http.HTTPFlow) -> str | None:
    """shadow.identity.clientKeyClaim's value, set by the auth addon: the analyses cluster by user."""
    passed = flow.metadata.get("shadow.auth")
    return passed.client_key if passed is not None else None


class Capture:
    """Submits the primary row of every flow; mirror rows are submitted by the mirror addon."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.errors = 0
        self._warn = RateLimitedLog(logger.warning)
        self._last_counters = 0.0
        self._settings: CaptureSettings | None = None
        self._configured_id = ""  # the gateway id before a worker's suffix
        self._uploader: Any = None  # shadow.capture.remote.Uploader when shadow.capture.upload is set
        state.on_activate.append(self._on_activate)

    def _on_activate(self, active: ActiveConfig, previous: ActiveConfig | None) -> None:
        shadow = active.config.shadow
        if previous is None:
            # shadow.capture.writer (and with it pyarrow and numpy: ≈ 200 modules, 55 MB and a jemalloc thread)
            # is imported only when it is needed: a pass-through gateway with an id never loads it.
            if shadow.gateway_id:
                self.state.gateway_id = shadow.gateway_id
            else:
                from shadow.capture.writer import make_gateway_id

                self.state.gateway_id = make_gateway_id()
            self._configured_id = self.state.gateway_id
            if self.state.worker:  # one of `--workers N`: each worker writes its own files
                self.state.gateway_id = f"{self.state.gateway_id}-{self.state.worker}"
            self._settings = shadow.capture
            if shadow.capture.enabled:
                from shadow.capture.process import open_capture_writer

                # CaptureError (folder not writable, id in use) propagates: startup fails with one line.
                self.state.capture = open_capture_writer(shadow.capture, gateway_id=self.state.gateway_id)
                logger.info(f"shadow gateway: capturing to {shadow.capture.dir} as {self.state.gateway_id}")
                if shadow.capture.upload:
                    from shadow.capture.remote import Uploader

                    self._uploader = Uploader(shadow.capture.dir, shadow.capture.upload, self.state.gateway_id,
                                              interval=max(1.0, shadow.capture.segment_seconds))
                    logger.info(f"shadow gateway: uploading sealed segments to {shadow.capture.upload.split('?')[0]}")
        elif shadow.capture != self._settings or shadow.gateway_id not in (None, self._configured_id):
            logger.warning("shadow gateway: capture settings changed; they apply after a restart "
                           f"(still capturing to {self._settings.dir if self._settings else None})")

    def flow_hooks(self, _active: ActiveConfig) -> frozenset[str]:
        """Capture is opened (or not) at startup; settings changes apply after a restart."""
        return frozenset({"response", "error"} if self.state.capture is not None else ())

    def submit(self, record: ExchangeRecord) -> None:
        writer = self.state.capture
        if writer is None:
            return
        try:
            writer.submit(record.to_row())
        except Exception as exc:  # never let capture reach the client path
            self.errors += 1
            self._warn(f"capture failed ({self.errors} so far): {describe_error(exc)}")
        self.publish_counters()

    def publish_counters(self, *, force: bool = False) -> None:
        """Gateway counters (mirror_shed, ...) go out with the writer's stats, at most once a second."""
        writer = self.state.capture
        now = time.monotonic()
        if writer is None or (not force and now - self._last_counters < COUNTERS_INTERVAL_S):
            return
        self._last_counters = now
        try:
            writer.update_counters({**self.state.counters(), "capture_errors": self.errors})
        except Exception as exc:
            self._warn(f"publishing gateway counters failed: {describe_error(exc)}")

    def _capture_flow(self, flow: http.HTTPFlow) -> None:
        try:
            record = primary_record(flow, self.state.routes.get(flow), self.state.gateway_id)
        except Exception as exc:
            self.errors += 1
            self._warn(f"capture failed ({self.errors} so far): {describe_error(exc)}")
            return
        self.state.records[flow] = record
        self.submit(record)

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.error is not None or flow.response is None or self.state.capture is None:
            return
        after_hooks(self._capture_flow, flow)

    def error(self, flow: http.HTTPFlow) -> None:
        # An upstream that refused or timed out: the client got mitmproxy's 502, the row says why. Or a
        # streamed answer the client had whole before it hung up: captured as answered.
        if self.state.capture is None or flow not in self.state.routes:
            return
        if flow.response is not None and not flow.metadata.get(ANSWER_COMPLETE_METADATA):
            return
        after_hooks(self._capture_flow, flow)

    async def done(self) -> None:
        # Mirrors still in flight get their grace period first, so their rows are captured too.
        if self.state.dispatcher is not None:
            await self.state.dispatcher.aclose()
        writer = self.state.capture
        if writer is None:
            return
        self.publish_counters(force=True)
        self.state.capture = None
        try:
            await asyncio.to_thread(writer.close)
        except Exception as exc:
            logger.error(f"shadow gateway: closing the capture failed: {describe_error(exc)}")
        else:
            stats = writer.stats()
            logger.info(f"shadow gateway: capture sealed: {stats.sealed_rows} rows in {stats.segments} "
                        f"files, {stats.shed} shed")
        if self._uploader is not None:  # the last segments, sealed by close()
            uploader, self._uploader = self._uploader, None
            await asyncio.to_thread(uploader.close)
            logger.info(f"shadow gateway: uploaded {uploader.uploaded} segments "
                        f"({uploader.failures} failed rounds; a failed segment stays in {uploader.local_root})")
