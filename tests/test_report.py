"""Report rendering on a verdict and diff fields built directly (no capture, no statistics run)."""

from __future__ import annotations

import dataclasses
import html as _html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from analyzers.pipeline import AnalysisResult, DiffExample, FieldDiff
from analyzers.policy import Policy
from analyzers.report import (
    ReportFiles,
    endpoint_rollup,
    floor_note,
    order_statistic_interval,
    render_html,
    render_markdown,
    write_report,
)
from analyzers.verdict import EndpointSample, EndpointSummary, GuardrailResult, Verdict

SECTIONS = ("summary", "guardrails", "latency", "errors", "diffs", "noise", "examples", "policy")


def _result(endpoint: str, metric: str, cls: str, reason: str, *, candidate: str = "orders-svc",
            unit: str = "ratio", estimate: float = 1.02, paired: bool = True) -> GuardrailResult:
    return GuardrailResult(endpoint=endpoint, metric=metric, estimate=estimate, interval=(0.98, 1.06),
                           margin=1.10 if unit == "ratio" else 0.001, n_primary=800, n_candidate=800,
                           test="paired bootstrap", paired=paired, p_value=0.01, p_harm=0.5, cls=cls,  # type: ignore[arg-type]
                           reason=reason, needed_n=None if cls == "PASS" else 4200, unit=unit,
                           primary_value=40.0, candidate_value=41.0, candidate=candidate)


def _sample(endpoint: str, paired: bool, shift: float, seed: int) -> EndpointSample:
    rng = np.random.default_rng(seed)
    p = rng.lognormal(np.log(40), 0.5, 800)
    c = p * shift if paired else rng.lognormal(np.log(40 * shift), 0.5, 700)
    c_err = np.zeros(len(c), dtype=bool)
    c_err[:3] = True
    c = np.where(c_err, np.nan, c)
    p5 = np.zeros(len(p), dtype=bool)
    c5 = np.zeros(len(c), dtype=bool)
    c5[5:12] = True
    return EndpointSample(endpoint=endpoint, paired=paired, primary_latency_ms=p, candidate_latency_ms=c,
                          primary_5xx=p5, candidate_5xx=c5, primary_transport_error=np.zeros(len(p), dtype=bool),
                          candidate_transport_error=c_err, candidate="orders-svc")


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> AnalysisResult:
    tmp_path = tmp_path_factory.mktemp("report")
    results = [
        _result("/api/orders/{id}", "latency_p95", "FAIL", "p95 is 50 % slower"),
        _result("/api/orders/{id}", "error_rate", "PASS", "within margin", unit="difference", estimate=0.0),
        _result("/api/orders", "latency_p95", "INCONCLUSIVE", "not enough data yet", paired=False),
        _result("/api/orders", "mismatch_rate", "PASS", "within budget", unit="rate", estimate=0.0),
    ]
    endpoints = [EndpointSummary("/api/orders/{id}", "orders-svc", True, False, 800, 800, "FAIL"),
                 EndpointSummary("/api/orders", "orders-svc", False, False, 800, 700, "INCONCLUSIVE")]
    verdict = Verdict(overall="FAIL", score=12.5, results=results, endpoints=endpoints,
                      policy=Policy().to_dict(), generated_at="2026-11-26T06:00:00Z", reason="1 guardrail failed")
    real = FieldDiff(endpoint="/api/orders/{id}", c_service="orders-svc", kind="body", op="removed",
                     pointer_template="/customer_id", noise=False, noise_reason=None, count=120,
                     pairs_affected=120, pairs_total=800,
                     examples=(DiffExample("req-1", "/customer_id", '"<script>alert(1)</script>"', None),
                               DiffExample("req-2", "/customer_id", "17", None)))
    noise = FieldDiff(endpoint="/api/orders/{id}", c_service="orders-svc", kind="body", op="changed",
                      pointer_template="/generated_at", noise=True,
                      noise_reason="differs between primary and secondary", count=800, pairs_affected=800,
                      pairs_total=800, examples=(DiffExample("req-3", "/generated_at", '"t1"', '"t2"'),))
    return AnalysisResult(capture_dir=tmp_path / "capture", policy=Policy(),
                          samples=(_sample("/api/orders/{id}", True, 1.5, 1), _sample("/api/orders", False, 1.0, 2)),
                          verdict=verdict, fields=(real, noise),
                          pairs_by_endpoint={"/api/orders/{id} → orders-svc": 800})


