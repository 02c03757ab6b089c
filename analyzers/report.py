"""Render an analysis (analyzers/pipeline.py) as a self-contained HTML report, a Markdown summary fit
for a pull-request comment, and verdict.json.

The HTML has no external references: styles are inline, plots are matplotlib (Agg) PNGs embedded as
base64 data URIs, and every link is an in-page anchor. Every value that came from traffic is
HTML-escaped (bodies are attacker-controlled input as far as a report reader is concerned).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import enum
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from analyzers.pipeline import AnalysisResult, FieldDiff, Progress, progress_enabled

QUANTILES = (0.50, 0.95, 0.99)
CLASS_ORDER = {"FAIL": 0, "INCONCLUSIVE": 1, "INSUFFICIENT_DATA": 2, "PASS": 3}
CLASS_COLOUR = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700",
                "INSUFFICIENT_DATA": "#6e7781"}
TOP_REAL_DIFFS_IN_MARKDOWN = 10
MAX_PAIR_VIEWS = 12  # fields whose first example is shown side by side in full (each holds whole bodies)
MAX_REASONS_IN_MARKDOWN = 15
# Every policy key, its default and the reasoning: one line in every report (HTML and Markdown).
POLICY_DOC_LINE = "Margins, tests and every policy key are explained in docs/policy.md of the shadow repository."


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    json: Path


# ---------------------------------------------------------------------------------------------------
# Small accessors: the verdict objects are another module's; read them defensively by name.


def class_name(value: Any) -> str:
    """PASS | FAIL | INCONCLUSIVE | INSUFFICIENT_DATA, whether given as an enum or a string."""
    raw = value.value if isinstance(value, enum.Enum) else value
    return str(raw).upper()


def verdict_results(verdict: Any) -> list[Any]:
    return list(getattr(verdict, "results", ()) or ())


def overall_name(verdict: Any) -> str:
    return class_name(verdict.overall)


def label(endpoint: str, candidate: str | None) -> str:
    """How an endpoint × candidate service is named everywhere in the report."""
    return f"{endpoint} → {candidate}" if candidate else endpoint


def _severity(cls: str) -> int:
    return CLASS_ORDER.get(cls, 9)


def endpoint_rollup(verdict: Any) -> list[tuple[str, str, str]]:
    """(label, class, reason) per endpoint × candidate: the worst guardrail decides and explains."""
    results = verdict_results(verdict)
    groups: dict[tuple[str, str | None], list[Any]] = {}
    for summary in getattr(verdict, "endpoints", None) or ():
        groups.setdefault((summary.endpoint, summary.candidate), [])
    for r in results:
        groups.setdefault((r.endpoint, getattr(r, "candidate", None)), []).append(r)
    rows = []
    for (endpoint, candidate), own in groups.items():
        if not own:
            rows.append((label(endpoint, candidate), "INSUFFICIENT_DATA", "no guardrail could be evaluated"))
            continue
        worst = min(own, key=lambda r: _severity(class_name(r.cls)))
        cls = class_name(worst.cls)
        if cls == "PASS":
            rows.append((label(endpoint, candidate), cls, f"all {len(own)} guardrails proven within margin"))
        else:
            rows.append((label(endpoint, candidate), cls, f"{worst.metric}: {worst.reason}"))
    rows.sort(key=lambda row: (_severity(row[1]), row[0]))
    return rows


def held_back(results: Iterable[Any]) -> list[Any]:
    """The guardrails that are not PASS, worst first (FAIL, INCONCLUSIVE, INSUFFICIENT_DATA), then by
    metric: every one that keeps an endpoint from PASS, not only the worst."""
    return sorted((r for r in results if class_name(r.cls) != "PASS"),
                  key=lambda r: (_severity(class_name(r.cls)), r.metric))


def floor_note(r: Any, policy: Any) -> str | None:
    """Why a latency guardrail's margin is wider than the policy's ratio, or None when it is not.

    A latency delta under the policy's `floor_ms` never fails (analyzers/verdict.py), so on a fast
    endpoint the margin is 1 + floor / primary instead of the configured ratio."""
    if getattr(r, "unit", None) != "ratio" or not str(r.metric).startswith("latency_") or r.margin is None:
        return None
    margins = policy.margins_for(r.endpoint)
    name = str(r.metric).removeprefix("latency_")
    configured = margins.bulk_ratio if name == "bulk" else margins.latency_ratio.get(name)
    if configured is None or not float(r.margin) > float(configured) + 1e-9:
        return None
    basis = "median" if name == "bulk" else name
    primary = getattr(r, "primary_value", None)
    at = f" on the primary's {float(primary):.1f} ms {basis}" if primary is not None else ""
    return (f"margin ×{float(r.margin):.3f}, not the policy's ×{float(configured):.2f}: the absolute floor of "
            f"{margins.floor_ms:g} ms{at} (a slowdown under {margins.floor_ms:g} ms never fails)")


def format_value(value: Any, unit: str | None) -> str:
    """An estimate or a margin in its unit: ratio ×1.05, difference +0.12 pp, rate 1.20 %."""
    if value is None:
        return "—"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(f):
        return "—"
    if unit == "difference":
        return f"{100 * f:+.2f} pp"
    if unit == "rate":
        return f"{100 * f:.2f} %"
    if unit == "ratio":
        return f"×{f:.3f}"
    return _num(f)


def format_interval(value: Any, unit: str | None) -> str:
    if value is None:
        return "—"
    try:
        lo, hi = value
    except (TypeError, ValueError):
        return str(value)
    return f"[{format_value(lo, unit)}, {format_value(hi, unit)}]"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(f):
        return "—"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
        return f"{f:.{digits}g}"
    text = f"{f:.{digits}f}"
    return text.rstrip("0").rstrip(".") if digits > 0 else text


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def order_statistic_interval(values: np.ndarray, q: float, level: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free interval for the q-quantile: the order statistics whose ranks bracket it
    with binomial probability ≥ `level`. None when the sample is too small to bracket it."""
    from scipy.stats import binom

    n = len(values)
    if n == 0:
        return None
    # With B ~ Binom(n, q) the number of observations at or below the quantile, the 1-based order
    # statistics x(l), x(u) bracket it with probability P(l <= B <= u - 1): l = ppf(a/2) leaves at
    # most a/2 below, u = ppf(1 - a/2) + 1 at most a/2 above.
    lo_rank = int(binom.ppf((1 - level) / 2, n, q))
    hi_rank = int(binom.ppf(1 - (1 - level) / 2, n, q)) + 1
    if lo_rank < 1 or hi_rank > n:
        return None
    ordered = np.sort(values)
    return float(ordered[lo_rank - 1]), float(ordered[hi_rank - 1])


