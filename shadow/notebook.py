"""The notebook API: one object over a capture, with DuckDB relations, pandas frames and HTML views.

    import shadow
    cap = shadow.open("data/demo-capture")
    cap.exchanges                      # a DuckDB relation (lazy); cap.exchanges_df() is a pandas frame
    cap.top_fields(5)                  # most frequent differing fields per endpoint, real and noise apart
    cap.pair(request_id)               # one request side by side, its differences highlighted
    cap.verdict()                      # the cutover verdict as a table

`diffs` (and `diffs_summary`, `diffs_fields`) are computed on first use when the capture has none
yet (analyzers/diffs_table.py writes them into CAPTURE/, as `shadow report` does). Every value that
came from traffic is HTML-escaped before it reaches a notebook cell: bodies and headers are
untrusted input.
"""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shadow.capture.store import Store, open_store
from shadow.errors import CaptureError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from analyzers.pipeline import AnalysisResult

__all__ = ["Capture", "PairView", "VerdictTable", "open_capture"]

DIFF_TABLES = ("diffs", "diffs_summary", "diffs_fields")
MAX_BODY_CHARS = 40_000  # a body shown in a cell is cut here (the frames keep it whole)
ROLE_PREFIXES = (("primary", "p_"), ("candidate", "c_"), ("secondary", "s_"))
CLASS_COLOUR = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700", "INSUFFICIENT_DATA": "#6e7781"}

_STYLE = """<style>
.shadow-nb table{border-collapse:collapse;font-size:12px}
.shadow-nb th,.shadow-nb td{border:1px solid #d0d7de;padding:2px 6px;text-align:left;vertical-align:top}
.shadow-nb pre{margin:0;font-size:11px;line-height:1.35;white-space:pre-wrap;word-break:break-all}
.shadow-nb .sd-real{background:#ffd8d3;outline:1px solid #cf222e}
.shadow-nb .sd-noise{background:#eaeef2;color:#57606a;text-decoration:underline dotted}
.shadow-nb .sd-badge{color:#fff;padding:1px 6px;border-radius:3px;font-weight:600}
</style>"""


def _e(value: Any) -> str:
    """HTML-escaped text of any value ('' for None): quotes too, so it is safe in attributes."""
    return "" if value is None else html.escape(str(value), quote=True)


def _badge(cls: str) -> str:
    return f'<span class="sd-badge" style="background:{CLASS_COLOUR.get(cls, "#6e7781")}">{_e(cls)}</span>'


# ---------------------------------------------------------------------------------------------------
# One pair, side by side


@dataclass(frozen=True)
class Mark:
    """How a pointer is highlighted on one side: real difference or noise, and why (a tooltip)."""

    noise: bool
    title: str


def _mark_span(mark: Mark | None, inner: str) -> str:
    if mark is None:
        return inner
    cls = "sd-noise" if mark.noise else "sd-real"
    return f'<span class="{cls}" title="{_e(mark.title)}">{inner}</span>'


def _token(key: str) -> str:
    """RFC 6901 escaping of one reference token (the diff engine's pointers use it)."""
    return key.replace("~", "~0").replace("/", "~1")


def render_json_html(value: Any, marks: Mapping[str, Mark], pointer: str = "", indent: int = 0) -> str:
    """`value` pretty-printed as escaped HTML (for a <pre>), each node whose JSON pointer is in
    `marks` wrapped in a highlighting span (the key with it)."""
    import orjson

    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = []
        for key, child in value.items():
            ptr = f"{pointer}/{_token(str(key))}"
            text = f"{_e(orjson.dumps(str(key)).decode())}: {render_json_html(child, marks, ptr, indent + 1)}"
            items.append(pad + _mark_span(marks.get(ptr), text))
        body = "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    elif isinstance(value, list) and value:
        items = []
        for i, child in enumerate(value):
            ptr = f"{pointer}/{i}"
            items.append(pad + _mark_span(marks.get(ptr), render_json_html(child, marks, ptr, indent + 1)))
        body = "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    else:
        body = _e(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode())
    return _mark_span(marks.get(pointer), body) if indent == 0 else body


