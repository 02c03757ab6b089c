"""Traffic shifting, pure: Traefik's weighted round-robin, HRW, sticky cookies and server health.

No I/O and no proxy. `TrafficState` holds what lives across requests (WRR deadlines, health,
breakers) keyed by service name + a fingerprint of that service's definition, so a reload keeps
the state of every service whose definition did not change and restarts the rest.

- `EdfWrr`: Traefik's WRR — earliest deadline first, each child's deadline advancing by 1/weight;
  children shuffled once at load (a seeded shuffle: one gateway is reproducible, several gateways
  with different ids do not move in lock-step); unhealthy children are skipped; none → None (503).
- `hrw_pick`: score = weight × 1/−ln(FNV-1a-64(key + name) / 2^64); the highest healthy score wins.
- `sticky_value`, `default_cookie_name`, `set_cookie_header`: Traefik's cookie name, value and
  attributes.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate

__all__ = [
    "EdfWrr",
    "HealthBoard",
    "SplitSettings",
    "StickyCookie",
    "default_cookie_name",
    "fnv1_64_hex",
    "fnv1a_64",
    "hrw_pick",
    "hrw_score",
    "parse_cookie_header",
    "set_cookie_header",
    "sticky_lookup",
    "sticky_value",
]

Clock = Callable[[], float]


@dataclass(frozen=True)
class SplitSettings:
    """`shadow.split`: what Traefik has no word for in split traffic.

    candidates: services whose answers are captured with role=candidate when a weighted / HRW
      choice sent the request there (the others: role=primary); the analyzers compare the two arms.
    client_key_header / client_key_cookie: the HRW key and the `client_key` column for API clients
      behind a NAT (one IP for many clients); the socket's client IP when absent from a request."""

    candidates: tuple[str, ...] = ()
    client_key_header: str | None = None
    client_key_cookie: str | None = None


# --------------------------------------------------------------------------------------------------
# WRR
# --------------------------------------------------------------------------------------------------

class EdfWrr:
    """Earliest-deadline-first weighted round-robin over named children (Traefik's `wrr`).

    Deterministic: a child with weight w is picked w times per cycle of sum(weights) picks.
    Children with weight ≤ 0 are removed. Ties between equal deadlines go to the earlier child in
    the (shuffled) order."""

    def __init__(self, children: Sequence[tuple[str, float]], *, seed: str | None = None) -> None:
        kept = [(name, float(w)) for name, w in children if w > 0]
        if seed is not None:
            random.Random(seed).shuffle(kept)
        self.order = tuple(name for name, _ in kept)
        self.weights = dict(kept)
        self._deadline = {name: 1.0 / w for name, w in kept}
        self._current = 0.0

    def pick(self, healthy: Callable[[str], bool] = lambda _name: True) -> str | None:
        """The next child; unhealthy children are passed over (their turn is used up, as Traefik's
        heap does). None when no child is healthy."""
        if not self.order:
            return None
        for _ in range(len(self.order)):
            name = min(self.order, key=self._deadline.__getitem__)  # min keeps the first on ties
            self._current = self._deadline[name]
            self._deadline[name] = self._current + 1.0 / self.weights[name]
            if healthy(name):
                return name
        return None


# --------------------------------------------------------------------------------------------------
# HRW
# --------------------------------------------------------------------------------------------------

_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    return h


def hrw_score(key: str, name: str, weight: float) -> float:
    """Traefik's node score: weight × 1/−ln(FNV-1a-64(key + name) / 2^64)."""
    u = fnv1a_64((key + name).encode()) / 2.0**64
    if u <= 0.0:
        return 0.0
    if u >= 1.0:  # only a rounding artefact of the division; the largest score
        return math.inf
    return weight * (1.0 / -math.log(u))


def hrw_pick(key: str, children: Sequence[tuple[str, float]],
             healthy: Callable[[str], bool] = lambda _name: True) -> str | None:
    """The healthy child with the highest score for `key` (None when none is healthy)."""
    best, best_score = None, -1.0
    for name, weight in children:
        if weight <= 0 or not healthy(name):
            continue
        score = hrw_score(key, name, weight)
        if score > best_score:
            best, best_score = name, score
    return best


# --------------------------------------------------------------------------------------------------
# Sticky cookies
# --------------------------------------------------------------------------------------------------

def sticky_value(child: str) -> str:
    """Traefik's cookie value for a child: the first 16 hex characters of sha256(name)."""
    return hashlib.sha256(child.encode()).hexdigest()[:16]


def fnv1_64_hex(text: str) -> str:
    """Go's `fnv.New64()` (FNV-1, not 1a) of `text`, as `strconv.FormatUint(h, 16)` writes it."""
    h = _FNV_OFFSET
    for b in text.encode():
        h = ((h * _FNV_PRIME) & _MASK) ^ b
    return format(h, "x")