def finite_positive(values: Any) -> np.ndarray:
    arr = np.asarray(values if values is not None else [], dtype=float)
    return arr[np.isfinite(arr) & (arr > 0)]


def _bool_count(values: Any) -> int:
    arr = np.asarray(values if values is not None else [], dtype=bool)
    return int(arr.sum())


# ---------------------------------------------------------------------------------------------------
# Plots


PLOT_GRID_POINTS = 1500
PLOT_EXACT_TAIL = 400


def plot_ranks(n: int) -> np.ndarray:
    """Indices of the sorted sample to draw: all of them when few, else an even grid + the tail."""
    if n <= PLOT_GRID_POINTS + PLOT_EXACT_TAIL:
        return np.arange(n)
    grid = np.linspace(0, n - 1, PLOT_GRID_POINTS).astype(np.int64)
    return np.unique(np.concatenate((grid, np.arange(n - PLOT_EXACT_TAIL, n))))


def latency_plot_png(primary: np.ndarray, candidate: np.ndarray, title: str) -> bytes:
    """Left: ECDF of both arms on a log latency axis, with each arm's p50/p95/p99 and their 95 %
    intervals. Right: the tail (share of requests slower than x, log scale), where regressions hide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, (ax, tail) = plt.subplots(1, 2, figsize=(10.0, 3.4), dpi=90)
    try:
        for name, values, colour, offset in (("primary", primary, "#0969da", -0.012),
                                             ("candidate", candidate, "#bf3989", 0.012)):
            if len(values) == 0:
                continue
            xs = np.sort(values)
            ys = np.arange(1, len(xs) + 1) / len(xs)
            # Drawing every point of a large sample costs seconds and shows nothing more: keep an even
            # grid of ranks plus the exact slowest ones, where the tail plot needs every step.
            keep = plot_ranks(len(xs))
            ax.step(xs[keep], ys[keep], where="post", color=colour, label=f"{name} (n={len(xs):,})",
                    linewidth=1.4)
            tail.step(xs[keep], np.maximum(1.0 - ys[keep], 0.5 / len(xs)), where="post", color=colour,
                      linewidth=1.4)
            for q in QUANTILES:
                estimate = float(np.quantile(xs, q))
                ci = order_statistic_interval(xs, q)
                if ci is not None:
                    ax.errorbar([estimate], [q + offset], xerr=[[estimate - ci[0]], [ci[1] - estimate]],
                                fmt="o", color=colour, markersize=3, capsize=3, linewidth=1)
                    tail.errorbar([estimate], [1 - q], xerr=[[estimate - ci[0]], [ci[1] - estimate]],
                                  fmt="o", color=colour, markersize=3, capsize=3, linewidth=1)
        # Plain tick labels: matplotlib's default log labels ($10^{2}$) go through mathtext, whose
        # parser costs seconds on first use.
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        for axis in (ax, tail):
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(plain)
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_xlabel("latency (ms, log scale)")
            axis.grid(True, which="both", alpha=0.25)
        ax.set_ylabel("share of requests ≤ x")
        ax.set_ylim(0, 1.04)
        ax.legend(loc="lower right", fontsize=8)
        tail.set_yscale("log")
        tail.yaxis.set_major_formatter(plain)
        tail.yaxis.set_minor_formatter(NullFormatter())
        tail.set_ylabel("share of requests > x (tail)")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


# ---------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1440px;
 color:#1f2328;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;width:100%}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa;white-space:nowrap}div.held{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;color:#fff;font-weight:600;font-size:.85em}
.verdict{font-size:2rem;font-weight:700}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
pre{background:#f6f8fa;padding:.5rem;overflow:auto;white-space:pre-wrap;word-break:break-all;margin:0}
.muted{color:#6e7781}nav a{margin-right:1rem}
.example{border:1px solid #d0d7de;border-radius:.3rem;padding:.5rem;margin:.5rem 0}
tr.detail td{border-top:none;background:#fbfcfd;font-size:.92em}
"""


