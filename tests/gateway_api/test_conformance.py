"""The Gateway API's HTTPRoute conformance cases, run against a real `shadow gateway` process.

One gateway serves a directory of manifests for the whole module: the conformance base manifests
(tests/gateway_api/manifests/base.yaml), shadow's settings (`backends` pointing every Service at an
echo backend, tests/gateway_api/echo.py) and one case's manifests, swapped in per case and picked up
by the gateway's hot reload (SIGHUP). Each request row is sent and its answer checked as the
upstream's CompareRoundTrip does (status, backend pod and namespace, the request the backend saw,
response headers, redirect target); the route status conditions the upstream asserts are checked on
the provider's computed status. Cases and why some are skipped: tests/gateway_api/cases.py.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from shadow.gatewayapi.provider import load_gateway_api
from tests.conftest import GatewayProcess
from tests.gateway_api.cases import CASES, Case
from tests.gateway_api.echo import echo_backends
from tests.upstream import Upstream

MANIFESTS = Path(__file__).parent / "manifests"
CLASS = "shadow"
MIRROR_SAMPLES = 100  # requests per percentage-mirror row (the counter is deterministic: exact shares)
WEIGHT_SAMPLES = 100
TOLERANCE = 0.05  # the upstream's tolerance for weighted and mirrored shares


def _manifest(name: str) -> str:
    return (MANIFESTS / name).read_text().replace("{GATEWAY_CLASS_NAME}", CLASS)


class Harness:
    def __init__(self, folder: Path, gateway: GatewayProcess, backends: dict[tuple[str, str], Upstream]) -> None:
        self.folder, self.gateway, self.backends = folder, gateway, backends
        self.client = httpx.Client(base_url=gateway.url, follow_redirects=False, timeout=30.0)
        self.counter = 0

    def load(self, case: Case) -> None:
        """Swap the case's manifests in and wait until the gateway has reloaded them."""
        self.reload_with("\n---\n".join(_manifest(m) for m in case.manifests))

    def reload_with(self, text: str) -> None:
        before = self.gateway.output().count("shadow gateway: reloaded")
        (self.folder / "case.yaml").write_text(text)
        self.gateway.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            output = self.gateway.output()
            if output.count("shadow gateway: reloaded") > before:
                return
            assert "reload rejected" not in output[-2000:], output[-2000:]
            time.sleep(0.02)
        raise AssertionError(f"the gateway did not reload:\n{self.gateway.output()[-3000:]}")

    def send(self, row: dict[str, Any], extra: dict[str, str] | None = None) -> httpx.Response:
        request = row.get("Request") or {}
        headers = dict(request.get("Headers") or {})
        if row.get("BackendSetResponseHeaders"):  # echo-basic sets these on its answer
            headers["X-Echo-Set-Header"] = ",".join(f"{k}:{v}" for k, v in row["BackendSetResponseHeaders"].items())
        if request.get("Host"):
            headers["Host"] = request["Host"]
        headers.update(extra or {})
        return self.client.request(request.get("Method") or "GET", request.get("Path") or "/", headers=headers)

    def mirror_hits(self, backend: Upstream, marker: str) -> int:
        return sum(1 for r in backend.received() if r.headers.get("x-conformance-id", "").startswith(marker))


def _joined(headers: dict[str, list[str]]) -> dict[str, str]:
    return {k.lower(): ",".join(v) for k, v in headers.items()}


