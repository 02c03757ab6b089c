"""Traefik's rateLimit tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/middlewares/ratelimiter/rate_limiter_test.go — TestNewRateLimiter, TestInMemoryRateLimit.
TestInMemoryRateLimit drives the limiter with a ticker at `incomingLoad` requests per second for
`loadDuration` (a rate-limited request waits its delay inside the handler) and expects
`int(rate × loadDuration) + burst` requests served, within 2 % above and 5 % below (Go's non-CI
bound). Here the same loop runs on a virtual clock (the limiter takes the time as an argument), so
the one-minute cases, which Go skips in -short mode, run in milliseconds, and no load can skew them.
Skipped: TestRedisRateLimit and the "Use Redis" case (the gateway has no Redis limiter: the option is
refused as not supported).
"""

from __future__ import annotations

import math

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.gateway.middlewares.ratelimit import Admit, RateLimit, RateLimiter
from shadow.gateway.middlewares.request import MiddlewareRequest

NS = 1_000_000_000
# Virtual time one pass of Go's loop takes (serving a request into a recorder): the burst phase
# sends without waiting for the ticker, and only the passing of time refills the bucket.
HANDLER_COST_NS = 10_000


def load(options: str) -> RateLimit:
    text = ("http:\n  routers: {r: {rule: \"PathPrefix(`/`)\", service: s, middlewares: [rl]}}\n"
            "  services: {s: {loadBalancer: {servers: [{url: \"http://127.0.0.1:9\"}]}}}\n"
            f"  middlewares: {{rl: {{rateLimit: {options}}}}}\n")
    mw = parse_config(text, "gw.yaml").middlewares["rl"]
    assert isinstance(mw, RateLimit)
    return mw


def test_no_ratelimit_on_average_zero() -> None:
    assert math.isinf(load("{average: 0, burst: 10}").rate)


def test_max_delay_computation() -> None:
    assert load("{average: 200, burst: 10}").max_delay_ns == 2_500_000  # 2500 µs


def test_max_delay_computation_low_rate_regime() -> None:
    assert load("{average: 2, period: 10s, burst: 10}").max_delay_ns == 500_000_000


def test_default_source_matcher_is_remote_address_ip_strategy() -> None:
    req = MiddlewareRequest(method="GET", scheme="http", host="h", path="/", remote_ip="127.0.0.1")
    assert load("{average: 200, burst: 10}").source.source(req) == "127.0.0.1"


def test_source_criterion_in_config_is_respected() -> None:
    req = MiddlewareRequest(method="GET", scheme="http", host="h", path="/", headers=(("Foo", "bar"),))
    assert load("{average: 200, burst: 10, sourceCriterion: {requestHeaderName: Foo}}").source.source(req) == "bar"


def test_source_criteria_are_mutually_exclusive() -> None:
    with pytest.raises(ConfigError, match="ipStrategy and requestHeaderName are mutually exclusive"):
        load("{average: 200, burst: 10, sourceCriterion: {ipStrategy: {}, requestHeaderName: Foo}}")


def test_redis_is_refused_as_not_supported() -> None:
    with pytest.raises(ConfigError, match="redis: not supported"):
        load("{average: 200, burst: 10, redis: {endpoints: ['localhost:6379']}}")


# (desc, average, period (s, 0 = default), burst (config), load duration (s), incoming load (req/s), initial burst)
IN_MEMORY = [
    ("Average is respected", 100, 0, 1, 2, 400, 0),
    ("burst allowed, no bursty traffic", 100, 0, 100, 2, 200, 0),
    ("burst allowed, initial burst, under capacity", 100, 0, 100, 2, 200, 50),
    ("burst allowed, initial burst, over capacity", 100, 0, 100, 2, 200, 150),
    ("burst over average, initial burst, over capacity", 100, 0, 200, 2, 200, 300),
    ("lower than 1/s", 5, 10, 0, 2, 100, 0),
    ("lower than 1/s, longer", 5, 10, 0, 60, 100, 0),
    ("lower than 1/s, longer, harsher", 1, 60, 0, 60, 100, 0),
    ("period below 1 second", 50, 0.5, 0, 2, 300, 0),
]


def run_load(settings: RateLimit, load_s: float, incoming: int, initial_burst: int) -> tuple[int, int]:
    """Go's test loop on a virtual clock: (served, dropped)."""
    limiter = RateLimiter(settings)
    period = NS // incoming
    end = int(load_s * NS)
    now, next_tick = 0, period
    served = dropped = 0
    req = MiddlewareRequest(method="GET", scheme="http", host="localhost", path="/", remote_ip="127.0.0.1")
    for _ in range(10_000_000):  # bounded; ends by the clock long before
        if now > end:
            break
        decision = limiter.check(req, now)
        now += HANDLER_COST_NS
        if isinstance(decision, Admit):
            now += int(decision.delay_s * NS)  # the handler sleeps the delay, then serves
            served += 1
        else:
            dropped += 1
        if initial_burst > 0 and served < initial_burst:
            continue  # the burst is sent as fast as possible
        if next_tick <= now:  # Go's ticker keeps one missed tick; the others are dropped
            next_tick = (now // period + 1) * period
        else:
            now, next_tick = next_tick, next_tick + period
    return served, dropped


@pytest.mark.parametrize(("desc", "average", "period", "burst", "load_s", "incoming", "initial"), IN_MEMORY,
                         ids=[c[0] for c in IN_MEMORY])
def test_in_memory_rate_limit(desc: str, average: int, period: float, burst: int, load_s: float, incoming: int,
                              initial: int) -> None:
    settings = RateLimit("rate-limiter", average, period or 1.0, burst)
    served, _dropped = run_load(settings, load_s, incoming, initial)
    rate_per_ns = average / ((period or 1.0) * NS)
    want = int(rate_per_ns * load_s * NS) + max(burst, 1)
    assert want * 95 // 100 <= served <= want * 102 // 100, (served, want)
