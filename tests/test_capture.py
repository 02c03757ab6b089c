"""CaptureWriter: journal → seal → Parquet, partitioning, segment rules, crash recovery, shedding."""

from __future__ import annotations

import fcntl
import gzip
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import brotli
import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shadow.capture.canonical import body_hash
from shadow.capture.schema import EXCHANGES
from shadow.capture.settings import CaptureSettings, RedactionSettings
from shadow.capture.writer import (
    JOURNAL_DIR,
    CaptureWriter,
    prepare_exchange,
    read_journal,
)
from shadow.errors import CaptureError

REPO = Path(__file__).resolve().parent.parent
KEY = b"k" * 32


def exchange(i: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": f"r{i}",
        "exchange_id": f"x{i}",
        "role": "primary",
        "mode": "serve",
        "service": "mono",
        "ts": time.time_ns(),
        "method": "GET",
        "url": f"http://127.0.0.1:1/api/orders/{i}?page=2",
        "req_headers": [("Accept", "application/json")],
        "status": 200,
        "resp_headers": [("Content-Type", "application/json")],
        "resp_body": b'{"id": %d, "ok": true}' % i,
        "latency_ms": 1.5,
    }
    row.update(overrides)
    return row


def settings(tmp_path: Path, **kw: Any) -> CaptureSettings:
    kw.setdefault("redaction", RedactionSettings(key=KEY))
    return CaptureSettings(dir=tmp_path / "cap", **kw)


def sealed_files(table_dir: Path) -> list[Path]:
    return sorted(p for p in table_dir.rglob("*.parquet"))


def duck(query: str) -> duckdb.DuckDBPyRelation:
    rel = duckdb.sql(query)
    assert rel is not None
    return rel


def read_all(table_dir: Path) -> pa.Table:
    glob = str(table_dir / "**" / "*.parquet")
    return duck(f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)").to_arrow_table()