def _badge(cls: str) -> str:
    colour = CLASS_COLOUR.get(cls, "#6e7781")
    return f'<span class="badge" style="background:{colour}">{html.escape(cls)}</span>'


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (),
           details: Sequence[str] | None = None) -> str:
    """`rows` hold already-escaped HTML cells; `details[i]`, when given, is shown as a full-width
    line under row i (long sentences in a narrow column make every row a tower)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
        if details is not None and details[index]:
            body.append(f'<tr class="detail"><td colspan="{len(headers)}">{details[index]}</td></tr>')
    if not body:
        return '<p class="muted">none</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _clip(value: str | None, limit: int = 400) -> str:
    if value is None:
        return "(absent)"
    return value if len(value) <= limit else value[:limit] + f"… ({len(value) - limit} more characters)"


def policy_mapping(policy: Any) -> Any:
    """The policy as plain data, whatever shape the policy module gives it."""
    for name in ("to_mapping", "to_dict", "to_json"):
        method = getattr(policy, name, None)
        if callable(method):
            return method()
    if dataclasses.is_dataclass(policy) and not isinstance(policy, type):
        return dataclasses.asdict(policy)
    return repr(policy)


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path | datetime):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=_json_default, allow_nan=False, ensure_ascii=False)


def _sanitize(value: Any) -> Any:
    """JSON has no NaN/Infinity: turn them into null so every consumer can parse verdict.json."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    return value


def verdict_json(result: AnalysisResult) -> str:
    return dumps(_sanitize(json.loads(json.dumps(result.to_json(), default=_json_default))))


def latency_anchor(name: str) -> str:
    import hashlib

    return "lat-" + hashlib.sha1(name.encode()).hexdigest()[:12]


