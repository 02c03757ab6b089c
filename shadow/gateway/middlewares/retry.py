"""Traefik's `retry` (pkg/middlewares/retry): re-send a request the upstream never received.

Traefik retries an attempt when the proxy was reached but the request could not be written (a
refused or failed connection), up to `attempts` in all, choosing the server anew each time; with
`initialInterval` it waits between attempts with an exponential backoff (cenkalti/backoff:
multiplier 2^(1/(attempts-1)), randomization ±50 %). `status` ranges (v3.7) also retry answers in
them for idempotent methods (and POST/PATCH with `retryNonIdempotentMethod`), when the body fits in
`maxRequestBodyBytes`; `timeout` stops retrying after that long.

A Gateway API rule's `retry` and `timeouts` are this middleware too, with what Traefik has no word
for: a timeout per try (`backendRequest`) and for the whole request (`request`), a constant
`backoff`, and retrying a try that failed after the request was written (a dropped connection, a
backend timeout), which the Gateway API asks for and Traefik never does.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Answered", "NotWritten", "Retry", "backoff_intervals", "run_attempts"]

DEFAULT_MAX_REQUEST_BODY_BYTES = -1  # Traefik's RetryDefaultMaxRequestBodyBytes


@dataclass(frozen=True)
class Retry:
    name: str
    attempts: int
    initial_interval_s: float = 0.0
    timeout_s: float = 0.0
    status: tuple[tuple[int, int], ...] = ()  # inclusive ranges
    max_request_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_BYTES
    disable_retry_on_network_error: bool = False
    retry_non_idempotent_method: bool = False
    # Gateway API only (0 / False: Traefik's behaviour)
    attempt_timeout_s: float = 0.0  # each try; 0: the gateway's forwarding timeout
    request_timeout_s: float = 0.0  # the whole request, retries and waits included; 0: none
    backoff_s: float = 0.0  # a constant wait between tries (instead of initialInterval's backoff)
    retry_sent_failures: bool = False  # also retry dropped connections and timeouts after the write

    @property
    def needs_sender(self) -> bool:
        """Whether the route must be sent by the retry addon (retries or timeouts to enforce)."""
        return self.attempts > 1 or self.attempt_timeout_s > 0 or self.request_timeout_s > 0

    def retries_status(self, method: str, status: int, body_size: int) -> bool:
        """Is an answer with `status` to a request like this one retried (when attempts remain)?"""
        if not self.status:
            return False
        if method in ("POST", "PATCH", "LOCK") and not self.retry_non_idempotent_method:
            return False
        if 0 <= self.max_request_body_bytes < body_size:
            return False
        return any(lo <= status <= hi for lo, hi in self.status)


def backoff_intervals(settings: Retry, rng: random.Random | None = None) -> list[float]:
    """The waits (seconds) before attempts 2..attempts: 0 without initialInterval (Traefik's
    ZeroBackOff), else cenkalti/backoff's ExponentialBackOff as Traefik configures it."""
    count = max(settings.attempts - 1, 0)
    if settings.backoff_s > 0:
        return [settings.backoff_s] * count
    if settings.attempts < 2 or settings.initial_interval_s <= 0:
        return [0.0] * count
    rng = rng or random.Random()
    multiplier = 2 ** (1 / (settings.attempts - 1))
    max_interval = 60.0
    interval = settings.initial_interval_s
    waits = []
    for _ in range(count):
        delta = 0.5 * interval
        waits.append(interval - delta + rng.random() * (2 * delta))
        interval = min(interval * multiplier, max_interval)
    return waits


@dataclass(frozen=True)
class Answered:
    """An attempt that reached the upstream (or was answered on the way): its status and whatever
    the caller needs to deliver it."""

    status: int
    payload: Any = None


@dataclass(frozen=True)
class NotWritten:
    """An attempt whose connection failed before the request was written; `status` is what the
    client gets if it is the last one (502 refused, 504 timed out)."""

    status: int = 502
    reason: str = ""


Attempt = Callable[[int], Awaitable[Answered | NotWritten]]


async def run_attempts(settings: Retry, method: str, body_size: int, attempt: Attempt, *,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                       now: Callable[[], float] = time.monotonic,
                       rng: random.Random | None = None) -> tuple[Answered | NotWritten, int]:
    """Traefik's retry loop: (the outcome the client gets, how many retries were made).

    An attempt that could not write its request is retried unless `disableRetryOnNetworkError` or
    `timeout` has passed; an answer in `status` is retried for idempotent methods (or with
    `retryNonIdempotentMethod`) when the body fits `maxRequestBodyBytes`, unless `timeout` has
    passed; the last attempt's outcome is delivered whatever it is."""
    status_retry = bool(settings.status) and (settings.retry_non_idempotent_method
                                              or method not in ("POST", "PATCH", "LOCK"))
    if status_retry and 0 <= settings.max_request_body_bytes < body_size:
        status_retry = False
    waits = backoff_intervals(settings, rng)
    started = now()
    retries = 0
    outcome: Answered | NotWritten = NotWritten()
    for n in range(max(settings.attempts, 1)):
        outcome = await attempt(n)
        if n == settings.attempts - 1:
            break
        timed_out = settings.timeout_s > 0 and now() - started >= settings.timeout_s
        if isinstance(outcome, NotWritten):
            if timed_out or settings.disable_retry_on_network_error:
                break
        elif not (status_retry and not timed_out
                  and any(lo <= outcome.status <= hi for lo, hi in settings.status)):
            break
        retries += 1
        if waits[n] > 0:
            await sleep(waits[n])
    return outcome, retries
