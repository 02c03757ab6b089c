"""CaptureProcessWriter: rows written by a child process; child death counted and restarted; the
proxy's kill -9 makes the child seal; no secrets on disk; `shadow.capture.mode` in the config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shadow.capture.process import CaptureProcessWriter, open_capture_writer
from shadow.capture.settings import CaptureSettings, RedactionSettings
from shadow.capture.writer import JOURNAL_DIR, CaptureWriter
from shadow.errors import ConfigError
from shadow.gateway.config import load_config

REPO = Path(__file__).resolve().parent.parent
SECRETS = (b"TOPSECRET-AUTH", b"TOPSECRET-PW", b"TOPSECRET-COOKIE")


def row(i: int, prefix: str = "r") -> dict[str, Any]:
    # What the gateway submits: mitmproxy's bytes header pairs, raw bodies.
    return {
        "request_id": f"{prefix}{i}", "role": "primary", "mode": "serve", "service": "mono",
        "ts": time.time_ns(), "method": "POST", "url": f"http://127.0.0.1:1/login/{i}", "host": "shop",
        "path": f"/login/{i}", "query": "",
        "req_headers": [(b"Authorization", b"Bearer TOPSECRET-AUTH"), (b"Cookie", b"s=TOPSECRET-COOKIE"),
                        (b"X-Plain", b"VISIBLE-MARK")],
        "req_body": b'{"user": "ada", "password": "TOPSECRET-PW"}', "status": 200,
        "resp_headers": [(b"Content-Type", b"application/json")], "resp_body": b'{"id": %d}' % i,
        "latency_ms": 1.0,
    }


def settings(tmp_path: Path, **kw: Any) -> CaptureSettings:
    return CaptureSettings(dir=tmp_path / "capture",
                           redaction=RedactionSettings(key=b"k" * 32, json_fields=("password",)), **kw)


def captured_ids(capture: Path) -> list[str]:
    return [r[0] for r in duckdb.connect().execute(
        f"select request_id from read_parquet('{capture}/exchanges/**/*.parquet', union_by_name=true, "
        "hive_partitioning=true)").fetchall()]


def assert_no_secrets(capture: Path) -> None:
    files = [p for p in capture.rglob("*") if p.is_file()]
    assert files
    for f in files:
        data = f.read_bytes()
        for secret in SECRETS:
            assert secret not in data, (secret, f)


def wait_gone(pid: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running after {timeout} s")


def test_rows_land_redacted_and_stats_merge_both_processes(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with CaptureProcessWriter(s, gateway_id="gw-proc") as writer:
        assert writer.pid is not None and writer.pid != os.getpid()
        for i in range(500):
            assert writer.submit(row(i))
        writer.update_counters({"mirror_shed": 3})
        writer.flush()
        stats = writer.stats()
        assert (stats.submitted, stats.journaled, stats.shed) == (500, 500, 0)
        child = writer.pid
    wait_gone(child)
    assert sorted(captured_ids(s.dir)) == sorted(f"r{i}" for i in range(500))
    assert not list((s.dir / "exchanges" / JOURNAL_DIR).glob("*.arrows"))
    assert_no_secrets(s.dir)
    text = duckdb.connect().execute(
        f"select req_headers::varchar || req_body::varchar from read_parquet('{s.dir}/exchanges/**/*.parquet') "
        "limit 1").fetchone()
    assert text is not None and "VISIBLE-MARK" in text[0] and "redacted:" in text[0]
    published = json.loads((s.dir / "_stats" / "gw-proc.json").read_text())
    assert published["submitted"] == 500 and published["sealed_rows"] == 500 and published["mirror_shed"] == 3


def test_child_start_error_is_a_capture_error(tmp_path: Path) -> None:
    from shadow.errors import CaptureError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CaptureError, match="cannot create the capture folder"):
        CaptureProcessWriter(CaptureSettings(dir=blocker / "capture"), gateway_id="x")


def test_dead_child_rows_counted_as_shed_and_child_restarted(tmp_path: Path) -> None:
    s = settings(tmp_path)
    writer = CaptureProcessWriter(s, gateway_id="gw-crash")
    try:
        for i in range(200):
            writer.submit(row(i, "before"))
        writer.flush()  # journaled by the first child: recovered by the next one
        first = writer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for i in range(300):  # some go to the dying child (shed), the rest to its successor
            writer.submit(row(i, "after"))
            if i == 100:
                time.sleep(0.3)
        deadline = time.monotonic() + 30
        while (writer.pid in (None, first)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.pid not in (None, first)
        writer.flush(timeout=30)
        stats = writer.stats()
        assert stats.extra["capture_process_restarts"] == 1
    finally:
        writer.close()
    ids = captured_ids(s.dir)
    assert len(ids) == len(set(ids))  # the dead child's journal was recovered once
    assert {f"before{i}" for i in range(200)} <= set(ids)
    after = [i for i in ids if i.startswith("after")]
    # Every row is captured or counted as shed (a row journaled just before the kill can be both).
    assert len(after) + stats.shed >= 300 and len(after) <= 300
    assert_no_secrets(s.dir)


def test_parent_kill_9_makes_the_child_seal(tmp_path: Path) -> None:
    s = settings(tmp_path)
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from shadow.capture.process import CaptureProcessWriter
        from shadow.capture.settings import CaptureSettings, RedactionSettings
        from tests.test_capture_process import row
        s = CaptureSettings(dir=Path({str(s.dir)!r}), segment_seconds=3600,
                            redaction=RedactionSettings(key=b"k" * 32, json_fields=("password",)))
        w = CaptureProcessWriter(s, gateway_id="gw-parent")
        for i in range(300):
            w.submit(row(i))
        w.flush()
        print(w.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)
        wait_gone(child)  # the child saw its pipe close, journaled, sealed and exited
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert not list((s.dir / "exchanges" / JOURNAL_DIR).glob("*.arrows"))
    assert sorted(captured_ids(s.dir)) == sorted(f"r{i}" for i in range(300))
    assert_no_secrets(s.dir)
    # The gateway id is free again: a restart starts normally and recovers nothing twice.
    with CaptureProcessWriter(s, gateway_id="gw-parent") as again:
        assert again.stats().recovered_rows == 0


def test_mode_setting_picks_the_writer(tmp_path: Path) -> None:
    assert CaptureSettings().mode == "process"
    writer = open_capture_writer(settings(tmp_path, mode="thread"), gateway_id="t")
    try:
        assert isinstance(writer, CaptureWriter)
    finally:
        writer.close()


def test_config_capture_mode(tmp_path: Path) -> None:
    base = 'http:\n  routers: {}\n  services: {}\nshadow:\n  capture:\n    mode: %s\n'
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(base % "thread")
    assert load_config(cfg).shadow.capture.mode == "thread"
    cfg.write_text(base % "fork")
    with pytest.raises(ConfigError, match=r"shadow\.capture\.mode.*process or thread"):
        load_config(cfg)


def test_the_capture_can_persist_before_the_gateway_accepts_traffic(tmp_path: Path) -> None:
    # Constructing the writer is what the gateway waits for before it listens: by then the capture
    # process has its journal open and its preparation warmed up (no first-batch import delay).
    with CaptureProcessWriter(settings(tmp_path), gateway_id="gw-warm") as writer:
        journals = list((tmp_path / "capture" / "exchanges" / "_journal").glob("gw-warm-*.arrows"))
        assert len(journals) == 1
        assert writer.stats().journaled == 0
    assert not list((tmp_path / "capture" / "exchanges" / "_journal").glob("*.arrows"))  # empty: removed