def _held_back_cell(results: list[Any]) -> str:
    if not results:
        return '<span class="muted">every guardrail proven within margin</span>'
    return "".join(f'<div class="held">{_badge(class_name(r.cls))} {_e(r.metric)}</div>' for r in held_back(results))


def _summary_section(result: AnalysisResult) -> str:
    verdict = result.verdict
    overall = overall_name(verdict)
    plotted = {label(x.endpoint, getattr(x, "candidate", None)) for x in result.samples}
    by_endpoint: dict[str, list[Any]] = {}
    for r in verdict_results(verdict):
        by_endpoint.setdefault(label(r.endpoint, getattr(r, "candidate", None)), []).append(r)
    rows = [(f'<a href="#{latency_anchor(ep)}">{_e(ep)}</a>' if ep in plotted else _e(ep), _badge(cls),
             _held_back_cell(by_endpoint.get(ep, [])), _e(reason))
            for ep, cls, reason in endpoint_rollup(verdict)]
    return (
        '<section id="summary"><h2>Readiness</h2>'
        f'<p><span class="verdict" style="color:{CLASS_COLOUR.get(overall, "#000")}">{_e(overall)}</span>'
        f' &nbsp; score <b>{_num(getattr(verdict, "score", None), 1)}</b> / 100'
        ' <span class="muted">(the score is for display; the gate is the rule: PASS needs every '
        'guardrail proven non-inferior)</span></p>'
        + (f"<p>{_e(verdict.reason)}</p>" if getattr(verdict, "reason", "") else "")
        + _table(("endpoint", "class", "held back by (every guardrail not proven)", "why (the worst)"), rows)
        + "</section>"
    )


def _guardrail_section(result: AnalysisResult) -> str:
    rows = []
    details = []
    results = verdict_results(result.verdict)
    for r in sorted(results, key=lambda r: (r.endpoint, str(getattr(r, "candidate", "")), r.metric)):
        unit = getattr(r, "unit", None)
        ms = str(r.metric).startswith("latency")
        side_unit = None if ms else "rate"
        note = floor_note(r, result.policy)
        margin = _e(format_value(r.margin, unit)) + (' <span title="widened by the absolute floor">†</span>'
                                                     if note else "")
        rows.append((
            _e(label(r.endpoint, getattr(r, "candidate", None))), _e(r.metric),
            _value_cell(getattr(r, "primary_value", None), side_unit, ms),
            _value_cell(getattr(r, "candidate_value", None), side_unit, ms),
            _e(format_value(r.estimate, unit)), _e(format_interval(r.interval, unit)),
            margin, f"{_num(r.n_primary)} / {_num(r.n_candidate)}", _num(r.p_value, 3), _badge(class_name(r.cls)),
            _num(r.needed_n),
        ))
        design = "paired" if r.paired else "unpaired"
        details.append(f'<span class="muted">why:</span> {_e(r.reason)}'
                       + (f'<br><span class="muted">† {_e(note)}</span>' if note else "")
                       + f'<br><span class="muted">test: {_e(r.test)} ({design})</span>')
    return ('<section id="guardrails"><h2>Guardrails</h2>'
            '<p class="muted">Each guardrail is a non-inferiority test: PASS when the interval rules '
            'out a regression larger than the margin, FAIL on significant harm (Holm-corrected), '
            'otherwise INCONCLUSIVE with the per-arm sample size still needed. † marks a latency margin '
            "wider than the policy's ratio because of the absolute floor (floor_ms).</p>"
            + _table(("endpoint", "metric", "primary", "candidate", "estimate", "interval", "margin",
                      "n p / c", "p NI", "class", "n needed"), rows, numeric=(2, 3, 4, 5, 6, 7, 8, 10),
                     details=details)
            + "</section>")


def _value_cell(value: Any, unit: str | None, ms: bool) -> str:
    if value is None:
        return "—"
    return _e(f"{_num(value, 1)} ms") if ms else _e(format_value(value, unit))


