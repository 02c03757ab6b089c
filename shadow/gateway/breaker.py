"""Traefik's circuit breaker: the expression language, rolling metrics and the state machine.

Pure: no I/O, no proxy, an injectable clock. The gateway asks `CircuitBreaker.allow()` before
forwarding and reports every outcome with `record(status, latency_ms, network_error)`.

Expressions (Traefik/oxy syntax)::

    NetworkErrorRatio() > 0.30
    ResponseCodeRatio(500, 600, 0, 600) > 0.25 || LatencyAtQuantileMS(50.0) > 100

`NetworkErrorRatio()` counts 502 and 504 answers (mitmproxy's own 502 for a refused upstream
included) over all answers of the last 10 s; `ResponseCodeRatio(from, to, dividedByFrom,
dividedByTo)` is the count of codes in [from, to) over the count in [dividedByFrom, dividedByTo)
(0 when the divisor is 0); `LatencyAtQuantileMS(q)` reads a rolling ~60 s latency sample;
`RequestThreshold()` (Traefik v3.7) is the number of answers in the 10 s window, so
`ResponseCodeRatio(500, 600, 0, 600) > 0.25 && RequestThreshold() >= 20` needs 20 answers first.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from shadow.yamlconfig import MAX_EXPRESSION_NESTING

__all__ = [
    "BreakerMetrics",
    "BreakerSettings",
    "CircuitBreaker",
    "Expression",
    "ExpressionError",
    "parse_expression",
]

Clock = Callable[[], float]


class ExpressionError(ValueError):
    """A syntax error at `column` (1-based) of the expression."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} at column {column}")
        self.message = message
        self.column = column


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------

RATIO_WINDOW_S = 10.0
LATENCY_WINDOW_S = 60.0


