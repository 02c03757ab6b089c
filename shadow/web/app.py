"""The live view's web application (Starlette, Jinja2 templates, htmx vendored under static/).

    GET /                       the verdict, every endpoint with its class and the n still needed
    GET /endpoint?e=…&c=…       one endpoint: every guardrail, failing fields (real / noise, evidence),
                                latency distributions
    GET /field?id=…             one differing field: the rule that accepts it, example requests side by side
    GET /routers                the running gateway's router table (with --config / the gateway option)
    GET /api/state              the verdict and per-endpoint counts as JSON
    GET /fragment/…             the parts of the pages that htmx re-fetches every few seconds

Nothing here computes: pages read `LiveAnalysis.snapshot` (shadow/web/live.py) and the views in
shadow/web/views.py; every value from traffic reaches the page through Jinja2's autoescaping (or,
for the pair view, shadow.notebook's escaping renderer).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from analyzers.report import CLASS_COLOUR, field_label, floor_note, format_interval, format_value
from shadow.errors import ShadowError
from shadow.web.live import LiveAnalysis, Snapshot
from shadow.web.views import endpoint_view, endpoint_views, field_by_anchor, sample_for, verdict_state

STATIC = Path(__file__).with_name("static")
EXAMPLES_SHOWN = 3


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("shadow.web", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["value"] = lambda v, unit=None: format_value(v, unit)
    env.filters["interval"] = lambda v, unit=None: format_interval(v, unit)
    env.filters["count"] = lambda v: "—" if v is None else f"{int(v):,}"
    env.filters["pct"] = lambda v: f"{100 * float(v):.1f} %"
    env.filters["clock"] = lambda t: datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S UTC")
    env.filters["field_label"] = field_label
    env.globals["colour"] = lambda cls: CLASS_COLOUR.get(str(cls), "#6e7781")
    env.globals["floor_note"] = floor_note
    return env


class LiveView:
    """The pages over one LiveAnalysis; `config_file` (a gateway config) adds the router table."""

    def __init__(self, live: LiveAnalysis, *, config_file: Path | None = None, title: str | None = None) -> None:
        self.live = live
        self.config_file = config_file
        self.title = title or str(live.capture)
        self.env = _environment()

    # -- rendering ---------------------------------------------------------------------------------

    def render(self, template: str, **context: Any) -> HTMLResponse:
        snap = self.live.snapshot
        page = self.env.get_template(template).render(
            title=self.title, snap=snap, result=snap.result if snap else None, has_routers=self.config_file is not None,
            refresh_ms=max(500, int(self.live.interval * 1000)), capture=str(self.live.capture), **context)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    # -- pages -------------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        fragment = request.url.path.startswith("/fragment/")
        snap = self.live.snapshot
        views = endpoint_views(snap.result) if snap and snap.result else []
        return self.render("_overview.html" if fragment else "overview.html", endpoints=views)

    async def endpoint(self, request: Request) -> Response:
        fragment = request.url.path.startswith("/fragment/")
        endpoint, candidate = request.query_params.get("e", ""), request.query_params.get("c") or None
        snap = self.live.snapshot
        view = endpoint_view(snap.result, endpoint, candidate) if snap and snap.result else None
        return self.render("_endpoint.html" if fragment else "endpoint.html", view=view, endpoint=endpoint,
                           candidate=candidate or "", stamp=int(snap.computed_at) if snap else 0)

    async def field(self, request: Request) -> Response:
        anchor = request.query_params.get("id", "")
        snap = self.live.snapshot
        found = field_by_anchor(snap.result, anchor) if snap and snap.result else None
        examples: list[tuple[str, Markup | None, str | None]] = []
        if found is not None:
            ids = list(dict.fromkeys(e.request_id for e in found.examples))[:EXAMPLES_SHOWN]
            examples = await asyncio.to_thread(self._pairs, ids, found.c_service or None)
        return self.render("field.html", field=found, anchor=anchor, examples=examples)

    def _pairs(self, request_ids: list[str], candidate: str | None) -> list[tuple[str, Markup | None, str | None]]:
        """(request id, the notebook's side-by-side view, or why it cannot be shown) per example."""
        from shadow.notebook import open_capture

        out: list[tuple[str, Markup | None, str | None]] = []
        with self.live.lock:
            try:
                cap = open_capture(self.live.capture, policy=self.live.policy_file, progress=False)
            except ShadowError as exc:
                return [(rid, None, exc.format_message()) for rid in request_ids]
            with cap:
                for rid in request_ids:
                    try:
                        # The pair view escapes every value from traffic itself (shadow/notebook.py).
                        out.append((rid, Markup(cap.pair(rid, candidate=candidate).to_html()), None))
                    except ShadowError as exc:
                        out.append((rid, None, exc.format_message()))
        return out

    async def routers(self, request: Request) -> Response:
        fragment = request.url.path.startswith("/fragment/")
        rows: list[Any] = []
        error: str | None = None
        summary: str | None = None
        if self.config_file is None:
            error = "no gateway configuration given (shadow serve --config FILE, or shadow gateway --live-view)"
        else:
            try:
                rows, summary = await asyncio.to_thread(self._router_rows)
            except ShadowError as exc:
                error = exc.format_message()
        return self.render("_routers.html" if fragment else "routers.html", rows=rows, error=error,
                           summary=summary, config_file=str(self.config_file or ""))

    def _router_rows(self) -> tuple[list[Any], str]:
        from shadow.gateway.table import router_table
        from shadow.gatewayapi.provider import load_gateway_config

        assert self.config_file is not None
        config = load_gateway_config(self.config_file)  # the file as the gateway reloads it
        return router_table(config), config.summary()

    async def latency_png(self, request: Request) -> Response:
        from analyzers.report import finite_positive, latency_plot_png

        snap = self.live.snapshot
        endpoint, candidate = request.query_params.get("e", ""), request.query_params.get("c") or None
        sample = sample_for(snap.result, endpoint, candidate) if snap and snap.result else None
        if sample is None:
            return Response("no such endpoint in the current analysis\n", status_code=404, media_type="text/plain")
        name = f"{endpoint} → {candidate}" if candidate else endpoint
        png = await asyncio.to_thread(latency_plot_png, finite_positive(sample.primary_latency_ms),
                                      finite_positive(sample.candidate_latency_ms), name)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def state(self, request: Request) -> Response:
        snap = self.live.snapshot
        return JSONResponse(state_document(snap), headers={"Cache-Control": "no-store"})


def state_document(snap: Snapshot | None) -> dict[str, Any]:
    if snap is None:
        return {"analysed": False, "exchanges": 0, "pairs": 0, "analyses": 0, "error": None,
                **verdict_state(None)}
    return {"analysed": True, "exchanges": snap.counts.exchanges, "pairs": snap.counts.pairs,
            "analyses": snap.analyses, "computed_at": snap.computed_at,
            "age_seconds": round(time.time() - snap.computed_at, 1), "error": snap.error,
            **verdict_state(snap.result)}


def create_app(live: LiveAnalysis, *, config_file: Path | None = None, title: str | None = None) -> Starlette:
    view = LiveView(live, config_file=config_file, title=title)
    routes = [
        Route("/", view.overview),
        Route("/fragment/overview", view.overview),
        Route("/endpoint", view.endpoint),
        Route("/fragment/endpoint", view.endpoint),
        Route("/field", view.field),
        Route("/routers", view.routers),
        Route("/fragment/routers", view.routers),
        Route("/latency.png", view.latency_png),
        Route("/api/state", view.state),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
