"""Spans joined to exchanges: where, inside an upstream call, the time goes.

Every captured exchange carries the trace id and the span id of the call that produced it (the
gateway's client span, or the caller's span for replays). The upstream's own spans hang under that
span, so an exchange's spans are the descendants of its `span_id` in its trace — which keeps the
primary's and the candidate's spans apart even when a mirror copy shares the primary's trace.

`call_span_times` (DuckDB, recursive) sums each call's descendant spans' self times per span name;
`span_attribution` (pandas) compares, per endpoint whose candidate median latency is above the
primary's, the per-call median time of each span name, primary against candidate, largest delta first.
`endpoint_coupling` (DuckDB) counts the other services and database spans below each call. Both walk
the same span tree (`_span_tree`), where duplicate spans (an exporter retry) are counted once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

__all__ = ["EndpointAttribution", "call_span_times", "endpoint_coupling", "has_spans", "span_attribution"]

MAX_DEPTH = 32  # deeper span trees are cut (cycles in bad data must not loop forever)
# The upstream's own entry span (the direct child of the exchange's span) is named differently by each
# service ("GET /orders" in the monolith, "orders.handle" in the new service): compared under one name.
ENTRY_SPAN = "(upstream entry span)"


@dataclass(frozen=True)
class EndpointAttribution:
    endpoint: str
    candidate: str | None  # candidate service
    primary_median_ms: float
    candidate_median_ms: float
    calls_with_spans: tuple[int, int]  # (primary, candidate) calls that had spans
    # columns: span, services, primary_ms, candidate_ms, delta_ms, primary_calls, candidate_calls
    spans: pd.DataFrame

    @property
    def delta_ms(self) -> float:
        return self.candidate_median_ms - self.primary_median_ms


def has_spans(con: duckdb.DuckDBPyConnection) -> bool:
    try:
        return bool(con.execute("SELECT count(*) > 0 FROM spans").fetchone()[0])  # type: ignore[index]
    except duckdb.Error:
        return False


def _span_tree(source: str, roles: tuple[str, ...]) -> str:
    """The shared start of the span queries, a `WITH RECURSIVE` clause that a query continues:

    - `calls`: the exchanges of `roles` in the view `source` that carry a trace id and a span id;
    - `sp`: each span once (an exporter retry's duplicate dropped), with `self_ms`, its duration minus
      its children's, floored at 0, and `is_db`, whether it has a `db.system` (or legacy `db.type`)
      attribute;
    - `tree`: one row per (call, descendant span), down to MAX_DEPTH, with the span's name, service,
      self_ms, is_db, its depth below the call (1: the upstream's entry span) and that entry span's
      service (`entry_service`)."""
    role_list = ", ".join("'" + r.replace("'", "''") + "'" for r in roles)
    return f"""
    WITH RECURSIVE
    calls AS (
        SELECT exchange_id, endpoint, role, service, trace_id, span_id
        FROM {source}
        WHERE trace_id IS NOT NULL AND span_id IS NOT NULL AND role IN ({role_list})
    ),
    spans_once AS (
        SELECT trace_id, span_id, any_value(parent_span_id) AS parent_span_id, any_value(name) AS name,
               any_value(service_name) AS service_name, any_value(duration_ms) AS duration_ms,
               bool_or(attributes LIKE '%"db.system"%' OR attributes LIKE '%"db.type"%') AS is_db
        FROM spans GROUP BY trace_id, span_id
    ),
    kids AS (
        SELECT trace_id, parent_span_id AS span_id, sum(duration_ms) AS child_ms
        FROM spans_once WHERE parent_span_id IS NOT NULL GROUP BY ALL
    ),
    sp AS (
        SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.service_name, s.is_db,
               greatest(s.duration_ms - coalesce(kids.child_ms, 0), 0) AS self_ms
        FROM spans_once s LEFT JOIN kids ON kids.trace_id = s.trace_id AND kids.span_id = s.span_id
    ),
    tree(exchange_id, trace_id, span_id, name, service_name, self_ms, is_db, entry_service, depth) AS (
        SELECT c.exchange_id, s.trace_id, s.span_id, s.name, s.service_name, s.self_ms, s.is_db, s.service_name, 1
        FROM calls c JOIN sp s ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id
        UNION ALL
        SELECT t.exchange_id, s.trace_id, s.span_id, s.name, s.service_name, s.self_ms, s.is_db, t.entry_service,
               t.depth + 1
        FROM tree t JOIN sp s ON s.trace_id = t.trace_id AND s.parent_span_id = t.span_id
        WHERE t.depth < {MAX_DEPTH}
    )"""


def call_span_times(con: duckdb.DuckDBPyConnection, roles: tuple[str, ...] = ("primary", "candidate")) -> pd.DataFrame:
    """One row per (exchange, span name): endpoint, role, service (of the exchange), exchange_id,
    span, services (that emitted it), total_ms, n.

    Times are *self* times (a span's duration minus its children's, floored at 0), so the time of a
    call is counted once, in the span where it was spent: summed over the call's spans they make the
    upstream entry span's duration, and a slow database call shows under its own name, not also under
    every span that waited for it."""
    query = _span_tree("exchanges", roles) + f"""
    SELECT c.endpoint, c.role, c.service, c.exchange_id,
           CASE WHEN t.depth = 1 THEN '{ENTRY_SPAN}' ELSE t.name END AS span,
           string_agg(DISTINCT t.service_name, ', ') AS services,
           sum(t.self_ms) AS total_ms, count(*) AS n
    FROM tree t JOIN calls c USING (exchange_id)
    GROUP BY ALL
    """
    return con.execute(query).df()


def _median_latency(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute("""
        SELECT endpoint, role, service, median(latency_ms) AS median_ms
        FROM exchanges WHERE role IN ('primary', 'candidate') AND latency_ms IS NOT NULL
        GROUP BY ALL
    """).df()


def span_attribution(con: duckdb.DuckDBPyConnection, *, min_delta_ms: float = 0.0,
                     top: int = 10) -> list[EndpointAttribution]:
    """For each endpoint (× candidate service) whose candidate median latency exceeds the primary's by more
    than `min_delta_ms` and whose calls have spans: the `top` span names by median-time delta."""
    if not has_spans(con):
        return []
    times = call_span_times(con)
    if times.empty:
        return []
    latency = _median_latency(con)
    out: list[EndpointAttribution] = []
    primary_lat: dict[str, float] = {
        str(ep): float(ms) for ep, ms in latency[latency["role"] == "primary"].groupby("endpoint")["median_ms"]
        .median().items()}
    for row in latency[latency["role"] == "candidate"].itertuples(index=False):
        endpoint = str(row.endpoint)
        candidate = row.service if isinstance(row.service, str) else None
        if endpoint not in primary_lat:
            continue
        p_ms, c_ms = primary_lat[endpoint], float(row.median_ms)  # type: ignore[arg-type]
        if c_ms - p_ms <= min_delta_ms:
            continue
        ep_times = times[times["endpoint"] == endpoint]
        p_times = ep_times[ep_times["role"] == "primary"]
        c_times = ep_times[(ep_times["role"] == "candidate") & (ep_times["service"] == candidate)]
        if p_times.empty and c_times.empty:
            continue
        table = _compare(p_times, c_times).head(top)
        out.append(EndpointAttribution(
            endpoint=endpoint, candidate=candidate, primary_median_ms=p_ms, candidate_median_ms=c_ms,
            calls_with_spans=(int(p_times["exchange_id"].nunique()), int(c_times["exchange_id"].nunique())),
            spans=table))
    out.sort(key=lambda a: -a.delta_ms)
    return out


def _side(times: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Per span name: the median over this side's calls of the time spent in it (0 for a call that had no
    such span: a span present in few calls must not look as slow as where it appears), the calls that
    had it, and the services that emitted it."""
    per_call = times.pivot_table(index="exchange_id", columns="span", values="total_ms", aggfunc="sum",
                                 fill_value=0.0)
    services = times.groupby("span")["services"].agg(lambda s: ", ".join(sorted({x for v in s for x in str(v).split(", ")})))
    return pd.DataFrame({
        f"{prefix}_ms": per_call.median(axis=0),
        f"{prefix}_calls": times.groupby("span")["exchange_id"].nunique(),
        f"{prefix}_services": services,
    })


def _compare(p_times: pd.DataFrame, c_times: pd.DataFrame) -> pd.DataFrame:
    p = _side(p_times, "primary") if not p_times.empty else pd.DataFrame(
        columns=["primary_ms", "primary_calls", "primary_services"])
    c = _side(c_times, "candidate") if not c_times.empty else pd.DataFrame(
        columns=["candidate_ms", "candidate_calls", "candidate_services"])
    table = p.join(c, how="outer")
    for col in ("primary_ms", "candidate_ms"):
        table[col] = pd.to_numeric(table[col], errors="coerce").fillna(0.0)
    for col in ("primary_calls", "candidate_calls"):
        table[col] = pd.to_numeric(table[col], errors="coerce").fillna(0).astype(int)
    table["services"] = [
        ", ".join(sorted({s for s in (str(a or ""), str(b or "")) for s in s.split(", ") if s and s != "nan"}))
        for a, b in zip(table["primary_services"], table["candidate_services"], strict=True)]
    table["delta_ms"] = table["candidate_ms"] - table["primary_ms"]
    table = table.reset_index(names="span").sort_values("delta_ms", ascending=False, key=lambda s: s.abs())
    return table[["span", "services", "primary_ms", "candidate_ms", "delta_ms", "primary_calls",
                  "candidate_calls"]].reset_index(drop=True)


def attribution_to_json(items: list[EndpointAttribution]) -> list[dict[str, Any]]:
    return [{"endpoint": a.endpoint, "candidate": a.candidate, "primary_median_ms": a.primary_median_ms,
             "candidate_median_ms": a.candidate_median_ms, "spans": a.spans.to_dict(orient="records")}
            for a in items]


def endpoint_coupling(con: duckdb.DuckDBPyConnection, role: str = "primary", *,
                      source: str = "exchanges") -> pd.DataFrame:
    """Per endpoint, what its calls touch below the service that answered (from the spans): calls with
    spans, the median and max number of distinct other services (database spans not counted: they are
    counted as database spans) and of database spans per call, and every service seen. A database span is one with a `db.system` (or legacy `db.type`) attribute.
    `source`: the view holding the exchanges (e.g. one whose `endpoint` is method-qualified)."""
    if not has_spans(con):
        return pd.DataFrame(columns=["endpoint", "calls", "median_services", "max_services", "median_db_spans",
                                     "max_db_spans", "services_seen"])
    query = _span_tree(source, (role,)) + """,
    per_call AS (
        SELECT exchange_id,
               count(DISTINCT service_name) FILTER (WHERE service_name IS DISTINCT FROM entry_service
                                                    AND NOT is_db) AS services,
               count(*) FILTER (WHERE is_db) AS db_spans,
               list(DISTINCT service_name) FILTER (WHERE service_name IS DISTINCT FROM entry_service) AS names
        FROM tree GROUP BY exchange_id
    )
    SELECT c.endpoint, count(*) AS calls,
           median(p.services) AS median_services, max(p.services) AS max_services,
           median(p.db_spans) AS median_db_spans, max(p.db_spans) AS max_db_spans,
           array_to_string(list_sort(list_distinct(flatten(list(p.names)))), ', ') AS services_seen
    FROM per_call p JOIN calls c USING (exchange_id)
    GROUP BY c.endpoint
    """
    return con.execute(query).df()
