"""A small JSON monolith for the verdict's end-to-end tests (tests/test_e2e_verdict.py), and a bad
candidate of it: each instance runs in its own process, as a newcomer's services would.

What makes it the plainest hard case for a cutover verdict (issue #15):

- every JSON answer carries volatile fields (`generated_at` timestamp, `request_id` uuid, and an
  `X-Request-Id` header) that change on every call, on every side;
- `/anything/...` echoes the request it received (method, url, headers, args) like httpbin's, so any
  header the gateway adds to or drops from a mirror copy shows up in the candidate's body;
- transient 5xx, independent per process (each draws from its own seeded generator);
- latency with autocorrelation: a per-process AR(1) on the log scale (a slow spell lasts a while).

Data is a pure function of ids, so two processes of the same flavour agree on everything else.
The `bad` flavour renames `customer_id` → `customerId`, rounds `total` to 2 decimals, answers
/api/orders/{id} BAD_SLOWDOWN slower and /api/orders with BAD_LIST_ERROR_RATE 500s.

    python -m tests.verdict_services --flavour monolith --seed 1 --error-rate 0.005
    python -m tests.verdict_services --flavour bad --seed 2
    python -m tests.verdict_services --stable ...   # no volatile fields (A/A on status only)

Prints `LISTENING <url>` once bound (shadow.demo.processes.Supervisor waits for it); stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from shadow.demo.services import READY_PREFIX, bind_socket
from shadow.demo.traffic import PlannedRequest

Flavour = Literal["monolith", "bad"]
JsonObject = dict[str, Any]

ORDER_COUNT = 400
USER_COUNT = 120
PAGE_SIZE = 10
PAGES = ORDER_COUNT // PAGE_SIZE

# Median latency per endpoint (ms) before the AR(1) factor: well above the gateway's own few ms under
# load, so a +40 % slower endpoint is a service's change, not lost in the proxy's queueing.
BASE_LATENCY_MS = {"order": 50.0, "orders": 60.0, "user": 30.0, "anything": 10.0}
LATENCY_PHI = 0.8  # lag-1 autocorrelation of log latency between consecutive requests of one process
LATENCY_SIGMA = 0.25  # marginal standard deviation of log latency

BAD_SLOWDOWN = 1.4  # the bad candidate's /api/orders/{id} is 40 % slower
BAD_LIST_ERROR_RATE = 0.04  # and 4 % of its /api/orders answers are 500s

_FIRST = ("ada", "linus", "grace", "alan", "barbara", "ken", "margaret", "dennis", "frances", "edsger")
_LAST = ("lovelace", "torvalds", "hopper", "turing", "liskov", "thompson", "hamilton", "ritchie", "allen")
_SKUS = ("KET", "LMP", "BAG", "NTB", "MUG", "CHR", "HDP", "SCF")
_STATUSES = ("pending", "paid", "shipped", "delivered")


# ---------------------------------------------------------------- data: pure functions of ids

def _rng(kind: str, record_id: int) -> random.Random:
    return random.Random(f"{kind}:{record_id}")


def order(order_id: int) -> JsonObject | None:
    """An order as the monolith knows it; `total_mills` is exact (thousandths)."""
    if not 1 <= order_id <= ORDER_COUNT:
        return None
    rng = _rng("order", order_id)
    items: list[JsonObject] = []
    for line in range(1, rng.randint(1, 4) + 1):
        unit_mills = rng.randint(2, 90) * 1000 + rng.choice((999, 995, 500, 125, 333, 0))
        items.append({"line": line, "sku": f"{rng.choice(_SKUS)}-{rng.randint(100, 999)}",
                      "quantity": rng.randint(1, 3), "unit_price_mills": unit_mills})
    return {"id": order_id, "customer_id": rng.randint(1, USER_COUNT), "status": rng.choice(_STATUSES),
            "currency": "EUR", "items": items,
            "total_mills": sum(i["quantity"] * i["unit_price_mills"] for i in items)}


def user_slug(user_id: int) -> str:
    rng = _rng("user", user_id)
    return f"{rng.choice(_FIRST)}-{rng.choice(_LAST)}-{user_id}"


def user(slug: str) -> JsonObject | None:
    try:
        user_id = int(slug.rsplit("-", 1)[-1])
    except ValueError:
        return None
    if not 1 <= user_id <= USER_COUNT or user_slug(user_id) != slug:
        return None
    rng = _rng("user", user_id)
    first, last = slug.split("-")[:2]
    return {"slug": slug, "name": f"{first.title()} {last.title()}", "joined": f"20{rng.randint(10, 25)}-0{rng.randint(1, 9)}",
            "orders": rng.randint(0, 40)}


def render_order(o: JsonObject, flavour: Flavour) -> JsonObject:
    """The order's JSON. The bad candidate renamed a key and rounds the total to cents."""
    decimals = 2 if flavour == "bad" else 3
    items = [{"line": i["line"], "sku": i["sku"], "quantity": i["quantity"],
              "unit_price": round(i["unit_price_mills"] / 1000, 3)} for i in o["items"]]
    customer_key = "customerId" if flavour == "bad" else "customer_id"
    return {"id": o["id"], customer_key: o["customer_id"], "status": o["status"], "currency": o["currency"],
            "items": items, "total": round(o["total_mills"] / 1000, decimals)}


# ---------------------------------------------------------------- traffic

# Share of each kind of request; orders dominate, /anything is the odd echo endpoint.
MIX: tuple[tuple[str, float], ...] = (("order", 0.45), ("orders", 0.25), ("user", 0.20), ("anything", 0.10))
HOT_ORDER_SHARE = 0.6  # order lookups among the 40 most popular orders (so identical requests repeat)
MISSING_ORDER_SHARE = 0.02  # ids that do not exist: 404 on every side


