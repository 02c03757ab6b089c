"""`shadow replay` as users run it (a subprocess), checked through the capture it writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from mitmproxy import http
from mitmproxy.addons.savehar import SaveHar
from mitmproxy.io import FlowWriter
from mitmproxy.test import tflow

from shadow.capture.store import open_store
from tests.upstream import Upstream

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "replay"
T0 = 1_790_000_000.0


def make_flows(n: int, *, unsafe_every: int = 0) -> list[http.HTTPFlow]:
    """HTTP flows as mitmproxy records them, with distinct paths, 10 ms apart, recorded answers."""
    flows = []
    for i in range(n):
        f = tflow.tflow(resp=True)
        f.request.host, f.request.port, f.request.scheme = "shop.example", 80, "http"
        f.request.headers["Host"] = "shop.example"
        unsafe = unsafe_every and i % unsafe_every == unsafe_every - 1
        f.request.method = "POST" if unsafe else "GET"
        f.request.path = f"/api/items/{i}?page={i % 3}"
        f.request.content = b'{"n": %d}' % i if unsafe else b""
        f.request.timestamp_start = T0 + i * 0.01
        f.request.timestamp_end = f.request.timestamp_start + 0.001
        f.response = http.Response.make(200 + (i % 2), json.dumps({"recorded": i}).encode(),
                                        {"Content-Type": "application/json"})
        f.response.timestamp_start = f.request.timestamp_start + 0.004
        f.response.timestamp_end = f.request.timestamp_start + 0.005
        flows.append(f)
    return flows


def write_flows(path: Path, flows: list[http.HTTPFlow]) -> Path:
    with path.open("wb") as fo:
        writer = FlowWriter(fo)
        for f in flows:
            writer.add(f)
    return path


def shadow(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadow.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def targets() -> Iterator[tuple[Upstream, Upstream]]:
    with Upstream("monolith") as p, Upstream("orders") as c:
        yield p, c


def shadow_here(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`shadow ...` run in this process through click (the same command object, no interpreter
    start-up): for runs that need no signal."""
    from shadow.cli import cli

    res = CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)
    return subprocess.CompletedProcess(list(map(str, args)), res.exit_code, res.stdout, res.stderr)


def shadow_in_process(*args: str | Path) -> Result:
    """The same command in this process: for errors raised before anything is sent."""
    from shadow.cli import cli

    return CliRunner().invoke(cli, ["replay", *map(str, args)])


def query(capture: Path, sql: str) -> list[tuple[Any, ...]]:
    with open_store(capture) as store:
        return store.sql(sql).fetchall()


def test_har_from_savehar_replays_into_a_capture(tmp_path: Path, targets: tuple[Upstream, Upstream]) -> None:
    p, c = targets
    har = tmp_path / "recorded.har"
    SaveHar().export_har(make_flows(12, unsafe_every=4), str(har))  # mitmproxy's save.har command
    out = tmp_path / "cap"
    before = len(p.received())
    r = shadow("replay", har, "--primary", p.url, "--candidate", f"orders={c.url}", "-o", out)
    assert r.returncode == 0, r.stderr
    assert len(p.received()) - before == 9
    line = r.stdout.strip()
    assert line.startswith("replay: sent 9 requests to 2 targets; skipped 3 unsafe, 0 filtered; "
                           "errors primary 0, candidate 0; ")
    assert line.endswith(f"req/s; capture {out}")
    rows = query(out, "SELECT role, service, mode, count(*), count(DISTINCT request_id), min(status), "
                      "count(error) FROM exchanges GROUP BY ALL ORDER BY role")
    assert rows == [("candidate", "orders", "replay", 9, 9, 200, 0), ("primary", "primary", "replay", 9, 9, 200, 0)]
    pairs = query(out, "SELECT count(*), count(DISTINCT request_id) FROM pairs")
    assert pairs == [(9, 9)]
    ep = query(out, "SELECT DISTINCT endpoint, host FROM exchanges")
    assert ep == [("/api/items/{id}", "shop.example")]
    state = json.loads((out / "_replay" / "state.json").read_text())
    assert state["finished"] is True and state["sources"][0]["path"] == str(har)


