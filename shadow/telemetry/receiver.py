"""An OTLP/HTTP receiver that writes spans (and metric points) into a capture folder.

`OtlpReceiver(capture_dir)` serves ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs`` with
aiohttp: protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``), gzip/deflate or
plain, answered in the request's content type. Spans go through `shadow.capture.writer.CaptureWriter`
(table ``spans``, schema `shadow.capture.schema.SPANS`), so they land crash-safely under ``CAPTURE/spans/``
and the store's ``spans`` view sees them; metric data points go to ``CAPTURE/metrics/``; log records
are counted (``capture_stats``), not stored.

Answers: 200 with an Export*ServiceResponse (``partial_success`` with ``rejected_spans`` and an
``error_message`` when some spans were malformed), 400 for a body that cannot be decoded, 413 for a
body (or what it inflates to) beyond `max_body_bytes`, 415 for another content type, 503 when the
capture queue is full (retryable per OTLP), and 503 with `Retry-After` when the bodies being read
and decoded at once would pass `max_decoding_bytes` (each request reserves its declared size, or
`max_body_bytes` when unknown, plus `max_body_bytes` more when compressed; the body of a request
turned away is never read into memory). Duplicated (trace_id, span_id) within the last
`SeenSpans.capacity` spans are dropped and counted.

Run it standalone (`shadow otlp-receiver`) or embedded in the gateway's event loop (`start`/`stop`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from shadow.capture.schema import METRICS, SPANS
from shadow.capture.settings import CaptureSettings
from shadow.capture.writer import CaptureWriter
from shadow.errors import ShadowError
from shadow.telemetry.otlp_decode import (
    BodyTooLarge,
    PayloadError,
    SeenSpans,
    decode_body,
    is_json,
    log_record_count,
    metric_rows,
    parse_logs,
    parse_metrics,
    parse_traces,
    span_rows,
)

__all__ = ["DEFAULT_LISTEN", "DEFAULT_MAX_BODY_BYTES", "OtlpReceiver", "ReceiverCounters", "parse_listen"]

log = logging.getLogger("shadow.telemetry")

DEFAULT_LISTEN = "127.0.0.1:4318"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Bytes being read and decoded at once, by default; 150 concurrent 8 MB posts took an unbounded
# receiver to 1.08 GB (issue 17).
DEFAULT_MAX_DECODING_BYTES = 4 * DEFAULT_MAX_BODY_BYTES
RETRY_AFTER_S = 1
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT, or :PORT for all interfaces) → (host, port); ShadowError otherwise."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ShadowError(f"listen address {text!r} must be HOST:PORT (e.g. {DEFAULT_LISTEN})")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


@dataclass
class ReceiverCounters:
    trace_requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    spans_duplicate: int = 0
    metric_requests: int = 0
    metric_points: int = 0
    log_requests: int = 0
    log_records: int = 0
    bad_requests: int = 0  # 400 and 415
    too_large: int = 0  # 413
    shed: int = 0  # rows the capture queue refused (answered 503)
    busy: int = 0  # requests turned away unread: max_decoding_bytes were being decoded (503 + Retry-After)

    def as_dict(self) -> dict[str, int]:
        return {f"otlp_{k}": v for k, v in self.__dict__.items()}


class OtlpReceiver:
    """The receiver's state and aiohttp application. Use from one event loop."""

    def __init__(self, capture_dir: str | Path, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 segment_seconds: float = 10.0, writer_id: str | None = None,
                 store_metrics: bool = True, dedupe_capacity: int = 200_000,
                 max_queue: int = CaptureSettings().max_queue, max_decoding_bytes: int | None = None) -> None:
        self.capture_dir = Path(capture_dir)
        self.max_body_bytes = max_body_bytes
        # Default: as many bodies of the largest size as DEFAULT_MAX_DECODING_BYTES holds of the default size.
        self.max_decoding_bytes = (max_decoding_bytes if max_decoding_bytes is not None
                                   else 4 * max_body_bytes)
        self.decoding_bytes = 0  # reserved by the requests being read and decoded now
        settings = replace(CaptureSettings(), dir=self.capture_dir, segment_seconds=segment_seconds,
                           max_queue=max_queue)
        self.spans = CaptureWriter(settings, table="spans", schema=SPANS, gateway_id=writer_id)
        self.metrics = (CaptureWriter(settings, table="metrics", schema=METRICS, gateway_id=self.spans.gateway_id)
                        if store_metrics else None)
        self.seen = SeenSpans(dedupe_capacity)
        self.counters = ReceiverCounters()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- the application -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        # client_max_size bounds what aiohttp reads; decode_body bounds what a compressed body inflates to.
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[_rejections, self._bounded])
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        app.router.add_post("/v1/logs", self._logs)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 4318) -> int:
        """Listen on host:port (0: any free port); returns the port."""
        # auto_decompress=False: the body is inflated by decode_body, within the size limit.
        runner = web.AppRunner(self.app(), access_log=None, auto_decompress=False, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise ShadowError(f"OTLP receiver cannot listen on {host}:{port}: {e.strerror or e}") from None
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("OTLP receiver listening on http://%s:%s, writing to %s", host, self.port, self.capture_dir)
        return self.port

    async def stop(self) -> None:
        """Stop listening, then seal what was received (off the loop)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.to_thread(self.close_writers)

    def close_writers(self) -> None:
        for writer in (self.spans, self.metrics):
            if writer is not None:
                writer.update_counters(self.counters.as_dict())
                writer.close()

    # -- handlers ---------------------------------------------------------------------------------------
    def _reservation(self, request: web.Request) -> int:
        """The bytes a request may hold while it is read and decoded (see the module docstring)."""
        declared = request.content_length
        size = min(declared, self.max_body_bytes) if declared is not None else self.max_body_bytes
        coding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
        return size + (self.max_body_bytes if coding != "identity" else 0)

    @web.middleware
    async def _bounded(self, request: web.Request, handler: Any) -> web.StreamResponse:
        reserved = self._reservation(request)
        if self.decoding_bytes and self.decoding_bytes + reserved > self.max_decoding_bytes:
            # Turned away before its body is read (a lone request always passes: its size is bounded
            # by max_body_bytes). 503 + Retry-After is OTLP's "retry later".
            self.counters.busy += 1
            response = _text_response(503, f"receiver busy: {self.decoding_bytes} bytes being decoded, "
                                           f"retry later", is_json(request.headers.get("Content-Type", "")))
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            response.force_close()  # the unread body is not drained into memory: the connection ends
            return response
        self.decoding_bytes += reserved
        try:
            result: web.StreamResponse = await handler(request)
            return result
        finally:
            self.decoding_bytes -= reserved

    async def _body(self, request: web.Request) -> tuple[bytes, bool]:
        content_type = request.headers.get("Content-Type", "")
        json = is_json(content_type)
        if not json and "protobuf" not in content_type.lower():
            self.counters.bad_requests += 1
            raise _answer(415, f"unsupported Content-Type {content_type!r} "
                               f"(use {PROTOBUF} or {JSON})", json=False)
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            self.counters.too_large += 1
            raise _answer(413, f"body of {declared} bytes exceeds the limit of {self.max_body_bytes}", json=json)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.counters.too_large += 1
            raise _answer(413, f"body exceeds the limit of {self.max_body_bytes} bytes", json=json) from None
        try:
            return decode_body(raw, request.headers.get("Content-Encoding"), self.max_body_bytes), json
        except BodyTooLarge as e:
            self.counters.too_large += 1
            raise _answer(413, str(e), json=json) from None
        except PayloadError as e:
            self.counters.bad_requests += 1
            raise _answer(400, str(e), json=json) from None

    def _parsed[T](self, parse: Callable[..., T], body: bytes, json: bool) -> T:
        try:
            return parse(body, json=json)
        except PayloadError as e:
            self.counters.bad_requests += 1
            raise _answer(400, str(e), json=json) from None

    async def _traces(self, request: web.Request) -> web.Response:
        body, json = await self._body(request)
        export = self._parsed(parse_traces, body, json)
        self.counters.trace_requests += 1
        batch = span_rows(export, time.time_ns(), self.seen)
        for i, row in enumerate(batch.rows):
            if not self.spans.submit(row):
                # The queue is full: tell the exporter to retry (503 is retryable in OTLP). Rows already
                # submitted are deduplicated when the retry arrives; the refused ones must be forgettable.
                self.counters.shed += len(batch.rows) - i
                for later in batch.rows[i:]:
                    self.seen.discard((later["trace_id"], later["span_id"]))
                return _text_response(503, "capture queue full, retry later", json)
        self.counters.spans_accepted += len(batch.rows)
        self.counters.spans_rejected += batch.rejected
        self.counters.spans_duplicate += batch.duplicates
        self._publish()
        response = ExportTraceServiceResponse()
        if batch.rejected:
            response.partial_success.rejected_spans = batch.rejected
            response.partial_success.error_message = batch.error_message
        return _message_response(response, json)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, json = await self._body(request)
        export = self._parsed(parse_metrics, body, json)
        self.counters.metric_requests += 1
        if self.metrics is not None:
            for row in metric_rows(export):
                if self.metrics.submit(row):
                    self.counters.metric_points += 1
                else:
                    self.counters.shed += 1
        self._publish()
        return _message_response(ExportMetricsServiceResponse(), json)

    async def _logs(self, request: web.Request) -> web.Response:
        body, json = await self._body(request)
        export = self._parsed(parse_logs, body, json)
        self.counters.log_requests += 1
        self.counters.log_records += log_record_count(export)
        self._publish()
        return _message_response(ExportLogsServiceResponse(), json)

    def _publish(self) -> None:
        self.spans.update_counters(self.counters.as_dict())


def _message_response(message: Message, json: bool) -> web.Response:
    if json:
        return web.Response(body=json_format.MessageToJson(message).encode(), content_type=JSON)
    return web.Response(body=message.SerializeToString(), content_type=PROTOBUF)


def _text_response(status: int, message: str, json: bool) -> web.Response:
    """An error answer: a google.rpc.Status-shaped body in the request's type (JSON) or plain text."""
    if json:
        import orjson

        return web.Response(status=status, body=orjson.dumps({"code": status, "message": message}),
                            content_type=JSON)
    return web.Response(status=status, text=message + "\n")


class _Rejected(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _answer(status: int, message: str, *, json: bool) -> _Rejected:
    return _Rejected(_text_response(status, message, json))


@web.middleware
async def _rejections(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _Rejected as r:
        return r.response
    return response
