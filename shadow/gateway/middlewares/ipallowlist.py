"""Traefik's `ipAllowList` (and the deprecated `ipWhiteList`): pkg/middlewares/ipallowlist.

The client IP (by `ipStrategy`, default the socket's address) must be in `sourceRange`; otherwise
`rejectStatusCode` (default 403) with the status text as body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shadow.gateway.middlewares.ipstrategy import IPChecker, IPStrategy
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

__all__ = ["IPAllowList"]

_STATUS_TEXT = {403: "Forbidden", 404: "Not Found", 401: "Unauthorized", 429: "Too Many Requests",
                400: "Bad Request", 451: "Unavailable For Legal Reasons", 503: "Service Unavailable"}


@dataclass(frozen=True)
class IPAllowList:
    name: str
    source_range: IPChecker
    strategy: IPStrategy = field(default_factory=IPStrategy)
    reject_status_code: int = 403

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest | LocalAnswer:
        if self.source_range.is_authorized(self.strategy.client_ip(req)):
            return req
        text = _STATUS_TEXT.get(self.reject_status_code, "")
        return LocalAnswer(self.reject_status_code, (("Content-Type", "text/plain; charset=utf-8"),), text.encode())