def compare_round_trip(row: dict[str, Any], response: httpx.Response) -> None:
    """conformance/utils/http/http.go CompareRoundTrip, for what the shadow gateway can answer."""
    expected_response = row.get("Response") or {}
    codes = list(expected_response.get("StatusCodes") or [])
    if expected_response.get("StatusCode"):
        codes.append(expected_response["StatusCode"])
    codes = codes or [200]
    assert response.status_code in codes, f"status {response.status_code}, expected {codes}: {response.text[:200]}"
    if response.status_code in (200, 204):
        echo = response.json()
        expected = dict((row.get("ExpectedRequest") or {}).get("Request") or row.get("Request") or {})
        absent = (row.get("ExpectedRequest") or {}).get("AbsentHeaders") or []
        if expected.get("Host"):
            assert echo["host"] == expected["Host"], f"host {echo['host']!r}, expected {expected['Host']!r}"
        assert echo["path"] == (expected.get("Path") or "/"), f"path {echo['path']!r}, expected {expected.get('Path')!r}"
        assert echo["method"] == (expected.get("Method") or "GET")
        assert echo["namespace"] == row.get("Namespace"), f"namespace {echo['namespace']}"
        got = _joined(echo["headers"])
        for name, value in (expected.get("Headers") or {}).items():
            assert got.get(name.lower()) == value, f"request header {name}: {got.get(name.lower())!r}, expected {value!r}"
        for name in absent:
            assert name.lower() not in got, f"request header {name} should be absent: {got[name.lower()]!r}"
        resp_headers = {k.lower(): ",".join(response.headers.get_list(k)) for k in response.headers}
        for name, value in (expected_response.get("Headers") or {}).items():
            assert resp_headers.get(name.lower()) == value, f"response header {name}: {resp_headers.get(name.lower())!r}"
        for name in expected_response.get("AbsentHeaders") or []:
            assert name.lower() not in resp_headers, f"response header {name} should be absent"
        assert echo["pod"].startswith(row.get("Backend") or ""), f"pod {echo['pod']}, expected {row.get('Backend')}"
    elif 300 <= response.status_code < 400 and row.get("RedirectRequest") is not None:
        want = row["RedirectRequest"]
        location = urlsplit(response.headers["location"])
        sent = urlsplit(str(response.request.url))
        sent_host = response.request.headers.get("host", "")
        assert location.hostname == (want.get("Host") or location.hostname)
        if not want.get("Host"):  # the upstream takes the host it got; ours must be the request's
            assert location.hostname == sent_host.split(":")[0]
        port = str(location.port) if location.port else ""
        scheme = want.get("Scheme") or sent.scheme
        if want.get("Port"):
            assert port == want["Port"], f"redirect port {port!r}, expected {want['Port']!r}"
        else:
            assert port in ("", "80" if location.scheme == "http" else "443"), f"redirect port {port!r}"
        assert location.scheme == scheme, f"redirect scheme {location.scheme!r}, expected {scheme!r}"
        assert location.path == (want.get("Path") or sent.path), f"redirect path {location.path!r}"


def check_conditions(folder: Path, case: Case) -> None:
    """The route's status conditions as the upstream test asserts them."""
    if case.route is None:
        return
    loaded = load_gateway_api(folder)
    statuses = [s for s in loaded.statuses if s.route.doc.key == case.route]
    assert statuses, f"no HTTPRoute {case.route}"
    status = statuses[0]
    problems = loaded.resolved_refs.get(case.route, ())
    for kind, value, reason in case.conditions:
        if kind == "ResolvedRefs":
            if value:
                assert not problems, [p.describe() for p in problems]
            else:
                assert any(p.reason == reason for p in problems), [p.describe() for p in problems]
        else:
            conds = [p.conditions[0] for p in status.parents if case.gateway and f"/{case.gateway}" in p.parent]
            assert conds and all(c.status == value and c.reason == reason for c in conds), [c.describe() for c in conds]
    if case.no_accepted_parents:
        assert not status.accepted
    elif not any(k == "Accepted" for k, _, _ in case.conditions):
        assert status.accepted, [p.conditions[0].describe() for p in status.parents]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    folder = tmp_path_factory.mktemp("gateway-api")
    with echo_backends() as backends:
        settings = {"backends": {f"{ns}/{name}": up.url for (ns, name), up in backends.items()},
                    "shadow": {"capture": {"enabled": False}}}
        (folder / "base.yaml").write_text(_manifest("base.yaml"))
        (folder / "shadow.yaml").write_text(json.dumps(settings))  # JSON is YAML
        with GatewayProcess(folder, reverse_target=next(iter(backends.values())).url,
                            extra_args=("--set", "shadow_reload_interval=0")) as gateway:
            # SIGHUP is handled once the addon runs: before that it would end mitmdump.
            assert gateway.wait_for_output("shadow gateway: loaded"), gateway.output()
            harness = Harness(folder, gateway, backends)
            assert harness.client.get("/").status_code == 404  # running: no route yet
            yield harness
            harness.client.close()


