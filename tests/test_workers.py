"""`shadow gateway --workers 2` end to end: real supervisor, real mitmdump workers, real upstreams.

One gateway for the module, driven through its life: traffic reaches both workers, a worker killed
with SIGKILL is restarted, a reload reaches both workers (an invalid one reaches neither), and at
shutdown both captures are sealed and read as one capture by `shadow sql`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shadow.capture.store import open_store
from tests.conftest import REPO, shadow_cli
from tests.upstream import Upstream, free_port

CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: {service}}}
  services:
    a: {{loadBalancer: {{servers: [{{url: "{a}"}}]}}}}
    b: {{loadBalancer: {{servers: [{{url: "{b}"}}]}}}}
shadow:
  gateway: {{id: gw-t}}
  capture: {{dir: "{capture}", segmentSeconds: 1}}
"""

WAIT_S = 60.0  # generous: seven engineers share two cores
REQUESTS = 30  # per phase; each on a new connection, so the kernel spreads them over the workers


@dataclass
class Running:
    proc: subprocess.Popen[str]
    url: str
    config: Path
    capture: Path
    a: Upstream
    b: Upstream
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], *, after: int = 0, what: str) -> str:
        deadline = time.monotonic() + WAIT_S
        with self.changed:
            while True:
                for line in self.lines[after:]:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no line {what!r}; output:\n" + "\n".join(self.lines[-60:]))
                self.changed.wait(min(left, 0.5))

    def write_config(self, service: str) -> None:
        self.config.write_text(CONFIG.format(service=service, a=self.a.url, b=self.b.url, capture=self.capture))


def _get(url: str) -> httpx.Response:
    # A new client per request: a new connection, which the kernel gives to either worker.
    with httpx.Client(timeout=30.0) as client:
        return client.get(url)


def _sealed_paths(capture: Path) -> list[tuple[str, str]]:
    if not any((capture / "exchanges").rglob("*.parquet")):
        return []
    with open_store(capture) as store:
        return [(r[0], r[1]) for r in store.sql("SELECT path, gateway FROM exchanges").fetchall()]