def render_body_html(body: bytes | None, content_type: str | None, marks: Mapping[str, Mark]) -> str:
    """A response body for a cell: JSON pretty-printed with its differing pointers highlighted;
    anything else as (escaped, clipped) text, highlighted whole when the body as a whole differs."""
    import orjson

    if body is None:
        return "<em>no body</em>"
    if not body:
        return "<em>empty body</em>"
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", errors="replace")
        clipped = text[:MAX_BODY_CHARS] + (f"\n… (+{len(text) - MAX_BODY_CHARS:,} chars)" if len(text) > MAX_BODY_CHARS else "")
        whole = marks.get("") or next(iter(marks.values()), None)
        return f"<pre>{_mark_span(whole, _e(clipped))}</pre>"
    return f"<pre>{render_json_html(value, marks)}</pre>"


def _header_map(headers: Sequence[Any] | None) -> dict[str, str]:
    from analyzers.diff import header_map

    return header_map(headers or ())


def _renamed_pointer(new: str | None) -> str | None:
    """A `renamed` difference's new key pointer (its `new` is the pointer as a JSON string)."""
    try:
        value = json.loads(new) if new else None
    except ValueError:
        return None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class PairView:
    """One request as every role answered it, with the differences the diff engine found.

    `diffs` holds the primary-vs-candidate rows of the `diffs` table (noise flagged, never dropped);
    `secondary_diffs` the primary-vs-secondary differences computed here, which show what changes
    on every call even with the primary's own code (why those fields count as noise)."""

    request_id: str
    endpoint: str
    method: str
    url: str
    sides: dict[str, dict[str, Any]]  # role → status, latency_ms, error, headers, body, content_type, service
    diffs: list[dict[str, Any]] = field(default_factory=list)
    secondary_diffs: list[dict[str, Any]] = field(default_factory=list)
    compared: bool = True  # False: the diff run predates this pair (sealed since): cap.compute_diffs()
    request_headers: Sequence[Any] = ()  # the client's request as captured (secrets redacted)
    request_body: bytes | None = None

    @property
    def roles(self) -> list[str]:
        return [role for role, _ in ROLE_PREFIXES if role in self.sides]

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.diffs, columns=["kind", "op", "pointer", "pointer_template", "old", "new",
                                                 "noise", "noise_reason"])

    def _marks(self, role: str, kind: str) -> dict[str, Mark]:
        marks: dict[str, Mark] = {}
        if role == "secondary":
            rows, present = self.secondary_diffs, ("changed", "type_changed", "added", "truncated", "reordered",
                                                   "renamed")
        elif role == "primary":
            rows, present = self.diffs, ("changed", "type_changed", "removed", "truncated", "reordered", "renamed")
        else:
            rows, present = self.diffs, ("changed", "type_changed", "added", "truncated", "reordered", "renamed")
        for d in rows:
            if d["kind"] != kind or d["op"] not in present:
                continue
            pointer = d["pointer"]
            if d["op"] == "renamed" and role != "primary":
                pointer = _renamed_pointer(d["new"]) or pointer  # the new key, on the side that has it
            noise = bool(d["noise"]) or role == "secondary"
            reason = d.get("noise_reason") or ("differs from the primary on the secondary too" if role == "secondary"
                                               else "")
            title = f"{d['op']} {d['pointer'] or '(whole)'}: {d['old']} → {d['new']}"
            if noise:
                title += f" — noise: {reason}" if reason else " — noise"
            previous = marks.get(pointer)
            if previous is None or (previous.noise and not noise):  # a real difference wins over noise
                marks[pointer] = Mark(noise, title)
        return marks

    def _headers_table(self) -> str:
        roles = self.roles
        maps = {role: _header_map(self.sides[role]["headers"]) for role in roles}
        names = sorted(set().union(*(m.keys() for m in maps.values())))
        marks = {role: self._marks(role, "header") for role in roles}
        head = "".join(f"<th>{_e(role)}</th>" for role in roles)
        rows = []
        for name in names:
            ptr = "/" + _token(name)
            cells = "".join(f"<td>{_mark_span(marks[role].get(ptr), _e(maps[role].get(name, '—')))}</td>"
                            for role in roles)
            rows.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
        return f"<details><summary>response headers</summary><table><tr><th></th>{head}</tr>{''.join(rows)}</table></details>"

    def _diff_table(self) -> str:
        if not self.compared:
            return ("<p><strong>Not diffed yet</strong>: this pair was captured after the last diff run; "
                    "<code>cap.compute_diffs()</code> compares it.</p>")
        if not self.diffs:
            return "<p>No differences between the primary and the candidate.</p>"
        real = sum(not d["noise"] for d in self.diffs)
        rows = "".join(
            f'<tr class="{"sd-noise" if d["noise"] else "sd-real"}"><td>{_e(d["kind"])}</td><td>{_e(d["op"])}</td>'
            f"<td><code>{_e(d['pointer'] or '(whole)')}</code></td><td><code>{_e(d['old'])}</code></td>"
            f"<td><code>{_e(d['new'])}</code></td><td>{'noise: ' + _e(d['noise_reason'] or '') if d['noise'] else 'real'}</td></tr>"
            for d in sorted(self.diffs, key=lambda d: (bool(d["noise"]), d["kind"], d["pointer"])))
        return (f"<p>{real} real and {len(self.diffs) - real} noise difference(s), primary → candidate:</p>"
                "<table><tr><th>kind</th><th>op</th><th>pointer</th><th>primary</th><th>candidate</th>"
                f"<th>class</th></tr>{rows}</table>")

    def _request_section(self) -> str:
        headers = _header_map(self.request_headers)
        rows = "".join(f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in sorted(headers.items()))
        body = render_body_html(self.request_body, headers.get("content-type"), {}) if self.request_body else ""
        return (f"<details><summary>request: {len(headers)} header(s)"
                f"{f', {len(self.request_body):,} byte body' if self.request_body else ', no body'}</summary>"
                f"<table>{rows}</table>{body}</details>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_html(self) -> str:
        """The side-by-side view as one self-contained HTML fragment (styles included; every value
        from traffic escaped): the notebook cell, the live view and the report show the same."""
        roles = self.roles
        head = []
        for role in roles:
            s = self.sides[role]
            status = _e(s["status"]) if s["error"] is None else f"error: {_e(s['error'])}"
            marks = self._marks(role, "status")
            latency = "—" if s["latency_ms"] is None else f"{float(s['latency_ms']):.1f} ms"
            head.append(f"<th>{_e(role)} <small>({_e(s['service'])})</small><br>"
                        f"status {_mark_span(marks.get(''), status)} · {_e(latency)}</th>")
        bodies = "".join(f"<td>{render_body_html(self.sides[r]['body'], self.sides[r]['content_type'], self._marks(r, 'body'))}</td>"
                         for r in roles)
        legend = ('<p><span class="sd-real">real difference</span> · <span class="sd-noise">noise</span> '
                  "(hover a highlight for the values and the reason)</p>")
        return (f'{_STYLE}<div class="shadow-nb"><h4>{_e(self.method)} {_e(self.url)}</h4>'
                f"<p>request <code>{_e(self.request_id)}</code> · endpoint <code>{_e(self.endpoint)}</code></p>"
                f"{self._request_section()}{legend}<table><tr>{''.join(head)}</tr><tr>{bodies}</tr></table>"
                f"{self._headers_table()}{self._diff_table()}</div>")

    def __repr__(self) -> str:
        real = sum(not d["noise"] for d in self.diffs)
        return (f"<PairView {self.method} {self.url} request {self.request_id}: roles {', '.join(self.roles)}; "
                f"{real} real, {len(self.diffs) - real} noise differences>")


# ---------------------------------------------------------------------------------------------------
# The verdict as a table


VERDICT_COLUMNS = ("endpoint", "candidate", "metric", "class", "estimate", "interval_low", "interval_high",
                   "margin", "unit", "primary_value", "candidate_value", "n_primary", "n_candidate", "needed_n",
                   "reason")


@dataclass(frozen=True)
class VerdictTable:
    """The cutover verdict (analyzers/verdict.py) of one analysis: one row per endpoint × guardrail.
    `result` is the whole AnalysisResult (samples, diff fields) for going further."""

    result: AnalysisResult

    @property
    def overall(self) -> str:
        return str(self.result.verdict.overall)

    @property
    def reason(self) -> str:
        return str(self.result.verdict.reason)

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = []
        for r in self.result.verdict.results:
            lo, hi = r.interval if r.interval is not None else (None, None)
            rows.append((r.endpoint, r.candidate, r.metric, str(r.cls), r.estimate, lo, hi, r.margin, r.unit,
                         r.primary_value, r.candidate_value, r.n_primary, r.n_candidate, r.needed_n, r.reason))
        return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))

    def held_back(self) -> pd.DataFrame:
        """The guardrails that keep the cutover from PASS, worst first (FAIL, then the unproven)."""
        order = {"FAIL": 0, "INSUFFICIENT_DATA": 1, "INCONCLUSIVE": 2}
        frame = self.to_frame()
        frame = frame[frame["class"] != "PASS"].copy()
        frame["_order"] = frame["class"].map(order).fillna(9)
        return frame.sort_values(["_order", "endpoint", "metric"]).drop(columns="_order").reset_index(drop=True)

    def _repr_html_(self) -> str:
        from analyzers.report import format_interval, format_value

        rows = "".join(
            f"<tr><td>{_e(r.endpoint)}{(' → ' + _e(r.candidate)) if r.candidate else ''}</td><td>{_e(r.metric)}</td>"
            f"<td>{_badge(str(r.cls))}</td><td>{_e(format_value(r.estimate, r.unit))}</td>"
            f"<td>{_e(format_interval(r.interval, r.unit))}</td><td>{_e(format_value(r.margin, r.unit))}</td>"
            f"<td>{_e(r.n_primary)} / {_e(r.n_candidate)}</td><td>{_e(r.reason)}</td></tr>"
            for r in self.result.verdict.results)
        v = self.result.verdict
        return (f'{_STYLE}<div class="shadow-nb"><p>verdict {_badge(self.overall)} score {float(v.score):.1f} — '
                f"{_e(v.reason)}</p><table><tr><th>endpoint</th><th>guardrail</th><th>class</th><th>estimate</th>"
                f"<th>interval</th><th>margin</th><th>n p / c</th><th>why</th></tr>{rows}</table></div>")

    def __repr__(self) -> str:
        return f"<VerdictTable {self.overall}: {self.reason}>"