def test_flows_with_recorded_primary_and_a_capture_as_source(tmp_path: Path,
                                                             targets: tuple[Upstream, Upstream]) -> None:
    _, c = targets
    flows = write_flows(tmp_path / "traffic.flows", make_flows(10))
    out = tmp_path / "cap"
    before = len(c.received())
    r = shadow_here("replay", flows, "--primary", "recorded", "--candidate", c.url, "-o", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len(c.received()) - before == 10  # the primary is not called
    rows = query(out, "SELECT p_status, c_status, p_latency_ms, p_resp_body FROM pairs ORDER BY url")
    assert len(rows) == 10
    assert {row[0] for row in rows} == {200, 201} and {row[1] for row in rows} == {200}
    assert all(abs(row[2] - 5.0) < 0.01 for row in rows)  # the recorded latency
    assert json.loads(rows[0][3]) == {"recorded": 0}
    assert query(out, "SELECT DISTINCT p_recorded, c_recorded FROM pairs") == [(True, None)]
    # The gate does not compare recorded latencies with live ones unless told to.
    g = shadow_here("gate", out, "--no-progress")
    assert g.returncode in (1, 3), g.stderr  # the bodies differ: the mismatch guardrail may fail
    assert "warning: Latency was not judged" in g.stdout and "latency_" not in g.stdout
    g = shadow_here("gate", out, "--no-progress", "--compare-recorded-latency")
    assert "latency_bulk" in g.stdout and "warning: Latency" not in g.stdout
    # That capture as a source: its primary rows (the recorded answers) replay again.
    out2 = tmp_path / "cap2"
    r = shadow_here("replay", out, "--primary", "recorded", "--candidate", c.url, "-o", out2, "--status", "201")
    assert r.returncode == 0, r.stderr
    assert "sent 5 requests" in r.stdout and "5 filtered" in r.stdout
    assert query(out2, "SELECT count(*), min(p_status) FROM pairs") == [(5, 201)]


def test_filters_and_rewrites_from_the_command_line(tmp_path: Path, targets: tuple[Upstream, Upstream]) -> None:
    p, c = targets
    flows = write_flows(tmp_path / "traffic.flows", make_flows(30))
    out = tmp_path / "cap"
    before = len(c.received())
    r = shadow_here("replay", flows, "--primary", p.url, "--candidate", c.url, "-o", out,
               "--path", r"^/api/items/\d*[02468]\?", "--set-header", "X-Env: test", "--remove-header", "Header",
               "--rewrite-path", "/api/:/v2/", "--rewrite-host", "orders.internal", "--limit", "10")
    assert r.returncode == 0, r.stderr
    got = c.received()[before:]
    assert len(got) == 10
    assert sorted(int(g.path.split("/")[3].split("?")[0]) for g in got) == list(range(0, 20, 2))
    assert all(g.path.startswith("/v2/items/") for g in got)
    h = got[0].headers
    assert h["host"] == "orders.internal" and h["x-env"] == "test" and "header" not in h
    assert h["x-shadow-request"] == "1" and h["x-shadow-replay"] == "1"
    assert query(out, "SELECT count(DISTINCT request_id) FROM exchanges") == [(10,)]


def test_sigint_stops_cleanly_and_resume_finishes_without_duplicates(tmp_path: Path) -> None:
    flows = write_flows(tmp_path / "traffic.flows", make_flows(150))
    out = tmp_path / "cap"
    with Upstream("p", delay=0.02) as p, Upstream("c", delay=0.02) as c:
        cmd = [sys.executable, "-m", "shadow.cli", "replay", str(flows), "--primary", p.url,
               "--candidate", c.url, "-o", str(out), "--concurrency", "2", "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            p.wait_for(20, timeout=20)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, stderr
        assert "SIGINT: stopping" in stderr and "interrupted: --resume continues" in stdout
        first = query(out, "SELECT count(*), count(DISTINCT request_id) FROM exchanges")[0]
        assert 40 <= first[0] < 300 and first[0] == 2 * first[1]  # sealed, and no half pairs
        # Without --resume the interrupted replay is protected.
        protected = shadow_in_process(flows, "--primary", p.url, "--candidate", c.url, "-o", out)
        assert protected.exit_code == 2 and "pass --resume" in protected.stderr
        r = shadow_here("replay", flows, "--primary", p.url, "--candidate", c.url, "-o", out, "--resume",
                   "--concurrency", "16")
        assert r.returncode == 0, r.stderr
        assert f"sent {150 - first[1]} requests" in r.stdout and f"{first[1]} already done" in r.stdout
        # Each source request reached each target exactly once over both runs.
        assert len(p.received()) == 150 and len(c.received()) == 150
        assert len({g.path for g in p.received()}) == 150
    total = query(out, "SELECT count(*), count(DISTINCT request_id), count(DISTINCT exchange_id) FROM exchanges")
    assert total == [(300, 150, 300)]


def test_truncated_source_keeps_entries_before_and_exits_2(tmp_path: Path, targets: tuple[Upstream, Upstream]) -> None:
    p, c = targets
    har = tmp_path / "cut.har"
    SaveHar().export_har(make_flows(8), str(har))
    text = har.read_text()
    har.write_text(text[: text.index("/api/items/5?") + 3])  # ends inside entry 6
    out = tmp_path / "cap"
    r = shadow_here("replay", har, "--primary", p.url, "--candidate", c.url, "-o", out)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {har}: entry 6: truncated (file ends inside this entry)"]
    assert "sent 5 requests" in r.stdout
    assert query(out, "SELECT count(DISTINCT request_id), count(*) FROM exchanges") == [(5, 10)]


def test_corrupt_flow_file_names_the_entry(tmp_path: Path, targets: tuple[Upstream, Upstream]) -> None:
    p, c = targets
    good = write_flows(tmp_path / "a.flows", make_flows(4)).read_bytes()
    bad = tmp_path / "bad.flows"
    bad.write_bytes(good + b"99:{not really a flow")
    out = tmp_path / "cap"
    r = shadow_here("replay", bad, "--primary", p.url, "--candidate", c.url, "-o", out)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: entry 5: unreadable flow data")
    assert query(out, "SELECT count(DISTINCT request_id) FROM exchanges") == [(4,)]


def test_unknown_source_and_usage_errors(tmp_path: Path, targets: tuple[Upstream, Upstream]) -> None:
    p, c = targets
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n....")
    out = tmp_path / "cap"
    r = shadow("replay", junk, "--primary", p.url, "--candidate", c.url, "-o", out)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: {junk}: unknown format (expected a mitmproxy flow file, "
                                "a HAR file or a capture folder)")
    assert not (out / "exchanges").exists()  # nothing sent, nothing created
    har = DATA / "browser.har"
    for args, message in [
        (("--rate", "5", "--speed", "2"), "error: --rate and --speed exclude each other"),
        (("--candidate", "ftp://x"), "error: --candidate: 'ftp://x' is not an http(s) URL (or NAME=URL)"),
        (("--status", "2x"), "error: --status: '2x' is not a status code or class (e.g. 200, 5xx)"),
        (("--sample", "120"), "error: --sample: 120.0 is not a percentage between 0 and 100"),
        (("--hash-header", "X-User"), "error: --hash-header and --hash-percent go together"),
        (("--rewrite-path", "api:v2"), "error: --rewrite-path: 'api:v2' is not OLD:NEW with both prefixes "
                                       "starting with /"),
    ]:
        res = shadow_in_process(har, "--primary", p.url, "--candidate", c.url, "-o", out, *args)
        assert res.exit_code == 2 and res.stderr.strip() == message, res.output
    res = shadow_in_process("--help")
    assert res.exit_code == 0 and "--primary URL|recorded" in res.output


def test_browser_har_with_secondary_and_progress(tmp_path: Path, targets: tuple[Upstream, Upstream]) -> None:
    p, c = targets
    out = tmp_path / "cap"
    with Upstream("second") as s:
        r = shadow_here("replay", DATA / "browser.har", "--primary", p.url, "--candidate", c.url, "--secondary",
                   s.url, "-o", out, "--allow-unsafe", "--progress")
        assert r.returncode == 0, r.stderr
        posted = [g for g in s.received() if g.method == "POST"]
        assert sorted(g.body for g in posted) == [b"user=alice&next=%2Fa+b", b'{"sku": "A1", "n": 2}']
        assert all(g.headers.get("cookie") == "sid=abc" for g in s.received() if g.path.startswith("/api/orders/42"))
    assert "5/5" in r.stderr and ("req/s" in r.stderr or "s/req" in r.stderr)  # the tqdm bar, with its rate
    rows = query(out, "SELECT count(*), count(s_status) FROM pairs")
    assert rows == [(5, 5)]
    # Secrets never reach disk: the recorded Cookie was sent, but is redacted in the capture.
    cookies = query(out, "SELECT h.value FROM (SELECT unnest(req_headers) AS h FROM exchanges) "
                         "WHERE lower(h.name) = 'cookie'")
    # (the whole value is the keyed hash: a bare `"abc" not in` also failed when the hash's hex had it)
    assert cookies and all(re.fullmatch(r"sid=redacted:[0-9a-f]{64}", str(v)) for (v,) in cookies)


def test_sigterm_is_a_clean_stop_too(tmp_path: Path) -> None:
    flows = write_flows(tmp_path / "t.flows", make_flows(200))
    out = tmp_path / "cap"
    with Upstream("p", delay=0.05) as p:
        proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "replay", str(flows), "--primary", "recorded",
                                 "--candidate", p.url, "-o", str(out), "--rate", "100", "--no-progress"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ})
        try:
            p.wait_for(10, timeout=20)
            time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stderr
    n, ids = query(out, "SELECT count(*), count(DISTINCT request_id) FROM exchanges")[0]
    assert n == 2 * ids and ids >= 10


def test_sigkill_then_resume_completes_every_pair_once(tmp_path: Path) -> None:
    """A kill -9 loses only what the capture had not journaled: the next writer recovers the
    journal, and --resume sends each request (or the missing role of a split one) again."""
    flows = write_flows(tmp_path / "t.flows", make_flows(120))
    out = tmp_path / "cap"
    with Upstream("p", delay=0.01) as p, Upstream("c", delay=0.01) as c:
        proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "replay", str(flows), "--primary", p.url,
                                 "--candidate", c.url, "-o", str(out), "--concurrency", "2", "--no-progress"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait_for(30, timeout=20)
            proc.kill()
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        r = shadow_here("replay", flows, "--primary", p.url, "--candidate", c.url, "-o", out, "--resume")
        assert r.returncode == 0, r.stderr
        assert len(p.received()) >= 120 and len(c.received()) >= 120
    rows = query(out, "SELECT count(*), count(DISTINCT request_id), count(DISTINCT (request_id, role)) "
                      "FROM exchanges")
    assert rows == [(240, 120, 240)]
    assert query(out, "SELECT count(*) FROM pairs") == [(120,)]
