"""The migration story across two "clusters" on one machine, with real processes: a parent gateway
and two child gateways (each its own `mitmdump -s addons/gateway.py`), mutual TLS from a private CA
made in the test (trustme). The monolith sits behind child `vm`, the new service behind child `k8s`;
both advertise the uplink `orders`. A third child, `rogue`, has a certificate from another CA.

- the parent discovers the uplinks and serves `orders@multicluster` by the children's weights;
- it mirrors every request to `k8s/orders@multicluster` while `vm` serves; `shadow gate` judges the
  capture;
- moving the uplink weights in the children's files moves the parent's traffic;
- the rogue child is never used; a client with another CA's certificate (or none, or plain HTTP)
  gets nothing from a child's uplink entry point;
- a child killed: the parent fails over to the other one.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import GatewayProcess
from tests.test_traefik_tls_e2e import wait_listening
from tests.upstream import ReceivedRequest, Response, Upstream, free_port

REPO = Path(__file__).resolve().parent.parent

CHILD = """
entryPoints:
  web: {{address: "127.0.0.1:{web}"}}
hub:
  uplinkEntryPoints:
    bridge: {{address: "127.0.0.1:{bridge}", tls: {{options: bridge}}}}
  uplinks:
    orders:
      service: app
      weight: {weight}
      healthCheck: {{path: /health, interval: 500ms, timeout: 5s}}
tls:
  stores:
    default:
      defaultCertificate: {{certFile: {name}.crt, keyFile: {name}.key}}
  options:
    bridge:
      clientAuth: {{caFiles: [{ca}]}}
http:
  routers:
    local: {{rule: "PathPrefix(`/`)", service: app}}
  services:
    app:
      loadBalancer: {{servers: [{{url: "{app}"}}]}}
shadow:
  gateway: {{id: {name}}}
  capture: {{enabled: false}}
"""

PARENT = """
hub:
  multiCluster:
    pollInterval: 300ms
    pollTimeout: 5s
    gracePeriod: 4s
    tls: {{caFile: ca.pem, certFile: parent.crt, keyFile: parent.key}}
    children:
      vm: {{address: "https://127.0.0.1:{vm}"}}
      k8s: {{address: "https://127.0.0.1:{k8s}"}}
      rogue: {{address: "https://127.0.0.1:{rogue}"}}
http:
  routers:
    orders: {{rule: "PathPrefix(`/orders`)", service: orders-shadowed}}
    plain: {{rule: "PathPrefix(`/plain`)", service: orders@multicluster}}
  services:
    orders-shadowed:
      mirroring:
        service: orders@multicluster
        mirrors: [{{name: k8s/orders@multicluster, percent: 100}}]
shadow:
  gateway: {{id: parent}}
  capture: {{dir: capture, segmentSeconds: 1}}
  mirroring:
    targets: {{k8s/orders@multicluster: {{role: candidate}}}}
