"""The router table: every router in the order it is tried, with where it sends traffic.

One description serves `shadow config check -v` (text) and the live view's router page (HTML), so
the two never disagree about what a router does."""

from __future__ import annotations

from dataclasses import dataclass

from shadow.gateway.config import FailoverService, GatewayConfig, MirroringService, Router, WeightedService
from shadow.gateway.routing import plan_route

__all__ = ["RouterRow", "router_table", "split_warnings"]


@dataclass(frozen=True)
class MirrorCell:
    name: str
    share: str  # "100%" or "1/3" (a Gateway API fraction)
    role: str  # candidate | secondary (shadow.mirroring.targets; candidate when undeclared)


@dataclass(frozen=True)
class RouterRow:
    priority: int
    name: str
    rule: str
    service: str  # the router's service ("" for a parent router: middlewares only)
    target: str  # where a request goes: the main service, or the weighted / failover service's name
    split: tuple[tuple[str, int], ...]  # a weighted service's children and their weights
    fallback: str | None  # a failover service's fallback
    mirrors: tuple[MirrorCell, ...]
    middlewares: tuple[str, ...]
    parents: tuple[str, ...]
    entry_points: tuple[str, ...]

    def line(self) -> str:
        """`config check -v`'s line: priority, name, rule -> target (+ mirrors), middlewares, parents."""
        if not self.service:
            return (f"{self.priority:>6}  {self.name}: {self.rule} -> (children) via "
                    f"{', '.join(self.middlewares) or 'no middleware'}")
        target = self.target
        if self.mirrors:
            target += " + mirrors " + ", ".join(f"{m.name} {m.share}" for m in self.mirrors)
        middlewares = f" via {', '.join(self.middlewares)}" if self.middlewares else ""
        parents = f" (child of {', '.join(self.parents)})" if self.parents else ""
        return f"{self.priority:>6}  {self.name}: {self.rule} -> {target}{middlewares}{parents}"


def _row(config: GatewayConfig, router: Router) -> RouterRow:
    split: tuple[tuple[str, int], ...] = ()
    fallback: str | None = None
    mirrors: tuple[MirrorCell, ...] = ()
    target = ""
    if router.service:
        plan = plan_route(config, router)
        service = config.services[router.service]
        if isinstance(service, WeightedService):
            split = tuple((c.name, c.weight) for c in service.services)
        if isinstance(service, FailoverService):
            fallback = service.fallback
        mirrors = tuple(
            MirrorCell(m.spec.name, f"{m.spec.percent}%" if m.spec.denominator == 100
                       else f"{m.spec.percent}/{m.spec.denominator}", config.shadow.mirroring.target(m.spec.name).role)
            for m in plan.mirrors)
        target = router.service if plan.controlled else plan.primary.name  # weighted, failover: its own name
    return RouterRow(priority=router.priority, name=router.name, rule=router.rule.text, service=router.service,
                     target=target, split=split, fallback=fallback, mirrors=mirrors, middlewares=router.middlewares,
                     parents=router.parent_refs, entry_points=router.entry_points)


def router_table(config: GatewayConfig) -> list[RouterRow]:
    """One row per router, in the order the gateway tries them (priority, then name)."""
    return [_row(config, router) for router in config.routers]


def _first_weighted(config: GatewayConfig, name: str, depth: int = 0) -> WeightedService | None:
    """The weighted service whose choice makes a request split traffic (the first one on its path)."""
    service = config.services.get(name)
    while isinstance(service, MirroringService):
        service = config.services.get(service.service)
    if isinstance(service, WeightedService):
        return service
    if isinstance(service, FailoverService) and depth < 32:
        return _first_weighted(config, service.service, depth + 1)
    return None


def split_warnings(config: GatewayConfig) -> list[str]:
    """A routed weighted service none of whose children is a declared candidate (shadow.split.candidates):
    every answer is captured as the primary's, and the split traffic can never be judged."""
    candidates = set(config.shadow.split.candidates)
    out: list[str] = []
    seen: set[str] = set()
    for router in config.routers:
        weighted = _first_weighted(config, router.service) if router.service else None
        if weighted is None or weighted.name in seen:
            continue
        seen.add(weighted.name)
        children = [c.name for c in weighted.services]
        if not candidates.intersection(children):
            out.append(f"weighted service {weighted.name!r} (router {router.name!r}) splits traffic between "
                       f"{', '.join(children)}, but none of them is in shadow.split.candidates: every answer is "
                       "captured as the primary's, so the split cannot be judged; list the new service there")
    return out
