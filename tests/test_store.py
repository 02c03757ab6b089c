"""Store: DuckDB views over a capture folder, and `shadow sql`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shadow.capture.settings import CaptureSettings, RedactionSettings
from shadow.capture.store import PAIR_ROLE_COLUMNS, PAIR_SHARED_COLUMNS, open_store
from shadow.capture.writer import CaptureWriter
from shadow.errors import CaptureError

REPO = Path(__file__).resolve().parent.parent


def row(request_id: str, role: str, status: int | None, body: bytes | None, **kw: Any) -> dict[str, Any]:
    return {"request_id": request_id, "role": role, "mode": "mirror", "service": role[:4], "ts": time.time_ns(),
            "method": "GET", "url": f"http://h/api/items/{request_id}", "status": status,
            "resp_headers": [("Content-Type", "application/json")], "resp_body": body, **kw}


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "cap"
    s = CaptureSettings(dir=root, redaction=RedactionSettings(key=b"k"))
    with CaptureWriter(s, gateway_id="gw") as w:
        # 1: primary + candidate + secondary; 2: primary + candidate; 3: primary only (no pair).
        w.submit(row("1", "primary", 200, b'{"a": 1, "b": 2}', client_key="u1"))
        w.submit(row("1", "candidate", 200, b'{"b": 2, "a": 1}'))
        w.submit(row("1", "secondary", 500, b'{"err": true}'))
        w.submit(row("2", "primary", 200, b'{"a": 1}'))
        w.submit(row("2", "candidate", 404, b'{"a": 2}'))
        w.submit(row("3", "primary", 200, b"{}"))
        # 4: the candidate did not answer (transport error: no status, no body).
        w.submit(row("4", "primary", 200, b"{}"))
        w.submit(row("4", "candidate", None, None, error="connection refused"))
        w.update_counters({"mirror_shed": 3})
    return root


def test_views_and_pairs(capture: Path) -> None:
    with open_store(capture, threads=1) as store:
        assert store.tables() == ["capture_stats", "exchanges", "pairs"]
        assert store.sql("SELECT count(*) FROM exchanges").fetchall() == [(8,)]
        pairs = store.sql("SELECT * FROM pairs ORDER BY request_id").to_arrow_table()
        expected = [*PAIR_SHARED_COLUMNS] + [f"{p}_{c}" for p in "pcs" for c in PAIR_ROLE_COLUMNS]
        assert pairs.column_names == expected
        rows = pairs.to_pylist()
        assert [r["request_id"] for r in rows] == ["1", "2", "4"]
        one, two, four = rows
        assert (four["c_status"], four["c_error"], four["c_body_hash"]) == (None, "connection refused", None)
        assert four["p_status"] == 200 and four["p_error"] is None
        assert one["p_body_hash"] == one["c_body_hash"]  # reordered JSON keys hash equal
        assert one["s_status"] == 500 and one["client_key"] == "u1"
        assert one["endpoint"] == "/api/items/{id}"
        assert two["s_exchange_id"] is None and two["c_status"] == 404
        stats = store.sql("SELECT gateway, sealed_rows, mirror_shed FROM capture_stats").fetchall()
        assert stats == [("gw", 8, 3)]
        hours = store.sql("SELECT DISTINCT typeof(dt), typeof(hour) FROM exchanges").fetchall()
        assert hours == [("DATE", "INTEGER")]


def test_missing_schema_column_reads_as_null(tmp_path: Path) -> None:
    # A capture written by an older writer that did not have `client_key` and `trace_id` yet.
    folder = tmp_path / "cap" / "exchanges" / "dt=2026-01-01" / "hour=00"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["1", "1"], "role": ["primary", "candidate"], "status": [200, 201]}),
                   folder / "part-x.parquet")
    with open_store(tmp_path / "cap") as store:
        assert store.sql("SELECT c_status, p_trace_id, client_key FROM pairs").fetchall() == [(201, None, None)]


def test_diffs_and_spans_views(tmp_path: Path) -> None:
    root = tmp_path / "cap"
    (root / "exchanges").mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["1"], "role": ["primary"]}), root / "exchanges" / "a.parquet")
    (root / "diffs" / "dt=2026-01-01" / "hour=00").mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["1"], "op": ["replace"]}),
                   root / "diffs" / "dt=2026-01-01" / "hour=00" / "d.parquet")
    (root / "spans").mkdir()
    pq.write_table(pa.table({"trace_id": ["t"]}), root / "spans" / "s.parquet")
    (root / "diffs_summary").mkdir()
    pq.write_table(pa.table({"equal": [True]}), root / "diffs_summary" / "s.parquet")
    (root / "_private").mkdir()
    pq.write_table(pa.table({"x": [1]}), root / "_private" / "p.parquet")
    (root / "Not-An-Identifier").mkdir()
    pq.write_table(pa.table({"x": [1]}), root / "Not-An-Identifier" / "p.parquet")
    with open_store(root) as store:
        assert store.tables() == ["diffs", "diffs_summary", "exchanges", "pairs", "spans"]
        assert store.sql("SELECT equal FROM diffs_summary").fetchall() == [(True,)]
        assert store.sql("SELECT op, hour FROM diffs").fetchall() == [("replace", 0)]
        assert store.sql("SELECT trace_id FROM spans").fetchall() == [("t",)]


def test_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"nope: capture folder not found"):
        open_store(tmp_path / "nope")
    (tmp_path / "notcap").mkdir()
    with pytest.raises(CaptureError, match=r"notcap: not a capture folder"):
        open_store(tmp_path / "notcap")
    (tmp_path / "empty" / "exchanges").mkdir(parents=True)
    with pytest.raises(CaptureError, match=r"empty/exchanges: no sealed Parquet yet"):
        open_store(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CaptureError, match=r"file: not a folder"):
        open_store(tmp_path / "file")
    bad = tmp_path / "bad" / "exchanges"
    bad.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["1"]}), bad / "good.parquet")
    (bad / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(CaptureError) as info:
        open_store(tmp_path / "bad")
    assert "broken.parquet" in str(info.value) and "\n" not in str(info.value)


def test_a_corrupt_stats_file_leaves_only_capture_stats_out(capture: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = capture / "_stats" / "broken.json"
    bad.write_text("{not json")
    try:
        with caplog.at_level("WARNING"), open_store(capture) as store:
            assert store.tables() == ["exchanges", "pairs"]
        assert "capture_stats view is left out" in caplog.text
    finally:
        bad.unlink()


def test_a_half_written_temporary_is_invisible(capture: Path) -> None:
    # What a seal leaves behind when killed before its rename: not matched by the readers' glob.
    part = next(capture.glob("exchanges/dt=*/hour=*"))
    tmp = part / (".part-gw-" + "0" * 32 + ".parquet.dead.tmp")
    tmp.write_bytes(b"PAR1 half written")
    try:
        with open_store(capture) as store:
            assert store.sql("SELECT count(*) FROM exchanges").fetchall() == [(8,)]
    finally:
        tmp.unlink()


def test_unsealed_journal_is_invisible_until_seal(tmp_path: Path) -> None:
    s = CaptureSettings(dir=tmp_path / "cap", redaction=RedactionSettings(key=b"k"))
    with CaptureWriter(s, gateway_id="gw") as w:
        w.submit(row("1", "primary", 200, b"{}"))
        w.seal()
        w.submit(row("2", "primary", 200, b"{}"))
        w.flush()
        with open_store(s.dir) as store:  # the journal (row 2) is not visible, and breaks nothing
            assert store.sql("SELECT request_id FROM exchanges").fetchall() == [("1",)]
    with open_store(s.dir) as store:
        assert store.sql("SELECT count(*) FROM exchanges").fetchall() == [(2,)]


def shadow_sql(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "shadow.cli", "sql", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_shadow_sql_command(capture: Path) -> None:
    out = shadow_sql(str(capture), "SELECT request_id, c_status FROM pairs ORDER BY 1", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"request_id": "1", "c_status": 200}, {"request_id": "2", "c_status": 404},
                                      {"request_id": "4", "c_status": None}]

    out = shadow_sql(str(capture), "SELECT nonsense FROM exchanges")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1


def test_shadow_sql_formats_and_errors_in_process(capture: Path) -> None:
    from click.testing import CliRunner

    from shadow.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["sql", str(capture), "SELECT role, ts FROM exchanges ORDER BY ts", "--format", "csv",
                              "--max-rows", "2"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0] == "role,ts" and len(out.stdout.splitlines()) == 3
    assert "showing the first 2 rows" in out.stderr

    out = runner.invoke(cli, ["sql", str(capture), "SELECT endpoint, count(*) AS n FROM exchanges GROUP BY 1"])
    assert out.exit_code == 0, out.output
    assert out.stdout.split() == ["endpoint", "n", "---------------", "-", "/api/items/{id}", "8"]

    out = runner.invoke(cli, ["sql", str(capture), "SELECT resp_body, req_headers FROM exchanges LIMIT 1",
                              "--format", "json"])
    assert out.exit_code == 0, out.output
    assert isinstance(json.loads(out.stdout)[0]["resp_body"], str)

    out = runner.invoke(cli, ["sql", str(capture.parent / "missing"), "SELECT 1"])
    assert out.exit_code == 2
    assert out.stderr.strip() == f"error: {capture.parent / 'missing'}: capture folder not found"


def test_shadow_sql_rounds_floats_for_reading_and_names_the_missing_analysis(capture: Path) -> None:
    from click.testing import CliRunner

    from shadow.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["sql", str(capture), "SELECT 1/3 AS third"])
    assert out.exit_code == 0, out.output
    assert out.stdout.split() == ["third", "--------", "0.333333"]
    out = runner.invoke(cli, ["sql", str(capture), "SELECT 1/3 AS third", "--format", "json"])
    assert json.loads(out.stdout) == [{"third": 1 / 3}]  # every digit where a program reads it
    out = runner.invoke(cli, ["sql", str(capture), "SELECT count(*) FROM diffs"])
    assert out.exit_code == 2
    assert out.stderr.strip() == (f"error: {capture}: no diffs table yet: the analysis writes it; run "
                                  f"`shadow report {capture}` (or `shadow gate {capture}`) first")