def test_round_trip_seals_partitioned_parquet_with_derived_fields(tmp_path: Path) -> None:
    s = settings(tmp_path)
    ts = time.time_ns()  # one timestamp: the rows cannot straddle an hour boundary
    with CaptureWriter(s, gateway_id="gw1") as w:
        for i in range(10):
            assert w.submit(exchange(i, ts=ts + i))
        w.flush()
        assert w.stats().journaled == 10
        assert sealed_files(s.dir / "exchanges") == []  # journaled, not yet sealed
    st = w.stats()
    assert (st.submitted, st.journaled, st.sealed_rows, st.shed, st.write_errors) == (10, 10, 10, 0, 0)
    files = sealed_files(s.dir / "exchanges")
    assert len(files) == 1
    first = read_all(s.dir / "exchanges").to_pylist()[0]
    assert files[0].parent.name == f"hour={first['ts']:%H}"
    assert files[0].parent.parent.name == f"dt={first['ts']:%Y-%m-%d}"
    assert files[0].name.startswith("part-gw1-")
    assert not list((s.dir / "exchanges" / JOURNAL_DIR).glob("*.arrows"))
    rows = {r["exchange_id"]: r for r in read_all(s.dir / "exchanges").to_pylist()}
    assert len(rows) == 10
    r3 = rows["x3"]
    assert r3["endpoint"] == "/api/orders/{id}"
    assert r3["path"] == "/api/orders/3" and r3["query"] == "page=2"
    assert r3["gateway"] == "gw1"
    assert r3["body_hash"] == body_hash(b'{"ok": true, "id": 3}', "application/json")
    assert r3["body_size"] == len(b'{"id": 3, "ok": true}')
    assert r3["resp_content_type"] == "application/json"
    assert r3["truncated"] is False
    assert r3["req_headers"] == [{"name": "Accept", "value": "application/json"}]
    # Parquet is zstd-compressed.
    meta = pq.ParquetFile(files[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_rows_are_partitioned_by_utc_hour_of_ts(tmp_path: Path) -> None:
    s = settings(tmp_path)
    t1 = datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
    t2 = datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC)
    with CaptureWriter(s, gateway_id="gw") as w:
        w.submit(exchange(1, ts=t1))
        w.submit(exchange(2, ts=int(t2.timestamp()) * 10**9))
        w.submit(exchange(3, ts=int(t2.timestamp()) * 10**9 + 5))
    parts = sorted(str(p.relative_to(s.dir / "exchanges").parent) for p in sealed_files(s.dir / "exchanges"))
    assert parts == ["dt=2026-03-01/hour=23", "dt=2026-03-02/hour=00"]
    t = read_all(s.dir / "exchanges")
    by_id = {r["exchange_id"]: r for r in t.to_pylist()}
    assert by_id["x1"]["ts"] == t1
    assert str(by_id["x2"]["dt"]) == "2026-03-02"


def test_segment_sealed_by_row_count(tmp_path: Path) -> None:
    s = settings(tmp_path, segment_rows=50, segment_seconds=3600)
    ts = time.time_ns()  # one hour: one file per segment
    with CaptureWriter(s, gateway_id="gw") as w:
        for i in range(120):
            w.submit(exchange(i, ts=ts))
            if i % 10 == 9:
                w.flush()  # each flush is one journal batch, so a segment ends every 50 rows
        deadline = time.monotonic() + 5
        while w.stats().sealed_rows < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.stats().sealed_rows == 100
        assert w.stats().segments == 2
    assert w.stats().sealed_rows == 120
    assert read_all(s.dir / "exchanges").num_rows == 120


def test_segment_sealed_by_age(tmp_path: Path) -> None:
    s = settings(tmp_path, segment_rows=10**6, segment_seconds=0.3)
    with CaptureWriter(s, gateway_id="gw") as w:
        w.submit(exchange(1))
        deadline = time.monotonic() + 5
        while w.stats().sealed_rows < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.stats().sealed_rows == 1  # sealed while the writer is still open
        assert len(sealed_files(s.dir / "exchanges")) == 1


def test_explicit_seal_makes_rows_visible(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with CaptureWriter(s, gateway_id="gw") as w:
        w.submit(exchange(1))
        w.seal()
        assert read_all(s.dir / "exchanges").num_rows == 1
        w.submit(exchange(2))
    assert read_all(s.dir / "exchanges").num_rows == 2


def test_union_by_name_reads_files_with_and_without_a_new_column(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with CaptureWriter(s, gateway_id="old") as w:
        w.submit(exchange(1))
    wider = EXCHANGES.append(pa.field("tenant", pa.string()))
    with CaptureWriter(s, gateway_id="new", schema=wider) as w:
        w.submit(exchange(2, tenant="acme"))
    t = read_all(s.dir / "exchanges")
    by_id = {r["exchange_id"]: r for r in t.to_pylist()}
    assert by_id["x1"]["tenant"] is None
    assert by_id["x2"]["tenant"] == "acme"


def test_queue_full_sheds_and_counts(tmp_path: Path) -> None:
    s = settings(tmp_path, max_queue=5)
    blocked = BlockedPrepare()
    w = CaptureWriter(s, gateway_id="gw", prepare=blocked)
    try:
        assert w.submit(exchange(0))
        w._wake.set()
        assert blocked.entered.wait(10)
        results = [w.submit(exchange(i)) for i in range(1, 50)]
        assert results == [True] * 5 + [False] * 44
        st = w.stats()
        assert (st.submitted, st.shed, st.queued) == (6, 44, 5)
    finally:
        blocked.release.set()
        w.close()
    assert w.stats().sealed_rows == 6
    assert not w.submit(exchange(99))  # closed: refused and counted
    assert w.stats().shed == 45


def test_close_is_idempotent_and_publishes_stats(tmp_path: Path) -> None:
    s = settings(tmp_path)
    w = CaptureWriter(s, gateway_id="gw")
    w.submit(exchange(1))
    w.update_counters({"mirror_shed": 7})
    w.close()
    w.close()
    import json

    stats = json.loads((s.dir / "_stats" / "gw.json").read_text())
    assert stats["gateway"] == "gw"
    assert stats["sealed_rows"] == 1
    assert stats["mirror_shed"] == 7
    assert w.stats().extra == {"mirror_shed": 7}


def test_bad_row_is_dropped_and_counted_others_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = settings(tmp_path)
    with caplog.at_level("ERROR"), CaptureWriter(s, gateway_id="gw") as w:
        w.submit(exchange(1))
        w.submit(exchange(2, status="not a number"))
        w.submit(exchange(3, ts="yesterday"))
        w.submit(exchange(4))
    assert w.stats().write_errors == 2
    assert "ts must be int ns since epoch or datetime, not str" in caplog.text
    assert sorted(r["exchange_id"] for r in read_all(s.dir / "exchanges").to_pylist()) == ["x1", "x4"]


def test_generic_table_without_prepare(tmp_path: Path) -> None:
    schema = pa.schema([("trace_id", pa.string()), ("ts", pa.timestamp("ns", tz="UTC")), ("n", pa.int64())])
    s = settings(tmp_path)
    with CaptureWriter(s, table="spans", schema=schema, gateway_id="gw") as w:
        w.submit({"trace_id": "t", "ts": time.time_ns(), "n": 1})
    t = read_all(s.dir / "spans")
    assert t.column("n").to_pylist() == [1]
    assert (s.dir / "_stats" / "gw.spans.json").exists()


# -- prepare_exchange ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "coding,encode",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ],
)
def test_prepare_decodes_response_body(coding: str, encode: Any) -> None:
    body = b'{"b": 2, "a": [1, 2, 3]}'
    s = CaptureSettings()
    row = exchange(1, resp_body=encode(body),
                   resp_headers=[("Content-Type", "application/json"), ("Content-Encoding", coding)])
    out = prepare_exchange(row, s, KEY)
    assert out["resp_body"] == body
    assert out["body_size"] == len(body)
    assert out["body_hash"] == body_hash(body, "application/json")
    assert out.get("capture_note") is None


def test_prepare_decodes_request_body_and_drops_its_content_encoding() -> None:
    body = b'{"q": 1}'
    row = exchange(1, req_body=gzip.compress(body),
                   req_headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
                   resp_body=gzip.compress(body),
                   resp_headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")])
    out = prepare_exchange(row, CaptureSettings(), KEY)
    assert out["req_body"] == body and out["resp_body"] == body
    assert out["req_headers"] == [("Content-Type", "application/json")]  # replayable as stored
    assert ("Content-Encoding", "gzip") in out["resp_headers"]  # kept: the analyzers compare it


@pytest.mark.parametrize("headers", [
    [(b"Accept", b"*/*"), (b"X-N", b"1")],  # mitmproxy's Headers.fields
    [("Accept", "*/*"), ("X-N", "1")],
    (("Accept", "*/*"), ("X-N", "1")),
    {"Accept": "*/*", "X-N": "1"},
    [{"name": "Accept", "value": "*/*"}, {"name": "X-N", "value": "1"}],  # as read back from a capture
    [("Accept", b"*/*"), (b"X-N", 1)],
])
def test_prepare_accepts_header_shapes(headers: Any) -> None:
    out = prepare_exchange(exchange(1, req_headers=headers), CaptureSettings(), KEY)
    assert out["req_headers"] == [("Accept", "*/*"), ("X-N", "1")]


def test_prepare_keeps_undecodable_body_raw_and_notes_it() -> None:
    out = prepare_exchange(
        exchange(1, resp_body=b"not gzip", resp_headers=[("Content-Encoding", "gzip")]), CaptureSettings(), KEY
    )
    assert out["resp_body"] == b"not gzip"
    assert "resp_body kept raw: gzip" in out["capture_note"]


def test_prepare_truncates_and_flags_but_hashes_full_body() -> None:
    s = CaptureSettings(max_body_bytes=10)
    full = b"x" * 100
    out = prepare_exchange(exchange(1, resp_body=full, req_body=b"y" * 5,
                                    resp_headers=[("Content-Type", "text/plain")]), s, KEY)
    assert out["resp_body"] == b"x" * 10
    assert out["req_body"] == b"y" * 5
    assert out["truncated"] is True
    assert out["body_size"] == 100
    assert out["body_hash"] == body_hash(full, "text/plain")
    small = prepare_exchange(exchange(2, resp_body=b"x", req_body=b"y" * 11), s, KEY)
    assert small["truncated"] is True and small["req_body"] == b"y" * 10


def test_prepare_fills_defaults_for_a_minimal_row() -> None:
    before = time.time_ns()
    out = prepare_exchange({"url": "http://h/a/123"}, CaptureSettings(), KEY)
    assert len(out["exchange_id"]) == 32
    assert before <= out["ts"] <= time.time_ns()
    assert out["endpoint"] == "/a/{id}" and out["query"] == ""
    assert out["truncated"] is False
    assert out["resp_body"] is None and out["req_headers"] is None
    assert out.get("body_hash") is None


# -- crash safety ---------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from shadow.capture.writer import CaptureWriter
    from shadow.capture.settings import CaptureSettings, RedactionSettings
    s = CaptureSettings(dir=Path(sys.argv[1]), segment_rows=int(sys.argv[2]), segment_seconds=3600,
                        redaction=RedactionSettings(json_fields=("password",), key=b"k" * 32))
    w = CaptureWriter(s, gateway_id=sys.argv[3])
    i = 0
    while True:
        for _ in range(100):
            w.submit({"request_id": str(i), "exchange_id": "%s-%d" % (sys.argv[3], i), "role": "primary", "ts": time.time_ns(),
                      "url": "http://h/p/%d" % i, "status": 200,
                      "req_headers": [("Authorization", "Bearer TOPSECRET-AUTH"), ("X-Plain", "VISIBLE-MARK")],
                      "req_body": b'{"user": "u", "password": "TOPSECRET-PW"}',
                      "resp_headers": [("Set-Cookie", "sid=TOPSECRET-SID; Path=/")],
                      "resp_body": b"x" * 200})
            i += 1
        w.flush()
        print(i, flush=True)
    """
)

SECRETS = (b"TOPSECRET-AUTH", b"TOPSECRET-PW", b"TOPSECRET-SID")


def _decoded_buffers(arrays: list[pa.Array]) -> bytes:
    """The uncompressed value buffers of `arrays` (children of structs and lists included): where every
    string and body lives once decoded, so a search there sees what any reader would."""
    return b"".join(buf.to_pybytes() for arr in arrays for buf in arr.buffers() if buf is not None)


def file_contents(root: Path) -> list[tuple[Path, bytes]]:
    """Raw bytes of every file, plus the decoded values of every Parquet file and journal (compressed
    pages would hide a secret from a raw grep)."""
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        out.append((p, p.read_bytes()))
        if p.suffix == ".parquet":
            table = pq.read_table(p)
            out.append((p, _decoded_buffers([c for col in table.columns for c in col.chunks])))
        elif p.suffix == ".arrows":
            batches, _schema, _problem = read_journal(p)
            out.append((p, _decoded_buffers([c for b in batches for c in b.columns])))
    return out


def assert_no_secrets(root: Path, secrets: tuple[bytes, ...], visible: bytes) -> None:
    contents = file_contents(root)
    assert any(visible in data for _, data in contents), "the search must find a non-secret marker"
    for path, data in contents:
        for secret in secrets:
            assert secret not in data, f"{secret!r} reached {path}"


class Child:
    """A writer process that submits rows in a loop and prints how many it has flushed (acknowledged)."""

    def __init__(self, capture: Path, gateway: str, segment_rows: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.gateway = gateway
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(capture), str(segment_rows), gateway],
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.acknowledged = 0

    def wait_for(self, rows: int) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while self.acknowledged < rows and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.acknowledged = int(line)
        assert self.acknowledged >= rows, f"{self.gateway} stopped early"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def ids(self) -> set[str]:
        return {f"{self.gateway}-{i}" for i in range(self.acknowledged)}


def sealed_ids(table_dir: Path) -> list[str]:
    glob = str(table_dir / "**" / "*.parquet")
    return [r[0] for r in duck(f"SELECT exchange_id FROM read_parquet('{glob}', union_by_name=true)").fetchall()]


def test_sigkill_loses_no_acknowledged_row_and_recovery_has_no_duplicates(tmp_path: Path) -> None:
    capture = tmp_path / "cap"
    table_dir = capture / "exchanges"
    b = Child(capture, "victim-b", segment_rows=100_000)  # never seals: all its rows are in journals
    a = Child(capture, "victim-a0", segment_rows=300)  # seals often: the kill may land mid-seal
    try:
        for attempt in range(1, 6):
            a.wait_for(1000)
            b.wait_for(200)
            a.kill()
            # Every sealed file is readable through the glob readers use (no half-written file is visible).
            sealed_before = len(sealed_ids(table_dir))
            assert sealed_before > 0, "no segment was sealed before the kill (segment_rows too large?)"
            if list((table_dir / JOURNAL_DIR).glob(f"{a.gateway}-*.arrows")):
                break  # the kill left a live journal to recover (it can land just after a seal: try again)
            a = Child(capture, f"victim-a{attempt}", segment_rows=300)
        assert list((table_dir / JOURNAL_DIR).glob(f"{a.gateway}-*.arrows")), "a live journal was left behind"
        assert_no_secrets(capture, SECRETS, b"VISIBLE-MARK")

        # b is alive: an heir recovers a's journal and leaves b's alone.
        heir = CaptureWriter(CaptureSettings(dir=capture), gateway_id="heir")
        heir.close()
        assert heir.stats().recovered_rows > 0
        assert not list((table_dir / JOURNAL_DIR).glob("victim-a*.arrows"))
        assert list((table_dir / JOURNAL_DIR).glob("victim-b-*.arrows"))
        ids = sealed_ids(table_dir)
        assert len(ids) == len(set(ids)), "duplicates after recovery"
        assert a.ids() <= set(ids)
        assert sealed_before + heir.stats().recovered_rows == len(ids)
        assert not any(i.startswith("victim-b-") for i in ids)

        b.wait_for(b.acknowledged + 100)  # b kept writing throughout
    finally:
        a.kill()
        b.kill()
    heir2 = CaptureWriter(CaptureSettings(dir=capture), gateway_id="heir2")
    heir2.close()
    ids = sealed_ids(table_dir)
    assert len(ids) == len(set(ids)), "duplicates after recovery"
    assert a.ids() | b.ids() <= set(ids)
    assert not list((table_dir / JOURNAL_DIR).glob("*.arrows"))
    assert_no_secrets(capture, SECRETS, b"VISIBLE-MARK")


def test_live_journal_of_another_process_is_not_recovered(tmp_path: Path) -> None:
    s = settings(tmp_path)
    live = CaptureWriter(s, gateway_id="live")
    try:
        live.submit(exchange(1))
        live.flush()
        other = CaptureWriter(s, gateway_id="other")
        other.close()
        assert other.stats().recovered_rows == 0
        assert list((s.dir / "exchanges" / JOURNAL_DIR).glob("live-*.arrows"))
    finally:
        live.close()
    assert read_all(s.dir / "exchanges").num_rows == 1


def _write_journal(path: Path, batches: list[pa.RecordBatch]) -> None:
    with open(path, "wb") as f, pa.ipc.new_stream(f, EXCHANGES) as writer:
        for b in batches:
            writer.write_batch(b)


def test_torn_journal_tail_recovers_complete_batches(tmp_path: Path) -> None:
    s = settings(tmp_path)
    jdir = s.dir / "exchanges" / JOURNAL_DIR
    jdir.mkdir(parents=True)
    rows = [prepare_exchange(exchange(i), s, KEY) for i in range(6)]
    path = jdir / "dead-host-1-abc-000001.arrows"
    _write_journal(path, [pa.RecordBatch.from_pylist(rows[:3], schema=EXCHANGES),
                          pa.RecordBatch.from_pylist(rows[3:], schema=EXCHANGES)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # the second batch (and end marker) torn off
    with CaptureWriter(s, gateway_id="heir") as w:
        assert w.stats().recovered_rows == 3
    assert sorted(r["exchange_id"] for r in read_all(s.dir / "exchanges").to_pylist()) == ["x0", "x1", "x2"]
    assert not path.exists()
    assert next(p.name for p in sealed_files(s.dir / "exchanges")).startswith("part-dead-host-1-abc-")


def test_journal_torn_in_its_first_batch_holds_nothing_and_is_removed(tmp_path: Path) -> None:
    s = settings(tmp_path)
    jdir = s.dir / "exchanges" / JOURNAL_DIR
    jdir.mkdir(parents=True)
    path = jdir / "dead-000001.arrows"
    _write_journal(path, [pa.RecordBatch.from_pylist([prepare_exchange(exchange(1), s, KEY)], schema=EXCHANGES)])
    path.write_bytes(path.read_bytes()[:-200])  # killed while appending its first batch
    with CaptureWriter(s, gateway_id="heir") as w:
        assert (w.stats().recovered_rows, w.stats().corrupt_journals) == (0, 0)
    assert not list(jdir.rglob("*.arrows"))


def test_unreadable_journal_is_moved_aside_not_deleted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = settings(tmp_path)
    jdir = s.dir / "exchanges" / JOURNAL_DIR
    jdir.mkdir(parents=True)
    path = jdir / "dead-000001.arrows"
    path.write_bytes(b"this is not an arrow stream at all")
    with caplog.at_level("ERROR"), CaptureWriter(s, gateway_id="heir") as w:
        assert w.stats().corrupt_journals == 1
    assert not path.exists()
    moved = jdir / "corrupt" / "dead-000001.arrows"
    assert moved.read_bytes() == b"this is not an arrow stream at all"
    assert "unreadable" in caplog.text and "moved to" in caplog.text


def test_gateway_id_in_use_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shadow.errors import CaptureError

    monkeypatch.setattr("shadow.capture.writer.LOCK_WAIT_S", 0.1)
    s = settings(tmp_path)
    with CaptureWriter(s, gateway_id="same"), pytest.raises(CaptureError, match="in use"):
        CaptureWriter(s, gateway_id="same")


def test_recovery_removes_a_dead_owners_temporary_parquet_only(tmp_path: Path) -> None:
    s = settings(tmp_path)
    jdir = s.dir / "exchanges" / JOURNAL_DIR
    jdir.mkdir(parents=True)
    _write_journal(jdir / "dead-000001.arrows",
                   [pa.RecordBatch.from_pylist([prepare_exchange(exchange(1), s, KEY)], schema=EXCHANGES)])
    part = s.dir / "exchanges" / "dt=2026-01-01" / "hour=00"
    part.mkdir(parents=True)
    mine = part / (".part-dead-" + "a" * 32 + ".parquet.0f0f.tmp")
    other = part / (".part-dead-2-" + "a" * 32 + ".parquet.0f0f.tmp")
    mine.write_bytes(b"half")
    other.write_bytes(b"half")
    with CaptureWriter(s, gateway_id="heir") as w:
        assert w.stats().recovered_rows == 1
    assert not mine.exists() and other.exists()


def test_journal_header_only_is_deleted_silently(tmp_path: Path) -> None:
    s = settings(tmp_path)
    jdir = s.dir / "exchanges" / JOURNAL_DIR
    jdir.mkdir(parents=True)
    _write_journal(jdir / "dead-000001.arrows", [])
    with CaptureWriter(s, gateway_id="heir") as w:
        assert (w.stats().recovered_rows, w.stats().corrupt_journals) == (0, 0)
    assert not list(jdir.rglob("*.arrows"))


def test_stats_are_published_while_running(tmp_path: Path) -> None:
    import json

    s = settings(tmp_path)
    with CaptureWriter(s, gateway_id="gw") as w:
        w.submit(exchange(1))
        w.update_counters({"mirror_shed": 2})
        path = s.dir / "_stats" / "gw.json"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if path.exists() and json.loads(path.read_text()).get("journaled") == 1:
                break
            time.sleep(0.1)
        stats = json.loads(path.read_text())
        assert stats["journaled"] == 1 and stats["mirror_shed"] == 2 and stats["table"] == "exchanges"
        assert not list((s.dir / "_stats").glob(".*"))  # no temporary left behind


def test_a_reused_gateway_id_never_overwrites_earlier_segments(tmp_path: Path) -> None:
    s = settings(tmp_path)
    ts = time.time_ns()
    for i in range(3):  # three runs of a gateway configured with the same id, same hour
        with CaptureWriter(s, gateway_id="gw-1") as w:
            w.submit(exchange(i, ts=ts))
    assert sorted(r["exchange_id"] for r in read_all(s.dir / "exchanges").to_pylist()) == ["x0", "x1", "x2"]


def test_a_lock_file_replaced_under_a_waiter_is_not_trusted(tmp_path: Path) -> None:
    from shadow.capture.writer import _GatewayLock

    path = tmp_path / "gw.lock"
    recoverer = _GatewayLock(path)
    assert recoverer.try_acquire()
    fd = os.open(path, os.O_RDWR)  # a restarting owner opened the file the recoverer is about to remove
    recoverer.release(remove=True)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # it can lock that old, unlinked file...
    owner = _GatewayLock(path)
    assert owner.try_acquire()  # ...but _GatewayLock takes the file at the path instead
    assert os.fstat(owner.fd).st_ino == os.stat(path).st_ino  # type: ignore[arg-type]
    third = _GatewayLock(path)
    assert not third.try_acquire()  # and so a third process sees it as alive
    os.close(fd)
    owner.release(remove=True)


def test_capture_folder_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    from shadow.errors import CaptureError

    (tmp_path / "cap").write_text("not a folder")
    with pytest.raises(CaptureError, match=r"cap/exchanges: cannot create the capture folder"):
        CaptureWriter(settings(tmp_path), gateway_id="gw")


def test_capture_note_reaches_disk(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with CaptureWriter(s, gateway_id="gw") as w:
        w.submit(exchange(1, resp_body=b"\x00broken", resp_headers=[("Content-Encoding", "br")]))
    (row,) = read_all(s.dir / "exchanges").to_pylist()
    assert row["resp_body"] == b"\x00broken"
    assert row["capture_note"].startswith("resp_body kept raw: br:")


class BlockedPrepare:
    """A `prepare` that holds the writer thread at its first row until released: the queue then fills
    deterministically, whatever the scheduler does."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        self.entered.set()
        assert self.release.wait(10)
        return row


def test_queue_sheds_by_body_bytes_too(tmp_path: Path) -> None:
    s = settings(tmp_path, max_queue=10_000)
    blocked = BlockedPrepare()
    w = CaptureWriter(s, gateway_id="gw", max_queue_bytes=50_000, prepare=blocked)
    try:
        big = b"x" * 20_000
        assert w.submit(exchange(0, resp_body=big))
        w._wake.set()
        assert blocked.entered.wait(10)  # row 0 left the queue; the writer is stuck on it
        results = [w.submit(exchange(i, resp_body=big)) for i in range(1, 5)]
        assert results == [True, True, False, False]
        assert w.stats().shed == 2
    finally:
        blocked.release.set()
        w.close()
    assert w.stats().sealed_rows == 3
    w2 = CaptureWriter(s, gateway_id="gw2", max_queue_bytes=10)
    try:
        assert w2.submit(exchange(9, resp_body=big))  # one row always fits an empty queue
    finally:
        w2.close()


def test_flush_times_out_with_a_clear_error(tmp_path: Path) -> None:
    from shadow.errors import CaptureError

    blocked = BlockedPrepare()
    w = CaptureWriter(settings(tmp_path), gateway_id="gw", prepare=blocked)
    try:
        w.submit(exchange(1))
        with pytest.raises(CaptureError, match=r"capture flush did not finish within 0.2 s"):
            w.flush(timeout=0.2)
    finally:
        blocked.release.set()
        w.close()
    assert w.stats().sealed_rows == 1


def test_rows_are_sealed_at_interpreter_exit_without_close(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from shadow.capture.writer import CaptureWriter
        from shadow.capture.settings import CaptureSettings, RedactionSettings
        w = CaptureWriter(CaptureSettings(dir=Path(sys.argv[1]), redaction=RedactionSettings(key=b"k")))
        for i in range(25):
            w.submit({"request_id": str(i), "url": "http://h/x"})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "cap")], check=True, env=env, timeout=60)
    assert read_all(tmp_path / "cap" / "exchanges").num_rows == 25
    assert not list((tmp_path / "cap" / "exchanges" / JOURNAL_DIR).glob("*"))


def test_a_writer_that_is_behind_still_journals_and_seals_on_time(tmp_path: Path) -> None:
    def slow(row: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.002)  # 500 rows take >= 1 s: the queue stays non-empty meanwhile
        return row

    s = settings(tmp_path, segment_rows=20)
    with CaptureWriter(s, gateway_id="gw", prepare=slow) as w:
        for i in range(500):
            w.submit(exchange(i))
        deadline = time.monotonic() + 10
        while w.stats().sealed_rows == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = w.stats()
        assert st.sealed_rows >= 20 and st.queued > 0, st
    assert w.stats().sealed_rows == 500


def test_a_failed_seal_keeps_the_journal_and_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import shadow.capture.writer as capture_module
    from shadow.errors import CaptureError

    real = capture_module._write_parquet_atomically
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def flaky(table: pa.Table, final: Path) -> None:
        if failures:
            raise failures.pop()
        real(table, final)

    monkeypatch.setattr(capture_module, "_write_parquet_atomically", flaky)
    s = settings(tmp_path)
    with CaptureWriter(s, gateway_id="gw") as w:
        w.submit(exchange(1))
        with pytest.raises(CaptureError, match=r"capture seal failed: .*No space left on device"):
            w.seal()
        assert list((s.dir / "exchanges" / JOURNAL_DIR).glob("gw-*.arrows"))  # nothing lost
        w.submit(exchange(2))
        w.seal()  # retries the first journal, then seals the second
        assert sorted(r["exchange_id"] for r in read_all(s.dir / "exchanges").to_pylist()) == ["x1", "x2"]
    assert w.stats().sealed_rows == 2 and w.stats().write_errors == 0


def test_a_failed_journal_write_is_counted_and_capture_goes_on(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import shadow.capture.writer as capture_module
    from shadow.errors import CaptureError

    failing = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if failing.is_set():
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(capture_module.os, "fsync", fsync)
    s = settings(tmp_path)
    with CaptureWriter(s, gateway_id="gw") as w:
        w.submit(exchange(1))
        w.flush()
        failing.set()
        w.submit(exchange(2))
        with pytest.raises(CaptureError, match=r"capture flush failed: .*Input/output error"):
            w.flush()  # flush promises durability: its caller learns that it failed
        assert w.stats().write_errors == 1
        failing.clear()
        w.submit(exchange(3))
    ids = {r["exchange_id"] for r in read_all(s.dir / "exchanges").to_pylist()}
    assert {"x1", "x3"} <= ids  # rows before and after the failure are kept
    assert not list((s.dir / "exchanges" / JOURNAL_DIR).glob("*.arrows"))  # the torn journal was sealed too
    st = w.stats()
    assert st.sealed_rows + st.write_errors >= st.submitted


# -- disk full -------------------------------------------------------------------------------------------


class InjectedDisk:
    """A full disk simulated at the OS boundary: while `full` is set, every write to a file the writer
    opens (journals, Parquet, stats) raises ENOSPC, as write(2) does on a full filesystem."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import builtins
        import errno

        import shadow.capture.writer as writer_module

        self.full = threading.Event()
        real_open = builtins.open
        disk = self

        class File:
            def __init__(self, f: Any) -> None:
                self._f = f

            def write(self, data: Any) -> int:
                if disk.full.is_set():
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return int(self._f.write(data))

            def __getattr__(self, name: str) -> Any:
                return getattr(self._f, name)

            def __enter__(self) -> File:
                return self

            def __exit__(self, *exc: object) -> None:
                self._f.close()

        def fake_open(path: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
            f = real_open(path, mode, *args, **kw)
            return File(f) if any(c in mode for c in "wax") else f

        monkeypatch.setattr(writer_module, "open", fake_open, raising=False)

    def fill(self) -> None:
        self.full.set()

    def free(self) -> None:
        self.full.clear()


class SmallTmpfs:
    """A real 4 MB tmpfs (mounting needs root): filled with a filler file until write(2) fails."""

    def __init__(self, where: Path) -> None:
        self.where = where
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a small tmpfs needs root here ({done.stderr.decode().strip()}); "
                        "the injected-fault variant covers the same path")
        self.filler = where / "filler"

    def fill(self) -> None:
        with self.filler.open("wb") as f, pytest.raises(OSError, match="No space left"):
            for _ in range(10_000):  # bounded: 10,000 x 64 KB is far more than 4 MB
                f.write(b"\0" * 65536)
                f.flush()

    def free(self) -> None:
        self.filler.unlink()

    def close(self) -> None:
        subprocess.run(["umount", str(self.where)], capture_output=True, check=False)


@pytest.mark.parametrize("kind", ["injected", "tmpfs"])
def test_disk_full_counts_dropped_rows_reports_them_when_room_returns_and_leaves_no_empty_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    if kind == "tmpfs":
        disk: Any = SmallTmpfs(tmp_path / "small")
        root = disk.where
    else:
        disk = InjectedDisk(monkeypatch)
        root = tmp_path
    try:
        s = CaptureSettings(dir=root / "cap", redaction=RedactionSettings(key=KEY))
        w = CaptureWriter(s, gateway_id="gw")
        for i in range(10):
            assert w.submit(exchange(i))
        w.flush()
        disk.fill()
        with caplog.at_level("WARNING", logger="shadow.capture"):
            for i in range(10, 60):
                assert w.submit(exchange(i, resp_body=b'{"pad": "%s"}' % (b"x" * 2000)))  # clients still served
            with pytest.raises(CaptureError, match="No space left"):
                w.flush()
            for _ in range(5):  # more batches fail: still one line, and no empty journal per attempt
                w.submit(exchange(99))
                with pytest.raises(CaptureError):
                    w.flush()
            journals = list((root / "cap" / "exchanges" / JOURNAL_DIR).glob("*.arrows"))
            assert len(journals) <= 1, journals  # the first one, holding the 10 journaled rows
            st = w.stats()
            assert (st.journaled, st.disk_full_rows, st.write_errors) == (10, 55, 55)
            assert sum("cannot write the journal" in r.message for r in caplog.records) == 1
            disk.free()
            for i in range(100, 105):
                w.submit(exchange(i))
            w.flush()
        assert any("writing again: 55 rows were dropped" in r.message for r in caplog.records)
        stats_file = orjson.loads((root / "cap" / "_stats" / "gw.json").read_bytes())
        assert stats_file["disk_full_rows"] == 55 and stats_file["journaled"] == 15
        w.close()
        assert read_all(root / "cap" / "exchanges").num_rows == 15
        leftovers = [p for p in (root / "cap").rglob("*") if p.is_file() and (p.suffix in (".arrows", ".tmp")
                                                                              or p.stat().st_size == 0)]
        assert leftovers == []
    finally:
        if kind == "tmpfs":
            disk.close()
