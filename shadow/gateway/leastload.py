"""Traefik's load-aware strategies, pure: `p2c` (power of two random choices) and `leasttime`.

Both need what the other strategies do not: the requests in flight per server. A request counts
from the decision that picked its server until its outcome is reported; the count is kept by
`InflightBoard` as tickets held weakly, so a flow that ends without an outcome (a bug, a killed
connection no hook saw) stops counting when it is garbage-collected instead of skewing the choice
for ever.

- `P2c`: two distinct servers drawn at random among the healthy ones; the one with fewer requests in
  flight wins (the first drawn on a tie). Weights do not matter, as in Traefik.
- `LeastTime`: score = mean time to first byte (the last 100 answers, whole milliseconds) ×
  (1 + in flight) / weight; the lowest wins; equal scores (a cold start: all 0) are shared by
  earliest-deadline-first round-robin among the tied servers only. Weight ≤ 0 servers never serve.
"""

from __future__ import annotations

import random
import weakref
from collections import deque
from collections.abc import Callable, Sequence

__all__ = ["SAMPLE_SIZE", "InflightBoard", "InflightTicket", "LeastTime", "P2c"]

SAMPLE_SIZE = 100  # Traefik's ring of response times per server


class InflightTicket:
    """One request in flight to `key`; released when its outcome is reported (or it is dropped)."""

    __slots__ = ("__weakref__", "key")

    def __init__(self, key: str) -> None:
        self.key = key


class InflightBoard:
    """Requests in flight per server key."""

    def __init__(self) -> None:
        self._tickets: dict[str, weakref.WeakSet[InflightTicket]] = {}

    def enter(self, key: str) -> InflightTicket:
        ticket = InflightTicket(key)
        self._tickets.setdefault(key, weakref.WeakSet()).add(ticket)
        return ticket

    def leave(self, ticket: InflightTicket) -> None:
        tickets = self._tickets.get(ticket.key)
        if tickets is not None:
            tickets.discard(ticket)

    def count(self, key: str) -> int:
        tickets = self._tickets.get(key)
        return len(tickets) if tickets is not None else 0


class P2c:
    """Traefik's `p2c` over server keys (weights ignored: Traefik's p2c has none)."""

    def __init__(self, keys: Sequence[str], inflight: InflightBoard, *,
                 rng: Callable[[int], int] | None = None) -> None:
        self.keys = tuple(keys)
        self.inflight = inflight
        self._rng = rng if rng is not None else random.SystemRandom().randrange

    def pick(self, healthy: Callable[[str], bool] = lambda _key: True) -> str | None:
        live = [k for k in self.keys if healthy(k)]
        if not live:
            return None
        if len(live) == 1:
            return live[0]
        n1, n2 = self._rng(len(live)), self._rng(len(live))
        if n2 == n1:  # never the same server twice
            n2 = (n2 + 1) % len(live)
        first, second = live[n1], live[n2]
        return second if self.inflight.count(second) < self.inflight.count(first) else first


class LeastTime:
    """Traefik's `leasttime` over (server key, weight)."""

    def __init__(self, servers: Sequence[tuple[str, float]], inflight: InflightBoard) -> None:
        self.weights = {key: float(w) for key, w in servers if w > 0}
        self.inflight = inflight
        self._samples: dict[str, deque[float]] = {key: deque(maxlen=SAMPLE_SIZE) for key in self.weights}
        self._sums = dict.fromkeys(self.weights, 0.0)
        # EDF tie-breaking: deadlines staggered at start, each advancing by 1/weight when chosen.
        self._deadline: dict[str, float] = {}
        current = 0.0
        for key, weight in self.weights.items():
            current += 1.0 / weight
            self._deadline[key] = current

    def record(self, key: str, first_byte_ms: float) -> None:
        """A response's time to first byte, truncated to whole milliseconds as Go's Milliseconds()."""
        samples = self._samples.get(key)
        if samples is None:
            return
        ms = float(int(max(first_byte_ms, 0.0)))
        if len(samples) == SAMPLE_SIZE:
            self._sums[key] -= samples[0]
        samples.append(ms)
        self._sums[key] += ms

    def mean_ms(self, key: str) -> float:
        samples = self._samples.get(key)
        return self._sums[key] / len(samples) if samples else 0.0

    def score(self, key: str) -> float:
        return self.mean_ms(key) * (1 + self.inflight.count(key)) / self.weights[key]

    def pick(self, healthy: Callable[[str], bool] = lambda _key: True) -> str | None:
        live = [k for k in self.weights if healthy(k)]
        if not live:
            return None
        if len(live) == 1:
            return live[0]
        scores = {k: self.score(k) for k in live}
        best = min(scores.values())
        tied = [k for k in live if scores[k] == best]
        if len(tied) == 1:
            return tied[0]
        chosen = min(tied, key=self._deadline.__getitem__)  # min keeps the first on equal deadlines
        self._deadline[chosen] += 1.0 / self.weights[chosen]
        return chosen