# ---------------------------------------------------------------------------------------------------
# The capture


def _tqdm_callback(enabled: bool) -> tuple[Callable[..., None], Callable[[], None]]:
    """A progress(done, total) callback for compute_diffs drawing a tqdm bar on stderr (Jupyter
    shows stderr under the cell), and a function that closes the bar."""
    from tqdm import tqdm

    bar = tqdm(desc="diffing pairs", unit="pair", file=sys.stderr, disable=not enabled, leave=False)
    state = {"done": 0}

    def report(done: int, total: int | None = None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(max(0, done - state["done"]))
        state["done"] = max(state["done"], done)

    return report, bar.close


class Capture:
    """A capture folder opened for exploration: DuckDB relations (lazy, composable: `.filter()`,
    `.aggregate()`, `.df()`), pandas frames, and HTML views of one pair and of the verdict.

    `policy`: the default for `verdict()` and the diff rules — a policy YAML path (the format of
    `shadow report --policy`), an analyzers.policy.Policy, or None for the defaults.
    `progress`: a bar while diffs are computed (default on)."""

    def __init__(self, capture_dir: str | Path, *, policy: Any = None, progress: bool = True) -> None:
        self.root = Path(capture_dir)
        self.progress = progress
        self._policy = policy
        self._store: Store = open_store(self.root)
        # key → (the policy, its table): the policy object is kept so its id() is never reused
        self._verdicts: dict[Any, tuple[Any, VerdictTable]] = {}

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self._store.con

    def tables(self) -> list[str]:
        """The views this capture has now (exchanges, pairs, capture_stats, diffs…, spans…)."""
        return self._store.tables()

    def sql(self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> duckdb.DuckDBPyRelation:
        """A DuckDB relation over this capture's views; `params` fill `?` / `$name` placeholders."""
        return self.con.sql(query, params=params)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<shadow Capture {self.root} tables: {', '.join(self.tables())}>"

    def _inputs(self, policy: Any) -> tuple[Any, Any]:
        """(Policy, RuleSet) from a policy file path, a Policy, or None."""
        from analyzers.pipeline import load_inputs

        if policy is None or isinstance(policy, str | Path):
            return load_inputs(None if policy is None else Path(policy))
        from analyzers.rules import DEFAULT_RULES

        return policy, DEFAULT_RULES

    def _add_views(self, names: Sequence[str]) -> None:
        """Views for tables written into the folder after it was opened (the diff run's output), on
        the same connection, so relations handed out before stay valid."""
        for name in names:
            folder = self.root / name
            if name in self._store.views or not any(folder.glob("*.parquet")):
                continue
            glob = str(folder / "*.parquet").replace("'", "''")
            self.con.execute(f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT * FROM read_parquet('{glob}', union_by_name=true)")
            self._store.views.append(name)

    # -- tables -----------------------------------------------------------------------------------

    @property
    def exchanges(self) -> duckdb.DuckDBPyRelation:
        """Every captured exchange, one row per role (schema: shadow/capture/schema.py)."""
        return self.con.table("exchanges")

    def exchanges_df(self, *, bodies: bool = False, limit: int | None = None) -> pd.DataFrame:
        """The exchanges as a pandas frame; request/response bodies only with `bodies=True`."""
        rel = self.exchanges if bodies else self.exchanges.select("* EXCLUDE (req_body, resp_body)")
        return (rel.limit(limit) if limit is not None else rel).df()

    @property
    def pairs(self) -> duckdb.DuckDBPyRelation:
        """Each primary joined to its candidate (and secondary): p_/c_/s_ columns (shadow/capture/store.py)."""
        return self.con.table("pairs")

    def pairs_df(self, *, bodies: bool = False, limit: int | None = None) -> pd.DataFrame:
        rel = self.pairs if bodies else self.pairs.select("* EXCLUDE (req_body, p_resp_body, c_resp_body, s_resp_body)")
        return (rel.limit(limit) if limit is not None else rel).df()

    def compute_diffs(self, policy: Any = None) -> Any:
        """(Re)compute CAPTURE/diffs, diffs_summary and diffs_fields with the policy's diff rules;
        returns the run's summary (analyzers.diffs_table.DiffRunSummary)."""
        from analyzers.diffs_table import compute_diffs

        _, rules = self._inputs(policy if policy is not None else self._policy)
        report, close = _tqdm_callback(self.progress)
        try:
            summary = compute_diffs(self.root, rules, progress=report, workers=1)
        except OSError as exc:
            raise CaptureError(f"{self.root}: cannot write the diffs table there: {exc.strerror or exc} "
                               "(copy the capture somewhere writable)") from None
        finally:
            close()
        self._add_views(DIFF_TABLES)
        return summary

    def _ensure_diffs(self) -> None:
        if "diffs" not in self._store.views:
            self.compute_diffs()

    @property
    def diffs(self) -> duckdb.DuckDBPyRelation:
        """One row per difference (request_id, endpoint, c_service, kind, op, pointer, pointer_template,
        old, new, noise, noise_reason); computed on first use when the capture has none."""
        self._ensure_diffs()
        return self.con.table("diffs")

    def diffs_df(self, *, noise: bool | None = None, limit: int | None = None) -> pd.DataFrame:
        rel = self.diffs
        if noise is not None:
            rel = rel.filter("noise" if noise else "NOT coalesce(noise, false)")
        return (rel.limit(limit) if limit is not None else rel).df()

    @property
    def diffs_summary(self) -> duckdb.DuckDBPyRelation:
        """One row per compared pair: equal, real/noise difference counts (shadow.capture.schema.DIFFS_SUMMARY)."""
        self._ensure_diffs()
        return self.con.table("diffs_summary")

    @property
    def has_spans(self) -> bool:
        return "spans" in self._store.views

    @property
    def spans(self) -> duckdb.DuckDBPyRelation:
        """OTLP spans (CAPTURE/spans/, one row each), joinable to exchanges on trace_id/span_id."""
        if not self.has_spans:
            raise CaptureError(f"{self.root}: no spans in this capture (CAPTURE/spans/ is written by the "
                               "OTLP receiver; this capture was made without one)")
        return self.con.table("spans")

    def spans_df(self, limit: int | None = None) -> pd.DataFrame:
        rel = self.spans
        return (rel.limit(limit) if limit is not None else rel).df()

    # -- views ------------------------------------------------------------------------------------

    def top_fields(self, n: int = 5, *, endpoint: str | None = None) -> pd.DataFrame:
        """The `n` most frequent differing fields per endpoint (× candidate service), real and noise
        ranked apart: kind, op, pointer_template, noise and its reason, how many differences and on
        how many of the endpoint's compared pairs (`share`), and for a real field `accept_with`: the
        YAML diff rule(s) that would accept it (docs/policy.md, "Diff rules")."""
        if n < 1:
            raise ValueError("top_fields: n must be at least 1")
        self._ensure_diffs()
        where = "WHERE endpoint = $endpoint" if endpoint is not None else ""
        query = f"""
            WITH totals AS (
                SELECT endpoint, coalesce(c_service, '') AS c_service, count(*) AS pairs_total
                FROM diffs_summary GROUP BY ALL),
            fields AS (
                SELECT endpoint, coalesce(c_service, '') AS c_service, kind, op, pointer_template,
                       coalesce(noise, false) AS noise, coalesce(noise_reason, '') AS noise_reason,
                       count(*) AS diffs, count(DISTINCT request_id) AS pairs_affected,
                       any_value(CAST(old AS VARCHAR)) AS example_old, any_value(CAST(new AS VARCHAR)) AS example_new
                FROM diffs {where} GROUP BY ALL)
            SELECT * EXCLUDE (k) FROM (
                SELECT f.*, t.pairs_total, f.pairs_affected / t.pairs_total AS share,
                       row_number() OVER (PARTITION BY f.endpoint, f.c_service, f.noise
                                          ORDER BY f.pairs_affected DESC, f.diffs DESC, f.pointer_template, f.op) AS k
                FROM fields f JOIN totals t USING (endpoint, c_service))
            WHERE k <= {int(n)}
            ORDER BY endpoint, c_service, noise, pairs_affected DESC, diffs DESC, pointer_template, op"""
        params = {"endpoint": endpoint} if endpoint is not None else None
        frame = self.sql(query, params).df()
        from analyzers.suggest import suggested_rules

        frame["accept_with"] = [
            "" if noise else "\n".join(suggested_rules(ep, kind, op, tpl, old if isinstance(old, str) else None,
                                                        new if isinstance(new, str) else None))
            for ep, kind, op, tpl, noise, old, new in zip(
                frame["endpoint"], frame["kind"], frame["op"], frame["pointer_template"], frame["noise"],
                frame["example_old"], frame["example_new"], strict=True)]
        return frame.drop(columns=["example_old", "example_new"])

    def pair(self, request_id: str, *, candidate: str | None = None) -> PairView:
        """One request's answers side by side (primary, candidate, secondary) with the differences
        highlighted; `candidate` picks the candidate service when a route mirrored to several."""
        from analyzers.diff import ExchangeSide, diff_pair

        where = "request_id = ?" + (" AND c_service = ?" if candidate is not None else "")
        params = [request_id] + ([candidate] if candidate is not None else [])
        rel = self.con.execute(f"SELECT * FROM pairs WHERE {where} ORDER BY c_service LIMIT 1", params)
        names = [d[0] for d in rel.description or ()]
        row = rel.fetchone()
        if row is None:
            raise CaptureError(f"{self.root}: no pair with request_id {request_id!r}"
                               + (f" and candidate {candidate!r}" if candidate is not None else "")
                               + " (see cap.pairs for the paired requests)")
        data = dict(zip(names, row, strict=True))
        sides = {}
        for role, prefix in ROLE_PREFIXES:
            if data.get(prefix + "exchange_id") is None:
                continue
            sides[role] = {"service": data[prefix + "service"], "status": data[prefix + "status"],
                           "latency_ms": data[prefix + "latency_ms"], "error": data[prefix + "error"],
                           "headers": data[prefix + "resp_headers"], "body": data[prefix + "resp_body"],
                           "content_type": data[prefix + "resp_content_type"]}
        self._ensure_diffs()
        cols = ["kind", "op", "pointer", "pointer_template", "old", "new", "noise", "noise_reason"]
        diff_rows = self.con.execute(
            f"SELECT {', '.join(cols)} FROM diffs WHERE request_id = ? AND c_service IS NOT DISTINCT FROM ? "
            "ORDER BY kind, pointer", [request_id, data["c_service"]]).fetchall()
        compared = bool(self.con.execute(
            "SELECT count(*) FROM diffs_summary WHERE request_id = ? AND c_service IS NOT DISTINCT FROM ?",
            [request_id, data["c_service"]]).fetchall()[0][0])
        secondary: list[dict[str, Any]] = []
        if "secondary" in sides:
            _, rules = self._inputs(self._policy)
            found = diff_pair(ExchangeSide.from_row(data, "p_"), ExchangeSide.from_row(data, "s_"), rules,
                              endpoint=data["endpoint"])
            secondary = [d._asdict() for d in found]
        return PairView(request_id=request_id, endpoint=str(data["endpoint"]), method=str(data["method"]),
                        url=str(data["url"]), sides=sides,
                        diffs=[dict(zip(cols, r, strict=True)) for r in diff_rows], secondary_diffs=secondary,
                        compared=compared, request_headers=data["req_headers"] or (), request_body=data["req_body"])

    def analysis(self, policy: Any = None) -> AnalysisResult:
        """The full analysis (analyzers/pipeline.py): diffs recomputed with the policy's rules,
        per-endpoint samples, the verdict and the diff-field table. Cached per policy."""
        return self.verdict(policy).result

    def verdict(self, policy: Any = None) -> VerdictTable:
        """The cutover verdict as a table (`.to_frame()`, `.held_back()`, HTML in Jupyter).
        `policy`: a policy YAML path, a Policy, or None for the one given to `shadow.open`."""
        from analyzers.pipeline import analyze

        chosen = policy if policy is not None else self._policy
        key = str(chosen) if isinstance(chosen, str | Path) else id(chosen)
        if key not in self._verdicts:
            pol, rules = self._inputs(chosen)
            result = analyze(self.root, pol, rules=rules, progress=self.progress)
            self._add_views(DIFF_TABLES)
            self._verdicts[key] = (chosen, VerdictTable(result))
        return self._verdicts[key][1]


def open_capture(capture_dir: str | Path, *, policy: Any = None, progress: bool = True) -> Capture:
    """`shadow.open`: a Capture over `capture_dir` (CaptureError, one line, when it is not one)."""
    return Capture(capture_dir, policy=policy, progress=progress)
