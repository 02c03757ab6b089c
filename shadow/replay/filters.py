"""Which recorded requests a replay sends, and how it rewrites them (pure functions).

Selection mirrors GoReplay's options (method/path/host filters, percentage sampling, consistent
hashing of a header) plus the gateway's rule that unsafe methods are never re-sent by accident.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from shadow.errors import ConfigError
from shadow.replay.sources import Headers, SourceEntry

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Replayed traffic is marked so a service can tell it from users' (same rule as mirroring).
REPLAY_MARKERS: Headers = [("X-Shadow-Request", "1"), ("X-Shadow-Replay", "1")]


def fnv1a_32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def parse_status(spec: str) -> tuple[int, int]:
    """`200` → (200, 200); `5xx` → (500, 599)."""
    s = spec.strip().lower()
    if re.fullmatch(r"[1-5]xx", s):
        base = int(s[0]) * 100
        return base, base + 99
    if re.fullmatch(r"\d{3}", s):
        return int(s), int(s)
    raise ConfigError(f"{spec!r} is not a status code or class (e.g. 200, 5xx)", field="--status")


@dataclass(frozen=True)
class EntryFilter:
    methods: frozenset[str] = frozenset()  # empty: any
    path: re.Pattern[str] | None = None  # searched in path?query
    hosts: frozenset[str] = frozenset()  # recorded Host, without port, lower case
    statuses: tuple[tuple[int, int], ...] = ()  # recorded status ranges
    sample_percent: float | None = None  # deterministic per entry
    hash_header: str | None = None
    hash_percent: float | None = None
    allow_unsafe: bool = False

    def reject(self, entry: SourceEntry) -> str | None:
        """None to send the entry, else why not: "unsafe" or "filtered"."""
        if self.methods and entry.method not in self.methods:
            return "filtered"
        if self.path is not None and not self.path.search(entry.target):
            return "filtered"
        if self.hosts and hostname_of(entry.host) not in self.hosts:
            return "filtered"
        if self.statuses:
            status = entry.recorded.status if entry.recorded else None
            if status is None or not any(lo <= status <= hi for lo, hi in self.statuses):
                return "filtered"
        if self.sample_percent is not None and not _sampled(entry, self.sample_percent):
            return "filtered"
        if self.hash_header and self.hash_percent is not None:
            value = entry.header(self.hash_header)
            # As GoReplay: requests without the header pass; with it, the same value always lands
            # on the same side, so a user's whole session is either replayed or not.
            if value is not None and fnv1a_32(value.encode()) % 100 >= self.hash_percent:
                return "filtered"
        if entry.method == "CONNECT":
            return "filtered"
        if entry.method in UNSAFE_METHODS and not self.allow_unsafe:
            return "unsafe"
        return None


def hostname_of(host: str) -> str:
    """Host without port, lower case (IPv6 literals keep their brackets)."""
    h = host.lower()
    if h.startswith("["):
        return h.split("]")[0] + "]"
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _sampled(entry: SourceEntry, percent: float) -> bool:
    # Keyed on what the request is, not on when it was read, so reruns pick the same requests.
    key = f"{entry.index}\0{entry.method}\0{entry.host}\0{entry.target}".encode()
    bucket = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % 10_000
    return bucket < percent * 100


@dataclass(frozen=True)
class Rewrite:
    set_headers: Headers = field(default_factory=list)
    remove_headers: frozenset[str] = frozenset()  # lower case
    host: str | None = None  # Host header to send; None: the target's own host
    keep_host: bool = False  # send the recorded Host (GoReplay --http-original-host)
    path_prefixes: tuple[tuple[str, str], ...] = ()  # (old, new): first match wins

    def path(self, path: str) -> str:
        for old, new in self.path_prefixes:
            if path.startswith(old):
                return new + path[len(old):]
        return path

    @cached_property
    def _set_names(self) -> frozenset[str]:
        return frozenset(k.lower() for k, _ in self.set_headers)

    @cached_property
    def _dropped(self) -> frozenset[str]:
        replaced = {k.lower() for k, _ in self.set_headers} | {k.lower() for k, _ in REPLAY_MARKERS}
        return self.remove_headers | replaced | {"host"}

    def headers(self, entry: SourceEntry, target_netloc: str) -> Headers:
        """Headers to send to one target: recorded, minus removed, plus set, plus replay markers."""
        drop = self._dropped
        out = [(k, v) for k, v in entry.headers if k.lower() not in drop]
        if "host" in self._set_names:  # --set-header Host:... wins over every other Host rule
            return [*out, *self.set_headers, *REPLAY_MARKERS]
        if self.host is not None:
            host = self.host
        elif self.keep_host:
            host = entry.host
        else:
            host = target_netloc
        out.insert(0, ("Host", host))
        out.extend(self.set_headers)
        out.extend(REPLAY_MARKERS)
        return out


def parse_set_headers(specs: Iterable[str]) -> Headers:
    out: Headers = []
    for spec in specs:
        name, sep, value = spec.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"{spec!r} is not NAME:VALUE", field="--set-header")
        out.append((name.strip(), value.strip()))
    return out


def parse_path_rewrites(specs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for spec in specs:
        old, sep, new = spec.partition(":")
        if not sep or not old.startswith("/") or (new and not new.startswith("/")):
            raise ConfigError(f"{spec!r} is not OLD:NEW with both prefixes starting with /",
                              field="--rewrite-path")
        out.append((old, new))
    return tuple(out)


def compile_path(regex: str | None) -> re.Pattern[str] | None:
    if regex is None:
        return None
    try:
        return re.compile(regex)
    except re.error as e:
        raise ConfigError(f"invalid regular expression {regex!r}: {e}", field="--path") from None


def check_percent(value: float | None, option: str) -> float | None:
    if value is not None and not 0 <= value <= 100:
        raise ConfigError(f"{value} is not a percentage between 0 and 100", field=option)
    return value
