"""Traefik's `errors` middleware (pkg/middlewares/customerrors) as pure functions; addons/errorpages.py
fetches the page.

An answer whose status is in `status` (ranges like "500-599") is replaced by the page `service` gives
for `query` (`{status}`, `{originalStatus}` and `{url}` — the original URL, query-escaped — filled in),
sent with the client's Host and headers (only `errorRequestHeaders` when given, none for an empty
list); the client gets the page's body with the original status, or the status `statusRewrites` maps
it to ("500-503": 500). A page that cannot be fetched: the status text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote_plus

__all__ = ["ErrorPage", "ErrorPageCall", "error_page_call"]


@dataclass(frozen=True)
class ErrorPage:
    name: str
    status: tuple[tuple[int, int], ...]
    service: str
    query: str = ""
    status_rewrites: tuple[tuple[tuple[int, int], int], ...] = ()
    error_request_headers: tuple[str, ...] | None = None  # None: every header of the request


@dataclass(frozen=True)
class ErrorPageCall:
    code: int  # the status the client gets
    target: str  # path?query asked of the error service
    headers: tuple[tuple[str, str], ...]


def error_page_call(mw: ErrorPage, status: int, *, scheme: str, host: str, uri: str,
                    headers: Iterable[tuple[str, str]]) -> ErrorPageCall | None:
    """What to ask the error service for an answer with `status`, or None (not one of `status`)."""
    if not any(lo <= status <= hi for lo, hi in mw.status):
        return None
    code = status
    for (lo, hi), to in mw.status_rewrites:
        if lo <= status <= hi:
            code = to
            break
    target = "/"
    if mw.query:
        target = "/" + mw.query.removeprefix("/")
        target = target.replace("{status}", str(code)).replace("{originalStatus}", str(status))
        target = target.replace("{url}", quote_plus(f"{scheme}://{host}{uri}", safe="~"))
    source = list(headers)
    if mw.error_request_headers is None:
        sent = [(k, v) for k, v in source if k.lower() != "host"]
    else:
        wanted = {h.lower() for h in mw.error_request_headers}
        sent = [(k, v) for k, v in source if k.lower() in wanted]
    return ErrorPageCall(code, target, (("Host", host), *sent))