def _special(case: Case) -> Callable[[Harness, Case], None] | None:
    return {"HTTPRouteWeight": _weights, "HTTPRouteReferenceGrant": _grant_deleted,
            "HTTPRouteRequestHeaderModifierBackendWeights": _backend_headers,
            "HTTPRouteRetry": _retries, "HTTPRouteRetryConnectionError": _retries,
            "HTTPRouteRetryWithTimeouts": _retries, "HTTPRouteTimeoutBackendRequest": _timeouts,
            "HTTPRouteTimeoutRequest": _timeouts, "HTTPRouteCORS": _cors}.get(case.name)


# httproute-cors.go's table: (name, method, path, request headers, statuses, ValidHeaderValues (any of),
# Headers (exactly), AbsentHeaders). Headers compare with whitespace ignored where the upstream says so.
XH = {"access-control-request-method": "GET", "access-control-request-headers": "x-header-1, x-header-2"}
CORS_1_OK = {"access-control-allow-methods": ["GET,OPTIONS", "OPTIONS,GET"],
             "access-control-allow-headers": ["x-header-1,x-header-2", "x-header-2,x-header-1"],
             "access-control-expose-headers": ["x-header-3,x-header-4", "x-header-4,x-header-3"],
             "access-control-max-age": ["3600"], "access-control-allow-credentials": ["true"]}
CORS_TABLE: list[tuple[str, str, str, dict[str, str], tuple[int, ...], dict[str, list[str]], dict[str, str],
                       tuple[str, ...]]] = [
    ("preflight from an exact matching origin is allowed", "OPTIONS", "/cors-1",
     {"Origin": "https://www.foo.com", **XH}, (200, 204),
     {"access-control-allow-origin": ["https://www.foo.com"], **CORS_1_OK}, {}, ()),
    ("preflight from a wildcard matching origin is allowed", "OPTIONS", "/cors-1",
     {"Origin": "https://www.bar.com", **XH}, (200, 204),
     {"access-control-allow-origin": ["https://www.bar.com"], **CORS_1_OK}, {}, ()),
    ("preflight from a wildcard matching any number of periods left to '*' is allowed", "OPTIONS", "/cors-1",
     {"Origin": "https://xpto.www.bar.com", **XH}, (200, 204),
     {"access-control-allow-origin": ["https://xpto.www.bar.com"], **CORS_1_OK}, {}, ()),
    ("preflight from a non-matching origin is not allowed", "OPTIONS", "/cors-1",
     {"Origin": "https://foobar.com", "access-control-request-method": "GET"}, (200, 204, 403), {}, {},
     ("access-control-allow-origin",)),
    ("simple request from an exact matching origin is allowed", "GET", "/cors-1",
     {"Origin": "https://www.foo.com", **XH}, (200,), {}, {"access-control-allow-origin": "https://www.foo.com"}, ()),
    ("simple request from a wildcard matching origin is allowed", "GET", "/cors-1",
     {"Origin": "https://www.bar.com", **XH}, (200,), {}, {"access-control-allow-origin": "https://www.bar.com"}, ()),
    ("simple request from a non-matching origin is not allowed", "GET", "/cors-1",
     {"Origin": "https://foobar.com", "access-control-request-method": "GET"}, (200,), {}, {},
     ("access-control-allow-origin",)),
    ("preflight with POST is allowed by allowMethods with wildcard", "OPTIONS", "/cors-2",
     {"Origin": "https://www.foo.com", "access-control-request-method": "POST"}, (200, 204),
     {"access-control-allow-methods": ["POST", "*"]}, {"access-control-allow-origin": "https://www.foo.com"},
     ("access-control-allow-credentials",)),
    ("preflight gets no allow-credentials without allowCredentials true", "OPTIONS", "/cors-2",
     {"Origin": "https://www.foo.com", "access-control-request-method": "POST"}, (200, 204), {}, {},
     ("access-control-allow-credentials",)),
    ("preflight from a wildcard origin: '*' or the requested origin", "OPTIONS", "/cors-wildcard-origin",
     {"Origin": "https://foobar.com", "access-control-request-method": "PUT"}, (200, 204),
     {"access-control-allow-origin": ["https://foobar.com", "*"], "access-control-allow-methods": ["PUT"]}, {},
     ("access-control-allow-credentials",)),
    ("preflight from a wildcard origin with a port: '*' or the requested origin", "OPTIONS",
     "/cors-wildcard-origin", {"Origin": "https://foobar.com:12345", "access-control-request-method": "PUT"},
     (200, 204), {"access-control-allow-origin": ["https://foobar.com:12345", "*"],
                  "access-control-allow-methods": ["PUT"]}, {}, ("access-control-allow-credentials",)),
    ("request from a wildcard origin with a port: '*' or the requested origin", "PUT", "/cors-wildcard-origin",
     {"Origin": "https://foobar.com:12345"}, (200,),
     {"access-control-allow-origin": ["https://foobar.com:12345", "*"]}, {}, ()),
    ("simple request from a wildcard origin: '*' or the requested origin", "PUT", "/cors-wildcard-origin",
     {"Origin": "https://foobar.com"}, (200,), {"access-control-allow-origin": ["https://foobar.com", "*"]}, {},
     ("access-control-allow-credentials",)),
    ("preflight with credentials always echoes the origin, method and headers", "OPTIONS",
     "/cors-wildcard-methods-headers",
     {"Origin": "https://other.foo.com", "access-control-request-method": "PUT",
      "access-control-request-headers": "x-header-1, x-header-2"}, (200, 204),
     {"access-control-allow-origin": ["https://other.foo.com"], "access-control-allow-methods": ["PUT"],
      "access-control-allow-headers": ["x-header-1,x-header-2", "x-header-2,x-header-1"],
      "access-control-allow-credentials": ["true"]}, {}, ()),
    ("preflight without credentials hides allow-credentials", "OPTIONS", "/cors-wildcard-methods-headers-unauth",
     {"Origin": "https://other.foo.com", "access-control-request-method": "PUT",
      "access-control-request-headers": "x-header-1, x-header-2"}, (200, 204),
     {"access-control-allow-origin": ["https://other.foo.com", "*"], "access-control-allow-methods": ["PUT", "*"],
      "access-control-allow-headers": ["x-header-1,x-header-2", "x-header-2,x-header-1", "*"]}, {},
     ("access-control-allow-credentials",)),
    ("request with credentials gets allow-credentials", "GET", "/cors-wildcard-methods-headers",
     {"Origin": "https://other.foo.com"}, (200,),
     {"access-control-allow-origin": ["https://other.foo.com"], "access-control-allow-credentials": ["true"]}, {},
     ()),
    ("request without credentials gets no allow-credentials", "GET", "/cors-wildcard-methods-headers-unauth",
     {"Origin": "https://other.foo.com"}, (200,), {"access-control-allow-origin": ["https://other.foo.com", "*"]},
     {}, ("access-control-allow-credentials",)),
]


