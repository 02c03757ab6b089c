"""`strategy: p2c` and `strategy: leasttime` in a real gateway: a Traefik file using them loads,
serves, and leasttime moves traffic off a slow server by its measured time to first byte."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.upstream import Upstream

CONFIG = """\
http:
  routers:
    p2c: {{rule: "PathPrefix(`/p2c`)", service: p2c}}
    lt: {{rule: "PathPrefix(`/lt`)", service: lt}}
  services:
    p2c:
      loadBalancer:
        strategy: p2c
        servers: [{{url: "{a}"}}, {{url: "{b}"}}]
    lt:
      loadBalancer:
        strategy: leasttime
        servers: [{{url: "{a}"}}, {{url: "{slow}"}}]
shadow:
  capture: {{dir: "{capture}", segmentSeconds: 1, mode: thread}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, dict[str, Upstream]]]:
    ups = {"a": Upstream("a").start(), "b": Upstream("b").start(), "slow": Upstream("slow", delay=0.3).start()}
    root: Path = tmp_path_factory.mktemp("lb-e2e")
    cfg = root / "gateway.yaml"
    cfg.write_text(CONFIG.format(**{n: u.url for n, u in ups.items()}, capture=root / "capture"))
    try:
        with GatewayProcess(cfg) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
            yield client, ups
    finally:
        for u in ups.values():
            u.stop()


def test_p2c_serves_from_both_servers(gateway: tuple[httpx.Client, dict[str, Upstream]]) -> None:
    client, _ = gateway
    served = Counter(client.get(f"/p2c/{i}").json()["upstream"] for i in range(20))
    # Sequential requests: nothing is in flight at each choice, so the first of two random draws
    # wins: both servers serve, neither all of it (20 fair draws all alike: p = 2 × 2^-20).
    assert set(served) == {"a", "b"} and sum(served.values()) == 20


def test_leasttime_moves_traffic_off_the_slow_server(gateway: tuple[httpx.Client, dict[str, Upstream]]) -> None:
    client, _ = gateway
    served = Counter(client.get(f"/lt/{i}").json()["upstream"] for i in range(12))
    # Cold start: both score 0 and share by round-robin until each has answered once; then the
    # slow server's 300 ms mean keeps it out for as long as the fast one answers faster.
    assert served["slow"] <= 2 and served["a"] >= 10, served
