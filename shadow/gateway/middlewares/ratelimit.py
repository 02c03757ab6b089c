"""Traefik's `rateLimit` (pkg/middlewares/ratelimiter): a token bucket per source, Go's
golang.org/x/time/rate semantics, in memory (no Redis).

- rate = average / period (period default 1s; average 0 → no limit); burst = max(burst, 1).
- A request reserves a token: none needed to wait → forwarded; a wait up to `max_delay` → forwarded
  after that wait (the caller sleeps); a longer wait → the reservation is cancelled and the answer
  is 429 with `Retry-After` (whole seconds, rounded up) and `X-Retry-In` (Go's duration text).
- max_delay: 500ms when rate < 1/s, else 1s / (2 × int(rate)).
- Buckets are kept per source for a TTL of 1 s (+ 1/rate when rate < 1/s), at most 65536 sources.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from shadow.gateway.middlewares.godur import go_duration
from shadow.gateway.middlewares.ipstrategy import SourceCriterion
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

__all__ = ["RateLimit", "RateLimiter", "TokenBucket"]

MAX_SOURCES = 65536
_NS = 1_000_000_000


@dataclass(frozen=True)
class RateLimit:
    """The middleware's options, Traefik's names: average, period (s), burst, sourceCriterion."""

    name: str
    average: int = 0
    period_s: float = 1.0
    burst: int = 1
    source: SourceCriterion = field(default_factory=SourceCriterion)

    @property
    def rate(self) -> float:
        """Tokens per second; math.inf without a limit."""
        if self.average <= 0:
            return math.inf
        period_ns = round(self.period_s * _NS) or _NS
        return self.average * _NS / period_ns

    @property
    def max_delay_ns(self) -> int:
        rate = self.rate
        if math.isinf(rate):
            return 0
        if rate < 1:
            return 500_000_000
        return _NS // (int(rate) * 2)

    @property
    def ttl_s(self) -> int:
        rate = self.rate
        return 2 if rate >= 1 else 1 + int(1 / rate)


class TokenBucket:
    """golang.org/x/time/rate.Limiter for n = 1: Reserve and Cancel, times in nanoseconds."""

    __slots__ = ("burst", "last", "last_event", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now_ns: int = 0) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.last = now_ns
        self.last_event = now_ns

    def _advance(self, now_ns: int) -> tuple[int, float]:
        last = min(self.last, now_ns)
        elapsed_s = (now_ns - last) / _NS
        return now_ns, min(self.tokens + elapsed_s * self.rate, float(self.burst))

    def reserve(self, now_ns: int) -> tuple[int, int] | None:
        """(delay ns, time to act ns), or None when the request can never be served (burst 0)."""
        if math.isinf(self.rate):
            return 0, now_ns
        if self.burst < 1:
            return None
        now_ns, tokens = self._advance(now_ns)
        tokens -= 1
        wait_ns = 0 if tokens >= 0 else int(-tokens / self.rate * _NS)
        self.last, self.tokens = now_ns, tokens
        self.last_event = now_ns + wait_ns
        return wait_ns, now_ns + wait_ns

    def cancel(self, time_to_act_ns: int, now_ns: int) -> None:
        """Give back the token of a reservation that will not be used (Reservation.CancelAt)."""
        if math.isinf(self.rate) or time_to_act_ns < now_ns:
            return
        restore = 1.0 - (self.last_event - time_to_act_ns) / _NS * self.rate
        if restore <= 0:
            return
        now_ns, tokens = self._advance(now_ns)
        self.last, self.tokens = now_ns, min(tokens + restore, float(self.burst))
        if time_to_act_ns == self.last_event:
            previous = time_to_act_ns - int(1 / self.rate * _NS)
            if previous >= now_ns:
                self.last_event = previous


@dataclass(frozen=True, slots=True)
class Admit:
    """Forward the request after `delay_s` (0: at once)."""

    delay_s: float = 0.0


class RateLimiter:
    """The middleware's state: one bucket per source."""

    def __init__(self, settings: RateLimit) -> None:
        self.settings = settings
        self._rate = settings.rate
        self._burst = max(settings.burst, 1)
        self._max_delay_ns = settings.max_delay_ns
        self._ttl_ns = settings.ttl_s * _NS
        self._buckets: OrderedDict[str, tuple[TokenBucket, int]] = OrderedDict()

    def _bucket(self, key: str, now_ns: int) -> TokenBucket:
        entry = self._buckets.pop(key, None)
        bucket = entry[0] if entry is not None and entry[1] > now_ns else TokenBucket(self._rate, self._burst, now_ns)
        self._buckets[key] = (bucket, now_ns + self._ttl_ns)
        if len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)  # the least recently used source
        return bucket

    def check(self, req: MiddlewareRequest, now_ns: int) -> Admit | LocalAnswer:
        source = self.settings.source.source(req)
        return self.allow(f"{self.settings.name}:{source}", now_ns)

    def allow(self, key: str, now_ns: int) -> Admit | LocalAnswer:
        if math.isinf(self._rate):
            return Admit()
        bucket = self._bucket(key, now_ns)
        reserved = bucket.reserve(now_ns)
        if reserved is None:
            return LocalAnswer(429, (("Content-Type", "text/plain; charset=utf-8"),),
                               b"No bursty traffic allowed\n")
        delay_ns, act_ns = reserved
        if delay_ns > self._max_delay_ns:
            bucket.cancel(act_ns, now_ns)
            return LocalAnswer(429, (("Retry-After", f"{math.ceil(delay_ns / _NS):.0f}"),
                                     ("X-Retry-In", go_duration(delay_ns))), b"Too Many Requests")
        return Admit(delay_ns / _NS)