def traffic_plan(count: int, seed: int) -> list[PlannedRequest]:
    """`count` GETs a shop's clients would send, the same list for the same seed."""
    rng = random.Random(seed)
    kinds, weights = [k for k, _ in MIX], [w for _, w in MIX]
    plan = []
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        match kind:
            case "order":
                if rng.random() < MISSING_ORDER_SHARE:
                    order_id = ORDER_COUNT + rng.randint(1, 100)
                else:
                    order_id = rng.randint(1, 40) if rng.random() < HOT_ORDER_SHARE else rng.randint(1, ORDER_COUNT)
                path = f"/api/orders/{order_id}"
            case "orders":
                path = f"/api/orders?page={rng.randint(1, PAGES)}"
            case "user":
                path = f"/api/users/{user_slug(rng.randint(1, USER_COUNT))}"
            case _:
                path = f"/anything/lookup?n={rng.randint(1, 20)}"
        plan.append(PlannedRequest("GET", path, kind, (("Accept", "application/json"),)))
    return plan


# ---------------------------------------------------------------- the service

@dataclass
class Behaviour:
    flavour: Flavour
    error_rate: float  # transient 5xx share on every endpoint
    volatile: bool  # stamp generated_at / request_id / X-Request-Id
    rng: random.Random
    log_factor: float = 0.0  # AR(1) state of log latency
    list_requests: int = 0  # /api/orders requests answered (the bad flavour's failing share)

    def latency_s(self, endpoint: str) -> float:
        innovation = self.rng.gauss(0.0, LATENCY_SIGMA * math.sqrt(1.0 - LATENCY_PHI ** 2))
        self.log_factor = LATENCY_PHI * self.log_factor + innovation
        ms = BASE_LATENCY_MS[endpoint] * math.exp(self.log_factor)
        if self.flavour == "bad" and endpoint == "order":
            ms *= BAD_SLOWDOWN
        return ms / 1000.0

    def fails(self, endpoint: str) -> bool:
        if self.flavour == "bad" and endpoint == "orders":
            # The bug: a fixed share of list requests fail (every 25th), not a random draw, so the
            # test's power does not hang on the luck of one run.
            self.list_requests += 1
            return self.list_requests % round(1 / BAD_LIST_ERROR_RATE) == 0
        return self.rng.random() < self.error_rate

    def stamp(self, body: JsonObject) -> JsonObject:
        if self.volatile:
            body["generated_at"] = datetime.now(UTC).isoformat(timespec="microseconds")
            body["request_id"] = str(uuid.uuid4())
        return body


Route = Callable[[web.Request], Awaitable[web.Response]]


def app(behaviour: Behaviour) -> web.Application:
    def json_response(body: JsonObject, status: int = 200) -> web.Response:
        headers = {"X-Request-Id": str(uuid.uuid4())} if behaviour.volatile else {}
        return web.json_response(behaviour.stamp(body), status=status, headers=headers)

    def endpoint(name: str, handler: Callable[[web.Request], JsonObject | None]) -> Route:
        async def handle(request: web.Request) -> web.Response:
            await asyncio.sleep(behaviour.latency_s(name))
            if behaviour.fails(name):
                return json_response({"error": "internal error"}, 500)
            body = handler(request)
            if body is None:
                return json_response({"error": "not found"}, 404)
            return json_response(body)
        return handle

    def order_detail(request: web.Request) -> JsonObject | None:
        try:
            o = order(int(request.match_info["id"]))
        except ValueError:
            return None
        return None if o is None else render_order(o, behaviour.flavour)

    def order_list(request: web.Request) -> JsonObject | None:
        try:
            page = int(request.query.get("page", "1"))
        except ValueError:
            return None
        if not 1 <= page <= PAGES:
            return None
        ids = range((page - 1) * PAGE_SIZE + 1, page * PAGE_SIZE + 1)
        orders = [render_order(o, behaviour.flavour) for o in map(order, ids) if o is not None]
        return {"page": page, "pages": PAGES, "orders": orders}

    def user_detail(request: web.Request) -> JsonObject | None:
        return user(request.match_info["slug"])

    def anything(request: web.Request) -> JsonObject | None:
        # httpbin's /anything: the request as this service received it.
        return {"method": request.method, "url": str(request.url), "args": dict(request.query),
                "headers": dict(request.headers)}

    application = web.Application()
    application.add_routes([
        web.get("/api/orders/{id}", endpoint("order", order_detail)),
        web.get("/api/orders", endpoint("orders", order_list)),
        web.get("/api/users/{slug}", endpoint("user", user_detail)),
        web.route("*", "/anything{rest:.*}", endpoint("anything", anything)),
    ])
    return application


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.verdict_services",
                                     description="Run one instance of the verdict tests' service until SIGTERM.")
    parser.add_argument("--flavour", choices=("monolith", "bad"), default="monolith")
    parser.add_argument("--seed", type=int, default=0, help="this process's own random stream")
    parser.add_argument("--error-rate", type=float, default=0.005, help="transient 5xx share")
    parser.add_argument("--stable", action="store_true", help="no volatile fields")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    behaviour = Behaviour(args.flavour, args.error_rate, not args.stable, random.Random(args.seed))
    sock = bind_socket("127.0.0.1", args.port)
    host, port = sock.getsockname()[:2]
    print(f"{READY_PREFIX}http://{host}:{port}", flush=True)
    web.run_app(app(behaviour), sock=sock, print=None, access_log=None, handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