@pytest.fixture(scope="module")
def files(analysis: AnalysisResult, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_report(analysis, tmp_path_factory.mktemp("out"), progress=False)


@pytest.fixture(scope="module")
def page(files: ReportFiles) -> str:
    return files.html.read_text()


def test_report_files_are_written_and_self_contained(page: str) -> None:
    for section in SECTIONS:
        assert f'id="{section}"' in page
    # Self-contained: every src is a data URI, every href an in-page anchor.
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith("#") for h in hrefs)
    # Every in-page link lands somewhere.
    ids = set(re.findall(r'id="([^"]*)"', page))
    assert {h[1:] for h in hrefs} <= ids
    assert "<link" not in page and "<script" not in page
    assert len(re.findall(r"<img ", page)) == 2  # one latency plot per endpoint


def test_html_escapes_captured_values(page: str) -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page


def test_html_shows_verdict_reasons_noise_and_policy(page: str) -> None:
    summary = page[page.index('id="summary"'):page.index('id="guardrails"')]
    assert "FAIL" in summary and "12.5" in summary and "1 guardrail failed" in summary
    assert "latency_p95: p95 is 50 % slower" in summary
    assert "not enough data yet" in summary
    noise = page[page.index('id="noise"'):page.index('id="examples"')]
    assert "/generated_at" in noise and "differs between primary and secondary" in noise
    assert "/customer_id" not in noise
    diffs = page[page.index('id="diffs"'):page.index('id="noise"')]
    assert "15.00 %" in diffs  # 120 of 800 pairs
    assert "min_samples" in page[page.index('id="policy"'):]
    assert "docs/policy.md" in page[page.index('id="policy"'):]
    errors = page[page.index('id="errors"'):page.index('id="diffs"')]
    assert "7 (0.88 %)" in errors  # candidate 5xx on the paired endpoint, apart from transport errors
    assert "3 (0.38 %)" in errors


def test_rollup_orders_worst_first(analysis: AnalysisResult) -> None:
    rows = endpoint_rollup(analysis.verdict)
    assert [r[1] for r in rows] == ["FAIL", "INCONCLUSIVE"]
    assert rows[0][0] == "/api/orders/{id} → orders-svc"


def test_markdown_summary(analysis: AnalysisResult) -> None:
    md = render_markdown(analysis)
    assert md.startswith("## shadow verdict: ❌ FAIL")
    assert "| endpoint | error_rate | latency_p95 | mismatch_rate |" in md
    assert "`/customer_id`" in md  # top real difference
    assert "/generated_at" not in md  # noise stays out of a PR comment
    assert "docs/policy.md" in md


def test_verdict_json_is_strict_json_with_diff_fields(files: ReportFiles) -> None:
    text = files.json.read_text()
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text)
    assert doc["verdict"] == "fail"
    assert {r["metric"] for r in doc["results"]} == {"latency_p95", "error_rate", "mismatch_rate"}
    fields = {f["pointer_template"]: f for f in doc["diff_fields"]}
    assert fields["/customer_id"]["noise"] is False and fields["/customer_id"]["rate"] == pytest.approx(0.15)
    assert fields["/generated_at"]["noise_reason"] == "differs between primary and secondary"


def test_order_statistic_interval_brackets_the_quantile() -> None:
    values = np.arange(1000, dtype=float)
    lo, hi = order_statistic_interval(values, 0.95) or (None, None)
    assert lo is not None and hi is not None
    assert lo < 949.5 < hi and hi - lo < 40
    assert order_statistic_interval(np.arange(10, dtype=float), 0.99) is None  # too few to bracket p99


def test_order_statistic_interval_covers_at_its_level() -> None:
    rng = np.random.default_rng(3)
    true_p95 = float(np.exp(1.6448536))  # lognormal(0, 1)
    hits = 0
    for _ in range(400):
        ci = order_statistic_interval(rng.lognormal(0.0, 1.0, 200), 0.95)
        assert ci is not None
        hits += ci[0] <= true_p95 <= ci[1]
    assert 0.93 <= hits / 400 <= 0.995  # distribution-free, slightly conservative by discreteness


