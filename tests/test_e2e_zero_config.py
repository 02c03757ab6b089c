"""Issue #15, the diff side, end to end in the plainest set-up: a real `shadow gateway` mirroring every
route of a real JSON monolith to an equivalent candidate (another process of the same code), whose
answers carry a per-response timestamp and request id and whose /anything endpoint echoes the request
it received; NO secondary (the gateway's zero-config re-send turned off, so the analysis stands on
its own evidence: test_e2e_verdict covers it on), NO `shadow probe`, the default policy; 200 GETs.

`shadow gate CAPTURE` must never FAIL this correct candidate (exit 0 or 3), and the analysis must say
why each volatile field is not held against it: noise with its evidence (the gateway's own changes to
the copy, repeated identical requests) or unproven with the one command that settles it.
The services and the traffic are tests/verdict_services.py's, the gateway run test_e2e_verdict's.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadow.capture.store import open_store
from shadow.demo.processes import Supervisor
from shadow.demo.traffic import drive_async
from tests.conftest import REPO, GatewayProcess
from tests.test_e2e_verdict import CONFIG, gate, verdict_document
from tests.verdict_services import traffic_plan

SERVICE = [sys.executable, "-m", "tests.verdict_services"]
REQUESTS = 200
VOLATILE = ("/generated_at", "/request_id")


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    logs = tmp_path_factory.mktemp("zero-config-services")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with Supervisor(logs) as supervisor:
        children = supervisor.start_services({
            "monolith": [*SERVICE, "--seed", "11", "--error-rate", "0.005"],
            "twin": [*SERVICE, "--seed", "12", "--error-rate", "0.005"],
        }, timeout_s=30, env=env)
        folder = tmp_path_factory.mktemp("zero-config")
        capture, config = folder / "capture", folder / "gateway.yaml"
        config.write_text(CONFIG.format(primary=children["monolith"].url, candidate=children["twin"].url,
                                        capture=capture) + "  mirroring: {resend: {enabled: false}}\n")
        with GatewayProcess(config) as gateway:
            result = asyncio.run(drive_async(gateway.url, traffic_plan(REQUESTS, REQUESTS), concurrency=8,
                                             max_seconds=120, progress=False))
            assert result.sent == REQUESTS and not result.stopped_by_deadline, result
            assert gateway.stop() == 0, gateway.output()[-3000:]
    with open_store(capture) as store:
        roles = dict(store.sql("SELECT role, count(*) FROM exchanges GROUP BY role").fetchall())
    assert roles.get("primary") == REQUESTS and "secondary" not in roles, roles
    yield capture


@pytest.fixture(scope="module")
def doc(capture: Path) -> dict[str, Any]:
    return verdict_document(capture)


def test_gate_never_fails_the_equivalent_candidate(capture: Path) -> None:
    run = gate(capture)
    assert run.exit_code in (0, 3), run.why()
    assert not run.lines("FAIL"), run.why()


def test_no_real_difference_is_left(doc: dict[str, Any]) -> None:
    real = [(f["endpoint"], f["kind"], f["op"], f["pointer_template"]) for f in doc["diff_fields"]
            if not f["noise"] and not f["unproven"] and f["kind"] != "status"]
    assert not real, real
    assert not [r for r in doc["results"] if r["metric"] == "mismatch_rate" and r["class"] == "FAIL"]


def test_volatile_fields_are_noise_or_unproven_with_the_command(doc: dict[str, Any], capture: Path) -> None:
    fields = [f for f in doc["diff_fields"] if f["kind"] == "body" and f["pointer_template"] in VOLATILE]
    assert {f["pointer_template"] for f in fields} == set(VOLATILE)
    for f in fields:
        assert f["noise"] or f["unproven"], f
        if f["noise"]:  # evidence: the primary's own answers to repeated identical requests differed
            assert "differs between the primary's own answers to identical requests" in f["noise_reason"], f
    unproven = [r for r in doc["results"] if r["metric"] == "mismatch_rate" and "look volatile" in r["reason"]]
    for r in unproven:
        assert r["class"] == "INCONCLUSIVE" and f"shadow probe {capture}" in r["reason"], r


def test_what_the_gateway_changed_in_the_copy_is_labelled_the_gateways(doc: dict[str, Any]) -> None:
    echoed = {f["pointer_template"]: f for f in doc["diff_fields"] if f["endpoint"].startswith("/anything")
              and f["pointer_template"].startswith(("/headers/", "/url"))}
    # (the copy keeps the client's Host here, so the echoed URL is the same on both sides)
    assert {"/headers/X-Shadow-Request", "/headers/X-Shadow-Request-Id"} <= set(echoed), sorted(echoed)
    for f in echoed.values():
        assert f["noise"] and f["noise_reason"].startswith("gateway: changed in the copy"), f


def test_slug_like_user_paths_are_one_endpoint(doc: dict[str, Any]) -> None:
    endpoints = {e["endpoint"] for e in doc["endpoints"]}
    assert not [e for e in endpoints if e.startswith("/api/users/") and e != "/api/users/{slug}"], endpoints
