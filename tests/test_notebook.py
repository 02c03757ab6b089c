"""shadow.open / shadow/notebook.py against a copy of the sample capture (data/demo-capture).

The demo's seeded differences (shadow/demo/seeds.py) are the answer key: a renamed customer_id is
a real difference, generated_at a noise one; the candidate's slower detail endpoint fails the verdict.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shadow
from shadow.errors import CaptureError
from shadow.notebook import Capture, Mark, PairView, render_body_html, render_json_html

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "demo-capture"


@pytest.fixture(scope="module")
def capture_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("nb") / "demo-capture"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns("diffs*", "report"))
    return target


@pytest.fixture(scope="module")
def cap(capture_copy: Path) -> Capture:
    opened = shadow.open(capture_copy, progress=False)
    yield opened
    opened.close()


def test_import_shadow_stays_cheap() -> None:
    code = ("import sys, shadow; heavy = [m for m in ('duckdb', 'pandas', 'pyarrow', 'numpy', 'shadow.notebook') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_open_reports_a_missing_folder_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="capture folder not found") as info:
        shadow.open(tmp_path / "nope")
    assert "\n" not in str(info.value)


def test_exchanges_and_pairs(cap: Capture) -> None:
    n = cap.exchanges.count("*").fetchall()[0][0]
    frame = cap.exchanges_df()
    assert len(frame) == n > 0
    assert "resp_body" not in frame.columns and "resp_body" in cap.exchanges_df(bodies=True, limit=3).columns
    assert len(cap.exchanges_df(limit=5)) == 5
    pairs = cap.pairs_df()
    assert set(pairs["endpoint"]) == {"/api/orders", "/api/orders/{id}"}  # only /api/orders is mirrored
    assert pairs["s_exchange_id"].notna().all()


def test_diffs_are_computed_on_first_use_and_earlier_relations_stay_valid(cap: Capture,
                                                                          capture_copy: Path) -> None:
    before = cap.exchanges.filter("role = 'primary'")
    assert "diffs" not in cap.tables() and not (capture_copy / "diffs").exists()
    diffs = cap.diffs_df()
    assert (capture_copy / "diffs").is_dir() and "diffs_summary" in cap.tables()
    assert before.count("*").fetchall()[0][0] > 0  # same connection: still usable
    real = diffs[~diffs["noise"]]
    renamed = real[real["op"] == "renamed"]
    assert "/customer_id" in set(renamed["pointer_template"]) and '"/customerId"' in set(renamed["new"])
    assert "/generated_at" in set(diffs[diffs["noise"]]["pointer_template"])
    assert "/generated_at" not in set(real["pointer_template"])
    assert len(cap.diffs_df(noise=True)) + len(cap.diffs_df(noise=False)) == len(diffs)


def test_top_fields_ranks_real_and_noise_apart_per_endpoint(cap: Capture) -> None:
    top = cap.top_fields(2)
    assert list(top.columns[:7]) == ["endpoint", "c_service", "kind", "op", "pointer_template", "noise",
                                     "noise_reason"]
    assert (top.groupby(["endpoint", "c_service", "noise"]).size() <= 2).all()
    detail = cap.top_fields(10, endpoint="/api/orders/{id}")
    assert set(detail["endpoint"]) == {"/api/orders/{id}"}
    real = detail[~detail["noise"]].set_index(["op", "pointer_template"])
    assert real.loc[("renamed", "/customer_id"), "share"] > 0.9
    assert real.loc[("renamed", "/customer_id"), "accept_with"] == (
        '- {ignore: "/customer_id", endpoint: "/api/orders/{id}"}')
    assert (detail[detail["noise"]]["accept_with"] == "").all()
    assert (detail["share"] <= 1).all() and (detail["pairs_affected"] <= detail["pairs_total"]).all()
    with pytest.raises(ValueError, match="at least 1"):
        cap.top_fields(0)


def test_pair_renders_side_by_side_with_real_and_noise_highlighted(cap: Capture) -> None:
    rid = cap.sql("SELECT request_id FROM pairs WHERE endpoint = '/api/orders/{id}' AND p_status = 200 "
                  "ORDER BY request_id LIMIT 1").fetchall()[0][0]
    view = cap.pair(rid)
    assert view.roles == ["primary", "candidate", "secondary"] and view.compared
    page = view._repr_html_()
    # a rename is marked on the old key (primary's side) and on the new key (candidate's side)
    assert page.count('class="sd-real" title="renamed /customer_id: &quot;/customer_id&quot; → &quot;/customerId&quot;') == 2
    assert 'class="sd-noise" title="changed /generated_at' in page
    assert {d["pointer"] for d in view.secondary_diffs} >= {"/generated_at", "/request_id"}
    frame = view.to_frame()
    assert set(frame[frame["noise"]]["pointer"]) >= {"/generated_at"}
    with pytest.raises(CaptureError, match="no pair with request_id 'missing'"):
        cap.pair("missing")
    later = PairView(request_id="r", endpoint="/e", method="GET", url="/e", sides=view.sides, compared=False)
    assert "Not diffed yet" in later._repr_html_() and "No differences" not in later._repr_html_()


def test_everything_from_traffic_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    body = json.dumps({"<b>k</b>": evil, "ok": 1}).encode()
    page = render_body_html(body, "application/json", {"/<b>k<~1b>": Mark(False, evil)})
    assert "<script>" not in page and "<b>k</b>" not in page
    assert "&lt;script&gt;" in page and 'class="sd-real"' in page
    assert "<script>" not in render_body_html(evil.encode(), "text/html", {"": Mark(True, "x")})
    view = PairView(request_id=evil, endpoint=evil, method="GET", url=evil, sides={
        "primary": {"service": evil, "status": 200, "latency_ms": 1.0, "error": None,
                    "headers": [{"name": evil, "value": evil}], "body": evil.encode(), "content_type": "text/html"},
        "candidate": {"service": "c", "status": None, "latency_ms": None, "error": evil,
                      "headers": [], "body": None, "content_type": None}},
        diffs=[{"kind": "status", "op": "changed", "pointer": "", "pointer_template": "", "old": evil, "new": evil,
                "noise": False, "noise_reason": None}])
    assert "<script>" not in view._repr_html_()


def test_render_json_marks_only_the_pointed_nodes() -> None:
    page = render_json_html({"a/b": [1, {"c~": 2}], "d": 3}, {"/a~1b/1/c~0": Mark(True, "t")})
    assert page.count('class="sd-noise"') == 1 and "&quot;c~&quot;: 2" in page.split('class="sd-noise"')[1]
    assert 'class="sd-real"' not in page


def test_verdict_table(cap: Capture) -> None:
    table = cap.verdict()
    assert table.overall == "FAIL"  # the seeded candidate is built to fail
    frame = table.to_frame()
    assert {"endpoint", "metric", "class", "estimate", "reason"} <= set(frame.columns)
    held = table.held_back()
    assert "PASS" not in set(held["class"])
    failing = held[held["class"] == "FAIL"]
    assert "latency_p50" in set(failing[failing["endpoint"] == "/api/orders/{id}"]["metric"])
    page = table._repr_html_()
    assert "FAIL" in page and "<td>/api/orders/{id}" in page
    assert cap.verdict() is table  # cached
    assert cap.analysis().verdict is table.result.verdict


def test_spans_join_the_exchanges(cap: Capture) -> None:
    assert cap.has_spans  # the sample's gateway ran with telemetry and its receiver embedded
    assert len(cap.spans_df(limit=5)) == 5
    joined = cap.sql("SELECT count(*) FROM exchanges x JOIN spans s USING (trace_id, span_id)").fetchall()[0][0]
    assert joined > 1000  # each exchange's id is its upstream call's client span


def test_the_sample_locates_the_candidates_extra_time_in_its_own_span(cap: Capture) -> None:
    # The demo services export their own spans (shadow/demo/tracing.py): the seeded +20 ms of the
    # orders service's detail endpoint sits in its order lookup, and the attribution says so.
    from analyzers.spans import span_attribution

    by_endpoint = {a.endpoint: a for a in span_attribution(cap.con)}
    detail = by_endpoint["/api/orders/{id}"]
    largest = detail.spans.sort_values("delta_ms", ascending=False).iloc[0]
    assert largest["span"] == "SELECT orders"
    assert largest["delta_ms"] > 15  # seeds.CANDIDATE_EXTRA_LATENCY_MS, within its jitter
    db_services = {str(s) for (s,) in cap.sql(
        "SELECT DISTINCT service_name FROM spans WHERE attributes LIKE '%\"db.system\"%'").fetchall()}
    assert db_services == {"monolith", "monolith-b", "orders"}


def test_spans_absent_is_a_clear_error(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE, tmp_path / "c", ignore=shutil.ignore_patterns("spans", "diffs*", "report"))
    with shadow.open(tmp_path / "c", progress=False) as without:
        assert not without.has_spans
        with pytest.raises(CaptureError, match="no spans in this capture"):
            _ = without.spans


def test_a_policy_file_brings_its_diff_rules(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE, tmp_path / "c", ignore=shutil.ignore_patterns("spans", "diffs*", "report"))
    policy = tmp_path / "policy.yaml"
    policy.write_text('rules:\n  - ignore: "**/total"\n')
    with shadow.open(tmp_path / "c", policy=policy, progress=False) as ruled:
        top = ruled.top_fields(10, endpoint="/api/orders/{id}")
        total = top[top["pointer_template"] == "/total"]
        assert len(total) == 1 and bool(total["noise"].iloc[0])
        assert "**/total" in total["noise_reason"].iloc[0]
