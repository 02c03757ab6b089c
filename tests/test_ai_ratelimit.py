"""shadow.ai.ratelimit: token windows at their exact boundaries, keys, reload carry-over."""

from __future__ import annotations

from shadow.ai.config import TokenLimit, TokenRateLimitSettings
from shadow.ai.ratelimit import TokenLimiter, TokenLimiters


def limiter(*limits: TokenLimit, header: str | None = "X-Team") -> TokenLimiter:
    return TokenLimiter(TokenRateLimitSettings("t", limits, key_header=header))


def test_allowed_until_the_limit_is_reached_exactly() -> None:
    lim = limiter(TokenLimit(100, 60.0))
    now = 6000.0  # window [6000, 6060)
    lim.record("a", 60, 39, now)
    assert lim.check("a", now + 1).allowed  # 99 < 100
    lim.record("a", 0, 1, now + 1)
    refused = lim.check("a", now + 2)  # 100 >= 100
    assert not refused.allowed and refused.used == 100 and refused.retry_after_s == 58
    assert lim.check("b", now + 2).allowed  # other key
    assert lim.check("a", 6060.0).allowed  # the next window


def test_input_and_output_counted_separately() -> None:
    lim = limiter(TokenLimit(10, 3600.0, "output"), TokenLimit(1000, 60.0, "input"))
    lim.record("k", 500, 9, 0.5)
    assert lim.check("k", 1.0).allowed
    lim.record("k", 499, 0, 1.0)
    assert lim.check("k", 1.5).allowed  # 999 input
    lim.record("k", 1, 1, 2.0)
    decision = lim.check("k", 2.5)
    assert not decision.allowed and decision.limit is not None and decision.limit.count == "output"
    assert decision.retry_after_s == 3598


def test_retry_after_is_at_least_one_second_and_stale_keys_are_dropped() -> None:
    lim = limiter(TokenLimit(1, 10.0))
    lim.record("a", 1, 0, 9.99)
    assert lim.check("a", 9.995).retry_after_s == 1
    for i in range(50):
        lim.record(f"k{i}", 1, 0, 20.0)
    lim.record("z", 1, 0, 45.0)  # two windows later: the k* keys are swept
    assert lim.keys() == 1


def test_counters_carry_over_a_reload_with_the_same_name_and_key() -> None:
    limiters = TokenLimiters()
    first = limiters.configure([TokenRateLimitSettings("t", (TokenLimit(10, 60.0),), key_header="X")])["t"]
    first.record("a", 10, 0, 1.0)
    again = limiters.configure([TokenRateLimitSettings("t", (TokenLimit(20, 60.0),), key_header="X")])["t"]
    assert again is first and again.check("a", 2.0).allowed  # the new limit applies to the count so far
    again.record("a", 10, 0, 2.0)
    assert not again.check("a", 3.0).allowed
    other = limiters.configure([TokenRateLimitSettings("t", (TokenLimit(20, 60.0),), key_header="Y")])["t"]
    assert other is not first and other.check("a", 3.0).allowed  # another key source: fresh counters
