"""Traefik's `inFlightReq` (pkg/middlewares/inflightreq, oxy's connlimit): at most `amount`
requests in flight per source (sourceCriterion; default the request's Host); beyond → 429."""

from __future__ import annotations

from dataclasses import dataclass, field

from shadow.gateway.middlewares.ipstrategy import SourceCriterion
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

__all__ = ["InFlightLimiter", "InFlightReq"]


@dataclass(frozen=True)
class InFlightReq:
    name: str
    amount: int
    source: SourceCriterion = field(default_factory=lambda: SourceCriterion(request_host=True))


class InFlightLimiter:
    """Counts per source; `acquire` before forwarding, `release(key)` once the answer is done."""

    def __init__(self, settings: InFlightReq) -> None:
        self.settings = settings
        self.in_flight: dict[str, int] = {}

    def acquire(self, req: MiddlewareRequest) -> str | LocalAnswer:
        """The key to release later, or the 429 answer."""
        key = self.settings.source.source(req)
        count = self.in_flight.get(key, 0)
        if count >= self.settings.amount:
            return LocalAnswer(429, (("Content-Type", "text/plain; charset=utf-8"),),
                               f"max connections reached: {key}".encode())
        self.in_flight[key] = count + 1
        return key

    def release(self, key: str) -> None:
        count = self.in_flight.get(key, 0) - 1
        if count > 0:
            self.in_flight[key] = count
        else:
            self.in_flight.pop(key, None)
