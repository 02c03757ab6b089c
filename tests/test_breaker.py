"""Circuit breaker: Traefik's expression language and the state machine under a controllable clock."""

from __future__ import annotations

import pytest

from shadow.errors import ConfigError
from shadow.gateway.breaker import (
    BreakerMetrics,
    BreakerSettings,
    CircuitBreaker,
    ExpressionError,
    parse_expression,
)
from shadow.gateway.config import parse_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


VALID = [
    "NetworkErrorRatio() > 0.30",
    "ResponseCodeRatio(500, 600, 0, 600) > 0.25",
    "LatencyAtQuantileMS(50.0) > 100",
    "NetworkErrorRatio() > 0.5 || ResponseCodeRatio(500, 600, 0, 600) > 0.25",
    "LatencyAtQuantileMS(99) >= 250 && NetworkErrorRatio() < 0.1",
    "(NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(50) > 100) && ResponseCodeRatio(500,600,0,600) != 0",
    "0.3 < NetworkErrorRatio()",
    "  NetworkErrorRatio()==1  ",
]

INVALID = [  # (expression, column of the error, words)
    ("", 1, "empty expression"),
    ("NetworkErrorRatio() >", 22, "expected a metric function or a number"),
    ("NetworkErrorRatio > 0.3", 19, "expected '('"),
    ("NetworkErrorRate() > 0.3", 1, "unknown function 'NetworkErrorRate'"),
    ("ResponseCodeRatio(500, 600) > 0.1", 1, "takes 4 argument(s), got 2"),
    ("LatencyAtQuantileMS(50) 100", 25, "expected a comparison"),
    ("NetworkErrorRatio() > 0.3 &&", 29, "expected a metric function or a number"),
    ("NetworkErrorRatio() > 0.3 & x", 27, "unexpected character '&'"),
    ("(NetworkErrorRatio() > 0.3", 27, "expected ')'"),
    ("NetworkErrorRatio() > 0.3)", 26, "unexpected ')'"),
    ("1 > 2", 3, "needs a metric function"),
    ("LatencyAtQuantileMS(0) > 1", 1, "quantile in (0, 100]"),
    ("ResponseCodeRatio(500.5, 600, 0, 600) > 0", 1, "integer status codes"),
    ("NetworkErrorRatio(1) > 0", 1, "takes 0 argument(s), got 1"),
]


@pytest.mark.parametrize("text", VALID)
def test_valid_expressions_parse(text: str) -> None:
    assert parse_expression(text).text == text


@pytest.mark.parametrize(("text", "column", "words"), INVALID)
def test_invalid_expressions_name_the_column(text: str, column: int, words: str) -> None:
    with pytest.raises(ExpressionError) as err:
        parse_expression(text)
    assert err.value.column == column
    assert words in str(err.value)


def test_config_error_names_file_line_field_and_column() -> None:
    text = ("http:\n  routers:\n    r:\n      rule: PathPrefix(`/`)\n      service: s\n      middlewares: [cb]\n"
            "  services:\n    s:\n      loadBalancer:\n        servers: [{url: 'http://127.0.0.1:9'}]\n"
            "  middlewares:\n    cb:\n      circuitBreaker:\n        expression: NetworkErrorRatio() >> 0.5\n")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "gw.yaml")
    message = str(err.value)
    assert message.startswith("gw.yaml:14: http.middlewares.cb.circuitBreaker.expression:")
    assert "at column 22" in message


def test_expression_evaluation_over_metrics() -> None:
    clock = Clock()
    m = BreakerMetrics(clock)
    for status in [200] * 6 + [500, 503, 502, 504]:
        m.record(status, 10.0 if status == 200 else 300.0)
    assert m.network_error_ratio() == pytest.approx(0.2)
    assert m.response_code_ratio(500, 600, 0, 600) == pytest.approx(0.4)
    assert m.response_code_ratio(500, 600, 0, 100) == 0.0  # divisor 0 → 0
    assert m.latency_at_quantile_ms(50) == 10.0 and m.latency_at_quantile_ms(90) == 300.0
    assert parse_expression("ResponseCodeRatio(500, 600, 0, 600) > 0.3").evaluate(m)
    assert not parse_expression("NetworkErrorRatio() > 0.3 && LatencyAtQuantileMS(50) > 5").evaluate(m)
    clock.now += 11  # ratios use a 10 s window, latency a 60 s one
    assert m.network_error_ratio() == 0.0 and m.latency_at_quantile_ms(50) == 10.0