def test_readiness_lists_every_guardrail_that_holds_an_endpoint_back(analysis: AnalysisResult,
                                                                    tmp_path: Path) -> None:
    results = [
        _result("/api/a", "latency_p95", "FAIL", "p95 is slower"),
        _result("/api/a", "error_rate", "FAIL", "more 5xx", unit="difference"),
        _result("/api/a", "mismatch_rate", "INCONCLUSIVE", "not proven", unit="rate"),
        _result("/api/a", "latency_p50", "PASS", "within margin"),
    ]
    verdict = Verdict(overall="FAIL", score=0.0, results=results,
                      endpoints=[EndpointSummary("/api/a", "orders-svc", True, False, 800, 800, "FAIL")],
                      policy=Policy().to_dict(), generated_at="2026-11-26T06:00:00Z", reason="2 failed")
    page = render_html(dataclasses.replace(analysis, verdict=verdict, capture_dir=tmp_path / "none"))
    summary = page[page.index('id="summary"'):page.index('id="guardrails"')]
    row = summary[summary.index("/api/a"):]
    held = re.findall(r'<div class="held">.*?</div>', row)
    assert [re.sub(r"<[^>]+>", "", h).split()[-1] for h in held] == ["error_rate", "latency_p95", "mismatch_rate"]
    assert "latency_p50" not in row  # proven: not holding anything back


def test_a_margin_widened_by_the_floor_says_so(analysis: AnalysisResult, tmp_path: Path) -> None:
    fast = _result("/api/fast", "latency_p95", "INCONCLUSIVE", "not proven")
    fast.margin, fast.primary_value = 1.0 + 2.0 / 4.6, 4.6  # what verdict.py sets on a 4.6 ms primary
    plain = _result("/api/slow", "latency_p95", "PASS", "within margin")  # margin 1.10: the policy's own
    assert floor_note(plain, Policy()) is None
    note = floor_note(fast, Policy())
    assert note is not None and "×1.435" in note and "×1.10" in note and "2 ms" in note and "4.6 ms" in note
    verdict = dataclasses.replace(analysis.verdict, results=[fast, plain])
    page = render_html(dataclasses.replace(analysis, verdict=verdict, capture_dir=tmp_path / "none"))
    guardrails = page[page.index('id="guardrails"'):page.index('id="latency"')]
    assert guardrails.count("†") == 3  # the legend, the margin cell and its explanation
    assert _html.escape(note) in guardrails
    header = guardrails[guardrails.index("<thead>"):guardrails.index("</thead>")]
    assert header.count("<th>") == 11 and "test" not in header  # the test's name moved under the row
    assert "test: paired bootstrap (paired)" in guardrails


def test_examples_show_the_request_side_by_side(tmp_path: Path) -> None:
    from analyzers.pipeline import analyze, load_inputs
    from tests.synthetic_capture import EndpointTraffic, write_capture

    capture = write_capture(tmp_path / "capture", [EndpointTraffic(n=120, changed_field_rate=0.5)], seed=3)
    (tmp_path / "policy.yaml").write_text("n_boot: 200\n")
    policy, rules = load_inputs(tmp_path / "policy.yaml")
    result = analyze(capture, policy, rules=rules, progress=False)
    files = write_report(result, tmp_path / "report", progress=False)
    page = files.html.read_text()
    price = next(f for f in result.real_fields if f.pointer_template == "/price")
    example = page[page.index(f'id="{price.anchor}"'):]
    example = example[:example.index("back to the table")]
    assert f"<code>{price.examples[0].request_id}</code> side by side" in example
    assert "GET http://monolith.local/api/items/" in example  # method and URL with its query
    assert "request: " in example  # the request's headers and body
    assert "primary <small>(monolith)</small>" in example and "candidate <small>(items-svc)</small>" in example
    assert example.count('class="sd-real"') >= 2  # the price highlighted on both sides
    assert "<script" not in page
