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
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyzers.pairview import PAIR_STYLE, Mark, PairView, load_pair, render_body_html, render_json_html
from shadow.capture.remote import resolve_capture
from shadow.capture.store import Store, open_store
from shadow.errors import CaptureError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from analyzers.pipeline import AnalysisResult

__all__ = ["Capture", "Mark", "PairView", "VerdictTable", "open_capture", "render_body_html", "render_json_html"]

DIFF_TABLES = ("diffs", "diffs_summary", "diffs_fields")
CLASS_COLOUR = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700", "INSUFFICIENT_DATA": "#6e7781"}


def _e(value: Any) -> str:
    """HTML-escaped text of any value ('' for None): quotes too, so it is safe in attributes."""
    return "" if value is None else html.escape(str(value), quote=True)


def _badge(cls: str) -> str:
    return f'<span class="sd-badge" style="background:{CLASS_COLOUR.get(cls, "#6e7781")}">{_e(cls)}</span>'


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
        return (f'{PAIR_STYLE}<div class="shadow-nb"><p>verdict {_badge(self.overall)} score {float(v.score):.1f} — '
                f"{_e(v.reason)}</p><table><tr><th>endpoint</th><th>guardrail</th><th>class</th><th>estimate</th>"
                f"<th>interval</th><th>margin</th><th>n p / c</th><th>why</th></tr>{rows}</table></div>")

    def __repr__(self) -> str:
        return f"<VerdictTable {self.overall}: {self.reason}>"


# ---------------------------------------------------------------------------------------------------
# The capture


def in_jupyter_kernel() -> bool:
    """True inside an IPython kernel (a notebook), where stderr output is shown as an error block."""
    return "ipykernel" in sys.modules


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
    `progress`: a bar while diffs are computed (default on in a terminal; never in Jupyter, where a
    stderr bar renders as a red block)."""

    def __init__(self, capture_dir: str | Path, *, policy: Any = None, progress: bool = True) -> None:
        self.root = resolve_capture(capture_dir)  # a folder, or an object store URI fetched into the cache
        # In Jupyter a bar drawn on stderr renders as a red block under the cell: none there.
        self.progress = progress and not in_jupyter_kernel()
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
        self._ensure_diffs()
        _, rules = self._inputs(self._policy)
        return load_pair(self.con, request_id, candidate=candidate, rules=rules, source=str(self.root))

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