def _latency_section(result: AnalysisResult, progress: Progress | None = None) -> str:
    parts = ['<section id="latency"><h2>Latency</h2>'
             '<p class="muted">Empirical distribution functions, primary vs candidate; dots are each '
             "arm's p50/p95/p99 with a distribution-free 95 % interval (order statistics).</p>"]
    for sample in result.samples:
        primary = finite_positive(sample.primary_latency_ms)
        candidate = finite_positive(sample.candidate_latency_ms)
        design = "paired (mirrored)" if sample.paired else "unpaired (split)"
        name = label(sample.endpoint, getattr(sample, "candidate", None))
        parts.append(f"<h3 id=\"{latency_anchor(name)}\">{_e(name)} <span class='muted'>— {design}</span></h3>")
        if len(primary) == 0 and len(candidate) == 0:
            parts.append('<p class="muted">no latency measured</p>')
            continue
        parts.append(_img(latency_plot_png(primary, candidate, name), f"latency ECDF for {name}"))
        if progress is not None:
            progress.update(1)
        rows = []
        for q in QUANTILES:
            cells = [f"p{round(q * 100)}"]
            for values in (primary, candidate):
                if len(values) == 0:
                    cells += ["—", "—"]
                    continue
                ci = order_statistic_interval(values, q)
                cells += [_num(float(np.quantile(values, q)), 1),
                          "—" if ci is None else f"[{_num(ci[0], 1)}, {_num(ci[1], 1)}]"]
            rows.append(cells)
        parts.append(_table(("quantile", "primary ms", "primary 95 % interval", "candidate ms",
                             "candidate 95 % interval"), rows, numeric=(1, 3)))
    parts.append("</section>")
    return "".join(parts)


def _spans_section(result: AnalysisResult) -> str:
    """Where a regressed endpoint's extra time sits (shown only when the capture has spans)."""
    items = result.span_attribution
    if not items:
        return ""
    parts = ['<section id="spans"><h2>Where the time goes (spans)</h2>'
             '<p class="muted">For each endpoint whose candidate median latency is above the primary\'s: the '
             "median per call of the time spent in each span name (self time: a span's duration minus its "
             "children's), primary calls against candidate calls, largest difference first.</p>"]
    for a in items:
        name = label(a.endpoint, a.candidate)
        parts.append(f"<h3>{_e(name)} <span class='muted'>— median {_num(a.primary_median_ms, 1)} → "
                     f"{_num(a.candidate_median_ms, 1)} ms; calls with spans {a.calls_with_spans[0]} / "
                     f"{a.calls_with_spans[1]}</span></h3>")
        rows = [(str(r.span), str(r.services), _num(r.primary_ms, 1), _num(r.candidate_ms, 1),
                 f"{r.delta_ms:+.1f}", str(r.primary_calls), str(r.candidate_calls))
                for r in a.spans.itertuples(index=False)]
        parts.append(_table(("span", "services", "primary ms", "candidate ms", "Δ ms", "primary calls",
                             "candidate calls"), rows, numeric=(2, 3, 4, 5, 6)))
    parts.append("</section>")
    return "".join(parts)


def _error_section(result: AnalysisResult) -> str:
    rows = []
    for s in result.samples:
        n_p = len(np.asarray(s.primary_5xx))
        n_c = len(np.asarray(s.candidate_5xx))
        p5, c5 = _bool_count(s.primary_5xx), _bool_count(s.candidate_5xx)
        pt, ct = _bool_count(s.primary_transport_error), _bool_count(s.candidate_transport_error)
        rows.append((
            _e(label(s.endpoint, getattr(s, "candidate", None))), _num(n_p), _num(n_c),
            f"{p5:,} ({_pct(p5 / n_p) if n_p else '—'})", f"{c5:,} ({_pct(c5 / n_c) if n_c else '—'})",
            f"{pt:,} ({_pct(pt / n_p) if n_p else '—'})", f"{ct:,} ({_pct(ct / n_c) if n_c else '—'})",
        ))
    return ('<section id="errors"><h2>Errors</h2>'
            '<p class="muted">HTTP 5xx answers and transport errors (no answer at all: reset, '
            'timeout, refused) are counted apart.</p>'
            + _table(("endpoint", "n primary", "n candidate", "5xx primary", "5xx candidate",
                      "transport errors primary", "transport errors candidate"), rows,
                     numeric=(1, 2, 3, 4, 5, 6))
            + "</section>")


