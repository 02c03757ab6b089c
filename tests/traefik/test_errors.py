"""Traefik's errors middleware tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py): pkg/middlewares/customerrors/custom_errors_test.go,
TestHandler. The upstream answers `backendCode`; the error service is the Go case's handler. Here each case
is the decision (is a page fetched, with which status, path and headers) and, where the Go handler's answer
matters, the status and body the client gets (addons/errorpages.py sends the call; end to end in
tests/test_traefik_middlewares_e2e.py). Skipped: the two "nginx headers" cases (NginxHeaders is set by
Traefik's ingress-nginx provider, not a file option) and Test1xxResponses (interim responses).
"""

from __future__ import annotations

from shadow.gateway.middlewares.errorpage import ErrorPage, error_page_call

RANGES = ((500, 501), (503, 599))
REQUEST = {"scheme": "http", "host": "localhost", "uri": "/test?foo=bar&baz=buz"}


def call(mw: ErrorPage, status: int, headers: list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    return error_page_call(mw, status, headers=headers or [], **REQUEST)


def test_no_error() -> None:
    assert call(ErrorPage("e", RANGES, "error", "/test"), 200) is None  # the 200 answer passes unchanged


def test_no_error_but_not_a_200() -> None:
    assert call(ErrorPage("e", RANGES, "error", "/test"), 206) is None


def test_a_304_so_no_write_called() -> None:
    assert call(ErrorPage("e", RANGES, "error", "/test"), 304) is None


def test_in_the_range() -> None:
    page = call(ErrorPage("e", RANGES, "error", "/test"), 500)
    assert page is not None and page.code == 500 and page.target == "/test"  # the client: 500 + the page


def test_not_in_the_range() -> None:
    assert call(ErrorPage("e", RANGES, "error", "/test"), 502) is None


def test_query_replacement() -> None:
    page = call(ErrorPage("e", ((503, 503),), "error", "/{status}"), 503)
    assert page is not None and page.target == "/503" and page.code == 503


def test_single_code_and_query_replacement() -> None:
    page = call(ErrorPage("e", ((503, 503),), "error", "/{status}"), 503)
    assert page is not None and page.target == "/503"


def test_forward_request_host_header() -> None:
    page = call(ErrorPage("e", ((503, 503),), "error", "/test"), 503)
    assert page is not None and dict(page.headers)["Host"] == "localhost"


def test_full_query_replacement() -> None:
    page = call(ErrorPage("e", ((503, 503),), "error", "/?status={status}&url={url}"), 503)
    assert page is not None
    assert page.target == "/?status=503&url=http%3A%2F%2Flocalhost%2Ftest%3Ffoo%3Dbar%26baz%3Dbuz"


SENT = [("X-Request-Id", "trace-abc"), ("Authorization", "Bearer secret")]


def test_forward_all_headers_by_default() -> None:
    page = call(ErrorPage("e", ((503, 503),), "error", "/test"), 503, SENT)
    assert page is not None and ("X-Request-Id", "trace-abc") in page.headers
    assert ("Authorization", "Bearer secret") in page.headers


def test_forward_only_allowlisted_headers() -> None:
    page = call(ErrorPage("e", ((503, 503),), "error", "/test", error_request_headers=("X-Request-Id",)), 503, SENT)
    assert page is not None and ("X-Request-Id", "trace-abc") in page.headers
    assert all(k != "Authorization" for k, _v in page.headers)


def test_forward_no_headers() -> None:
    page = call(ErrorPage("e", ((503, 503),), "error", "/test", error_request_headers=()), 503, SENT)
    assert page is not None and page.headers == (("Host", "localhost"),)


def test_status_rewrites() -> None:  # statusRewrites ("500-503": 500), and {originalStatus}
    mw = ErrorPage("e", ((500, 599),), "error", "/{status}/{originalStatus}", (((502, 503), 500),))
    page = call(mw, 503)
    assert page is not None and page.code == 500 and page.target == "/500/503"
