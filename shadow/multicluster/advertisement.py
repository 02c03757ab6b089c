"""The document a child serves at `GET /.hub/uplinks` on its uplink entry points, and its reading
by the parent. A version number and a kind, so a parent can refuse what it does not understand::

    {"kind": "UplinkList", "version": 1, "cluster": "vm-gw",
     "uplinks": [{"name": "orders", "weight": 100,
                  "healthCheck": {"path": "/health", "interval": 2.0, "timeout": 1.0}}]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shadow.multicluster.settings import NAME_PATTERN, Uplink, UplinkHealthCheck

__all__ = ["MAX_ADVERTISEMENT_BYTES", "AdvertisedUplink", "advertisement", "parse_advertisement"]

MAX_ADVERTISEMENT_BYTES = 1 << 20
KIND, VERSION = "UplinkList", 1


@dataclass(frozen=True)
class AdvertisedUplink:
    name: str
    weight: int
    health_check: UplinkHealthCheck | None = None


def advertisement(cluster: str, uplinks: Iterable[Uplink], entry_point: str | None = None) -> bytes:
    """The JSON a child serves: the uplinks offered on `entry_point` (None: all)."""
    items: list[dict[str, Any]] = []
    for up in uplinks:
        if entry_point is not None and up.entry_points and entry_point not in up.entry_points:
            continue
        item: dict[str, Any] = {"name": up.name, "weight": up.weight}
        if up.health_check is not None:
            hc = up.health_check
            item["healthCheck"] = {"path": hc.path, "interval": hc.interval_s, "timeout": hc.timeout_s}
        items.append(item)
    return json.dumps({"kind": KIND, "version": VERSION, "cluster": cluster, "uplinks": items},
                      separators=(",", ":")).encode()


def _number(value: Any, what: str, *, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"{what}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def parse_advertisement(body: bytes) -> tuple[AdvertisedUplink, ...]:
    """A child's advertisement, or ValueError saying what is wrong with it (one line)."""
    if len(body) > MAX_ADVERTISEMENT_BYTES:
        raise ValueError(f"advertisement larger than {MAX_ADVERTISEMENT_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ValueError(f"not an {KIND} document")
    if doc.get("version") != VERSION:
        raise ValueError(f"version {doc.get('version')!r} is not supported (expected {VERSION})")
    items = doc.get("uplinks")
    if not isinstance(items, list):
        raise ValueError("uplinks: expected a list")
    out: list[AdvertisedUplink] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"uplinks[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        name = item.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ValueError(f"{where}.name: not an uplink name: {name!r}")
        if name in seen:
            raise ValueError(f"{where}.name: {name!r} advertised twice")
        seen.add(name)
        weight = item.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 1_000_000:
            raise ValueError(f"{where}.weight: expected an integer 0..1000000, got {weight!r}")
        hc = None
        if item.get("healthCheck") is not None:
            h = item["healthCheck"]
            if not isinstance(h, dict) or not isinstance(h.get("path"), str) or not h["path"].startswith("/"):
                raise ValueError(f"{where}.healthCheck: expected {{path: /..., interval, timeout}}")
            hc = UplinkHealthCheck(h["path"], _number(h.get("interval", 5.0), f"{where}.healthCheck.interval",
                                                      minimum=0.05),
                                   _number(h.get("timeout", 2.0), f"{where}.healthCheck.timeout", minimum=0.05))
        out.append(AdvertisedUplink(name, weight, hc))
    return tuple(out)