def field_label(f: FieldDiff) -> str:
    """What a person calls the field: the status, a header by name, or the body's JSON pointer."""
    if f.kind == "status":
        return "(status)"
    if f.kind == "header":
        return f"header {f.pointer_template.lstrip('/')}"
    if f.renamed_to is not None:
        return f"{f.pointer_template} → {f.renamed_to}"
    return f.pointer_template or "(whole body)"


def _verdict_cell(f: FieldDiff) -> str:
    if f.noise:
        return "noise"
    return "<b>unproven</b>" if f.unproven else "<b>real</b>"


def _field_rows(fields: Iterable[FieldDiff], capture_dir: Path | None = None) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for f in fields:
        link = f'<a href="#{f.anchor}">{len(f.examples)} example{"s" if len(f.examples) != 1 else ""}</a>'
        rows.append((
            _e(f.name), f"<code>{_e(field_label(f))}</code>", _e(f.kind), _e(f.op),
            _num(f.count), _pct(f.rate), _verdict_cell(f),
            _e(f.noise_reason) if f.noise else _accept_cell(f, capture_dir),
            _e(f.secondary.describe()) if f.secondary is not None else '<span class="muted">no secondary</span>',
            link if f.examples else "",
        ))
    return rows


def _accept_cell(f: FieldDiff, capture_dir: Path | None = None) -> str:
    """The diff rules that would accept a real difference, to paste under `rules:` (docs/policy.md);
    for an unproven field first what settles it."""
    lines = f.accept_with
    if f.unproven:
        command = f"shadow probe {capture_dir or 'CAPTURE'}"
        settle = ('looks volatile and the endpoint has no noise evidence: it cannot fail the gate alone; '
                  f'<code>{_e(command)}</code> settles it. ')
        return settle + ('<span class="muted">accept with:</span><pre class="rule">' + _e("\n".join(lines))
                         + "</pre>" if lines else "")
    if not lines:
        return '<span class="muted">judged by the error guardrails</span>' if f.kind == "status" else ""
    return ('<span class="muted">accept with:</span><pre class="rule">' + _e("\n".join(lines)) + "</pre>")


def _diff_section(result: AnalysisResult) -> str:
    fields = sorted(result.fields, key=lambda f: (f.noise, -f.count, f.name, f.pointer_template))
    pairs = "".join(f"<li>{_e(ep)}: {n:,} pairs</li>" for ep, n in sorted(result.pairs_by_endpoint.items()))
    return ('<section id="diffs"><h2>Differences by field</h2>'
            '<p class="muted">Differences between the primary\'s and the candidate\'s answers to the same '
            'request, grouped by endpoint and templated field. Rate = share of the endpoint\'s pairs '
            'with that difference. Real differences first.</p>'
            + (f"<ul>{pairs}</ul>" if pairs else "")
            + '<p class="muted">A real difference shows the diff rule that would accept it, to paste under '
            '<code>rules:</code> in the policy file if the change is intended (docs/policy.md, "Diff rules").</p>'
            + _table(("endpoint", "field", "kind", "op", "count", "rate", "real / noise",
                      "why noise / rule that accepts it", "secondary (noise evidence)", "examples"),
                     _field_rows(fields, result.capture_dir), numeric=(4, 5))
            + "</section>")


def _noise_section(result: AnalysisResult) -> str:
    reasons: dict[str, list[FieldDiff]] = {}
    for f in result.noise_fields:
        reasons.setdefault(f.noise_reason or "(no reason given)", []).append(f)
    rows = []
    for reason, fields in sorted(reasons.items()):
        names = ", ".join(f"<code>{_e(field_label(f))}</code> ({_e(f.name)})" for f in fields)
        rows.append((_e(reason), names, _num(sum(f.count for f in fields))))
    return ('<section id="noise"><h2>Treated as noise</h2>'
            '<p class="muted">These differences do not count against the candidate, for the reason '
            'given (an ignore rule, a tolerance, or a field that also differs between two copies of '
            'the primary).</p>'
            + _table(("why", "fields", "differences"), rows, numeric=(2,)) + "</section>")