def test_breaker_transitions_closed_open_recovering_closed() -> None:
    clock = Clock()
    settings = BreakerSettings(parse_expression("NetworkErrorRatio() > 0.5"), check_period_s=0.1,
                               fallback_duration_s=10, recovery_duration_s=10, response_code=503)
    cb = CircuitBreaker(settings, clock)
    assert cb.allow() and cb.current_state() == "closed"
    for _ in range(10):
        cb.record(502, 1.0, network_error=True)
    clock.now += 0.2  # next check period
    assert not cb.allow() and cb.state == "open" and cb.trips == 1
    clock.now += 9.9
    assert not cb.allow()  # still inside fallbackDuration
    clock.now += 0.2
    assert cb.current_state() == "recovering"
    # the share let through rises linearly: about 25 % a quarter of the way in
    clock.now += 2.5
    passed = sum(cb.allow() for _ in range(100))
    assert 20 <= passed <= 30
    clock.now += 5.0
    passed = sum(cb.allow() for _ in range(100))
    assert 70 <= passed <= 80
    clock.now += 2.6
    assert cb.current_state() == "closed" and all(cb.allow() for _ in range(10))


def test_breaker_trips_again_while_recovering() -> None:
    clock = Clock()
    cb = CircuitBreaker(BreakerSettings(parse_expression("ResponseCodeRatio(500, 600, 0, 600) > 0.5"),
                                        fallback_duration_s=1, recovery_duration_s=10), clock)
    for _ in range(4):
        cb.record(500, 1.0)
    clock.now += 0.2
    assert not cb.allow() and cb.state == "open"
    clock.now += 1.1
    assert cb.current_state() == "recovering"
    for _ in range(4):
        cb.record(503, 1.0)
    clock.now += 0.2
    cb.allow()
    assert cb.state == "open" and cb.trips == 2


def test_nesting_is_bounded_and_long_chains_do_not_recurse() -> None:
    # issue #17: a 3,000-deep expression was a bare RecursionError; a long `||` chain a tree as deep.
    with pytest.raises(ExpressionError) as err:
        parse_expression("(" * 3000 + "NetworkErrorRatio() > 0.5" + ")" * 3000)
    assert (err.value.column, "nested deeper than 64 levels" in str(err.value)) == (65, True)
    assert parse_expression("(" * 64 + "NetworkErrorRatio() > 0.5" + ")" * 64).text.startswith("((")
    chain = parse_expression(" || ".join(["NetworkErrorRatio() > 0.5"] * 5000) + " || ResponseCodeRatio(500, 600, 0, 600) > 0.5")
    metrics = BreakerMetrics()
    metrics.record(503, 1.0)
    assert chain.evaluate(metrics) is True  # the last of 5,001 terms decides, without a RecursionError


def test_request_threshold_holds_the_breaker_until_enough_answers() -> None:
    # Traefik v3.7's documented example: 25 % errors trips only once 20 answers were recorded.
    clock = Clock()
    metrics = BreakerMetrics(clock)
    expression = parse_expression("ResponseCodeRatio(500, 600, 0, 600) > 0.25 && RequestThreshold() >= 20")
    for i in range(19):
        metrics.record(500 if i % 2 else 200, 5.0)
    assert metrics.request_count() == 19
    assert not expression.evaluate(metrics)  # 47 % errors, but only 19 answers
    metrics.record(500, 5.0)
    assert expression.evaluate(metrics)
    clock.now += 11  # the 10 s window passed: nothing counts any more
    assert metrics.request_count() == 0 and not expression.evaluate(metrics)
    with pytest.raises(ExpressionError, match="RequestThreshold takes 0 argument"):
        parse_expression("RequestThreshold(5) > 1")
