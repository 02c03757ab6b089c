"""The canary controller driving a real gateway: promotion for a candidate equal to the monolith,
rollback for one with a seeded latency and error regression. Small numbers, a lenient policy."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shadow.delivery.canary import EXIT_PROMOTED, EXIT_ROLLED_BACK, load_plan, run_canary, split_weights
from shadow.errors import ConfigError
from shadow.gateway.config import WeightedService, load_config
from tests.conftest import GatewayProcess
from tests.upstream import ReceivedRequest, Response, Upstream, echo

CONFIG = """
http:
  routers:
    good: {{rule: "PathPrefix(`/good`)", service: good}}
    bad: {{rule: "PathPrefix(`/bad`)", service: bad}}
  services:
    # the monolith is the first child of both; the canary shifts the second
    good:
      weighted:
        services: [{{name: mono-a, weight: 100}}, {{name: next-good, weight: 0}}]
    bad:
      weighted:
        services: [{{name: mono-b, weight: 100}}, {{name: next-bad, weight: 0}}]
    mono-a: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
    mono-b: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
    next-good: {{loadBalancer: {{servers: [{{url: "{good}"}}]}}}}
    next-bad: {{loadBalancer: {{servers: [{{url: "{bad}"}}]}}}}
shadow:
  capture: {{dir: capture, segmentSeconds: 1}}
  split:
    candidates: [next-good, next-bad]
    clientKey: {{header: X-Client-Id}}
"""

PLAN = """
gateway: gw.yaml
service: {service}
child: {child}
steps: [50, 100]
minRequests: 40
maxWait: 40s
pollInterval: 500ms
policy:
  n_boot: 200
  defaults:
    latency: {{p50: 1.5, p95: null, p99: null, bulk: 1.5, floor_ms: 5}}
    error_rate_pp: 15
    transport_error_pp: 15
    min_samples: 30
