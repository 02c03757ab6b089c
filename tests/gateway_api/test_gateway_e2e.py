"""`shadow gateway MANIFESTS`: serving, mirroring and capture from Gateway API manifests, hot reload
keeping the running configuration on an invalid change, and `shadow config check` showing status."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.conftest import GatewayProcess, shadow_cli
from tests.upstream import Upstream

ROUTES = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: shop}}
spec:
  gatewayClassName: shadow
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: orders, namespace: shop}}
spec:
  parentRefs: [{{name: edge}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api/orders}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: orders-next, port: 8080}}}}
    backendRefs: [{{name: monolith, port: 8080}}]
  - backendRefs: [{{name: monolith, port: 8080}}]
---
backends:
  shop/monolith:8080: {mono}
  shop/orders-next:8080: {next}
shadow:
  capture: {{dir: ./capture, segmentSeconds: 1, mode: thread}}
  mirroring:
    targets:
      shop/orders-next:8080: {{role: candidate, allowUnsafe: true}}
"""


@dataclass
class Env:
    folder: Path
    gateway: GatewayProcess
    mono: Upstream
    next: Upstream
    http: httpx.Client


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("manifests")
    with Upstream("monolith") as mono, Upstream("orders-next") as nxt:
        (folder / "routes.yaml").write_text(ROUTES.format(mono=mono.url, next=nxt.url))
        with GatewayProcess(folder / "routes.yaml", extra_args=("--set", "shadow_reload_interval=0")) as gw:
            assert gw.wait_for_output("shadow gateway: loaded"), gw.output()
            with httpx.Client(base_url=gw.url, timeout=30.0) as client:
                yield Env(folder, gw, mono, nxt, client)


def test_routes_and_mirrors_like_a_traefik_file(env: Env) -> None:
    answer = env.http.post("/api/orders/7", content=b'{"n": 1}')
    assert answer.status_code == 200 and answer.json()["upstream"] == "monolith"
    copies = env.next.wait_for(1)
    assert [(r.method, r.path, r.body) for r in copies] == [("POST", "/api/orders/7", b'{"n": 1}')]
    assert copies[0].headers["x-shadow-request"] == "1"
    assert env.http.get("/home").json()["upstream"] == "monolith"
    time.sleep(0.2)
    assert len(env.next.received()) == 1  # the catch-all rule has no mirror


def test_an_invalid_change_keeps_the_running_configuration(env: Env) -> None:
    path = env.folder / "routes.yaml"
    good = path.read_text()
    path.write_text(good.replace("type: PathPrefix", "type: Prefix"))
    env.gateway.signal(signal.SIGHUP)
    assert env.gateway.wait_for_output("config reload rejected")
    line = next(x for x in env.gateway.output().splitlines() if "reload rejected" in x)
    assert line.endswith("routes.yaml:14: document 2, HTTPRoute shop/orders, spec.rules[0].matches[0].path.type: "
                         "must be one of Exact, PathPrefix, RegularExpression, got 'Prefix'")
    assert env.http.get("/api/orders/8").json()["upstream"] == "monolith"
    assert env.next.wait_for(2)[-1].path == "/api/orders/8"  # still mirrored: the old configuration serves
    reloads = env.gateway.output().count("shadow gateway: reloaded")
    path.write_text(good.replace("/api/orders", "/api/carts"))
    env.gateway.signal(signal.SIGHUP)
    assert env.gateway.wait_for_output("shadow gateway: reloaded")
    assert env.gateway.output().count("shadow gateway: reloaded") == reloads + 1
    env.http.get("/api/orders/9")
    env.http.get("/api/carts/1")
    assert env.next.wait_for(3)[-1].path == "/api/carts/1"
    path.write_text(good)
    env.gateway.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while env.gateway.output().count("shadow gateway: reloaded") < reloads + 2 and time.monotonic() < deadline:
        time.sleep(0.02)


def test_the_mirror_answer_is_captured_and_paired(env: Env) -> None:
    for i in range(3):
        env.http.get(f"/api/orders/p{i}")
    env.next.wait_for(len(env.next.received()) + 3)
    assert env.gateway.stop() == 0
    con = duckdb.connect()
    rows = con.execute(
        f"select request_id, role, mode, service, path from read_parquet('{env.folder}/capture/exchanges/**/*.parquet',"
        " union_by_name=true) where path like '/api/orders/p%' order by path, role").fetchall()
    pairs: dict[str, set[tuple[str, str, str]]] = {}
    for request_id, role, mode, service, _path in rows:
        pairs.setdefault(request_id, set()).add((role, mode, service))
    assert len(pairs) == 3
    pair = {("primary", "mirror", "shop/monolith:8080"), ("candidate", "mirror", "shop/orders-next:8080")}
    # The zero-config secondary (shadow.mirroring.resend) may re-send a GET to the primary's service.
    resent = ("secondary", "mirror", "shop/monolith:8080")
    for roles in pairs.values():
        assert pair <= roles <= pair | {resent}


def test_config_check_shows_each_routes_status(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.format(mono="http://127.0.0.1:1", next="http://127.0.0.1:2").replace(
        "name: orders-next, port: 8080", "name: orders-next, port: 9999"))
    result = shadow_cli("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"ok: {path}: 2 routers, 2 services, 0 middlewares, 0 mirrors",
        "  Gateway shop/edge listener http (HTTP :80): Accepted=True, Programmed=True; attachedRoutes=1",
        "  HTTPRoute shop/orders → shop/edge: Accepted=True (Accepted); ResolvedRefs=False (BackendNotFound): "
        "spec.rules[0].filters[0].requestMirror.backendRef: no Service shop/orders-next:9999 in the manifests nor "
        "a URL in shadow's backends",
    ]
    path.write_text(path.read_text().replace("protocol: HTTP}", "protocol: HTTP, hostname: '*'}"))
    result = shadow_cli("config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {path}:6: document 1, Gateway shop/edge, spec.listeners[0].hostname: "
                                     "not a valid hostname (a leading *. is the only wildcard): '*'")
