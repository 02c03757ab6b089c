"""analyzers.spans: spans joined to exchanges by trace id and parent span; the regression's location."""

from __future__ import annotations

from pathlib import Path

from analyzers.spans import call_span_times, span_attribution
from shadow.capture.store import open_store
from tests.synthetic_capture import EndpointTraffic, write_capture
from tests.synthetic_spans import write_spans


def _children(role: str, endpoint: str) -> dict[tuple[str, str], float]:
    if endpoint == "/api/orders/{id}":
        # the candidate's payment call is 40 ms slower; its db is the same
        payments = 60.0 if role == "candidate" else 20.0
        return {("SELECT orders", "postgres"): 10.0, ("GET /payments", "payments"): payments}
    return {("SELECT items", "postgres"): 5.0}


def test_regressed_endpoint_shows_the_slow_span(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "cap", [
        EndpointTraffic(endpoint="/api/orders/{id}", n=60, latency_factor=2.0),
        EndpointTraffic(endpoint="/api/items/{id}", n=40, latency_factor=1.0),
    ])
    write_spans(capture, _children, duplicate_every=7)
    with open_store(capture) as store:
        times = call_span_times(store.con)
        # each exchange's own spans only: 100 pairs × 2 roles, server span + children each
        assert set(times["role"]) == {"primary", "candidate"}
        orders = times[(times["endpoint"] == "/api/orders/{id}") & (times["span"] == "GET /payments")]
        assert len(orders) == 120 and orders["n"].max() == 1  # duplicates counted once
        attribution = span_attribution(store.con)
    regressed = [a for a in attribution if a.endpoint == "/api/orders/{id}"]
    assert len(regressed) == 1
    top = regressed[0].spans.iloc[0]
    assert top["span"] == "GET /payments" and top["services"] == "payments"
    assert (top["primary_ms"], top["candidate_ms"], top["delta_ms"]) == (20.0, 60.0, 40.0)
    by_span = regressed[0].spans.set_index("span")
    assert by_span.loc["SELECT orders", "delta_ms"] == 0.0
    # the services' entry spans (named differently) compare under one name, by their self time
    assert by_span.loc["(upstream entry span)", "delta_ms"] == 0.0
    assert by_span.loc["(upstream entry span)", "services"] == "items-svc, monolith"
    assert regressed[0].calls_with_spans == (60, 60)


def test_no_spans_no_attribution(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "cap", [EndpointTraffic(n=20, latency_factor=3.0)])
    with open_store(capture) as store:
        assert span_attribution(store.con) == []


def test_report_shows_the_spans_section_only_with_spans(tmp_path: Path) -> None:
    from analyzers.pipeline import analyze, load_inputs
    from analyzers.report import render_html, render_markdown

    policy, rules = load_inputs(None)
    capture = write_capture(tmp_path / "cap", [EndpointTraffic(endpoint="/api/orders/{id}", n=60,
                                                               latency_factor=2.0)])
    without = analyze(capture, policy, rules=rules, progress=False)
    assert without.span_attribution == () and 'id="spans"' not in render_html(without)
    write_spans(capture, _children)
    result = analyze(capture, policy, rules=rules, progress=False)
    html = render_html(result)
    assert 'id="spans"' in html and "GET /payments" in html and "+40.0" in html
    assert "largest span difference is `GET /payments` (payments) +40.0 ms" in render_markdown(result)
    assert result.to_json()["span_attribution"][0]["spans"][0]["span"] == "GET /payments"
