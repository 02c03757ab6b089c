"""The baseline: what a capture of the monolith's traffic says before anything is extracted.

`build_baseline(capture)` reads the primary exchanges (a pass-through capture has nothing else) and,
when present, the spans, and returns a `Baseline`:

* traffic per endpoint (method + templated path): requests, share, errors, p50/p95/p99 latency;
* error clusters: (endpoint, status, error text with numbers and ids masked), with counts and an example;
* coupling from the spans: per endpoint, the median number of other services and database spans a call
  touches below the service that answered (fewer = easier to extract);
* extraction candidates, ranked by a transparent score (see `rank_candidates`) with a reason per line.

`render_html` (self-contained, figures as base64 PNG) and `render_markdown` present it.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shadow.errors import CaptureError

__all__ = ["Baseline", "Candidate", "build_baseline", "rank_candidates", "render_html", "render_markdown",
           "write_baseline"]

MAX_ENDPOINTS_IN_FIGURE = 15
MAX_CLUSTERS = 30
ERROR_TEXT_CHARS = 120
# Score weights (sum 1): how much an endpoint's traffic share, its ease (few dependencies), its health
# (few errors) and its latency (room to gain) count towards being a good first extraction.
W_TRAFFIC, W_EASE, W_HEALTH, W_LATENCY = 0.35, 0.35, 0.2, 0.1
UNKNOWN_EASE = 0.5  # no spans for the endpoint: coupling unknown, neither rewarded nor penalised

_MASKS = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
)


def error_signature(text: str | None) -> str:
    """Error text with ids and numbers masked, so "timeout after 5.0s on 10.0.0.7" and its siblings cluster."""
    if not text:
        return ""
    out = " ".join(str(text).split())[:ERROR_TEXT_CHARS * 2]
    for pattern, repl in _MASKS:
        out = pattern.sub(repl, out)
    return out[:ERROR_TEXT_CHARS]


@dataclass(frozen=True)
class Candidate:
    endpoint: str
    score: float
    traffic_share: float
    error_share: float
    p95_ms: float | None
    median_services: float | None  # None: no spans for this endpoint
    median_db_spans: float | None
    reason: str


@dataclass
class Baseline:
    capture_dir: Path
    total: int
    first_ts: Any
    last_ts: Any
    endpoints: pd.DataFrame  # endpoint, requests, share, errors, error_share, client_errors, p50, p95, p99
    clusters: pd.DataFrame  # endpoint, status, error, count, share_of_endpoint, example_request_id
    coupling: pd.DataFrame  # endpoint, calls, median_services, max_services, median_db_spans, ...
    candidates: list[Candidate] = field(default_factory=list)
    latency: dict[str, np.ndarray] = field(default_factory=dict)  # endpoint → latencies (figure)
    has_spans: bool = False


def build_baseline(capture_dir: str | Path) -> Baseline:
    """Read CAPTURE (primary rows; spans when present). CaptureError for a missing, empty or malformed
    capture, or one with no primary exchange."""
    from shadow.capture.store import open_store

    root = Path(capture_dir)
    with open_store(root) as store:
        con = store.con
        prim = "(role = 'primary' OR role IS NULL)"
        summary = con.execute(f"SELECT count(*), min(ts), max(ts) FROM exchanges WHERE {prim}").fetchone()
        assert summary is not None  # an aggregate always returns one row
        total, first_ts, last_ts = int(summary[0]), summary[1], summary[2]
        if total == 0:
            raise CaptureError(f"{root}: no primary exchanges to describe (the baseline reads what the "
                               "monolith served)")
        endpoint_expr = "coalesce(method, '?') || ' ' || coalesce(endpoint, path, '?')"
        endpoints = con.execute(f"""
            SELECT {endpoint_expr} AS endpoint, count(*) AS requests,
                   count(*) FILTER (WHERE error IS NOT NULL OR status >= 500) AS errors,
                   count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS client_errors,
                   quantile_cont(latency_ms, 0.5) AS p50, quantile_cont(latency_ms, 0.95) AS p95,
                   quantile_cont(latency_ms, 0.99) AS p99
            FROM exchanges WHERE {prim} GROUP BY 1 ORDER BY requests DESC, endpoint
        """).df()
        endpoints["share"] = endpoints["requests"] / total
        endpoints["error_share"] = endpoints["errors"] / endpoints["requests"]
        raw = con.execute(f"""
            SELECT {endpoint_expr} AS endpoint, status, error,
                   CASE WHEN error IS NULL THEN substr(try(decode(resp_body)), 1, 400) END AS body,
                   request_id
            FROM exchanges WHERE {prim} AND (error IS NOT NULL OR status >= 500)
        """).df()
        clusters = _clusters(raw, endpoints)
        lat = con.execute(f"SELECT {endpoint_expr} AS endpoint, latency_ms FROM exchanges "
                          f"WHERE {prim} AND latency_ms IS NOT NULL").df()
        latency = {str(ep): g["latency_ms"].to_numpy(dtype=float) for ep, g in lat.groupby("endpoint")}
        has_spans = "spans" in store.tables()
        coupling = pd.DataFrame()
        if has_spans:
            from analyzers.spans import endpoint_coupling

            # Coupling per method-qualified endpoint, as in the traffic table.
            con.execute(f"CREATE OR REPLACE TEMP VIEW baseline_exchanges AS SELECT * REPLACE "
                        f"({endpoint_expr} AS endpoint) FROM exchanges")
            coupling = endpoint_coupling(con, source="baseline_exchanges")
    baseline = Baseline(capture_dir=root, total=total, first_ts=first_ts, last_ts=last_ts, endpoints=endpoints,
                        clusters=clusters, coupling=coupling, latency=latency, has_spans=has_spans)
    baseline.candidates = rank_candidates(endpoints, coupling, has_spans=has_spans)
    return baseline


def _clusters(raw: pd.DataFrame, endpoints: pd.DataFrame) -> pd.DataFrame:
    cols = ["endpoint", "status", "error", "count", "share_of_endpoint", "example_request_id"]
    if raw.empty:
        return pd.DataFrame(columns=cols)
    text = [error_signature(e) if isinstance(e, str) and e else
            (error_signature(b) if isinstance(b, str) and b else "")
            for e, b in zip(raw["error"], raw["body"], strict=True)]
    status = ["—" if math.isnan(_f(s)) else str(_i(s)) for s in raw["status"]]
    frame = pd.DataFrame({"endpoint": raw["endpoint"], "status": status, "error": text,
                          "request_id": raw["request_id"]})
    grouped = (frame.groupby(["endpoint", "status", "error"], dropna=False)
               .agg(count=("request_id", "size"), example_request_id=("request_id", "first")).reset_index())
    per_endpoint = endpoints.set_index("endpoint")["requests"]
    grouped["share_of_endpoint"] = grouped["count"] / grouped["endpoint"].map(per_endpoint)
    return grouped.sort_values(["count", "endpoint"], ascending=[False, True])[cols].reset_index(drop=True)


# Endpoints that are plumbing, not features: health and readiness checks, metrics, static files.
# Extracting them moves nothing; they are listed last with score 0 and why.
_INFRASTRUCTURE = re.compile(
    r"^/(?:[\w.-]+/)*(?:health|healthz|healthcheck|ready|readyz|readiness|live|livez|liveness|ping|status|metrics|"
    r"favicon\.ico|robots\.txt)/?$|^/(?:static|assets|public|css|js|img|images|fonts)(?:/|$)|"
    r"\.(?:css|js|map|png|jpe?g|gif|svg|ico|woff2?|ttf|eot|webp)$", re.IGNORECASE)


def infrastructure_reason(endpoint: str) -> str | None:
    """Why an endpoint ("GET /health" or "/health") is no extraction candidate (a health check, a static
    file), or None."""
    path = endpoint.rsplit(" ", 1)[-1]
    if not _INFRASTRUCTURE.search(path):
        return None
    return "a static file" if re.search(r"\.\w+$|^/(?:static|assets|public|css|js|img|images|fonts)(?:/|$)",
                                        path, re.IGNORECASE) else "a health or metrics check"


def rank_candidates(endpoints: pd.DataFrame, coupling: pd.DataFrame, *, has_spans: bool = False) -> list[Candidate]:
    """Score = W_TRAFFIC·traffic + W_EASE·ease + W_HEALTH·health + W_LATENCY·latency, each in [0, 1]:

    * traffic: the endpoint's share of requests relative to the busiest endpoint (worth moving);
    * ease: 1 / (1 + median other services + median database spans per call), from the spans
      (fewer dependencies = easier to extract); UNKNOWN_EASE when the endpoint has no spans;
    * health: 1 − 10 × error share, floored at 0 (extracting an endpoint that already fails hides
      regressions in the noise; fix it first);
    * latency: p95 relative to the slowest endpoint's p95 (more room to gain).
    """
    if endpoints.empty:
        return []
    coupling_by = coupling.set_index("endpoint") if not coupling.empty else pd.DataFrame()
    max_share = float(endpoints["share"].max()) or 1.0
    p95s = pd.to_numeric(endpoints["p95"], errors="coerce")
    max_p95 = float(p95s.max()) if p95s.notna().any() else 0.0
    out: list[Candidate] = []
    for row in endpoints.itertuples(index=False):
        endpoint = str(row.endpoint)
        share, err = _f(row.share), _f(row.error_share)
        p95 = None if math.isnan(_f(row.p95)) else _f(row.p95)
        plumbing = infrastructure_reason(endpoint)
        if plumbing is not None:
            out.append(Candidate(endpoint=endpoint, score=0.0, traffic_share=share, error_share=err, p95_ms=p95,
                                 median_services=None, median_db_spans=None,
                                 reason=f"{plumbing}: nothing to extract ({share:.1%} of traffic)"))
            continue
        services = db = None
        if endpoint in coupling_by.index:
            services = _f(coupling_by.loc[endpoint, "median_services"])
            db = _f(coupling_by.loc[endpoint, "median_db_spans"])
        ease = UNKNOWN_EASE if services is None or db is None else 1.0 / (1.0 + services + db)
        health = max(0.0, 1.0 - 10.0 * err)
        latency = (p95 / max_p95) if p95 is not None and max_p95 > 0 else 0.0
        score = 100.0 * (W_TRAFFIC * share / max_share + W_EASE * ease + W_HEALTH * health + W_LATENCY * latency)
        parts = [f"{share:.1%} of traffic", f"{err:.1%} errors"]
        if p95 is not None:
            parts.append(f"p95 {p95:.0f} ms")
        if services is None or db is None:
            # With spans in the capture but none below this endpoint's calls, its upstream exports no traces.
            parts.append("coupling unknown (no spans below its calls: does the service export traces?)"
                         if has_spans else "coupling unknown (no spans)")
        else:
            parts.append(f"touches {services:g} other service(s) and {db:g} db span(s) per call (median)")
        if err >= 0.05:
            parts.append("fix its errors before extracting")
        out.append(Candidate(endpoint=endpoint, score=score, traffic_share=share, error_share=err, p95_ms=p95,
                             median_services=services, median_db_spans=db, reason="; ".join(parts)))
    out.sort(key=lambda c: (-c.score, c.endpoint))
    return out


# -- rendering --------------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figures(b: Baseline) -> dict[str, str]:
    """base64 PNGs: traffic per endpoint, latency distribution per endpoint (box plot, log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    top = b.endpoints.head(MAX_ENDPOINTS_IN_FIGURE)
    names = [str(e) for e in top["endpoint"]][::-1]
    out: dict[str, str] = {}
    height = max(2.2, 0.35 * len(names) + 1.0)
    fig, ax = plt.subplots(figsize=(9.0, height), dpi=90)
    try:
        ax.barh(names, top["requests"].to_numpy()[::-1], color="#0969da")
        errors = top["errors"].to_numpy()[::-1]
        ax.barh(names, errors, color="#cf222e", label="errors (5xx or transport)")
        ax.set_xlabel("requests")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Traffic per endpoint", fontsize=10)
        fig.tight_layout()
        out["traffic"] = _png(fig)
    finally:
        plt.close(fig)
    data = [b.latency.get(n, np.array([])) for n in names]
    data = [d[np.isfinite(d) & (d > 0)] for d in data]
    if any(len(d) for d in data):
        fig, ax = plt.subplots(figsize=(9.0, height), dpi=90)
        try:
            shown = [(n, d) for n, d in zip(names, data, strict=True) if len(d)]
            ax.boxplot([d for _, d in shown], vert=False, whis=(1, 99), showfliers=False,
                       tick_labels=[n for n, _ in shown])
            for i, (_, d) in enumerate(shown, start=1):
                for q, marker in ((0.5, "|"), (0.95, "^"), (0.99, "x")):
                    ax.plot([float(np.quantile(d, q))], [i], marker=marker, color="#bf3989", markersize=6)
            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _pos: f"{v:g}")
            # 1-2-5 ticks: latencies often span less than a decade, where powers of ten give one tick.
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("latency (ms, log scale) — box: p25–p75, whiskers p1–p99; | p50, ▲ p95, x p99")
            ax.grid(True, which="both", axis="x", alpha=0.25)
            ax.set_title("Latency per endpoint", fontsize=10)
            fig.tight_layout()
            out["latency"] = _png(fig)
        finally:
            plt.close(fig)
    return out


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
 color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #d0d7de;padding:.25rem .5rem;
 text-align:left;vertical-align:top}th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#656d76}img{max-width:100%}