def _wait_sealed(capture: Path, prefix: str, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if sum(1 for p, _ in _sealed_paths(capture) if p.startswith(prefix)) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} rows under {prefix} not sealed in {WAIT_S} s")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("workers")
    with Upstream("A") as a, Upstream("B") as b:
        port = free_port()
        running = Running(proc=None, url=f"http://127.0.0.1:{port}", config=tmp / "gw.yaml",  # type: ignore[arg-type]
                          capture=tmp / "capture", a=a, b=b)
        running.write_config("a")
        running.proc = subprocess.Popen(
            [sys.executable, "-m", "shadow.cli", "gateway", str(running.config), "--listen", f"127.0.0.1:{port}",
             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        threading.Thread(target=running.read, daemon=True).start()
        try:
            running.wait_line(lambda ln: "2 workers listening at" in ln, what="2 workers listening")
            yield running
        finally:
            if running.proc.poll() is None:
                running.proc.send_signal(signal.SIGTERM)
                try:
                    running.proc.wait(timeout=WAIT_S)
                except subprocess.TimeoutExpired:
                    running.proc.kill()
                    running.proc.wait()


def test_both_workers_serve_and_capture(gateway: Running) -> None:
    for i in range(REQUESTS):
        response = _get(f"{gateway.url}/a/{i}")
        assert response.status_code == 200 and response.json()["upstream"] == "A"
    _wait_sealed(gateway.capture, "/a/", REQUESTS)
    served = {gw for p, gw in _sealed_paths(gateway.capture) if p.startswith("/a/")}
    assert served == {"gw-t-w0", "gw-t-w1"}


def test_a_killed_worker_is_restarted(gateway: Running) -> None:
    listening = gateway.wait_line(lambda ln: "2 workers listening at" in ln, what="listening")
    pid = int(listening.split("w1 pid ")[1].split(")")[0].split(",")[0])
    mark = len(gateway.lines)
    os.kill(pid, signal.SIGKILL)
    gateway.wait_line(lambda ln: "worker w1 restarted" in ln, after=mark, what="w1 restarted")
    gateway.wait_line(lambda ln: ln.startswith("[w1]") and " listening at " in ln, after=mark,
                      what="restarted w1 listening")
    for i in range(REQUESTS):
        assert _get(f"{gateway.url}/b/{i}").status_code == 200


def test_reload_reaches_both_workers_or_neither(gateway: Running) -> None:
    mark = len(gateway.lines)
    gateway.write_config("b")
    gateway.wait_line(lambda ln: "generation 2 in force on all 2 workers" in ln, after=mark, what="reloaded")
    for i in range(REQUESTS):
        response = _get(f"{gateway.url}/c/{i}")
        assert response.json()["upstream"] == "B"
    _wait_sealed(gateway.capture, "/c/", REQUESTS)
    assert {gw for p, gw in _sealed_paths(gateway.capture) if p.startswith("/c/")} == {"gw-t-w0", "gw-t-w1"}

    mark = len(gateway.lines)
    gateway.config.write_text(gateway.config.read_text().replace("service: b", "service: nowhere"))
    rejected = gateway.wait_line(lambda ln: "config reload rejected, no worker changed" in ln, after=mark,
                                 what="rejected")
    assert "http.routers.all.service" in rejected
    for i in range(5):
        assert _get(f"{gateway.url}/d/{i}").json()["upstream"] == "B"


def test_shutdown_seals_every_capture_read_as_one(gateway: Running) -> None:
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=WAIT_S) == 0, "\n".join(gateway.lines[-40:])
    out = shadow_cli("sql", str(gateway.capture),
                     "SELECT split_part(path, '/', 2) AS phase, count(*) AS n, count(DISTINCT path) AS paths, "
                     "count(DISTINCT gateway) AS workers FROM exchanges GROUP BY 1 ORDER BY 1", "--format", "json")
    assert out.returncode == 0, out.stderr
    by_phase = {row["phase"]: row for row in json.loads(out.stdout)}
    # Every request answered was captured exactly once, by the worker that served it.
    for phase, count in (("a", REQUESTS), ("b", REQUESTS), ("c", REQUESTS), ("d", 5)):
        assert by_phase[phase]["n"] == count and by_phase[phase]["paths"] == count, by_phase
    assert by_phase["a"]["workers"] == 2 and by_phase["c"]["workers"] == 2
    sealed = [ln for ln in gateway.lines if "capture sealed:" in ln]
    assert {ln.split("]")[0] for ln in sealed} >= {"[w0", "[w1"}, sealed


def test_workers_key_and_per_worker_limits(tmp_path: Path) -> None:
    from shadow.errors import ConfigError
    from shadow.gateway.config import parse_config
    from shadow.workers.supervisor import per_worker_limits

    text = """http:
  routers:
    all: {rule: "PathPrefix(`/`)", service: a, middlewares: [slow, few]}
  middlewares:
    slow: {rateLimit: {average: 100, burst: 10}}
    few: {inFlightReq: {amount: 5}}
    tag: {headers: {customRequestHeaders: {X-A: "1"}}}
  services:
    a: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
shadow:
  gateway: {workers: 3}
"""
    config = parse_config(text)
    assert config.shadow.workers == 3
    assert per_worker_limits(config) == ["few", "slow"]
    with pytest.raises(ConfigError, match=r"shadow\.gateway\.workers: must be between 1 and 256, got 0"):
        parse_config(text.replace("workers: 3", "workers: 0"))
    bad = tmp_path / "gw.yaml"
    bad.write_text(text.replace("workers: 3", "workers: many"))
    out = shadow_cli("gateway", str(bad), "--workers", "2")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "shadow.gateway.workers" in out.stderr
    assert f"{bad}:11" in out.stderr


def test_dry_run_prints_one_worker_command_each(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(CONFIG.format(service="a", a="http://127.0.0.1:9", b="http://127.0.0.1:9", capture=tmp_path / "c"))
    out = shadow_cli("gateway", str(cfg), "--workers", "3", "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and all("-m addons.worker" in ln for ln in lines)
    assert [ln.split("shadow_worker=")[1].split()[0] for ln in lines] == ["w0", "w1", "w2"]
