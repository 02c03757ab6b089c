"""Token rate limits and quotas: tokens read from answers' `usage`, counted per key over fixed windows.

A window of `period` seconds starts at a multiple of the period (epoch-aligned, so several gateways
and restarts agree on the boundaries). A request is let through while every window of its key is
below its limit; the answer's tokens are then added (they are only known once it completed, so
requests in flight at the same time can together overshoot a limit by their own size: the next
request is refused). Refused: 429 with Retry-After = the seconds until the exhausted window ends.

State lives in `TokenLimiter` objects kept by `TokenLimiters` across configuration reloads (same
middleware name and key source → same counters; a changed limit applies to the counts so far).
Keys that have not been seen for a whole window are dropped, so memory follows the active keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shadow.ai.config import TokenLimit, TokenRateLimitSettings

__all__ = ["LimitDecision", "TokenLimiter", "TokenLimiters"]


@dataclass(frozen=True)
class LimitDecision:
    allowed: bool
    retry_after_s: int = 0  # whole seconds (Retry-After), at least 1 when refused
    limit: TokenLimit | None = None  # the exhausted one
    used: int = 0


def _window(now: float, period: float) -> int:
    return math.floor(now / period)


def _counted(limit: TokenLimit, input_tokens: int, output_tokens: int) -> int:
    if limit.count == "input":
        return input_tokens
    if limit.count == "output":
        return output_tokens
    return input_tokens + output_tokens


class TokenLimiter:
    """Counters of one `tokenRateLimit` middleware: per key, per period, (window index, tokens used)."""

    def __init__(self, settings: TokenRateLimitSettings) -> None:
        self.settings = settings
        self._used: dict[tuple[str, float, str], tuple[int, int]] = {}
        self._sweep_at = 0.0

    def check(self, key: str, now: float) -> LimitDecision:
        for limit in self.settings.limits:
            window = _window(now, limit.period_s)
            seen = self._used.get((key, limit.period_s, limit.count))
            used = seen[1] if seen is not None and seen[0] == window else 0
            if used >= limit.tokens:
                ends = (window + 1) * limit.period_s
                return LimitDecision(False, max(1, math.ceil(ends - now)), limit, used)
        return LimitDecision(True)

    def record(self, key: str, input_tokens: int, output_tokens: int, now: float) -> None:
        for limit in self.settings.limits:
            slot = (key, limit.period_s, limit.count)
            window = _window(now, limit.period_s)
            seen = self._used.get(slot)
            used = seen[1] if seen is not None and seen[0] == window else 0
            self._used[slot] = (window, used + _counted(limit, input_tokens, output_tokens))
        if now >= self._sweep_at:
            self._sweep(now)

    def used(self, key: str, limit: TokenLimit, now: float) -> int:
        seen = self._used.get((key, limit.period_s, limit.count))
        return seen[1] if seen is not None and seen[0] == _window(now, limit.period_s) else 0

    def _sweep(self, now: float) -> None:
        shortest = min(limit.period_s for limit in self.settings.limits)
        self._sweep_at = now + shortest
        stale = [slot for slot, (window, _) in self._used.items() if window < _window(now, slot[1])]
        for slot in stale:
            del self._used[slot]

    def keys(self) -> int:
        return len({slot[0] for slot in self._used})


class TokenLimiters:
    """The limiters of the configuration in force, carried over a reload by `state_key`."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[object, ...], TokenLimiter] = {}

    def configure(self, settings: list[TokenRateLimitSettings]) -> dict[str, TokenLimiter]:
        kept: dict[tuple[object, ...], TokenLimiter] = {}
        for s in settings:
            limiter = self._by_key.get(s.state_key())
            if limiter is None:
                limiter = TokenLimiter(s)
            else:
                limiter.settings = s  # new limits apply to the counts so far
            kept[s.state_key()] = limiter
        self._by_key = kept
        return {s.name: kept[s.state_key()] for s in settings}