"""


def _f(value: Any) -> float:
    """A float from a pandas cell (NaN for missing)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _i(value: Any) -> int:
    v = _f(value)
    return 0 if math.isnan(v) else int(v)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _ms(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v:.1f}"


def _table(headers: list[str], rows: list[list[str]], numeric: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class='n'>{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _endpoint_rows(b: Baseline) -> list[list[str]]:
    return [[str(r.endpoint), f"{_i(r.requests):,}", f"{_f(r.share):.1%}", f"{_i(r.errors):,}",
             f"{_f(r.error_share):.1%}", f"{_i(r.client_errors):,}", _ms(r.p50), _ms(r.p95), _ms(r.p99)]
            for r in b.endpoints.itertuples(index=False)]


def _cluster_rows(b: Baseline) -> list[list[str]]:
    return [[str(r.endpoint), str(r.status), str(r.error) or "—", f"{_i(r.count):,}",
             f"{_f(r.share_of_endpoint):.1%}", str(r.example_request_id)]
            for r in b.clusters.head(MAX_CLUSTERS).itertuples(index=False)]


def _coupling_text(c: Candidate) -> str:
    if c.median_services is None:
        return "—"
    return f"{c.median_services:g} svc, {c.median_db_spans:g} db"


def _period(b: Baseline) -> str:
    return f"{b.first_ts} → {b.last_ts}" if b.first_ts is not None else "—"


def render_html(b: Baseline, *, generated_at: datetime | None = None) -> str:
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    figs = figures(b)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>shadow baseline</title>"
             f"<style>{_CSS}</style></head><body><h1>shadow baseline</h1>"
             f"<p class='muted'>capture <code>{_e(b.capture_dir)}</code> · {b.total:,} primary exchanges · "
             f"{_e(_period(b))} · generated {when}</p>"]
    parts.append("<h2>Extraction candidates</h2><p class='muted'>Score (0–100) = "
                 f"{W_TRAFFIC:g}·traffic share (relative to the busiest) + {W_EASE:g}·ease (1 / (1 + other services + "
                 f"db spans per call), {UNKNOWN_EASE:g} without spans) + {W_HEALTH:g}·health (1 − 10 × error share) + "
                 f"{W_LATENCY:g}·latency (p95 relative to the slowest). Higher = a better first extraction.</p>")
    parts.append(_table(["#", "endpoint", "score", "traffic", "errors", "p95 ms", "coupling", "why"],
                        [[str(i), c.endpoint, f"{c.score:.0f}", f"{c.traffic_share:.1%}", f"{c.error_share:.1%}",
                          _ms(c.p95_ms), _coupling_text(c), c.reason]
                         for i, c in enumerate(b.candidates, start=1)], numeric=(0, 2, 3, 4, 5)))
    parts.append("<h2>Traffic and latency per endpoint</h2>")
    if "traffic" in figs:
        parts.append(f'<img alt="traffic per endpoint" src="data:image/png;base64,{figs["traffic"]}">')
    if "latency" in figs:
        parts.append(f'<img alt="latency per endpoint" src="data:image/png;base64,{figs["latency"]}">')
    parts.append(_table(["endpoint", "requests", "share", "errors", "error share", "4xx", "p50 ms", "p95 ms",
                         "p99 ms"], _endpoint_rows(b), numeric=(1, 2, 3, 4, 5, 6, 7, 8)))
    parts.append("<h2>Error clusters</h2>")
    if b.clusters.empty:
        parts.append("<p>No 5xx answers and no transport errors.</p>")
    else:
        parts.append("<p class='muted'>5xx answers and transport errors grouped by endpoint, status and error "
                     "text (numbers and ids masked; the body's start when there is no transport error).</p>")
        parts.append(_table(["endpoint", "status", "error", "count", "share of endpoint", "example request_id"],
                            _cluster_rows(b), numeric=(3, 4)))
    parts.append("<h2>Coupling seen in spans</h2>")
    if b.coupling.empty:
        why = ("The capture has spans, but none below the exchanges' own spans: the upstream services do not "
               "export their traces" if b.has_spans else "No spans in this capture (CAPTURE/spans/)")
        parts.append(f"<p class='muted'>{why}, so coupling is unknown. Export the services' traces (W3C "
                     "traceparent is propagated by the gateway) to <code>shadow otlp-receiver</code> to see it.</p>")
    else:
        parts.append(_table(["endpoint", "calls with spans", "other services (median / max)",
                             "db spans (median / max)", "services seen"],
                            [[str(r.endpoint), f"{_i(r.calls):,}",
                              f"{_f(r.median_services):g} / {_i(r.max_services)}",
                              f"{_f(r.median_db_spans):g} / {_i(r.max_db_spans)}",
                              str(r.services_seen or "—")]
                             for r in b.coupling.itertuples(index=False)], numeric=(1,)))
    parts.append("</body></html>")
    return "".join(parts)


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(b: Baseline) -> str:
    lines = ["## shadow baseline", "", f"Capture `{b.capture_dir}` · {b.total:,} primary exchanges · {_period(b)}",
             "", "### Extraction candidates", "", "| # | endpoint | score | why |", "|---|---|---|---|"]
    lines += [f"| {i} | `{_md(c.endpoint)}` | {c.score:.0f} | {_md(c.reason)} |"
              for i, c in enumerate(b.candidates, start=1)]
    lines += ["", "### Traffic per endpoint", "",
              "| endpoint | requests | share | errors | error share | 4xx | p50 ms | p95 ms | p99 ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join([f"`{_md(r[0])}`", *r[1:]]) + " |" for r in _endpoint_rows(b)]
    lines += ["", "### Error clusters", ""]
    if b.clusters.empty:
        lines.append("No 5xx answers and no transport errors.")
    else:
        lines += ["| endpoint | status | error | count | share of endpoint |", "|---|---|---|---|---|"]
        lines += [f"| `{_md(r[0])}` | {r[1]} | {_md(r[2])} | {r[3]} | {r[4]} |" for r in _cluster_rows(b)]
    if b.coupling.empty:
        lines += ["", ("No spans below the exchanges' own spans (the services export no traces)" if b.has_spans
                       else "No spans in this capture") + ": coupling is unknown."]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BaselineFiles:
    html: Path
    markdown: Path


def write_baseline(b: Baseline, out_dir: Path) -> BaselineFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = BaselineFiles(out_dir / "baseline.html", out_dir / "baseline.md")
    files.html.write_text(render_html(b), encoding="utf-8")
    files.markdown.write_text(render_markdown(b), encoding="utf-8")
    return files