class BreakerMetrics:
    """Per-second buckets of answers (10 s) and a rolling latency sample (60 s)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._buckets: deque[tuple[int, dict[int, int], list[int]]] = deque()  # (second, codes, [net])
        self._latency: deque[tuple[float, float]] = deque()

    def reset(self) -> None:
        self._buckets.clear()
        self._latency.clear()

    def _trim(self, now: float) -> None:
        oldest = int(now - RATIO_WINDOW_S)
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()
        while self._latency and self._latency[0][0] <= now - LATENCY_WINDOW_S:
            self._latency.popleft()

    def record(self, status: int, latency_ms: float, network_error: bool = False) -> None:
        now = self.clock()
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append((second, {}, [0]))
        codes, net = self._buckets[-1][1], self._buckets[-1][2]
        codes[status] = codes.get(status, 0) + 1
        if network_error or status in (502, 504):
            net[0] += 1
        self._latency.append((now, latency_ms))
        if len(self._buckets) > RATIO_WINDOW_S + 2 or len(self._latency) > 100_000:
            self._trim(now)

    def network_error_ratio(self) -> float:
        self._trim(self.clock())
        total = sum(sum(c.values()) for _, c, _ in self._buckets)
        errors = sum(n[0] for _, _, n in self._buckets)
        return errors / total if total else 0.0

    def response_code_ratio(self, start: int, end: int, div_start: int, div_end: int) -> float:
        self._trim(self.clock())
        num = den = 0
        for _, codes, _ in self._buckets:
            for code, n in codes.items():
                if start <= code < end:
                    num += n
                if div_start <= code < div_end:
                    den += n
        return num / den if den else 0.0

    def request_count(self) -> float:
        """RequestThreshold(): the answers recorded in the ratio window (Traefik v3.7)."""
        self._trim(self.clock())
        return float(sum(sum(c.values()) for _, c, _ in self._buckets))

    def latency_at_quantile_ms(self, q: float) -> float:
        self._trim(self.clock())
        if not self._latency:
            return 0.0
        values = sorted(v for _, v in self._latency)
        rank = max(0, min(len(values) - 1, math.ceil(q / 100.0 * len(values)) - 1))
        return values[rank]


# --------------------------------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[float, ...]

    def value(self, m: BreakerMetrics) -> float:
        if self.name == "NetworkErrorRatio":
            return m.network_error_ratio()
        if self.name == "RequestThreshold":
            return m.request_count()
        if self.name == "ResponseCodeRatio":
            a, b, c, d = (int(x) for x in self.args)
            return m.response_code_ratio(a, b, c, d)
        return m.latency_at_quantile_ms(self.args[0])


@dataclass(frozen=True)
class _Compare:
    left: _Call | float
    op: str
    right: _Call | float

    def test(self, m: BreakerMetrics) -> bool:
        a = self.left.value(m) if isinstance(self.left, _Call) else self.left
        b = self.right.value(m) if isinstance(self.right, _Call) else self.right
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[self.op]


@dataclass(frozen=True)
class _Bool:
    op: Literal["&&", "||"]
    parts: tuple[_Node, ...]  # flat, however long the chain: evaluating it never recurses per term

    def test(self, m: BreakerMetrics) -> bool:
        if self.op == "&&":
            return all(p.test(m) for p in self.parts)
        return any(p.test(m) for p in self.parts)


_Node = _Compare | _Bool

_FUNCTIONS = {"NetworkErrorRatio": 0, "ResponseCodeRatio": 4, "LatencyAtQuantileMS": 1, "RequestThreshold": 0}
_OPERATORS = ("<=", ">=", "==", "!=", "&&", "||", "<", ">", "(", ")", ",")


@dataclass(frozen=True)
class Expression:
    text: str
    root: _Node

    def evaluate(self, metrics: BreakerMetrics) -> bool:
        return self.root.test(metrics)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, value, column) with kind in name | number | op | end."""
    out: list[tuple[str, str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append(("name", text[i:j], i + 1))
            i = j
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()) or (
                c == "-" and i + 1 < n and (text[i + 1].isdigit() or text[i + 1] == ".")):
            j = i + 1
            while j < n and (text[j].isdigit() or text[j] == "."):
                j += 1
            try:
                float(text[i:j])
            except ValueError:
                raise ExpressionError(f"bad number {text[i:j]!r}", i + 1) from None
            out.append(("number", text[i:j], i + 1))
            i = j
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                out.append(("op", op, i + 1))
                i += len(op)
                break
        else:
            raise ExpressionError(f"unexpected character {c!r}", i + 1)
    out.append(("end", "", n + 1))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.pos = 0
        self.depth = 0  # open parentheses: bounded, the parser recurses

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.pos]

    def take(self) -> tuple[str, str, int]:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def expect(self, value: str) -> None:
        kind, got, col = self.take()
        if got != value or kind != "op":
            raise ExpressionError(f"expected {value!r}, got {_show(kind, got)}", col)

    def parse(self) -> _Node:
        node = self.or_()
        kind, value, col = self.peek()
        if kind != "end":
            raise ExpressionError(f"unexpected {_show(kind, value)}", col)
        return node

    def or_(self) -> _Node:
        parts = [self.and_()]
        while self.peek()[1] == "||" and self.peek()[0] == "op":
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else _Bool("||", tuple(parts))

    def and_(self) -> _Node:
        parts = [self.atom()]
        while self.peek()[1] == "&&" and self.peek()[0] == "op":
            self.take()
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else _Bool("&&", tuple(parts))

    def atom(self) -> _Node:
        kind, value, col = self.peek()
        if kind == "op" and value == "(":
            self.take()
            self.depth += 1
            if self.depth > MAX_EXPRESSION_NESTING:
                raise ExpressionError(f"nested deeper than {MAX_EXPRESSION_NESTING} levels of parentheses", col)
            node = self.or_()
            self.expect(")")
            self.depth -= 1
            return node
        left = self.operand()
        kind, op, col = self.take()
        if kind != "op" or op not in ("<", "<=", ">", ">=", "==", "!="):
            raise ExpressionError(f"expected a comparison (<, <=, >, >=, ==, !=), got {_show(kind, op)}", col)
        right = self.operand()
        if not isinstance(left, _Call) and not isinstance(right, _Call):
            raise ExpressionError("a comparison needs a metric function on one side", col)
        return _Compare(left, op, right)

    def operand(self) -> _Call | float:
        kind, value, col = self.take()
        if kind == "number":
            return float(value)
        if kind != "name":
            raise ExpressionError(f"expected a metric function or a number, got {_show(kind, value)}", col)
        if value not in _FUNCTIONS:
            raise ExpressionError(f"unknown function {value!r} (NetworkErrorRatio, ResponseCodeRatio, "
                                  "LatencyAtQuantileMS, RequestThreshold)", col)
        self.expect("(")
        args: list[float] = []
        if not (self.peek()[0] == "op" and self.peek()[1] == ")"):
            while True:
                akind, avalue, acol = self.take()
                if akind != "number":
                    raise ExpressionError(f"expected a number argument, got {_show(akind, avalue)}", acol)
                args.append(float(avalue))
                if self.peek()[1] == "," and self.peek()[0] == "op":
                    self.take()
                    continue
                break
        self.expect(")")
        if len(args) != _FUNCTIONS[value]:
            raise ExpressionError(f"{value} takes {_FUNCTIONS[value]} argument(s), got {len(args)}", col)
        if value == "ResponseCodeRatio" and any(a != int(a) for a in args):
            raise ExpressionError("ResponseCodeRatio takes integer status codes", col)
        if value == "LatencyAtQuantileMS" and not 0 < args[0] <= 100:
            raise ExpressionError("LatencyAtQuantileMS takes a quantile in (0, 100]", col)
        return _Call(value, tuple(args))


