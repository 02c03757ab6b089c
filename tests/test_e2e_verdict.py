"""Acceptance tests of issue #15: the cutover verdict is right with zero set-up.

The plainest set-up a newcomer would use: a real `shadow gateway` (the mitmdump it starts) whose
gateway.yaml mirrors every route 100 % to the candidate, NO secondary configured, NO `shadow probe`,
the default policy; real services in their own processes (tests/verdict_services.py: JSON answers
with a per-response timestamp and request id, an /anything endpoint that echoes the request it
received, transient independent 5xx, autocorrelated latency); real HTTP clients; the verdict from
`shadow gate CAPTURE` run as a subprocess (exit 0 PASS, 1 FAIL, 3 INCONCLUSIVE) and, where the test
needs to know *why*, the same analysis's verdict.json document.

Every load is bounded in count and time; every process stops at the end of the module.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shadow.capture.store import open_store
from shadow.demo.processes import Supervisor
from shadow.demo.traffic import drive_async
from tests.conftest import REPO, GatewayProcess, shadow_cli
from tests.verdict_services import traffic_plan

SERVICE = [sys.executable, "-m", "tests.verdict_services"]
# The bounded client. 8 in flight keeps the gateway below saturation, as in production, so the latency it
# measures is mostly the services'; the heavy run sends 32 at once, the fastest measured here.
CONCURRENCY = 8
HEAVY_CONCURRENCY, HEAVY_REQUESTS = 32, 10_000
MAX_DRIVE_SECONDS = 300.0
TRANSIENT_5XX = 0.005  # per side, independent
AA_TRANSIENT_5XX = 0.01  # the A/A's per-side rate (the upper end of the 0.2–1 % the issue names)

# What a newcomer writes: every route mirrored to the candidate, nothing else configured.
CONFIG = """\
http:
  routers:
    everything: {{rule: "PathPrefix(`/`)", service: shop}}
  services:
    monolith: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
    candidate: {{loadBalancer: {{servers: [{{url: "{candidate}"}}]}}}}
    shop:
      mirroring:
        service: monolith
        mirrors: [{{name: candidate, percent: 100}}]
shadow:
  capture: {{dir: "{capture}"}}
"""


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URL of each service process: the monolith, its equivalent twin (same code, another
    process), the bad candidate, and an A/A pair without volatile fields."""
    logs = tmp_path_factory.mktemp("verdict-services")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rate = str(TRANSIENT_5XX)
    with Supervisor(logs) as supervisor:
        children = supervisor.start_services({
            "monolith": [*SERVICE, "--seed", "1", "--error-rate", rate],
            "twin": [*SERVICE, "--seed", "2", "--error-rate", rate],
            "bad": [*SERVICE, "--flavour", "bad", "--seed", "3", "--error-rate", rate],
            "stable-a": [*SERVICE, "--stable", "--seed", "4", "--error-rate", str(AA_TRANSIENT_5XX)],
            "stable-b": [*SERVICE, "--stable", "--seed", "5", "--error-rate", str(AA_TRANSIENT_5XX)],
        }, timeout_s=30, env=env)
        yield {name: child.url for name, child in children.items()}


@dataclass(frozen=True)
class MirroredRun:
    capture: Path
    requests: int
    traffic_s: float  # sending the requests through the gateway
    pairs: int  # requests captured with both a primary and a candidate row


def mirrored_run(folder: Path, primary: str, candidate: str, requests: int, *, seed: int) -> MirroredRun:
    """Send `requests` GETs through a fresh gateway mirroring everything from `primary` to
    `candidate`; stop it (the capture is sealed) and return the capture."""
    folder.mkdir(parents=True, exist_ok=True)
    capture = folder / "capture"
    config = folder / "gateway.yaml"
    config.write_text(CONFIG.format(primary=primary, candidate=candidate, capture=capture))
    plan = traffic_plan(requests, seed)
    with GatewayProcess(config) as gateway:
        started = time.monotonic()
        if requests <= 50:  # a handful, one after another, as someone trying it out would
            with httpx.Client(base_url=gateway.url, timeout=10.0) as client:
                for req in plan:
                    client.request(req.method, req.path, headers=list(req.headers))
            sent = len(plan)
        else:
            concurrency = HEAVY_CONCURRENCY if requests >= HEAVY_REQUESTS else CONCURRENCY
            result = asyncio.run(drive_async(gateway.url, plan, concurrency=concurrency,
                                             max_seconds=MAX_DRIVE_SECONDS, progress=False))
            assert not result.stopped_by_deadline and not result.stopped_by_failures, result
            sent = result.sent
        traffic_s = time.monotonic() - started
        assert gateway.stop() == 0, gateway.output()[-3000:]
        assert "capture sealed" in gateway.output(), gateway.output()[-3000:]
    assert sent == requests
    with open_store(capture) as store:
        [row] = store.sql("SELECT count(DISTINCT request_id) FILTER (WHERE role = 'primary'), "
                          "count(DISTINCT request_id) FILTER (WHERE role = 'candidate') FROM exchanges").fetchall()
    assert row[0] == requests, row
    return MirroredRun(capture, requests, traffic_s, int(row[1]))