def _cors(h: Harness, case: Case) -> None:
    """httproute-cors.go: preflights are answered by the gateway (never reaching a backend); simple
    requests reach infra-backend-v1 and get the CORS headers added to its answer."""
    backend = h.backends[("gateway-conformance-infra", "infra-backend-v1")]
    options_before = sum(1 for r in backend.received() if r.method == "OPTIONS")
    for name, method, path, headers, statuses, valid, exact, absent in CORS_TABLE:
        response = h.client.request(method, path, headers=headers)
        got = {k.lower(): ",".join(response.headers.get_list(k)) for k in response.headers}
        where = f"{case.name}: {name}"
        assert response.status_code in statuses, f"{where}: status {response.status_code}"
        for header, values in valid.items():
            value = "".join(got.get(header, "<absent>").split())  # IgnoreWhitespace
            assert value in values, f"{where}: {header} {got.get(header)!r}, expected one of {values}"
        for header, value in exact.items():
            assert got.get(header) == value, f"{where}: {header} {got.get(header)!r}, expected {value!r}"
        for header in absent:
            assert header not in got, f"{where}: {header} should be absent, got {got[header]!r}"
        if method != "OPTIONS":
            assert response.json()["pod"].startswith("infra-backend-v1"), where
    assert sum(1 for r in backend.received() if r.method == "OPTIONS") == options_before  # answered locally


