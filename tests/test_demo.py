"""`shadow demo` end to end, as a newcomer runs it: real services, real `shadow gateway` (mitmdump),
real traffic, a sealed capture. This is the demo's guarantee, so it runs in the normal suite."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shadow.capture.store import Store, open_store
from shadow.demo import run, seeds
from shadow.demo.processes import Supervisor
from shadow.demo.run import DemoUpstreams, capture_health, gateway_yaml, telemetry_yaml
from shadow.errors import ShadowError
from shadow.gateway.config import parse_config

REPO = Path(__file__).resolve().parent.parent


@dataclass
class DemoRun:
    out: Path
    result: subprocess.CompletedProcess[str]

    @property
    def capture(self) -> Path:
        return self.out / "capture"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "shadow.cli", "demo", "--requests", "200", "--out", str(out), "--no-progress",
         "--no-report"],  # the report's own test runs the demo with it (tests/test_demo_report.py)
        capture_output=True, text=True, timeout=110, cwd=REPO)
    return DemoRun(out, result)


@pytest.fixture(scope="module")
def store(demo_run: DemoRun) -> Iterator[Store]:
    assert demo_run.result.returncode == 0, demo_run.result.stderr[-3000:]
    with open_store(demo_run.capture) as s:
        yield s


def test_demo_exits_0_and_says_where_the_capture_is(demo_run: DemoRun) -> None:
    assert demo_run.result.returncode == 0, demo_run.result.stderr[-3000:]
    out = demo_run.result.stdout
    assert f"capture: {demo_run.capture}" in out
    assert "sent 200 of 200 requests" in out
    assert re.search(r"/api/orders/\{id\}\s+GET\s+\d+\s+\d+/\d+\s+0/0\s+[\d.]+/[\d.]+/[\d.]+\n", out), out
    assert re.search(r"/api/users/\{id\}\s+GET\s+\d+\s+-\s+0/-\s+[\d.]+/-/-\n", out), out
    assert "next:" in out and "shadow gateway" in out and "gateway counters: " in out
    assert (demo_run.out / "gateway.yaml").is_file()


def test_capture_has_all_three_roles_sharing_request_ids(store: Store) -> None:
    by_role = dict(store.sql("SELECT role, count(*) FROM exchanges GROUP BY role").fetchall())
    assert set(by_role) == {"primary", "candidate", "secondary"}
    assert by_role["primary"] >= 190  # every client request, give or take a shed row
    triples = store.sql(
        "SELECT count(*) FROM (SELECT request_id FROM exchanges GROUP BY request_id "
        "HAVING count(DISTINCT role) = 3)").fetchall()[0]
    assert triples[0] >= 50
    pairs = store.sql("SELECT count(*), count(s_exchange_id) FROM pairs").fetchall()[0]
    assert pairs[0] >= 50 and pairs[1] >= 50
    orphans = store.sql(
        "SELECT count(*) FROM exchanges m WHERE m.role <> 'primary' AND NOT EXISTS "
        "(SELECT 1 FROM exchanges p WHERE p.role = 'primary' AND p.request_id = m.request_id)").fetchall()[0]
    assert orphans == (0,)


def test_only_safe_orders_requests_are_mirrored(store: Store) -> None:
    mirrored = store.sql("SELECT DISTINCT endpoint, method FROM exchanges WHERE role <> 'primary'").fetchall()
    assert mirrored and {m for _, m in mirrored} == {"GET"}
    assert {e for e, _ in mirrored} <= set(seeds.MIRRORED_ENDPOINTS)
    served = {e for (e,) in store.sql("SELECT DISTINCT endpoint FROM exchanges WHERE role = 'primary'").fetchall()}
    assert {"/api/products/{id}", "/api/users/{id}", "/api/orders"} <= served
    posts = store.sql("SELECT count(*) FROM exchanges WHERE method = 'POST' AND role = 'primary'").fetchall()[0]
    assert posts[0] > 0


def test_secrets_never_reach_the_capture(store: Store) -> None:
    leaked = store.sql(
        "SELECT count(*) FROM exchanges, unnest(req_headers) AS h(hdr) "
        "WHERE hdr.value LIKE '%demo-token%'").fetchall()[0]
    assert leaked == (0,)
    card = store.sql(
        "SELECT count(*) FROM exchanges WHERE regexp_matches(decode(coalesce(req_body, ''::BLOB)), '4111[0-9]{12}') "
        "OR regexp_matches(decode(coalesce(resp_body, ''::BLOB)), '4111[0-9]{12}')").fetchall()[0]
    assert card == (0,)
    authorized = store.sql(
        "SELECT count(*) FROM exchanges, unnest(req_headers) AS h(hdr) "
        "WHERE lower(hdr.name) = 'authorization'").fetchall()[0]
    assert authorized[0] > 0  # present, but redacted


def test_seeded_differences_reach_the_capture(store: Store) -> None:
    candidate_bodies = store.sql(
        "SELECT decode(c_resp_body) FROM pairs WHERE endpoint = '/api/orders/{id}' AND c_status = 200").fetchall()
    assert candidate_bodies and all('"customerId"' in b for (b,) in candidate_bodies)
    secondary_same = store.sql(
        "SELECT count(*) FILTER (WHERE p_status = s_status), count(*) FROM pairs "
        "WHERE s_status IS NOT NULL").fetchall()[0]
    assert secondary_same[0] == secondary_same[1] > 0  # same code, same status: only candidates differ


def test_demo_leaves_no_service_running(demo_run: DemoRun) -> None:
    urls = re.findall(r'url: "(http://127\.0\.0\.1:\d+)"', (demo_run.out / "gateway.yaml").read_text())
    assert len(urls) == 3
    for url in urls:
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as s, pytest.raises(OSError):
            s.connect(("127.0.0.1", port))


def _rows_captured(exchanges: Path) -> bool:
    """True once the capture holds rows: a non-empty journal, or a sealed segment."""
    for path in (*exchanges.glob("_journal/*.arrows"), *exchanges.rglob("*.parquet")):
        with contextlib.suppress(OSError):  # a journal sealed (deleted) meanwhile
            if path.stat().st_size > 0:
                return True
    return False


def _log_tails(logs: Path, lines: int = 25) -> str:
    """The end of each child's log, for a failure message."""
    return "\n".join(f"--- {path.name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                     for path in sorted(logs.glob("*.log")))


@pytest.mark.timeout(200)  # startup + 90 s for the stop, before the default 120 s cuts the diagnostics
def test_sigterm_stops_the_traffic_seals_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow.cli", "demo", "--requests", "20000", "--max-seconds", "60", "--out", str(out),
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # bounded: the demo prints this within seconds, or exits
            lines.append(line)
            if line.startswith("sending "):
                break
        # Some traffic flows: wait (bounded) until the capture has journaled rows, so a loaded machine
        # that answers its first requests late still stops with something to seal.
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not _rows_captured(out / "capture" / "exchanges"):
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        try:
            # Bounded by the demo itself: gateway 20 s + every service at once 10 s, then SIGKILL.
            rest, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, err = proc.communicate()
            pytest.fail(f"the demo did not stop within 90 s of SIGTERM\nstdout:\n{''.join(lines)}{rest}\n"
                        f"stderr:\n{err[-3000:]}\n{_log_tails(out / 'logs')}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert "sealing what was captured" in rest and f"capture: {out / 'capture'}" in rest
    with open_store(out / "capture") as s:
        primary = s.sql("SELECT count(*) FROM exchanges WHERE role = 'primary'").fetchall()[0][0]
    assert primary > 0
    for url in re.findall(r'url: "(http://127\.0\.0\.1:\d+)"', (out / "gateway.yaml").read_text()):
        with socket.socket() as sock, pytest.raises(OSError):
            sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))


