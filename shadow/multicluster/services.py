"""The parent's side of the bridge as plain functions: what each child advertised (and when it last
answered) → the services the parent serves.

Per uplink `U` advertised by children `a` and `b`:

- `a/U@multicluster`, `b/U@multicluster`: one loadBalancer each, its server the child's uplink entry
  point (`https://…/.hub/uplink/U`, path preserved) reached with the provider's mutual-TLS transport,
  health-checked with the uplink's advertised health check;
- `U@multicluster`: one loadBalancer over the same servers, each weighted by its child's uplink
  weight (WRR; weight 0 leaves it out), with the uplink's health check (the first child's that
  advertises one), so a child whose checks fail is skipped (failover to the others). A loadBalancer
  rather than a `weighted` service: it can be the main service of a mirroring (the gateway mirrors
  from loadBalancers only).

Routers, mirrors and failovers of the parent's file name them like any service. A name the file uses
that no child advertises (yet) is a service without servers: 503 until one does.

A child that stops answering keeps its last advertisement for `gracePeriod` (its health checks take
it out of rotation meanwhile), then is dropped: a short outage or a parent restart of the poll does not
reshuffle the configuration, a child gone for good stops being tried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from shadow.gateway.config import (
    HealthCheck,
    LoadBalancerService,
    Server,
    Service,
)
from shadow.multicluster.advertisement import AdvertisedUplink
from shadow.multicluster.settings import UPLINK_PREFIX, MultiCluster

__all__ = ["PROVIDER_SUFFIX", "ChildState", "child_service_name", "current_uplinks", "uplink_services"]

PROVIDER_SUFFIX = "@multicluster"


@dataclass(frozen=True)
class ChildState:
    """What the parent knows of one child: its last good advertisement and when it came."""

    name: str
    uplinks: tuple[AdvertisedUplink, ...] = ()
    last_ok: float | None = None  # monotonic time of the last good poll; None: never answered
    error: str = ""  # the last poll's problem ("" when it answered)

    def polled(self, now: float, uplinks: tuple[AdvertisedUplink, ...] | None, error: str = "") -> ChildState:
        """The state after a poll: a good answer replaces the advertisement; a failure keeps it."""
        if uplinks is not None:
            return ChildState(self.name, uplinks, now, "")
        return ChildState(self.name, self.uplinks, self.last_ok, error)


def current_uplinks(states: Iterable[ChildState], now: float, grace_s: float) -> dict[str, tuple[AdvertisedUplink, ...]]:
    """child → its uplinks, for the children that answered within the grace period."""
    return {s.name: s.uplinks for s in states if s.last_ok is not None and now - s.last_ok <= grace_s}


def child_service_name(child: str, uplink: str) -> str:
    return f"{child}/{uplink}{PROVIDER_SUFFIX}"


def uplink_services(provider: MultiCluster, advertised: Mapping[str, tuple[AdvertisedUplink, ...]],
                    referenced: Iterable[str] = ()) -> dict[str, Service]:
    """The services for `advertised` (child → uplinks), plus an empty (503) one for each name of
    `referenced` ending in @multicluster that nothing advertises."""
    addresses = {c.name: c.address for c in provider.children}
    out: dict[str, Service] = {}
    by_uplink: dict[str, list[tuple[Server, int, HealthCheck | None]]] = {}
    for child in sorted(advertised):
        if child not in addresses:
            continue
        parts = urlsplit(addresses[child])
        host, port = (parts.hostname or "").lower(), parts.port or 443
        for up in advertised[child]:
            name = child_service_name(child, up.name)
            path = UPLINK_PREFIX + up.name
            netloc = f"[{host}]" if ":" in host else host
            server = Server(f"https://{netloc}:{port}{path}", "https", host, port, path, 1, True, provider.transport)
            hc = None
            if up.health_check is not None:
                h = up.health_check
                hc = HealthCheck(h.path, interval_s=h.interval_s, unhealthy_interval_s=h.interval_s,
                                 timeout_s=h.timeout_s)
            out[name] = LoadBalancerService(name, (server,), health_check=hc)
            by_uplink.setdefault(up.name, []).append((server, up.weight, hc))
    for uplink, children in by_uplink.items():
        name = uplink + PROVIDER_SUFFIX
        servers = tuple(replace(server, weight=weight) for server, weight, _ in children if weight > 0)
        checks = [hc for _, _, hc in children if hc is not None]
        out[name] = LoadBalancerService(name, servers, health_check=checks[0] if checks else None)
    for name in referenced:
        if name.endswith(PROVIDER_SUFFIX) and name not in out:
            out[name] = LoadBalancerService(name, (), empty_status=503)
    return out