@pytest.fixture(scope="module")
def runs(services: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], MirroredRun]:
    """runs(candidate, requests): the capture of that candidate at that count, made once per module."""
    made: dict[tuple[str, int], MirroredRun] = {}
    primaries = {"twin": "monolith", "bad": "monolith", "stable-b": "stable-a"}

    def get(candidate: str, requests: int) -> MirroredRun:
        key = (candidate, requests)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{candidate}-{requests}")
            made[key] = mirrored_run(folder, services[primaries[candidate]], services[candidate], requests,
                                     seed=requests)
            print(f"\n{candidate} × {requests:,} requests: traffic {made[key].traffic_s:.1f} s "
                  f"({requests / made[key].traffic_s:.0f} req/s), {made[key].pairs:,} pairs")
        return made[key]

    return get


@dataclass(frozen=True)
class GateRun:
    exit_code: int
    output: str
    seconds: float

    def lines(self, cls: str) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith(cls + " ")]

    def why(self) -> str:
        """What a failed assertion shows: the gate's FAIL lines and its verdict line."""
        fails = self.lines("FAIL")
        more = [f"… {len(fails) - 12} more FAIL lines"] if len(fails) > 12 else []
        return "\n".join([f"shadow gate exit {self.exit_code}", *fails[:12], *more,
                          *self.output.strip().splitlines()[-1:]])


def gate(capture: Path) -> GateRun:
    started = time.monotonic()
    done = shadow_cli("gate", str(capture), "--no-progress", timeout=300)
    seconds = time.monotonic() - started
    assert done.returncode in (0, 1, 3), done.stdout[-2000:] + done.stderr[-3000:]
    print(f"\nshadow gate {capture.parent.name}: exit {done.returncode} in {seconds:.1f} s")
    return GateRun(done.returncode, done.stdout, seconds)


def verdict_document(capture: Path) -> dict[str, Any]:
    """verdict.json as `shadow report` writes it (same analysis, same default policy), without
    rendering the HTML."""
    from analyzers.pipeline import analyze, load_inputs
    from analyzers.report import verdict_json

    policy, rules = load_inputs(None)
    doc: dict[str, Any] = json.loads(verdict_json(analyze(capture, policy, rules=rules, progress=False)))
    return doc


def real_fields(doc: dict[str, Any], endpoint: str) -> list[dict[str, Any]]:
    return [f for f in doc["diff_fields"] if f["endpoint"] == endpoint and not f["noise"]]


def results(doc: dict[str, Any], endpoint: str, cls: str) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r["endpoint"] == endpoint and r["class"] == cls]


# ---------------------------------------------------------------- what the capture says was sent

def test_captured_request_is_the_one_each_side_received(runs: Callable[[str, int], MirroredRun]) -> None:
    """The analysis tells the gateway's own changes to a copy from the candidate's by comparing the
    rows' captured requests: each row's headers and path must be exactly what that service received
    (here: what /anything echoed back)."""
    with open_store(runs("twin", 2_000).capture) as store:
        rows = store.sql("SELECT role, path, query, req_headers, resp_body FROM exchanges "
                         "WHERE path LIKE '/anything/%' AND status = 200").fetchall()
    roles = {role for role, *_ in rows}
    assert {"primary", "candidate"} <= roles, roles
    for role, path, query, headers, body in rows:
        echoed = json.loads(body)
        received = {k.lower(): v for k, v in echoed["headers"].items()}
        captured = {h["name"].lower(): h["value"] for h in headers}
        assert captured == received, (role, captured, received)
        sent_target = path + (f"?{query}" if query else "")
        assert echoed["url"].split("/", 3)[3] == sent_target.lstrip("/"), (role, echoed["url"], sent_target)
    candidate_headers = {h["name"].lower() for role, _p, _q, headers, _b in rows if role == "candidate"
                         for h in headers}
    assert {"x-shadow-request", "x-shadow-request-id"} <= candidate_headers