def sticky_lookup(value: str, children: Sequence[str]) -> tuple[str | None, bool]:
    """(child, rewrite) for a sticky cookie's value, as Traefik's `Sticky.StickyHandler`.

    The current value is sha256(name)[:16]. Cookies written by older Traefik releases still stick,
    then get rewritten (rewrite=True): the raw name, FNV-1-64(name), and FNV-1-64 of that (server
    URLs were once hashed before the cookie hash)."""
    for child in children:
        if sticky_value(child) == value:
            return child, False
    for child in children:
        once = fnv1_64_hex(child)
        if value in (child, once, fnv1_64_hex(once)):
            return child, True
    return None, False


def default_cookie_name(service: str) -> str:
    """Traefik's default cookie name: "_" + 5 hex characters of sha1("_TRAEFIK_BACKEND_" + service)."""
    return "_" + hashlib.sha1(("_TRAEFIK_BACKEND_" + service).encode()).hexdigest()[:5]


@dataclass(frozen=True)
class StickyCookie:
    name: str
    secure: bool = False
    http_only: bool = False
    same_site: str = ""  # none | lax | strict | "" (omitted)
    max_age: int = 0  # 0: session cookie; negative: Max-Age=0
    path: str = "/"
    domain: str = ""
    expires_s: int = 0  # `expires`: seconds after the service was built (each configuration load)


def set_cookie_header(cookie: StickyCookie, value: str, *, expires_at: float | None = None) -> str:
    """The Set-Cookie value as Go's net/http writes it for Traefik's sticky cookie.

    `expires_at` (epoch seconds) is the absolute time of `expires`: Traefik computes it once, when
    it builds the service, so every cookie of one configuration carries the same date."""
    parts = [f"{cookie.name}={value}"]
    if cookie.path:
        parts.append(f"Path={cookie.path}")
    if cookie.domain:
        parts.append(f"Domain={cookie.domain.lstrip('.')}")
    if expires_at is not None:
        parts.append("Expires=" + formatdate(expires_at, usegmt=True))  # Go's http.TimeFormat
    if cookie.max_age > 0:
        parts.append(f"Max-Age={cookie.max_age}")
    elif cookie.max_age < 0:
        parts.append("Max-Age=0")
    if cookie.http_only:
        parts.append("HttpOnly")
    if cookie.secure:
        parts.append("Secure")
    same = {"none": "None", "lax": "Lax", "strict": "Strict"}.get(cookie.same_site.lower())
    if same:
        parts.append(f"SameSite={same}")
    return "; ".join(parts)


def parse_cookie_header(values: Sequence[str]) -> dict[str, str]:
    """name → value from Cookie header lines (the first occurrence of a name wins)."""
    out: dict[str, str] = {}
    for line in values:
        for part in line.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name and name not in out:
                out[name] = value.strip().strip('"')
    return out


# --------------------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------------------

@dataclass
class HealthBoard:
    """Up/down per target (a server URL within a service, or a service), from active checks and
    passive failure counting. Targets start healthy.

    Passive (Traefik v3.6 `passiveHealthCheck`): `max_failed` failures within `failure_window_s`
    mark the target down for `failure_window_s`; it is then tried again."""

    clock: Clock = time.monotonic
    _active_down: set[tuple[str, str]] = field(default_factory=set)
    _failures: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    _passive_until: dict[tuple[str, str], float] = field(default_factory=dict)

    def set_active(self, service: str, target: str, up: bool) -> bool:
        """Record an active probe's result; True when this changed the target's state."""
        key = (service, target)
        was_down = key in self._active_down
        if up:
            self._active_down.discard(key)
        else:
            self._active_down.add(key)
        return was_down == up

    def record_failure(self, service: str, target: str, *, window_s: float, max_failed: int) -> bool:
        """Count a passive failure; True when it marked the target down."""
        now = self.clock()
        key = (service, target)
        recent = [t for t in self._failures.get(key, []) if now - t < window_s]
        recent.append(now)
        self._failures[key] = recent
        if len(recent) >= max_failed:
            self._passive_until[key] = now + window_s
            self._failures[key] = []
            return True
        return False

    def is_up(self, service: str, target: str) -> bool:
        key = (service, target)
        if key in self._active_down:
            return False
        until = self._passive_until.get(key)
        if until is not None:
            if self.clock() < until:
                return False
            del self._passive_until[key]
        return True

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the state of services for which `keep(service)` is False (after a reload)."""
        self._active_down = {k for k in self._active_down if keep(k[0])}
        self._failures = {k: v for k, v in self._failures.items() if keep(k[0])}
        self._passive_until = {k: v for k, v in self._passive_until.items() if keep(k[0])}