def test_demo_refuses_to_mix_captures(demo_run: DemoRun) -> None:
    again = subprocess.run([sys.executable, "-m", "shadow.cli", "demo", "--out", str(demo_run.out)],
                           capture_output=True, text=True, timeout=30, cwd=REPO)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == f"error: {demo_run.capture} already holds a capture; choose another --out " \
                                   "or remove it"


def test_demo_config_is_a_valid_gateway_config() -> None:
    text = gateway_yaml(DemoUpstreams("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"))
    config = parse_config(text, base_dir=Path("/tmp/demo"))
    assert config.shadow.capture.dir == Path("/tmp/demo/capture")
    assert config.shadow.mirroring.target("orders").role == "candidate"
    assert config.shadow.mirroring.target("monolith-b").role == "secondary"
    assert not config.shadow.mirroring.target("orders").allow_unsafe
    assert "card_number" in config.shadow.capture.redaction.json_fields
    assert "authorization" in config.shadow.capture.redaction.headers


def test_demo_gateway_api_manifests_route_like_the_traefik_file(tmp_path: Path) -> None:
    """`shadow demo --gateway-api`: the same primary, the same mirrors with the same roles, the same
    capture settings, so the same traffic makes the same capture and the same verdict."""
    from shadow.demo.run import gateway_api_yaml
    from shadow.gateway.routing import plan_route, resolve_router
    from shadow.gateway.rules import RequestView
    from shadow.gatewayapi.provider import load_gateway_config

    upstreams = DemoUpstreams("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")
    traefik = parse_config(gateway_yaml(upstreams), base_dir=tmp_path)
    manifests_file = tmp_path / "gateway-api.yaml"
    manifests_file.write_text(gateway_api_yaml(upstreams) + telemetry_yaml(4318))
    manifests = load_gateway_config(manifests_file)
    assert manifests.shadow.telemetry.endpoint == "http://127.0.0.1:4318"

    def where(config: Any, method: str, path: str) -> tuple[str, list[tuple[str, str, bool]]]:
        router, _ = resolve_router(config, RequestView(method=method, host="127.0.0.1", path=path))
        plan = plan_route(config, router)
        mirrors = sorted((m.service.servers[0].url, config.shadow.mirroring.target(m.spec.name).role,
                          config.shadow.mirroring.target(m.spec.name).allow_unsafe) for m in plan.mirrors)
        return plan.primary.servers[0].url, mirrors

    for method, path in (("GET", "/"), ("GET", "/api/orders"), ("GET", "/api/orders/7"), ("POST", "/api/orders"),
                         ("GET", "/api/customers/3"), ("GET", "/health")):
        assert where(manifests, method, path) == where(traefik, method, path), (method, path)
    assert where(manifests, "GET", "/api/orders/7")[1] == [("http://127.0.0.1:2", "secondary", False),
                                                           ("http://127.0.0.1:3", "candidate", False)]
    for attribute in ("capture", "endpoints"):
        assert getattr(manifests.shadow, attribute) == getattr(traefik.shadow, attribute)