def example_pair_views(result: AnalysisResult, limit: int = MAX_PAIR_VIEWS) -> dict[str, str]:
    """field anchor → the first example request of the field side by side (analyzers/pairview.py, the
    notebook's `cap.pair` view: method, URL and query, the request, every role's full response with
    the differences highlighted), real fields first, for at most `limit` fields. Empty when the
    capture cannot be read (a report rendered from a result alone)."""
    from analyzers.pairview import load_pair
    from shadow.capture.store import open_store
    from shadow.errors import ShadowError

    chosen = [f for f in sorted(result.fields, key=lambda f: (f.noise, f.name, f.pointer_template)) if f.examples]
    out: dict[str, str] = {}
    try:
        with open_store(result.capture_dir) as store:
            if not {"pairs", "diffs", "diffs_summary"} <= set(store.tables()):
                return out
            for f in chosen[:limit]:
                with contextlib.suppress(ShadowError):
                    out[f.anchor] = load_pair(store.con, f.examples[0].request_id, candidate=f.c_service or None,
                                              rules=result.rules, source=str(result.capture_dir)).to_html()
    except (ShadowError, OSError):
        return out
    return out


def _examples_section(result: AnalysisResult, pair_views: dict[str, str] | None = None) -> str:
    views = pair_views or {}
    parts = ['<section id="examples"><h2>Examples</h2>',
             f'<p class="muted">For each field its examples\' differing values; for the first {MAX_PAIR_VIEWS} fields '
             "(real ones first) the first example request side by side: method, URL, the request, and every "
             "role's full response with the differences highlighted (red: real, grey: noise; hover for the "
             "values).</p>"]
    for f in sorted(result.fields, key=lambda f: (f.noise, f.name, f.pointer_template)):
        if not f.examples:
            continue
        label = "noise" if f.noise else "real"
        parts.append(f'<div class="example" id="{f.anchor}"><h3>{_e(f.name)} '
                     f'<code>{_e(field_label(f))}</code> {_e(f.op)} <span class="muted">({label})</span>'
                     "</h3>")
        rows = [(f"<code>{_e(e.request_id)}</code>", f"<code>{_e(e.pointer)}</code>",
                 f"<pre>{_e(_clip(e.old))}</pre>", f"<pre>{_e(_clip(e.new))}</pre>") for e in f.examples]
        parts.append(_table(("request id", "pointer", "primary", "candidate"), rows))
        if f.anchor in views:
            parts.append(f"<details{' open' if not f.noise else ''}><summary>request "
                         f"<code>{_e(f.examples[0].request_id)}</code> side by side</summary>{views[f.anchor]}</details>")
        parts.append('<p><a href="#diffs">back to the table</a></p></div>')
    if len(parts) == 2:
        parts.append('<p class="muted">no differences</p>')
    parts.append("</section>")
    return "".join(parts)


def _policy_section(result: AnalysisResult) -> str:
    text = dumps(_sanitize(json.loads(json.dumps(policy_mapping(result.policy), default=_json_default))))
    return (f'<section id="policy"><h2>Policy used</h2><p>{POLICY_DOC_LINE}</p><pre>{_e(text)}</pre></section>')


def render_html(result: AnalysisResult, *, generated_at: datetime | None = None,
                progress: Progress | None = None) -> str:
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    nav = "".join(f'<a href="#{anchor}">{title}</a>' for anchor, title in (
        ("summary", "Readiness"), ("guardrails", "Guardrails"), ("latency", "Latency"), ("spans", "Spans"),
        ("errors", "Errors"),
        ("diffs", "Differences"), ("noise", "Noise"), ("examples", "Examples"), ("policy", "Policy"))
        if anchor != "spans" or result.span_attribution)
    body = "".join((
        _summary_section(result), _guardrail_section(result), _latency_section(result, progress),
        _spans_section(result), _error_section(result), _diff_section(result), _noise_section(result),
        _examples_section(result, example_pair_views(result)), _policy_section(result),
    ))
    title = f"shadow report — {overall_name(result.verdict)}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>shadow cutover report</h1><p class='muted'>capture <code>{_e(result.capture_dir)}</code>"
        f" · generated {when}</p><nav>{nav}</nav>{body}</body></html>"
    )