# The retry tables of httproute-retry.go, httproute-retry-connection-error.go and
# httproute-retry-with-timeouts.go: (path, echo-basic's retry simulation, the statuses expected).
RETRY_TABLES: dict[str, list[tuple[str, dict[str, str], tuple[int, ...]]]] = {
    "HTTPRouteRetry": [
        ("/retry/code-500-attempts-3", {"responseCode": "500", "succeedAfter": "2"}, (200,)),
        ("/retry/code-500-attempts-3", {"responseCode": "500", "succeedAfter": "4"}, (500,)),
        ("/retry/code-500-attempts-3", {"responseCode": "503", "succeedAfter": "2"}, (503,)),
        ("/retry/code-all-attempts-2", {"responseCode": "500", "succeedAfter": "1"}, (200,)),
        ("/retry/code-all-attempts-2", {"responseCode": "500", "succeedAfter": "3"}, (500,)),
        ("/retry/code-all-attempts-2", {"responseCode": "502", "succeedAfter": "1"}, (200,)),
        ("/retry/code-all-attempts-2", {"responseCode": "502", "succeedAfter": "3"}, (502,)),
        ("/retry/code-all-attempts-2", {"responseCode": "503", "succeedAfter": "1"}, (200,)),
        ("/retry/code-all-attempts-2", {"responseCode": "503", "succeedAfter": "3"}, (503,)),
        ("/retry/code-all-attempts-2", {"responseCode": "504", "succeedAfter": "1"}, (200,)),
        ("/retry/code-all-attempts-2", {"responseCode": "504", "succeedAfter": "3"}, (504,)),
    ],
    "HTTPRouteRetryConnectionError": [
        ("/retry/no-status-code-attempts-3", {"succeedAfter": "2"}, (200,)),
        ("/retry/no-status-code-attempts-3", {"succeedAfter": "4"}, (500, 503)),
    ],
    "HTTPRouteRetryWithTimeouts": [
        ("/retry/backend-request-timeout-200ms",
         {"responseCode": "500", "succeedAfter": "2", "delayRetry": "300ms"}, (200,)),
        ("/retry/backend-request-timeout-200ms",
         {"responseCode": "500", "succeedAfter": "3", "delayRetry": "300ms"}, (504,)),
        ("/retry/request-timeout-200ms", {"responseCode": "500", "succeedAfter": "1"}, (200,)),
        ("/retry/request-timeout-200ms",
         {"responseCode": "500", "succeedAfter": "4", "delayRetry": "100ms"}, (504,)),
    ],
}


def _retries(h: Harness, case: Case) -> None:
    """assertConsistentRetryBehaviour: each row with a fresh uuid, so the backend counts its tries
    afresh; a successful answer is infra-backend-v3's echo of the request."""
    for path, simulation, statuses in RETRY_TABLES[case.name]:
        h.counter += 1
        query = urlencode({**simulation, "uuid": f"{case.name}-{h.counter}"})
        row = {"Request": {"Path": f"{path}?{query}"}, "Backend": "infra-backend-v3",
               "Namespace": "gateway-conformance-infra", "Response": {"StatusCodes": list(statuses)}}
        try:
            compare_round_trip(row, h.send(row))
        except AssertionError as exc:
            raise AssertionError(f"{case.name} {path} {simulation}: {exc}") from None


TIMEOUT_TABLES = {
    "HTTPRouteTimeoutBackendRequest": [("/backend-timeout", 200), ("/backend-timeout?delay=1s", 504),
                                       ("/disable-backend-timeout?delay=1s", 200)],
    "HTTPRouteTimeoutRequest": [("/request-timeout", 200), ("/request-timeout?delay=1s", 504),
                                ("/disable-request-timeout?delay=1s", 200)],
}


def _timeouts(h: Harness, case: Case) -> None:
    """httproute-timeout-backend-request.go / httproute-timeout-request.go: 500 ms timeouts, a
    backend answering 1 s late → 504; "0s" disables the timeout → 200."""
    for path, status in TIMEOUT_TABLES[case.name]:
        row = {"Request": {"Path": path}, "Backend": "infra-backend-v1", "Namespace": "gateway-conformance-infra",
               "Response": {"StatusCode": status}}
        try:
            compare_round_trip(row, h.send(row))
        except AssertionError as exc:
            raise AssertionError(f"{case.name} {path}: {exc}") from None


