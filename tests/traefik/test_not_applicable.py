"""The Traefik tests of the ported files that cannot apply to the gateway, listed with the reason (each
file's docstring says the same). Source: Traefik TRAEFIK_VERSION (tests/traefik/__init__.py)."""

from __future__ import annotations

import pytest

NOT_APPLICABLE = [
    ("pkg/server/service/loadbalancer/p2c/p2c_test.go", "TestSticky_Fenced",
     "`fenced` servers are set by Traefik's Kubernetes providers, never by a file"),
    ("pkg/server/service/loadbalancer/leasttime/leasttime_test.go",
     "TestBalancerOneServerFenced, TestBalancerAllFencedServers, TestBalancerStickyFenced", "as above"),
    ("pkg/server/service/loadbalancer/leasttime/leasttime_test.go",
     "TestBalancerPropagate, TestBalancerRegisterStatusUpdaterWithoutHealthCheck",
     "parent status hooks: a parent asks service_up (tests/test_shifting.py)"),
    ("pkg/server/service/loadbalancer/leasttime/leasttime_test.go",
     "TestConcurrentResponseTimeUpdates, TestConcurrentInflightTracking, TestConcurrentRequestsRespectInflight",
     "Go's goroutine safety: the gateway decides on one event loop"),
    ("pkg/server/service/loadbalancer/leasttime/leasttime_test.go", "TestScoreCalculationColdStart",
     "adds a server to a live balancer: a change of servers is a new configuration and a new balancer"),
    ("pkg/middlewares/ratelimiter/rate_limiter_test.go", "TestRedisRateLimit",
     "Redis-backed limiter: the gateway has none (the redis option is refused)"),
    ("pkg/middlewares/ratelimiter/rate_limiter_test.go", "TestNewRateLimiter/Use Redis", "as above"),
    ("pkg/middlewares/auth/basic_auth_test.go", "TestNewBasicNotFoundSecretIsSet",
     "an internal field; the same-cost check of unknown users is tested instead"),
    ("pkg/middlewares/auth/basic_auth_test.go", "TestBasicAuthConcurrentHashOnce",
     "Go's singleflight over concurrent goroutines; the gateway checks on one event loop"),
    ("pkg/middlewares/retry/retry_test.go", "TestMultipleRetriesShouldNotLooseHeaders",
     "Go ResponseWriter header maps across attempts; one attempt's buffered answer is delivered here"),
    ("pkg/middlewares/retry/retry_test.go", "TestRetryShouldNotLooseHeadersOnWrite", "as above"),
    ("pkg/middlewares/retry/retry_test.go", "TestRetryWithFlush", "streaming flushes; retried answers are buffered"),
    ("pkg/middlewares/retry/retry_test.go", "TestRetryWebsocket", "upgrade requests are left to mitmproxy, unretried"),
    ("pkg/middlewares/retry/retry_test.go", "TestRetryWebsocketDelayedFlush", "as above"),
    ("pkg/middlewares/retry/retry_test.go", "Test1xxResponses", "interim 1xx answers of Go's ResponseWriter"),
    ("pkg/middlewares/retry/retry_test.go", "TestRetryDoesNotBufferBodyForNonIdempotentMethod",
     "request body streaming; mitmproxy holds bodies whole"),
    ("pkg/middlewares/retry/retry_test.go", "TestRetryHTTPStatusCodesLargeBodyError", "Go body reader errors"),
    ("pkg/middlewares/customerrors/custom_errors_test.go", "TestHandler/nginx headers (2 cases)",
     "NginxHeaders is set by Traefik's ingress-nginx provider, not a file option"),
    ("pkg/middlewares/customerrors/custom_errors_test.go", "Test1xxResponses", "interim 1xx answers"),
    ("pkg/middlewares/auth/forward_test.go", "TestForwardAuthClientClosedRequest", "Go context cancellation"),
    ("pkg/middlewares/auth/forward_test.go", "TestForwardAuthTracing", "OpenTelemetry spans of Traefik's tracer"),
    ("pkg/middlewares/auth/forward_test.go", "TestForwardAuthDoesNotForwardCONNECTBody",
     "CONNECT never reaches a reverse proxy's routes here"),
    ("pkg/muxer/http/mux_test.go", "TestParseDomains", "domains of Host rules for ACME: no ACME here"),
    ("pkg/muxer/http/mux_test.go", "Test_addRoutePriority/Higher priority on first rule",
     "ordering by provider name (kubernetes providers): the gateway has one provider, its file"),
    ("pkg/muxer/http/matcher_test.go", "TestHeaderMatcher/TestHeaderRegexpMatcher (non-canonical map keys)",
     "Go test requests built with a non-canonical http.Header map key, which no client can send"),
]


@pytest.mark.parametrize(("source", "test", "reason"), NOT_APPLICABLE,
                         ids=[f"{s.rsplit('/', 1)[1]}::{t}" for s, t, _r in NOT_APPLICABLE])
def test_not_applicable(source: str, test: str, reason: str) -> None:
    pytest.skip(f"{source} {test}: {reason}")
