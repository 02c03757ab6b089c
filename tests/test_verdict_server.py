"""The verdict over real HTTP on 127.0.0.1, as Argo Rollouts' web provider and Flagger poll it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from analyzers.policy import Policy
from analyzers.rules import DEFAULT_RULES
from shadow.cli.serve_verdict import parse_listen
from shadow.delivery.verdict_server import VerdictService, make_server, verdict_document
from tests.conftest import REPO
from tests.synthetic_capture import EndpointTraffic, write_capture
from tests.upstream import free_port

POLICY = Policy.from_mapping({"n_boot": 200, "defaults": {"error_rate_pp": 1.0, "transport_error_pp": 1.0,
                                           "mismatch_budget": 0.02}})


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    (root / "empty" / "exchanges").mkdir(parents=True)
    return {
        "pass": write_capture(root / "pass", [EndpointTraffic(n=1200)], seed=21),
        "fail": write_capture(root / "fail", [EndpointTraffic(n=500, latency_factor=1.7, candidate_5xx_rate=0.06)],
                              seed=22),
        "empty": root / "empty",
    }


@contextmanager
def serving(capture: Path, cache_seconds: float = 60.0) -> Iterator[tuple[str, VerdictService]]:
    service = VerdictService(lambda: verdict_document(capture, POLICY, DEFAULT_RULES), cache_seconds=cache_seconds)
    server = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_pass_verdict_and_gate(captures: dict[str, Path]) -> None:
    with serving(captures["pass"]) as (url, service):
        r = httpx.get(url + "/verdict", timeout=30)
        assert r.status_code == 200
        doc = r.json()
        assert doc["verdict"] == "pass"  # Argo Rollouts: jsonPath {$.verdict}
        assert 0 <= doc["score"] <= 100 and doc["results"]
        assert {"metric", "class", "reason"} <= set(doc["results"][0])
        gate = httpx.post(url + "/gate", json={"name": "orders", "phase": "Progressing"}, timeout=30)
        assert gate.status_code == 200  # Flagger webhook: 2xx = go
        assert httpx.get(url + "/healthz", timeout=5).text.strip() == "ok"
        assert httpx.get(url + "/nope", timeout=5).status_code == 404
        assert service.computations == 1  # the gate reused the cached verdict


def test_fail_gate_is_not_2xx(captures: dict[str, Path]) -> None:
    with serving(captures["fail"]) as (url, _):
        assert httpx.get(url + "/verdict", timeout=30).json()["verdict"] == "fail"
        assert httpx.get(url + "/gate", timeout=30).status_code == 412


def test_empty_capture_is_inconclusive_not_an_error_page(captures: dict[str, Path]) -> None:
    with serving(captures["empty"]) as (url, _):
        r = httpx.get(url + "/verdict", timeout=30)
        assert r.status_code == 200
        assert r.json()["verdict"] == "inconclusive" and "no sealed Parquet" in r.json()["error"]
        assert httpx.get(url + "/gate", timeout=30).status_code == 503


def test_cache_expires_and_concurrent_polls_share_one_computation() -> None:
    now = [0.0]
    calls: list[float] = []

    def compute() -> dict[str, object]:
        calls.append(now[0])
        time.sleep(0.05)  # long enough for the other threads to queue behind the lock
        return {"verdict": "pass", "score": 100.0, "results": []}

    service = VerdictService(compute, cache_seconds=5.0, clock=lambda: now[0])
    threads = [threading.Thread(target=service.current) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(calls) == 1
    now[0] = 4.9
    service.current()
    assert len(calls) == 1
    now[0] = 5.0
    service.current()
    assert len(calls) == 2


def test_polls_during_a_recomputation_get_the_previous_verdict() -> None:
    now = [0.0]
    release = threading.Event()
    verdicts = iter(["pass", "fail"])

    def compute() -> dict[str, object]:
        verdict = next(verdicts)
        if verdict == "fail":
            release.wait(5)  # the second computation is slow
        return {"verdict": verdict, "score": 0.0, "results": []}

    service = VerdictService(compute, cache_seconds=5.0, clock=lambda: now[0])
    assert service.current()["verdict"] == "pass"
    now[0] = 10.0  # expired
    slow = threading.Thread(target=service.current)
    slow.start()
    deadline = time.monotonic() + 5
    while service.computations < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.current()["verdict"] == "pass"  # stale while the slow one runs, no waiting
    release.set()
    slow.join(5)
    assert service.current()["verdict"] == "fail"
    assert service.computations == 2


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(Exception, match="HOST:PORT"):
        parse_listen("9000")


def test_serve_verdict_command_answers_over_http(captures: dict[str, Path]) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "serve-verdict", str(captures["fail"]),
                             "--listen", f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/verdict", timeout=30)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["verdict"] == "fail"
    finally:
        proc.terminate()
        proc.wait(10)


def test_sequential_policy_counts_looks_across_restarts(captures: dict[str, Path]) -> None:
    from analyzers.pipeline import load_inputs
    from shadow.delivery.verdict_server import load_sequential_state, state_path

    capture = captures["fail"]
    policy = Policy.from_mapping({"sequential": True})
    state = load_sequential_state(capture)
    assert state.looks == 0
    for _ in range(2):
        doc = verdict_document(capture, policy, DEFAULT_RULES, sequential_state=state)
        assert doc["verdict"] == "fail" and doc["sequential"] is True
    assert state_path(capture).is_file()
    assert load_sequential_state(capture).looks == 2  # a restarted server continues at look 3
    assert load_inputs(None)[0].sequential is False
