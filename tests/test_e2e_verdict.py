"""Acceptance tests of issue #15: the cutover verdict is right with zero set-up.

The plainest set-up a newcomer would use: a real `shadow gateway` (the mitmdump it starts) whose
gateway.yaml mirrors every route 100 % to the candidate, NO secondary configured, NO `shadow probe`,
the default policy (so the only noise evidence is the gateway's own zero-config secondary: it
re-sends a few mirrored GETs to the primary, shadow.mirroring.resend); real services in their own
processes (tests/verdict_services.py: JSON answers with a per-response timestamp and request id, an
/anything endpoint that echoes the request it received, transient independent 5xx, autocorrelated
latency); real HTTP clients; the verdict from
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
from shadow.gateway.mirror import RESEND_BURST, ResendSettings
from tests.conftest import REPO, GatewayProcess, shadow_cli
from tests.verdict_services import traffic_plan

SERVICE = [sys.executable, "-m", "tests.verdict_services"]
# The bounded client. 8 in flight keeps the gateway below saturation, as in production, so the latency it
# measures is mostly the services'; the heavy run sends 32 at once, the fastest measured here.
CONCURRENCY = 8
HEAVY_CONCURRENCY, HEAVY_REQUESTS = 32, 10_000
MAX_DRIVE_SECONDS = 450.0
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
            with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
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


# ---------------------------------------------------------------- an equivalent candidate

HEAVY = pytest.mark.timeout(600)  # 20,000 requests through one gateway on 2 shared cores, then the analysis


@pytest.mark.parametrize("requests", [12, 2_000, pytest.param(20_000, marks=HEAVY)])
def test_equivalent_candidate_never_fails(runs: Callable[[str, int], MirroredRun], requests: int) -> None:
    run = runs("twin", requests)
    assert run.pairs >= 0.99 * requests  # the mirror kept up: the verdict judges what was sent
    verdict = gate(run.capture)
    assert verdict.exit_code in (0, 3), verdict.why()


def test_volatile_fields_are_noise_with_their_evidence(runs: Callable[[str, int], MirroredRun]) -> None:
    doc = verdict_document(runs("twin", 2_000).capture)
    fields = {(f["endpoint"], f["pointer_template"]): f for f in doc["diff_fields"] if f["kind"] == "body"}
    for endpoint in ("/api/orders/{id}", "/api/orders"):
        for pointer in ("/generated_at", "/request_id"):
            field = fields.get((endpoint, pointer))
            assert field is not None, f"{endpoint} {pointer} not listed among the differences"
            assert field["noise"] and field["noise_reason"], field
            evidence = field["secondary"]
            # The evidence: the primary's own second answer to the same requests differed too.
            assert evidence is not None and evidence["requests"] > 0, field
            assert evidence["secondary_diffs"] > 0, field


# ---------------------------------------------------------------- a bad candidate

def test_bad_candidate_fails_naming_each_problem(runs: Callable[[str, int], MirroredRun]) -> None:
    run = runs("bad", 3_000)
    verdict = gate(run.capture)
    doc = verdict_document(run.capture)
    problems: list[str] = []
    detail = real_fields(doc, "/api/orders/{id}")
    if not any("customerId" in json.dumps(f) for f in detail):
        problems.append("the renamed field customer_id → customerId is not named")
    if not any(f["pointer_template"] == "/total" for f in detail):
        problems.append("the rounded /total is not named")
    if not any(r["metric"].startswith("latency") for r in results(doc, "/api/orders/{id}", "FAIL")):
        problems.append("the +40 % latency of /api/orders/{id} does not FAIL")
    if not any(r["metric"] == "error_rate" for r in results(doc, "/api/orders", "FAIL")):
        problems.append("the 4 % of 500s on /api/orders does not FAIL")
    assert verdict.exit_code == 1 and not problems, "; ".join(problems) + "\n" + verdict.why()
    gate_lines = "\n".join(verdict.lines("FAIL"))
    assert "/api/orders/{id} → candidate latency" in gate_lines, verdict.why()
    assert "/api/orders → candidate error_rate" in gate_lines, verdict.why()


# ---------------------------------------------------------------- A/A with transient 5xx

def test_aa_transient_5xx_never_fail_the_mismatch_rate(runs: Callable[[str, int], MirroredRun]) -> None:
    """Identical services, no volatile field, 1 % independent 5xx per side: a status difference is
    judged by the 5xx guardrail alone, never as a body mismatch too."""
    run = runs("stable-b", 2_000)
    verdict = gate(run.capture)
    mismatch_fails = [line for line in verdict.lines("FAIL") if " mismatch_rate:" in line]
    assert not mismatch_fails, verdict.why()
    assert verdict.exit_code in (0, 3), verdict.why()


def test_aa_status_change_is_shown_as_a_status_change_not_body_fields(
        runs: Callable[[str, int], MirroredRun]) -> None:
    doc = verdict_document(runs("stable-b", 2_000).capture)
    status = [f for f in doc["diff_fields"] if f["kind"] == "status"]
    assert status, "the transient 500s show as status differences"
    body = [f"{f['endpoint']} {f['op']} {f['pointer_template']}" for f in doc["diff_fields"]
            if f["kind"] == "body" and not f["noise"]]
    assert not body, body


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


# ---------------------------------------------------------------- the zero-config secondary

def test_gateway_resends_a_bounded_share_of_safe_requests_to_the_primary(
        runs: Callable[[str, int], MirroredRun]) -> None:
    """No secondary configured: the gateway re-sends 5 % of each endpoint's mirrored GETs (the 1st,
    21st, 41st...) to the primary and captures them as role=secondary, counted in the capture stats."""
    settings = ResendSettings()
    with open_store(runs("twin", 2_000).capture) as store:
        by_endpoint = store.sql(
            "SELECT endpoint, count(*) FILTER (WHERE role = 'primary'), count(*) FILTER (WHERE role = 'secondary') "
            "FROM exchanges GROUP BY endpoint").fetchall()
        secondaries = store.sql(
            "SELECT s.mode, s.service, s.method, s.req_headers, p.request_id IS NOT NULL, c.request_id IS NOT NULL "
            "FROM exchanges s LEFT JOIN exchanges p ON p.request_id = s.request_id AND p.role = 'primary' "
            "LEFT JOIN exchanges c ON c.request_id = s.request_id AND c.role = 'candidate' "
            "WHERE s.role = 'secondary'").fetchall()
        [counters] = store.sql("SELECT max(mirror_resent), max(mirror_resend_shed) FROM capture_stats").fetchall()
    for endpoint, primaries, resent in by_endpoint:
        assert resent == min(-(-primaries * settings.percent // 100), settings.per_endpoint), endpoint
    assert len(secondaries) <= 2_000 * settings.percent // 100 + RESEND_BURST  # the extra load on the primary
    assert counters == (len(secondaries), 0)
    for mode, service, method, headers, has_primary, has_candidate in secondaries:
        assert (mode, service, method, has_primary, has_candidate) == ("mirror", "monolith", "GET", True, True)
        assert {h["name"] for h in headers} >= {"X-Shadow-Request", "X-Shadow-Request-Id"}