def _backend_headers(h: Harness, case: Case) -> None:
    """httproute-request-header-modifier-backend-weights.go: 100 requests split 10/10; each reaches the
    backend whose backendRef filter set its `Backend` header, and only that one header."""
    seen = set()
    for _ in range(100):
        response = h.send({"Request": {"Path": "/"}})
        compare_round_trip({"Request": {"Path": "/"}, "Namespace": "gateway-conformance-infra"}, response)
        echo = response.json()
        backends = echo["headers"].get("Backend", [])
        assert len(backends) == 1, echo["headers"]
        assert echo["pod"].startswith(backends[0]), (echo["pod"], backends)
        seen.add(backends[0])
    assert seen == {"infra-backend-v1", "infra-backend-v2"}


def _grant_deleted(h: Harness, case: Case) -> None:
    """httproute-reference-grant.go: served while the ReferenceGrant exists; after it is deleted
    (here: the manifests rewritten without it, hot-reloaded) the same request gets 500."""
    first, after = case.requests
    compare_round_trip(first, h.send(first))
    documents = (h.folder / "case.yaml").read_text().split("\n---\n")
    assert "kind: ReferenceGrant" in documents[0]
    h.reload_with("\n---\n".join(documents[1:]))
    compare_round_trip(after, h.send(after))
    assert any(p.reason == "RefNotPermitted" for p in load_gateway_api(h.folder).resolved_refs[case.route or ""])


def _weights(h: Harness, case: Case) -> None:
    """httproute-weight.go: 70/30/0 across infra-backend-v1/v2/v3."""
    counts: dict[str, int] = {}
    for _ in range(WEIGHT_SAMPLES):
        response = h.send({"Request": {"Path": "/"}})
        compare_round_trip({"Request": {"Path": "/"}, "Namespace": "gateway-conformance-infra"}, response)
        pod = response.json()["pod"].rsplit("-", 2)[0]
        counts[pod] = counts.get(pod, 0) + 1
    for backend, share in (("infra-backend-v1", 0.7), ("infra-backend-v2", 0.3), ("infra-backend-v3", 0.0)):
        assert abs(counts.get(backend, 0) / WEIGHT_SAMPLES - share) <= TOLERANCE, counts


def _mirrors(h: Harness, row: dict[str, Any]) -> None:
    """MirroredTo: every named backend receives the copy (Percent: that share of the requests)."""
    mirrored = row.get("MirroredTo") or []
    percent = next((m.get("Percent") for m in mirrored if m.get("Percent") is not None), None)
    samples = MIRROR_SAMPLES if percent is not None else 1
    h.counter += 1
    marker = f"{h.counter}-"
    for i in range(samples):
        compare_round_trip(row, h.send(row, {"X-Conformance-Id": f"{marker}{i}"}))
    for m in mirrored:
        ref = m["BackendRef"]
        backend = h.backends[(ref["Namespace"], ref["Name"])]
        want = samples if percent is None else round(samples * (m.get("Percent") or 0) / 100)
        deadline = time.monotonic() + 5
        while h.mirror_hits(backend, marker) < want and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # a copy beyond the share would arrive now
        got = h.mirror_hits(backend, marker)
        if percent is None:
            assert got == samples, f"{ref['Name']} received {got} copies of {samples}"
        else:
            assert abs(got / samples - m["Percent"] / 100) <= TOLERANCE, f"{ref['Name']}: {got}/{samples}"
        copy = next(r for r in backend.received() if r.headers.get("x-conformance-id", "").startswith(marker))
        assert copy.headers.get("x-shadow-request") == "1"  # marked as a copy, like Traefik-style mirrors


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance(harness: Harness, case: Case) -> None:
    if case.skip:
        pytest.skip(case.skip)
    harness.load(case)
    check_conditions(harness.folder, case)
    special = _special(case)
    if special is not None:
        special(harness, case)
        return
    for index, row in enumerate(case.requests):
        try:
            if row.get("MirroredTo"):
                _mirrors(harness, row)
            else:
                compare_round_trip(row, harness.send(row))
        except AssertionError as exc:
            raise AssertionError(f"{case.name} request {index} {row['Request']}: {exc}") from None