def test_demo_telemetry_section_is_valid_and_embeds_the_receiver() -> None:
    text = gateway_yaml(DemoUpstreams("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"))
    telemetry = parse_config(text + telemetry_yaml(4318), base_dir=Path("/tmp/demo")).shadow.telemetry
    assert telemetry.endpoint == "http://127.0.0.1:4318"
    assert telemetry.receiver_listen == "127.0.0.1:4318"


def test_sample_capture_in_data_is_readable_and_has_three_roles() -> None:
    sample = REPO / "data" / "demo-capture"
    assert not list(sample.rglob(".*")) and not list(sample.rglob("_journal"))  # no key, no journal
    with open_store(sample) as s:
        roles = dict(s.sql("SELECT role, count(DISTINCT request_id) FROM exchanges GROUP BY role").fetchall())
        pairs = s.sql("SELECT count(*), count(s_exchange_id) FROM pairs").fetchall()[0]
    assert set(roles) == {"primary", "candidate", "secondary"} and roles["primary"] >= 1000
    assert pairs[0] == pairs[1] >= 1000


def test_capture_health_names_what_was_lost(tmp_path: Path) -> None:
    (tmp_path / "_stats").mkdir()
    (tmp_path / "_stats" / "gw-1.json").write_text(
        '{"gateway": "gw-1", "sealed_rows": 90, "shed": 0, "mirror_completed": 40, "mirror_shed": 3}')
    (tmp_path / "_stats" / "gw-2.json").write_text('{"sealed_rows": 10, "mirror_timeouts": 2, "mirror_shed": 1}')
    assert capture_health(tmp_path) == ("gateway counters: 100 rows sealed, 40 mirror calls completed; "
                                        "LOST: mirror_shed 4, mirror_timeouts 2")
    (tmp_path / "_stats" / "gw-2.json").unlink()
    (tmp_path / "_stats" / "gw-1.json").write_text('{"sealed_rows": 5, "mirror_completed": 2}')
    assert capture_health(tmp_path).endswith("; nothing shed or failed")
    assert capture_health(tmp_path / "missing") == "no gateway counters found"


def test_a_gateway_that_cannot_start_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(gateway_yaml(DemoUpstreams("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")))
    crash = "import sys; print('mitmdump: cannot load addons/gateway.py', file=sys.stderr); sys.exit(3)"
    monkeypatch.setattr(run, "gateway_argv", lambda config, port: [sys.executable, "-c", crash])
    with Supervisor(tmp_path / "logs") as sup, pytest.raises(ShadowError) as err:
        run.start_gateway(sup, config)
    message = err.value.format_message()
    assert message.startswith("gateway exited with code 3 while starting")
    assert "mitmdump: cannot load addons/gateway.py" in message
    assert not sup.children
