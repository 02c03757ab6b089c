"""Traefik's highest-random-weight tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/server/service/loadbalancer/hrw/hrw_test.go. The client IPs come from a seeded generator (Go's
math/rand sequence for seed 12345 is not reproduced; the tests' margins are statistical, ±10 of
100). Not applicable: TestSticky_nginxUpstreamHashBy (`nginxUpstreamHashBy` is set by Traefik's
ingress-nginx provider, not a file option), TestBalancerPropagate (parent status hooks).
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

from shadow.gateway.traffic import hrw_pick


def ips(n: int, seed: int = 12345) -> list[str]:
    rng = random.Random(seed)
    return [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(n)]


def test_balancer() -> None:
    served = Counter(hrw_pick(ip, [("first", 4), ("second", 1)]) for ip in ips(100))
    assert abs(served["first"] - 80) <= 10 and abs(served["second"] - 20) <= 10


def test_balancer_no_service() -> None:
    assert hrw_pick("192.0.2.1", []) is None


def test_balancer_one_server_zero_weight() -> None:
    assert [hrw_pick(ip, [("first", 1), ("second", 0)]) for ip in ips(3)] == ["first"] * 3


def test_balancer_no_service_up() -> None:
    assert hrw_pick("192.0.2.1", [("first", 1), ("second", 1)], lambda _n: False) is None


def test_balancer_one_server_down() -> None:
    assert [hrw_pick(ip, [("first", 1), ("second", 1)], lambda n: n != "second") for ip in ips(3)] == ["first"] * 3


def test_balancer_down_then_up() -> None:
    children = [("first", 1), ("second", 1)]
    assert [hrw_pick(ip, children, lambda n: n != "second") for ip in ips(3)] == ["first"] * 3
    served = Counter(hrw_pick(ip, children) for ip in ips(100, seed=1))
    assert abs(served["first"] - 50) <= 10 and abs(served["second"] - 50) <= 10


def test_balancer_all_servers_zero_weight() -> None:
    assert hrw_pick("192.0.2.1", [("test", 0), ("test2", 0)]) is None


def test_sticky() -> None:
    (ip,) = ips(1)
    served = Counter(hrw_pick(ip, [("first", 1), ("second", 2)]) for _ in range(10))
    assert len(served) == 1 and sum(served.values()) == 10  # one client, one server, every time