"""


def same_answer(name: str) -> Callable[[ReceivedRequest], Response]:
    """Both platforms answer the same body (the migration is meant to change nothing), and say who
    served in a header the capture keeps out of the body comparison."""
    def handle(req: ReceivedRequest) -> Response:
        body = json.dumps({"order": req.path.split("?")[0], "status": "shipped"}).encode()
        return 200, {"Content-Type": "application/json", "X-Served-By": name}, body
    return handle


class Bridge:
    def __init__(self, folder: Path, ca: trustme.CA, stranger: trustme.CA) -> None:
        self.folder, self.ca, self.stranger = folder, ca, stranger
        self.children: dict[str, GatewayProcess] = {}
        self.bridge_ports: dict[str, int] = {}
        self.parent: GatewayProcess | None = None
        self.upstreams: dict[str, Upstream] = {}

    def child_config(self, name: str, weight: int) -> None:
        text = CHILD.format(web=self.children[name].port if name in self.children else 0, bridge=self.bridge_ports[name],
                            weight=weight, name=name, ca="ca.pem", app=self.upstreams[name].url)
        path = self.folder / f"{name}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomically: the child's watcher never reads half a file

    def get(self, path: str) -> httpx.Response:
        assert self.parent is not None
        with httpx.Client(timeout=15.0) as client:
            return client.get(self.parent.url + path)

    def served_by(self, path: str) -> str:
        resp = self.get(path)
        return resp.headers.get("X-Served-By", f"status {resp.status_code}")

    def wait_until_served_by(self, name: str, path: str, *, consecutive: int = 5, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        streak, seen = 0, ""
        while time.monotonic() < deadline:
            seen = self.served_by(path)
            streak = streak + 1 if seen == name else 0
            if streak >= consecutive:
                return
            time.sleep(0.1)
        assert self.parent is not None
        raise AssertionError(f"not served by {name} after {timeout}s (last: {seen})\n{self.parent.output()[-3000:]}")


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    folder = Path(tmp_path_factory.mktemp("multicluster"))
    ca, stranger = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    for name, issuer in (("vm", ca), ("k8s", ca), ("rogue", stranger), ("parent", ca)):
        cert = issuer.issue_cert("127.0.0.1", "localhost", common_name=f"{name}.bridge.test")
        cert.private_key_pem.write_to_path(str(folder / f"{name}.key"))
        cert.cert_chain_pems[0].write_to_path(str(folder / f"{name}.crt"))
    env = Bridge(folder, ca, stranger)
    weights = {"vm": 100, "k8s": 0, "rogue": 1000}
    with Upstream("monolith", handler=same_answer("monolith")) as monolith, \
            Upstream("new", handler=same_answer("new")) as new, \
            Upstream("rogue", handler=same_answer("rogue")) as rogue:
        env.upstreams = {"vm": monolith, "k8s": new, "rogue": rogue}
        try:
            for name in ("vm", "k8s", "rogue"):
                env.bridge_ports[name] = free_port()
                web = free_port()
                (folder / f"{name}.yaml").write_text(CHILD.format(
                    web=web, bridge=env.bridge_ports[name], weight=weights[name], name=name, ca="ca.pem",
                    app=env.upstreams[name].url))
                env.children[name] = GatewayProcess(folder / f"{name}.yaml", port=web)
            with ThreadPoolExecutor(3) as pool:  # the three children start side by side
                list(pool.map(lambda proc: proc.start(), env.children.values()))
            for port in env.bridge_ports.values():
                wait_listening(port)
            (folder / "parent.yaml").write_text(PARENT.format(vm=env.bridge_ports["vm"], k8s=env.bridge_ports["k8s"],
                                                              rogue=env.bridge_ports["rogue"]))
            env.parent = GatewayProcess(folder / "parent.yaml").start()
            yield env
        finally:
            for proc in [env.parent, *env.children.values()]:
                if proc is not None:
                    proc.close()


def test_the_parent_serves_the_monolith_through_child_vm(bridge: Bridge) -> None:
    bridge.wait_until_served_by("monolith", "/plain/1")
    resp = bridge.get("/plain/42?x=1")
    assert resp.status_code == 200 and resp.json() == {"order": "/plain/42", "status": "shipped"}
    seen = bridge.upstreams["vm"].wait_for(1)
    assert any(r.path == "/plain/42?x=1" for r in seen)  # the uplink prefix is gone by the time it arrives
    assert bridge.upstreams["rogue"].requests == []  # the child with another CA's certificate: never used
    assert bridge.parent is not None
    assert bridge.parent.wait_for_output("child rogue", timeout=20.0)
    assert "certificate verify failed" in bridge.parent.output()


def test_a_child_refuses_peers_without_the_trusted_ca(bridge: Bridge) -> None:
    url = f"https://127.0.0.1:{bridge.bridge_ports['vm']}/.hub/uplinks"
    trusting = ssl.create_default_context(cafile=str(bridge.folder / "ca.pem"))  # trusts the child's certificate, presents no certificate
    with httpx.Client(verify=trusting, timeout=30.0) as client, pytest.raises(httpx.HTTPError):
        client.get(url)
    bridge.stranger.issue_cert("intruder.test").configure_cert(trusting)  # another CA's client certificate
    with httpx.Client(verify=trusting, timeout=30.0) as client, pytest.raises(httpx.HTTPError):
        client.get(url)
    plain = httpx.get(f"http://127.0.0.1:{bridge.bridge_ports['vm']}/.hub/uplink/orders/x", timeout=10.0)
    assert plain.status_code == 403  # no TLS, no mutual TLS: refused
    # the parent's own credentials do get the advertisement
    parent_ctx = ssl.create_default_context(cafile=str(bridge.folder / "ca.pem"))
    parent_ctx.load_cert_chain(str(bridge.folder / "parent.crt"), str(bridge.folder / "parent.key"))
    with httpx.Client(verify=parent_ctx, timeout=30.0) as client:
        doc = client.get(url).json()
    assert doc["kind"] == "UplinkList" and doc["cluster"] == "vm"
    assert [(u["name"], u["weight"]) for u in doc["uplinks"]] == [("orders", 100)]
    assert bridge.children["vm"].wait_for_output("refused on entry point bridge", timeout=20.0)


def test_mirrored_to_the_new_platform_while_the_vms_serve_and_judged(bridge: Bridge) -> None:
    bridge.wait_until_served_by("monolith", "/orders/warmup")
    for i in range(40):
        resp = bridge.get(f"/orders/{i % 4}")
        assert resp.status_code == 200 and resp.headers["X-Served-By"] == "monolith"
    # every copy reaches the new service through child k8s (weight 0: it serves no client)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and sum(
            r.path.startswith("/orders/") and r.path != "/orders/warmup" for r in bridge.upstreams["k8s"].requests) < 40:
        time.sleep(0.1)
    copies = [r for r in bridge.upstreams["k8s"].requests if r.path.startswith("/orders/") and r.path != "/orders/warmup"]
    assert len(copies) >= 40
    assert all(r.headers.get("x-shadow-request-id") for r in copies)
    capture = bridge.folder / "capture"
    # segments seal every second: wait for the 40 pairs, then judge them
    deadline = time.monotonic() + 30.0
    pairs = 0
    while time.monotonic() < deadline:
        pairs = _pairs(capture)
        if pairs >= 40:
            break
        time.sleep(0.3)
    assert pairs >= 40
    gate = subprocess.run([sys.executable, "-m", "shadow.cli", "gate", str(capture), "--no-progress"],
                          capture_output=True, text=True, cwd=REPO, timeout=180)
    assert gate.returncode in (0, 3), gate.stdout + gate.stderr  # identical answers: never a FAIL
    judged = [line for line in gate.stdout.splitlines()
              if line.split(" ")[1:4] == ["/orders/{id}", "→", "k8s/orders@multicluster"]]
    assert any("mismatch_rate" in line and "0.00 % of pairs differ" in line for line in judged), gate.stdout


def _pairs(capture: Path) -> int:
    import duckdb

    if not list((capture / "exchanges").rglob("*.parquet")):
        return 0
    con = duckdb.connect()
    ((count,),) = con.sql(
        f"select count(*) from read_parquet('{capture}/exchanges/**/*.parquet', union_by_name=true, "
        "hive_partitioning=true) p join read_parquet("
        f"'{capture}/exchanges/**/*.parquet', union_by_name=true, hive_partitioning=true) c "
        "on p.request_id = c.request_id and p.role = 'primary' and c.role = 'candidate' "
        "and c.service = 'k8s/orders@multicluster' and p.status = 200 and c.status = 200 "
        "and p.path like '/orders/%' and p.path <> '/orders/warmup'").fetchall()
    return int(count)


def test_moving_the_uplink_weights_moves_the_traffic(bridge: Bridge) -> None:
    bridge.child_config("vm", 0)
    bridge.child_config("k8s", 100)
    bridge.wait_until_served_by("new", "/plain/after-shift", consecutive=10)
    bridge.child_config("vm", 1)
    bridge.child_config("k8s", 1)
    deadline = time.monotonic() + 40.0
    seen: set[str] = set()
    while time.monotonic() < deadline and seen != {"monolith", "new"}:
        seen.add(bridge.served_by("/plain/split"))
    assert seen == {"monolith", "new"}


def test_a_child_down_fails_over_to_the_other(bridge: Bridge) -> None:
    bridge.child_config("vm", 1)
    bridge.child_config("k8s", 1)
    deadline = time.monotonic() + 40.0
    seen: set[str] = set()
    while time.monotonic() < deadline and seen != {"monolith", "new"}:
        seen.add(bridge.served_by("/plain/both"))
    assert seen == {"monolith", "new"}
    bridge.children["k8s"].stop()
    bridge.wait_until_served_by("monolith", "/plain/failover", consecutive=20)
    assert bridge.parent is not None
    # after the grace period the silent child's uplinks are dropped from the configuration
    assert bridge.parent.wait_for_output("child k8s dropped", timeout=30.0), bridge.parent.output()[-3000:]
