"""The demo's answer key against its report: every difference seeded in shadow/demo/seeds.py shows up
as a real difference (or a non-passing guardrail), and no volatile field does.

One real `shadow demo` run (services, `shadow gateway`, traffic), whose last step writes the report.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from shadow.capture.store import open_store
from shadow.demo import seeds
from tests.conftest import REPO

REQUESTS = 500  # enough mirrored list requests for the seeded 2 % of 500s to show at least once


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo-report") / "out"
    run = subprocess.run([sys.executable, "-m", "shadow.cli", "demo", "--requests", str(REQUESTS), "--out",
                          str(out), "--no-progress"], capture_output=True, text=True, timeout=150, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = out / "report"
    with open_store(out / "capture") as store:
        candidate_5xx = dict(store.sql("SELECT endpoint, count(*) FROM exchanges WHERE role = 'candidate' "
                                       "AND status >= 500 GROUP BY endpoint").fetchall())
    return {"stdout": run.stdout, "candidate_5xx": candidate_5xx, "verdict": json.loads((report / "verdict.json").read_text()),
            "html": (report / "report.html").read_text(), "summary": (report / "summary.md").read_text(),
            "report": report}


def _real(verdict: dict[str, Any], endpoint: str) -> list[dict[str, Any]]:
    return [f for f in verdict["diff_fields"] if f["endpoint"] == endpoint and not f["noise"]]


def _results(verdict: dict[str, Any], endpoint: str, metric_prefix: str) -> list[dict[str, Any]]:
    return [r for r in verdict["results"] if r["endpoint"] == endpoint and r["metric"].startswith(metric_prefix)]


def test_demo_ends_with_the_verdict_and_the_report_path(demo: dict[str, Any]) -> None:
    tail = demo["stdout"].strip().splitlines()[-3:]
    assert re.match(r"verdict: (PASS|FAIL|INCONCLUSIVE) \(score ", tail[0]), tail
    assert tail[1] == f"report:  {demo['report'] / 'report.html'}"
    assert demo["verdict"]["verdict"] == "fail"  # the seeded candidate is not ready


@pytest.mark.parametrize("seed", seeds.SEEDED_DIFFERENCES, ids=lambda s: s.name)
def test_every_seeded_difference_is_found(demo: dict[str, Any], seed: seeds.SeededDifference) -> None:
    verdict = demo["verdict"]
    real = _real(verdict, seed.endpoint)
    templates = {(f["op"], f["pointer_template"]) for f in real if f["kind"] == "body"}
    html = demo["html"]
    diffs_section = html[html.index('id="diffs"'):html.index('id="noise"')]
    match seed.kind:
        case "renamed_field":
            # the same value under a new key: one `renamed` difference (old key → new key)
            for old, new in zip(seed.pointers, seed.candidate_pointers, strict=True):
                assert ("renamed", old) in templates, templates
                assert ("removed", old) not in templates and ("added", new) not in templates, templates
                assert old in diffs_section and new in diffs_section
        case "numeric_rounding":
            for pointer in seed.pointers:
                assert ("changed", pointer) in templates, templates
                assert pointer in diffs_section
        case "array_order":
            # The same elements in another order: one `reordered` difference at the array.
            for pointer in seed.pointers:
                assert ("reordered", pointer) in templates, templates
                assert not [t for op, t in templates if t.startswith(pointer + "/")], templates
        case "latency":
            results = _results(verdict, seed.endpoint, "latency_")
            assert any(r["class"] == "FAIL" for r in results), results
            assert all(r["class"] != "PASS" for r in results if r["metric"] in ("latency_bulk", "latency_p50"))
        case "error_rate":
            results = _results(verdict, seed.endpoint, "error_rate")
            assert results and all(r["class"] != "PASS" for r in results), results
            # The orders service draws its 500s from one RNG shared with the detail jitter, so how
            # many land in a short run depends on arrival order; check against what was captured.
            if demo["candidate_5xx"].get(seed.endpoint, 0) > 0:
                assert results[0]["candidate_value"] > results[0]["primary_value"]
                assert any(f["kind"] == "status" for f in real)  # the 500s differ from the primary's 200s
        case _:
            pytest.fail(f"no check for seeded kind {seed.kind}")
    # The endpoint is never called ready while its seeded difference is there.
    summaries = [e for e in verdict["endpoints"] if e["endpoint"] == seed.endpoint]
    assert summaries and all(e["class"] != "PASS" for e in summaries)


def test_volatile_fields_are_noise_never_real(demo: dict[str, Any]) -> None:
    fields = demo["verdict"]["diff_fields"]
    real_body = {f["pointer_template"] for f in fields if not f["noise"] and f["kind"] == "body"}
    real_headers = {f["pointer_template"].lstrip("/").lower() for f in fields if not f["noise"] and f["kind"] == "header"}
    for pointer in seeds.VOLATILE_BODY_FIELDS:
        name = pointer.rsplit("/", 1)[-1]
        assert not any(t == pointer or t.endswith("/" + name) for t in real_body), (pointer, real_body)
    for header in seeds.VOLATILE_HEADERS:
        assert header not in real_headers
    noise_body = {f["pointer_template"] for f in fields if f["noise"]}
    assert set(seeds.VOLATILE_BODY_FIELDS) <= noise_body  # seen, and explained as noise
    noise_section = demo["html"][demo["html"].index('id="noise"'):demo["html"].index('id="examples"')]
    assert all(p in noise_section for p in seeds.VOLATILE_BODY_FIELDS)


def test_summary_lists_seeded_fields_as_top_real_differences(demo: dict[str, Any]) -> None:
    summary = demo["summary"]
    assert summary.startswith("## shadow verdict: ❌ FAIL")
    seeded = [p for s in seeds.SEEDED_DIFFERENCES for p in (*s.pointers, *s.candidate_pointers)]
    assert any(f"`{p}" in summary for p in seeded)
    assert "generated_at" not in summary