def _show(kind: str, value: str) -> str:
    return "the end of the expression" if kind == "end" else repr(value)


def parse_expression(text: str) -> Expression:
    """Parse a breaker expression; `ExpressionError` (with a 1-based column) on bad syntax."""
    if not text.strip():
        raise ExpressionError("empty expression", 1)
    return Expression(text, _Parser(text).parse())


# --------------------------------------------------------------------------------------------------
# State machine
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BreakerSettings:
    expression: Expression
    check_period_s: float = 0.1
    fallback_duration_s: float = 10.0
    recovery_duration_s: float = 10.0
    response_code: int = 503


State = Literal["closed", "open", "recovering"]


class CircuitBreaker:
    """closed → (expression true at a check) → open: every request answered `response_code` for
    fallbackDuration, metrics reset → recovering: the share of requests let through rises linearly
    from 0 to 100 % over recoveryDuration (deterministically, by error diffusion) → expression true again: open; recovery complete: closed."""

    def __init__(self, settings: BreakerSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = BreakerMetrics(clock)
        self.state: State = "closed"
        self._until = 0.0  # open: end of the fallback; recovering: its start
        self._next_check = 0.0
        self._credit = 0.0
        self.trips = 0

    def _check(self, now: float) -> None:
        if now < self._next_check:
            return
        self._next_check = now + self.settings.check_period_s
        if self.settings.expression.evaluate(self.metrics):
            self._trip(now)

    def _trip(self, now: float) -> None:
        self.state = "open"
        self.trips += 1
        self._until = now + self.settings.fallback_duration_s
        self.metrics.reset()

    def current_state(self) -> State:
        now = self.clock()
        if self.state == "open" and now >= self._until:
            self.state, self._until, self._credit = "recovering", now, 0.0
        if self.state == "recovering" and now - self._until >= self.settings.recovery_duration_s:
            self.state = "closed"
        return self.state

    def recovery_share(self) -> float:
        if self.state != "recovering":
            return 1.0 if self.state == "closed" else 0.0
        duration = self.settings.recovery_duration_s
        return 1.0 if duration <= 0 else min(1.0, (self.clock() - self._until) / duration)

    def allow(self) -> bool:
        """True: forward the request; False: answer `response_code` locally."""
        now = self.clock()
        state = self.current_state()
        if state in ("closed", "recovering"):
            self._check(now)
            state = self.state
        if state == "open":
            return False
        if state == "recovering":
            # Error diffusion: over any run of requests the share let through follows the ramp
            # (deterministic, where oxy draws a random number per request).
            self._credit += self.recovery_share()
            if self._credit >= 1.0:
                self._credit -= 1.0
                return True
            return False
        return True

    def record(self, status: int, latency_ms: float, network_error: bool = False) -> None:
        if self.state != "open":
            self.metrics.record(status, latency_ms, network_error)

