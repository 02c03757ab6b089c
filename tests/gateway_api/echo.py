"""An echo backend that answers like the Gateway API conformance suite's (gateway-api's echo-basic).

Each Service of the conformance base manifests is one `Upstream` on 127.0.0.1 whose answer is the
JSON echo-basic writes: the request it received (`path` with the query, `host`, `method`, `proto`,
`headers` as lists of values), and which `namespace` / `pod` answered. A request header
`X-Echo-Set-Header: Name:value,Name2:value2` makes it set those response headers, as echo-basic does
(the conformance suite's BackendSetResponseHeaders). Query parameters drive echo-basic's
simulations: `delay=1s` answers that late; `uuid=…&succeedAfter=N[&responseCode=C][&delayRetry=D]`
fails the first N requests of that uuid (after D) with status C, or by closing the connection
without an answer when no code is given, then answers normally.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import parse_qs, urlsplit

from tests.upstream import DropConnection, Handler, ReceivedRequest, Response, Upstream

_GO_DURATION = re.compile(r"([0-9.]+)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_s(text: str) -> float:
    return sum(float(n) * _UNITS[u] for n, u in _GO_DURATION.findall(text))

# (namespace, Service) of the conformance base manifests that HTTPRoute cases route to.
SERVICES = (
    ("gateway-conformance-infra", "infra-backend-v1"),
    ("gateway-conformance-infra", "infra-backend-v2"),
    ("gateway-conformance-infra", "infra-backend-v3"),
    ("gateway-conformance-app-backend", "app-backend-v1"),
    ("gateway-conformance-app-backend", "app-backend-v2"),
    ("gateway-conformance-web-backend", "web-backend"),
)


def echo_basic(namespace: str, service: str) -> Handler:
    pod = f"{service}-7d9f8c6b5-shadow"  # a pod name starts with its Deployment's name
    tries: dict[str, int] = {}
    lock = threading.Lock()

    def simulate(req: ReceivedRequest) -> Response | None:
        """echo-basic's delay and retry simulations; None: answer normally."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(req.path).query).items()}
        if "delay" in query:
            time.sleep(go_duration_s(query["delay"]))
        if "succeedAfter" not in query:
            return None
        with lock:
            n = tries[query.get("uuid", "")] = tries.get(query.get("uuid", ""), 0) + 1
        if n > int(query["succeedAfter"]):
            return None
        if "delayRetry" in query:
            time.sleep(go_duration_s(query["delayRetry"]))
        if "responseCode" not in query:
            raise DropConnection
        return int(query["responseCode"]), {"Content-Type": "text/plain"}, b"simulated failure"

    def handle(req: ReceivedRequest) -> Response:
        simulated = simulate(req)
        if simulated is not None:
            return simulated
        headers: dict[str, list[str]] = {}
        host = ""
        for name, value in req.header_list:
            if name.lower() == "host":
                host = value
                continue
            headers.setdefault("-".join(p.capitalize() for p in name.split("-")), []).append(value)
        body = json.dumps({"path": req.path, "host": host, "method": req.method, "proto": "HTTP/1.1",
                           "headers": headers, "namespace": namespace, "ingress": "", "service": "",
                           "pod": pod}).encode()
        out = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"}
        for pair in req.headers.get("x-echo-set-header", "").split(","):
            name, sep, value = pair.partition(":")
            if sep and name.strip():
                out[name.strip()] = value.strip()
        return 200, out, body

    return handle


@contextmanager
def echo_backends() -> Iterator[dict[tuple[str, str], Upstream]]:
    """Every conformance Service as a running echo backend, keyed by (namespace, name)."""
    with ExitStack() as stack:
        yield {(ns, name): stack.enter_context(Upstream(name, handler=echo_basic(ns, name))) for ns, name in SERVICES}
