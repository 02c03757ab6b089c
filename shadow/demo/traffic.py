"""The demo's load driver: a deterministic plan of shop traffic, sent through the gateway with
bounded concurrency, bounded count and bounded time.

`plan_requests` is pure (same seed, same plan); `drive` only sends what it is given.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tqdm import tqdm

from shadow.demo import seeds
from shadow.errors import ShadowError
from shadow.signals import run_until_stop_signal

# Share of each kind of request in the plan. Orders dominate: that is the route being extracted.
MIX: tuple[tuple[str, float], ...] = (
    ("order_detail", 0.40),
    ("order_list", 0.20),
    ("order_create", 0.04),
    ("product_detail", 0.14),
    ("product_list", 0.05),
    ("user_detail", 0.08),
    ("home", 0.05),
    ("health", 0.04),
)
AUTHORIZED_SHARE = 0.4  # requests carrying `Authorization: Bearer …` (the gateway must redact it)
MISSING_ORDER_SHARE = 0.02  # order lookups for ids that do not exist (404 on every side)
HOT_ORDER_SHARE = 0.6  # share of order lookups that hit the 50 most popular orders


@dataclass(frozen=True)
class PlannedRequest:
    method: str
    path: str  # with query
    kind: str  # the MIX entry it came from
    headers: tuple[tuple[str, str], ...] = ()
    json_body: dict[str, Any] | None = None


def _order_id(rng: random.Random) -> int:
    if rng.random() < MISSING_ORDER_SHARE:
        return seeds.ORDER_COUNT + rng.randint(1, 1000)
    if rng.random() < HOT_ORDER_SHARE:
        return rng.randint(1, 50)
    return rng.randint(1, seeds.ORDER_COUNT)


def _new_order(rng: random.Random, customer: int) -> dict[str, Any]:
    products = rng.sample(range(1, seeds.PRODUCT_COUNT + 1), rng.randint(1, 3))
    return {
        "customer_id": customer,
        "items": [{"product_id": p, "quantity": rng.randint(1, 3)} for p in products],
        "payment": {"card_number": "4111" + "".join(str(rng.randrange(10)) for _ in range(12))},
    }


def plan_requests(count: int, seed: int = 2026) -> list[PlannedRequest]:
    """`count` requests of shop traffic, the same list for the same seed."""
    if count < 0:
        raise ValueError("count must be >= 0")
    rng = random.Random(seed)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    pages = -(-seeds.ORDER_COUNT // seeds.ORDERS_PAGE_SIZE)
    plan = []
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        customer = rng.randint(1, seeds.USER_COUNT)
        headers: list[tuple[str, str]] = [("Accept", "application/json"), ("X-Demo-Client", f"user-{customer}")]
        if rng.random() < AUTHORIZED_SHARE:
            headers.append(("Authorization", f"Bearer demo-token-{customer:04d}"))
        body: dict[str, Any] | None = None
        method = "GET"
        match kind:
            case "order_detail":
                path = f"/api/orders/{_order_id(rng)}"
            case "order_list":
                path = f"/api/orders?page={rng.randint(1, pages)}"
            case "order_create":
                method, path, body = "POST", "/api/orders", _new_order(rng, customer)
            case "product_detail":
                path = f"/api/products/{rng.randint(1, seeds.PRODUCT_COUNT)}"
            case "product_list":
                path = "/api/products"
            case "user_detail":
                path = f"/api/users/{customer}"
            case "home":
                path, headers[0] = "/", ("Accept", "text/html")
            case _:
                path = "/health"
        plan.append(PlannedRequest(method, path, kind, tuple(headers), body))
    return plan


@dataclass
class DriveResult:
    planned: int
    sent: int = 0
    transport_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    stopped_by_deadline: bool = False
    stopped_by_failures: bool = False  # gave up after many transport errors in a row
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


# Give up when this many requests in a row failed without any answer: the gateway is not there.
_CONSECUTIVE_FAILURES_TO_ABORT = 25


async def drive_async(base_url: str, plan: Sequence[PlannedRequest], *, concurrency: int = 8,
                      max_seconds: float = 60.0, timeout_s: float = 10.0,
                      progress: bool = True) -> DriveResult:
    """Send `plan` to `base_url` with at most `concurrency` requests in flight; stop at the end
    of the plan or after `max_seconds`, whichever comes first."""
    result = DriveResult(planned=len(plan))
    started = time.monotonic()
    deadline = started + max_seconds
    queue = iter(plan)
    consecutive_failures = 0
    bar = tqdm(total=len(plan), unit="req", desc="traffic", disable=not progress, leave=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal consecutive_failures
        for req in queue:  # a shared iterator: each request is taken by exactly one worker
            if time.monotonic() >= deadline:
                result.stopped_by_deadline = True
                return
            if consecutive_failures >= _CONSECUTIVE_FAILURES_TO_ABORT:
                return
            try:
                async with session.request(req.method, base_url + req.path, headers=list(req.headers),
                                           json=req.json_body) as resp:
                    await resp.read()
                    result.statuses[resp.status] += 1
                    consecutive_failures = 0
            except (aiohttp.ClientError, TimeoutError) as e:
                result.transport_errors += 1
                consecutive_failures += 1
                if result.first_error is None:
                    result.first_error = f"{req.method} {req.path}: {type(e).__name__}: {e}"
            result.sent += 1
            bar.update(1)

    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(max(1, concurrency))))
    finally:
        bar.close()
        result.elapsed_s = time.monotonic() - started
    if consecutive_failures >= _CONSECUTIVE_FAILURES_TO_ABORT:
        if not result.statuses:
            raise ShadowError(f"nothing answers at {base_url}: {result.first_error}")
        result.stopped_by_failures = True
    return result


def drive(base_url: str, plan: Sequence[PlannedRequest], *, concurrency: int = 8, max_seconds: float = 60.0,
          timeout_s: float = 10.0, progress: bool = True) -> DriveResult:
    """Blocking form of `drive_async`. SIGINT or SIGTERM stops the traffic cleanly and raises
    KeyboardInterrupt (the demo then seals and shows what was captured)."""
    return run_until_stop_signal(drive_async(base_url, plan, concurrency=concurrency, max_seconds=max_seconds,
                                   timeout_s=timeout_s, progress=progress))