"""


def regressed(req: ReceivedRequest, _state: list[int] = [0]) -> Response:  # noqa: B006 - a counter
    _state[0] += 1
    status, headers, body = echo("next-bad")(req)
    return (500 if _state[0] % 3 == 0 else status), headers, body


class Load:
    """Bounded background traffic: stops at `stop`, after max_requests, or after max_seconds."""

    def __init__(self, url: str, path: str, *, max_requests: int = 4000, max_seconds: float = 30.0) -> None:
        self.url, self.path = url, path
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self.stop.is_set() and self.sent < self.max_requests and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    client.get(f"{self.path}/item", headers={"X-Client-Id": f"c{self.sent % 97}"})
                self.sent += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


class Env:
    def __init__(self, root: Path, gw: GatewayProcess) -> None:
        self.root, self.gw = root, gw


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("canary")
    ups = [Upstream("mono").start(), Upstream("next-good").start(),
           Upstream("next-bad", handler=regressed, delay=0.03).start()]
    (root / "gw.yaml").write_text(CONFIG.format(mono=ups[0].url, good=ups[1].url, bad=ups[2].url))
    gw = GatewayProcess(root / "gw.yaml").start()
    try:
        yield Env(root, gw)
    finally:
        gw.close()
        for up in ups:
            up.stop()


def weights(env: Env, service: str) -> dict[str, int]:
    svc = load_config(env.root / "gw.yaml").services[service]
    assert isinstance(svc, WeightedService)
    return {c.name: c.weight for c in svc.services}


def decisions(env: Env, child: str) -> list[dict[str, object]]:
    lines = (env.root / "capture" / "canary.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    starts = [i for i, e in enumerate(events) if e["event"] == "start" and e["child"] == child]
    return events[starts[-1]:]


def test_split_weights_keep_the_total_at_100() -> None:
    assert split_weights({"mono": 100, "next": 0}, "next", 25) == {"mono": 75, "next": 25}
    assert split_weights({"a": 2, "b": 1, "next": 0}, "next", 10) == {"a": 60, "b": 30, "next": 10}
    assert split_weights({"mono": 100, "next": 50}, "next", 0) == {"mono": 100, "next": 0}


def test_a_bad_plan_is_one_line_naming_the_field(tmp_path: Path, env: Env) -> None:
    plan = env.root / "bad-plan.yaml"
    plan.write_text(PLAN.format(service="good", child="mono-x"))
    with pytest.raises(ConfigError, match="child: 'mono-x' is not a child of 'good'"):
        load_plan(plan)


def test_promotes_a_candidate_equal_to_the_monolith(env: Env) -> None:
    plan = env.root / "good.yaml"
    plan.write_text(PLAN.format(service="good", child="next-good"))
    lines: list[str] = []
    # A loaded machine sends fewer requests per look: each step may wait up to maxWait (40 s), and
    # the canary returns as soon as the last step is proven.
    with Load(env.gw.url, "/good", max_seconds=90.0):
        code = run_canary(load_plan(plan), echo=lines.append)
    assert code == EXIT_PROMOTED, "\n".join(lines)
    assert weights(env, "good") == {"mono-a": 0, "next-good": 100}
    events = decisions(env, "next-good")
    promote = [e for e in events if e["event"] == "promote"]
    assert promote[0]["step"] == 50 and promote[0]["overall"] == "PASS"
    assert int(promote[0]["n_candidate"]) >= 40 and int(promote[0]["n_primary"]) >= 40  # type: ignore[call-overload]
    assert events[-1]["event"] == "summary" and events[-1]["outcome"] == "PASS"
    assert lines[-1].startswith("canary: promoted")


def test_rolls_back_a_candidate_with_a_latency_and_error_regression(env: Env) -> None:
    plan = env.root / "bad.yaml"
    plan.write_text(PLAN.format(service="bad", child="next-bad"))
    lines: list[str] = []
    with Load(env.gw.url, "/bad", max_seconds=90.0):
        code = run_canary(load_plan(plan), echo=lines.append)
    assert code == EXIT_ROLLED_BACK, "\n".join(lines)
    assert weights(env, "bad") == {"mono-b": 100, "next-bad": 0}
    rollback = [e for e in decisions(env, "next-bad") if e["event"] == "rollback"]
    assert rollback and rollback[0]["overall"] == "FAIL"
    failed = {g["metric"] for g in rollback[0]["guardrails_not_pass"]}  # type: ignore[attr-defined]
    assert failed & {"latency_bulk", "latency_p50", "error_rate"}
    assert any("rolled back" in line for line in lines)


def test_the_documented_example_plan_loads() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "examples"
    plan = load_plan(docs / "canary-plan.yaml")
    assert plan.steps == (5, 25, 50, 100) and plan.child == "orders-next-safe" and plan.policy.sequential
    assert split_weights({"monolith": 95, "orders-next-safe": 5}, plan.child, 25) == \
        {"monolith": 75, "orders-next-safe": 25}


def test_cli_help_and_a_bad_plan_exit_2(tmp_path: Path) -> None:
    from tests.conftest import shadow_cli

    helped = shadow_cli("canary", "--help")
    assert helped.returncode == 0 and "Exit 0 promoted, 1 rolled back" in helped.stdout
    plan = tmp_path / "plan.yaml"
    plan.write_text("gateway: missing.yaml\nservice: s\nchild: c\nsteps: [50, 100]\n")
    bad = shadow_cli("canary", str(plan))
    assert bad.returncode == 2 and "missing.yaml: no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_pauses_inconclusive_when_data_never_suffices(env: Env) -> None:
    plan = env.root / "slow.yaml"
    plan.write_text(PLAN.format(service="good", child="next-good")
                    .replace("minRequests: 40", "minRequests: 100000").replace("maxWait: 40s", "maxWait: 1s"))
    before = weights(env, "good")
    lines: list[str] = []
    code = run_canary(load_plan(plan), echo=lines.append)
    assert code == 3, "\n".join(lines)
    assert lines[-1].startswith("canary: inconclusive: paused")
    # While it waits it says how far it is: n per arm against minRequests, and the time left.
    assert any(re.fullmatch(r"canary: step 50 %: [\d,]+ primary / [\d,]+ candidate requests of 100,000 each "
                            r"before the first look; \d+s left of maxWait", line) for line in lines), lines
    events = decisions(env, "next-good")
    assert [e["event"] for e in events][-3:] == ["inconclusive", "pause", "summary"]
    assert weights(env, "good") == split_weights(before, "next-good", 0)  # back to the last proven share


def test_dry_run_prints_the_steps_and_writes_nothing() -> None:
    from tests.conftest import shadow_cli

    docs = Path(__file__).resolve().parent.parent / "docs" / "examples"
    before = (docs / "shifting.yaml").read_bytes()
    out = shadow_cli("canary", str(docs / "canary-plan.yaml"), "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("canary plan: orders-next-safe of orders-split through 5 % → 25 %")
    assert "step 25 %: would write {'monolith': 75, 'orders-next-safe': 25}" in lines
    assert lines[-1].endswith("nothing was written (--dry-run)")
    assert (docs / "shifting.yaml").read_bytes() == before
    helped = shadow_cli("canary", "--help")
    assert "minRequests: 200" in helped.stdout and "shadow.split.candidates" in helped.stdout


def test_rewriting_weights_keeps_the_users_formatting(tmp_path: Path) -> None:
    from shadow.delivery.canary import write_weights

    text = ("# my gateway\nhttp:\n  routers:\n    r: {rule: \"PathPrefix(`/`)\", service: split}   # the one route\n"
            "  services:\n    a: {loadBalancer: {servers: [{url: 'http://127.0.0.1:9'}]}}\n"
            "    b: {loadBalancer: {servers: [{url: 'http://127.0.0.1:9'}]}}\n"
            "    split:\n      weighted:\n        services:\n          - name: a   # the monolith\n"
            "            weight: 90\n          - name: b\n            weight: 10\n"
            "shadow:\n  split: {candidates: [b]}\n")
    gateway = tmp_path / "gw.yaml"
    gateway.write_text(text)
    write_weights(gateway, "split", {"a": 75, "b": 25})
    assert gateway.read_text() == text.replace("weight: 90", "weight: 75").replace("weight: 10", "weight: 25")
