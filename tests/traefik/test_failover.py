"""Traefik's failover tests, ported, against a real gateway.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/server/service/loadbalancer/failover/failover_test.go — TestFailoverStatusCode,
TestFailoverStatusCodeWithRequestBody, TestFailoverStatusCodeMaxBodySize,
TestFailoverInvalidStatusCodeRange, TestFailover / TestFailoverDownThenUp (as health decisions of
`TrafficControl`). The main handler is a real upstream answering the status the test asks for; the
fallback answers 200 "fallback response". TestFailoverPropagate is not applicable (parent status hooks).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.gateway.shifting import RequestFacts, TrafficControl
from tests.conftest import GatewayProcess
from tests.upstream import ReceivedRequest, Response, Upstream

STATUS_SETS = {"one": '["503"]', "many": '["500", "502", "503", "504"]', "range": '["500-504"]'}
MAX_BODY = {"b100": 100, "b5": 5, "b0": 0, "bnone": -1}


def main_handler(req: ReceivedRequest) -> Response:
    status = int(req.path.rsplit("/", 1)[1])
    return status, {"x-server": "handler", "Content-Type": "text/plain"}, b"main response"


def fallback_handler(req: ReceivedRequest) -> Response:
    return 200, {"x-server": "fallback", "Content-Type": "text/plain"}, b"fallback response"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Upstream, Upstream]]:
    main, fallback = Upstream("main", handler=main_handler).start(), Upstream("fb", handler=fallback_handler).start()
    routers, services = [], []
    for name, statuses in STATUS_SETS.items():
        routers.append(f'    {name}: {{rule: "PathPrefix(`/{name}/`)", service: fo-{name}}}')
        services.append(f"    fo-{name}: {{failover: {{service: main, fallback: fallback, "
                        f"errors: {{status: {statuses}}}}}}}")
    for name, limit in MAX_BODY.items():
        routers.append(f'    {name}: {{rule: "PathPrefix(`/{name}/`)", service: fo-{name}}}')
        services.append(f"    fo-{name}: {{failover: {{service: main, fallback: fallback, "
                        f'errors: {{status: ["503"], maxRequestBodyBytes: {limit}}}}}}}')
    text = "\n".join([
        "http:", "  routers:", *routers, "  services:", *services,
        f'    main: {{loadBalancer: {{servers: [{{url: "{main.url}"}}]}}}}',
        f'    fallback: {{loadBalancer: {{servers: [{{url: "{fallback.url}"}}]}}}}',
    ]) + "\n"
    root = tmp_path_factory.mktemp("failover")
    cfg = root / "gateway.yaml"
    cfg.write_text(text + f'shadow:\n  capture: {{dir: "{root / "capture"}", mode: thread}}\n')
    try:
        with GatewayProcess(cfg) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
            yield client, main, fallback
    finally:
        main.stop()
        fallback.stop()


STATUS_CODE = [
    ("main handler returns 503, failover triggered", "one", 503, "fallback", 200, "fallback response"),
    ("main handler returns 200, failover not triggered", "one", 200, "handler", 200, "main response"),
    ("main handler returns 500, failover not triggered", "one", 500, "handler", 500, "main response"),
    ("multiple status codes, 503 triggers failover", "many", 503, "fallback", 200, "fallback response"),
    ("multiple status codes, 502 triggers failover", "many", 502, "fallback", 200, "fallback response"),
    ("multiple status codes, 404 does not trigger failover", "many", 404, "handler", 404, "main response"),
    ("status code range 500-504, 503 triggers failover", "range", 503, "fallback", 200, "fallback response"),
    ("status code range 500-504, 404 does not trigger failover", "range", 404, "handler", 404, "main response"),
]


@pytest.mark.parametrize(("statuses", "handler_status", "handler", "status", "body"),
                         [c[1:] for c in STATUS_CODE], ids=[c[0] for c in STATUS_CODE])
def test_failover_status_code(gateway: tuple[httpx.Client, Upstream, Upstream], statuses: str,
                              handler_status: int, handler: str, status: int, body: str) -> None:
    client, _, _ = gateway
    r = client.get(f"/{statuses}/{handler_status}")
    assert (r.headers.get("x-server"), r.status_code, r.text) == (handler, status, body)


@pytest.mark.parametrize(("handler_status", "handler"), [(503, "fallback"), (200, "handler")],
                         ids=["request body replayed to fallback handler", "request body used by main handler"])
def test_failover_status_code_with_request_body(gateway: tuple[httpx.Client, Upstream, Upstream],
                                                handler_status: int, handler: str) -> None:
    client, _, fallback = gateway
    path = f"/bnone/body-{handler}/{handler_status}"
    r = client.post(path, content=b"test request body")
    assert r.headers.get("x-server") == handler
    if handler == "fallback":
        (got,) = [q for q in fallback.received() if q.path == path]
        assert got.body == b"test request body"


MAX_BODY_CASES = [
    ("request body within limit", "b100", "small body", 200, ""),
    ("request body exceeds limit", "b5", "this body is too large", 413, "Request body too large\n"),
    ("zero body size limit", "b0", "any size body", 413, "Request body too large\n"),
    ("no body size limit", "bnone", "any size body should work", 200, ""),
]


@pytest.mark.parametrize(("route", "body", "status", "message"), [c[1:] for c in MAX_BODY_CASES],
                         ids=[c[0] for c in MAX_BODY_CASES])
def test_failover_status_code_max_body_size(gateway: tuple[httpx.Client, Upstream, Upstream], route: str,
                                            body: str, status: int, message: str) -> None:
    client, _, _ = gateway
    r = client.post(f"/{route}/503", content=body.encode())
    assert r.status_code == status
    if message:
        assert r.text == message
        assert r.headers["x-content-type-options"] == "nosniff"


def test_failover_invalid_status_code_range() -> None:
    text = """http:
  routers: {r: {rule: "PathPrefix(`/`)", service: fo}}
  services:
    fo: {failover: {service: a, fallback: b, errors: {status: ["invalid"]}}}
    a: {loadBalancer: {servers: [{url: "http://a.example"}]}}
    b: {loadBalancer: {servers: [{url: "http://b.example"}]}}
"""
    with pytest.raises(ConfigError, match="invalid"):
        parse_config(text, "gw.yaml")


HEALTH = """http:
  routers: {r: {rule: "PathPrefix(`/`)", service: fo}}
  services:
    fo: {failover: {service: main, fallback: fallback}}
    main: {loadBalancer: {servers: [{url: "http://main.example"}], healthCheck: {path: /health}}}
    fallback: {loadBalancer: {servers: [{url: "http://fallback.example"}], healthCheck: {path: /health}}}
"""


def served(control: TrafficControl) -> str | int:
    d = control.decide("fo", (), RequestFacts.from_headers("1.2.3.4", []))
    return d.server.host.split(".")[0] if d.server is not None else d.status


def test_failover_and_down_then_up() -> None:
    control = TrafficControl(parse_config(HEALTH))
    assert served(control) == "main"
    control.health.set_active("main", "http://main.example", False)
    assert served(control) == "fallback"
    control.health.set_active("fallback", "http://fallback.example", False)
    d = control.decide("fo", (), RequestFacts.from_headers("1.2.3.4", []))
    assert (d.status, d.body) == (503, "Service Unavailable\n")  # Traefik's http.Error text
    control.health.set_active("main", "http://main.example", True)
    assert served(control) == "main"
