"""The demo services' own traces: a server span per request and a span per (simulated) database query.

Off unless the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`shadow demo --telemetry` sets it for
the services, pointing at the receiver embedded in the gateway). The server span continues the
trace of the W3C `traceparent` the gateway sends, so a service's spans join the gateway's client
span of the same call: the report can then say in which query the candidate's extra time sits, and
`shadow baseline` sees how many queries each endpoint makes (its coupling).

Handlers call `query(...)` around their data access; with tracing off it costs a no-op span.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
DB_SYSTEM = "postgresql"  # what the simulated store stands for
# Short, so a run's spans reach the receiver before the demo stops the gateway it is embedded in.
EXPORT_DELAY_MS = 200

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer = trace.NoOpTracer()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_tracing(app: web.Application, service_name: str, endpoint: str | None = None) -> bool:
    """Trace `app` when an OTLP endpoint is given (or in `OTEL_EXPORTER_OTLP_ENDPOINT`); the spans
    are flushed when the app shuts down. Returns whether tracing is on."""
    global _tracer
    endpoint = endpoint if endpoint is not None else os.environ.get(ENDPOINT_ENV, "")
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS))
    _tracer = provider.get_tracer("shadow.demo.services")

    async def flush(_app: web.Application) -> None:
        provider.shutdown()  # exports what is still queued

    app.middlewares.append(server_span)
    app.on_cleanup.append(flush)
    return True


@web.middleware
async def server_span(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A SERVER span named after the matched route, child of the caller's `traceparent`."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
    parent = _PROPAGATOR.extract(carrier=dict(request.headers))
    with _tracer.start_as_current_span(f"{request.method} {route}", context=parent, kind=SpanKind.SERVER,
                                       attributes={"http.request.method": request.method,
                                                   "http.route": route, "url.path": request.path}) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response


@contextmanager
def query(operation: str, table: str) -> Iterator[None]:
    """A CLIENT span for one database query (`db.system`, the table, the statement)."""
    with _tracer.start_as_current_span(f"{operation} {table}", kind=SpanKind.CLIENT, attributes={
            "db.system": DB_SYSTEM, "db.operation.name": operation, "db.collection.name": table,
            "db.query.text": f"{operation} {table}"}):
        yield
