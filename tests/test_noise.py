"""Noise cancellation: with a secondary (per request and per field), and the probe without one."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyzers.diff import Difference
from analyzers.diffs_table import compute_diffs
from analyzers.noise import (
    SECONDARY_REASON,
    FieldCounts,
    classify_fields,
    diffy_real,
    holm,
    load_probe,
    mark_secondary_noise,
    mcnemar_one_sided,
    probe_noise,
)
from shadow.cli import cli
from tests.test_diffs_table import exchange_row, write_capture
from tests.upstream import ReceivedRequest, Upstream


def body_diff(pointer: str, *, noise: bool = False) -> Difference:
    return Difference("body", "changed", pointer, pointer, "1", "2", noise, "rule: x" if noise else None)


def test_per_request_secondary_marks_same_pointer_and_descendants() -> None:
    cand = [body_diff("/ts"), body_diff("/meta/a"), body_diff("/price"), body_diff("/rid", noise=True)]
    sec = [body_diff("/ts"), body_diff("/meta"), body_diff("/rid")]
    out = mark_secondary_noise(cand, sec)
    assert [(d.pointer, d.noise, d.noise_reason) for d in out] == [
        ("/ts", True, SECONDARY_REASON), ("/meta/a", True, SECONDARY_REASON), ("/price", False, None),
        ("/rid", True, "rule: x")]  # a rule's reason is kept


def test_mcnemar_holm_and_diffy_helpers() -> None:
    assert mcnemar_one_sided(0, 0) == 1.0
    assert mcnemar_one_sided(10, 0) == pytest.approx(0.5 ** 10)
    assert mcnemar_one_sided(5, 5) > 0.5
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert diffy_real(100, 10, 1000) and not diffy_real(100, 90, 1000) and not diffy_real(10, 20, 1000)


def test_classify_fields_counts_and_decisions() -> None:
    counts = FieldCounts()
    rng = random.Random(3)
    for _ in range(300):
        c, s = set(), set()
        if rng.random() < 0.3:
            c.add(("body", "/jitter"))
        if rng.random() < 0.3:
            s.add(("body", "/jitter"))
        if rng.random() < 0.5:
            c.add(("body", "/count"))
        if rng.random() < 0.05:
            s.add(("body", "/count"))
        if rng.random() < 0.02:
            c.add(("body", "/price"))  # the secondary never differs here
        counts.add_request("/e", "svc", c, s)
    fields = {f.pointer_template: f for f in classify_fields(counts)}
    assert fields["/jitter"].requests == 300 and not fields["/jitter"].real
    assert fields["/jitter"].reason is not None and fields["/jitter"].reason.startswith("secondary rate not lower (p=")
    assert fields["/count"].real and fields["/count"].p_holm is not None and fields["/count"].p_holm < 1e-6
    assert fields["/count"].diffy_real
    assert fields["/price"].real and fields["/price"].p_value is None  # no noise evidence: stays real


def _triple(rid: str, base: dict[str, Any], cand: dict[str, Any], sec: dict[str, Any]) -> list[dict[str, Any]]:
    return [exchange_row(rid, "primary", body=base), exchange_row(rid, "candidate", body=cand),
            exchange_row(rid, "secondary", body=sec)]


def test_secondary_noise_end_to_end(tmp_path: Path) -> None:
    rng = random.Random(11)
    rows: list[dict[str, Any]] = []
    for i in range(240):
        base = {"ts": f"t{i}", "jitter": 0, "count": 1, "price": 5}
        cand = dict(base, ts=f"c{i}")
        sec = dict(base, ts=f"s{i}")  # ts differs on every request, for both: per-request noise
        if rng.random() < 0.3:
            cand["jitter"] = 1
        if rng.random() < 0.3:
            sec["jitter"] = 1
        if i % 2 == 0:
            cand["count"] = 2  # a real regression: half the requests, the secondary never
        rows += _triple(f"r{i:03d}", base, cand, sec)
    write_capture(tmp_path, rows)
    summary = compute_diffs(tmp_path, None, progress=False, workers=1)
    assert summary.secondary_pairs == 240
    diffs = pq.read_table(tmp_path / "diffs").to_pylist()
    reasons = {(d["pointer_template"], d["noise_reason"]) for d in diffs}
    assert {r for t, r in reasons if t == "/ts"} == {SECONDARY_REASON}
    assert {r for t, r in reasons if t == "/count"} == {None}
    jitter = [d for d in diffs if d["pointer_template"] == "/jitter"]
    assert jitter and all(d["noise"] for d in jitter)
    by_rate = [d for d in jitter if d["noise_reason"] != SECONDARY_REASON]
    assert by_rate and all(d["noise_reason"].startswith("secondary rate not lower (p=") for d in by_rate)
    fields = {r["pointer_template"]: r for r in pq.read_table(tmp_path / "diffs_fields").to_pylist()}
    assert fields["/count"]["real"] and not fields["/jitter"]["real"] and not fields["/ts"]["real"]
    summary_rows = pq.read_table(tmp_path / "diffs_summary").to_pylist()
    unequal = {r["request_id"] for r in summary_rows if r["equal"] is False}
    assert unequal == {f"r{i:03d}" for i in range(0, 240, 2)}


# ---------------------------------------------------------------------------------------------------
# The probe: a real threaded HTTP server on 127.0.0.1 whose answers carry a fresh requestId and time


def _volatile_answer(req: ReceivedRequest) -> tuple[int, dict[str, str], bytes]:
    doc = {"requestId": uuid.uuid4().hex, "generatedAt": datetime.now(UTC).isoformat(), "path": req.path,
           "items": [{"id": 1, "servedBy": random.choice(["a", "b", "c", "d", "e", "f", "g", "h"])}]}
    return 200, {"Content-Type": "application/json", "X-Request-Id": uuid.uuid4().hex}, json.dumps(doc).encode()


@pytest.fixture(scope="module")
def volatile_upstream() -> Any:
    with Upstream("volatile", handler=_volatile_answer) as up:
        yield up


def _probe_capture(root: Path, upstream_url: str) -> Path:
    rows: list[dict[str, Any]] = []
    for i in range(12):
        doc = {"requestId": f"p{i}", "generatedAt": "t", "path": f"/api/items/{i}",
               "items": [{"id": 1, "servedBy": "a"}]}
        cand = dict(doc, requestId=f"c{i}", path="changed" if i == 3 else doc["path"])
        for role, body in (("primary", doc), ("candidate", cand)):
            row = exchange_row(f"r{i}", role, body=body, path=f"/api/items/{i}")
            row["upstream"] = upstream_url
            rows.append(row)
    rows.append(exchange_row("w1", "primary", body={}, method="POST", path="/api/items/99"))  # never re-sent
    return write_capture(root, rows)


def test_probe_learns_volatile_fields_and_compute_diffs_uses_them(tmp_path: Path, volatile_upstream: Upstream) -> None:
    _probe_capture(tmp_path, volatile_upstream.url)

    result = probe_noise(tmp_path, sample=6, per_endpoint=6)
    assert result.probed == 6 and result.failed == 0
    assert result.differing[("/api/items/{id}", "body", "/requestId")] == (6, 6)
    assert result.differing[("/api/items/{id}", "body", "/generatedAt")] == (6, 6)
    assert ("/api/items/{id}", "body", "/path") not in result.differing  # stable between two answers
    assert ("/api/items/{id}", "header", "/x-request-id") not in result.differing  # ignored by default
    assert not any(r.method == "POST" for r in volatile_upstream.received())
    assert load_probe(tmp_path) == result

    compute_diffs(tmp_path, None, progress=False, workers=1)
    diffs = pq.read_table(tmp_path / "diffs").to_pylist()
    rid = [d for d in diffs if d["pointer"] == "/requestId"]
    assert len(rid) == 12 and all(d["noise"] for d in rid)
    assert rid[0]["noise_reason"] == "probe: differs between two primary answers (6/6)"
    real = [d for d in diffs if not d["noise"]]
    assert [(d["request_id"], d["pointer"]) for d in real] == [("r3", "/path")]
    compute_diffs(tmp_path, None, progress=False, workers=1, use_probe=False)
    assert not any(d["noise"] for d in pq.read_table(tmp_path / "diffs").to_pylist())


def test_probe_cli(tmp_path: Path, volatile_upstream: Upstream) -> None:
    _probe_capture(tmp_path, "http://127.0.0.1:1")  # the captured upstream is gone: --primary points to it
    cmd = [sys.executable, "-m", "shadow.cli", "probe", str(tmp_path), "--primary", volatile_upstream.url,
           "--sample", "3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "probed 3 requests (0 failed)" in out.stdout
    assert "/api/items/{id}  body /requestId  differs 3/3" in out.stdout
    # without --primary the captured upstream (a closed port) is used: nothing could be re-sent
    bad = CliRunner().invoke(cli, ["probe", str(tmp_path), "--sample", "2", "--timeout", "0.5"])
    assert bad.exit_code == 2 and "error: " in bad.output and "no request could be re-sent" in bad.output


def test_a_failed_secondary_is_no_evidence_of_noise(tmp_path: Path) -> None:
    rows = [exchange_row("x1", "primary", body={"a": 1}), exchange_row("x1", "candidate", body={"a": 1}, status=500),
            exchange_row("x1", "secondary", body=None, status=None, error="connect refused")]
    write_capture(tmp_path, rows)
    summary = compute_diffs(tmp_path, None, progress=False, workers=1)
    diffs = pq.read_table(tmp_path / "diffs").to_pylist()
    assert [(d["kind"], d["noise"]) for d in diffs] == [("status", False)]
    assert summary.status_changed_pairs == 1  # a real status change (judged by the 5xx guardrail)
    assert summary.pairs_with_real_diffs == 0  # not a body mismatch


def test_pairs_with_and_without_a_secondary_in_one_capture(tmp_path: Path) -> None:
    rows = [*_triple("m1", {"a": 1, "t": 1}, {"a": 2, "t": 2}, {"a": 1, "t": 3}),
            exchange_row("m2", "primary", body={"a": 1, "t": 1}), exchange_row("m2", "candidate", body={"a": 2, "t": 1})]
    write_capture(tmp_path, rows)
    compute_diffs(tmp_path, None, progress=False, workers=1)
    got = sorted((d["request_id"], d["pointer"], d["noise_reason"]) for d in pq.read_table(tmp_path / "diffs").to_pylist())
    assert got == [("m1", "/a", None), ("m1", "/t", SECONDARY_REASON), ("m2", "/a", None)]


def test_repeat_evidence_needs_the_same_request_and_the_same_status(tmp_path: Path) -> None:
    from analyzers.noise import REPEAT_SOURCE, repeat_evidence
    from shadow.capture.store import open_store

    rows = []
    for i in range(6):  # /api/items/1 asked six times: the stamp differs between the primary's answers
        rows.append(exchange_row(f"a{i}", "primary", body={"id": 1, "stamp": i}))
    # the same path for another user (another Authorization): not the same request
    other = exchange_row("b0", "primary", body={"id": 1, "stamp": 99, "owner": "bob"})
    other["req_headers"] = [{"name": "Authorization", "value": "Bearer bob"}]
    rows.append(other)
    # asked twice, answered 200 then 500: no evidence about body fields
    rows += [exchange_row("c0", "primary", body={"x": 1}, path="/api/items/2"),
             exchange_row("c1", "primary", body={"e": 1}, path="/api/items/2", status=500)]
    write_capture(tmp_path, rows)
    with open_store(tmp_path) as store:
        evidence = repeat_evidence(store.con)
    assert evidence.source == REPEAT_SOURCE
    assert evidence.endpoints == {"/api/items/{id}": 1}
    assert evidence.differing == {("/api/items/{id}", "body", "/stamp"): (1, 1)}
    assert evidence.reason("/api/items/{id}", "body", "/stamp") == (
        "differs between the primary's own answers to identical requests (1/1)")
    assert evidence.reason("/api/items/{id}", "body", "/id") is None