# ---------------------------------------------------------------------------------------------------
# Markdown


def _md(value: Any) -> str:
    """A table cell: pipes and newlines would break the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


_MD_MARK = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "INCONCLUSIVE": "⚠️ INCONCLUSIVE",
            "INSUFFICIENT_DATA": "⚠️ INSUFFICIENT_DATA"}


def render_markdown(result: AnalysisResult) -> str:
    verdict = result.verdict
    overall = overall_name(verdict)
    lines = [f"## shadow verdict: {_MD_MARK.get(overall, overall)}", "",
             f"Score {_num(getattr(verdict, 'score', None), 1)} / 100 · capture `{result.capture_dir}`", ""]
    if getattr(verdict, "reason", ""):
        lines += [_md(verdict.reason), ""]
    results = verdict_results(verdict)
    metrics = sorted({r.metric for r in results})
    by_cell = {(label(r.endpoint, getattr(r, "candidate", None)), r.metric): r for r in results}
    endpoints = [ep for ep, _, _ in endpoint_rollup(verdict)]
    if endpoints:
        lines.append("| endpoint | " + " | ".join(_md(m) for m in metrics) + " |")
        lines.append("|---|" + "---|" * len(metrics))
        for ep in endpoints:
            cells = []
            for m in metrics:
                r = by_cell.get((ep, m))
                cells.append(_MD_MARK.get(class_name(r.cls), class_name(r.cls)) if r is not None else "")
            lines.append(f"| {_md(ep)} | " + " | ".join(cells) + " |")
        lines.append("")
        problems = sorted((r for r in results if class_name(r.cls) != "PASS"),
                          key=lambda r: (_severity(class_name(r.cls)), r.endpoint, r.metric))
        if problems:
            lines += ["**Why not PASS**", ""]
            for r in problems[:MAX_REASONS_IN_MARKDOWN]:
                name = label(r.endpoint, getattr(r, "candidate", None))
                lines.append(f"- {class_name(r.cls)} `{_md(name)}` {_md(r.metric)}: {_md(r.reason)}")
            if len(problems) > MAX_REASONS_IN_MARKDOWN:
                lines.append(f"- … and {len(problems) - MAX_REASONS_IN_MARKDOWN} more in the HTML report")
            lines.append("")
    real = sorted(result.real_fields, key=lambda f: -f.count)[:TOP_REAL_DIFFS_IN_MARKDOWN]
    if real:
        lines += ["**Top real differences**", "", "| endpoint | field | op | count | rate |", "|---|---|---|---|---|"]
        lines += [f"| {_md(f.name)} | `{_md(field_label(f))}` | {_md(f.op)}{' (unproven)' if f.unproven else ''} "
                  f"| {f.count:,} | {_pct(f.rate)} |"
                  for f in real]
        lines.append("")
    else:
        lines += ["No real body differences after noise cancellation.", ""]
    for a in result.span_attribution[:MAX_REASONS_IN_MARKDOWN]:
        if not a.spans.empty:
            top = a.spans.iloc[0]
            lines += [f"Spans: `{_md(label(a.endpoint, a.candidate))}` is {a.delta_ms:+.1f} ms at the median; "
                      f"the largest span difference is `{_md(top['span'])}` ({_md(top['services'])}) "
                      f"{top['delta_ms']:+.1f} ms.", ""]
    noise = len(result.noise_fields)
    if noise:
        lines += [f"{noise} field(s) treated as noise; see the HTML report for why.", ""]
    lines += [POLICY_DOC_LINE, ""]
    return "\n".join(lines)


def write_report(result: AnalysisResult, out_dir: Path, *, progress: bool | None = None) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / "report.html", out_dir / "summary.md", out_dir / "verdict.json")
    bar = Progress("plotting latency", len(result.samples), progress_enabled(progress))
    try:
        page = render_html(result, progress=bar)
    finally:
        bar.close()
    files.html.write_text(page, encoding="utf-8")
    files.markdown.write_text(render_markdown(result), encoding="utf-8")
    files.json.write_text(verdict_json(result) + "\n", encoding="utf-8")
    return files
