"""The demo's upstreams: a small shop MONOLITH and the ORDERS SERVICE extracted from it.

Data is a pure function of ids (each record seeds its own `random.Random`), so two monolith
processes and the orders service agree on every order. The orders service differs from the
monolith only where seeds.py says: a renamed field, a rounding change, a reordered list, a slower
detail endpoint and occasional 500s on the list. Both sides stamp volatile fields (`generated_at`,
`request_id`, X-Request-Id) that change on every call.

With `OTEL_EXPORTER_OTLP_ENDPOINT` set, each exports its own spans (shadow/demo/tracing.py).

Run one in its own process (prints `LISTENING <url>` once bound, stops on SIGTERM):

    python -m shadow.demo.services monolith --name monolith-a
    python -m shadow.demo.services orders
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from shadow.demo import seeds
from shadow.demo.tracing import query, setup_tracing

JsonObject = dict[str, Any]

_ADJECTIVES = ("Red", "Blue", "Quiet", "Rapid", "Sturdy", "Tiny", "Golden", "Rustic", "Smart", "Vintage")
_NOUNS = ("Kettle", "Lamp", "Backpack", "Notebook", "Mug", "Chair", "Headphones", "Scarf", "Clock", "Plant")
_CITIES = ("Lisbon", "Oslo", "Austin", "Kyoto", "Lagos", "Lima", "Porto", "Tallinn", "Perth", "Quebec")
_FIRST = ("Ada", "Linus", "Grace", "Alan", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger")
_LAST = ("Lovelace", "Torvalds", "Hopper", "Turing", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen")
_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
# Price endings in thousandths: most make a total whose third decimal is not 0, so the
# candidate's 2-decimal rounding shows on most orders but not all.
_PRICE_ENDINGS_MILLS = (999, 990, 500, 495, 250, 333, 0, 875)


# ---------------------------------------------------------------- data: pure functions of ids

@dataclass(frozen=True)
class Product:
    id: int
    sku: str
    name: str
    price_mills: int  # price in thousandths of the currency unit: 19999 = 19.999
    stock: int


@dataclass(frozen=True)
class LineItem:
    line: int  # 1-based position as entered; the monolith orders items by it
    sku: str
    name: str
    quantity: int
    unit_price_mills: int


@dataclass(frozen=True)
class Order:
    id: int
    customer_id: int
    status: str
    created_on: str
    currency: str
    card_number: str
    items: tuple[LineItem, ...]

    @property
    def total_mills(self) -> int:
        return sum(item.quantity * item.unit_price_mills for item in self.items)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str
    city: str
    card_number: str  # a legacy leak the monolith still returns; the gateway's redaction hides it


def _rng(kind: str, record_id: int) -> random.Random:
    # A string seed hashes with SHA-512 inside `random`, stable across processes and runs
    # (unlike hash(), which PYTHONHASHSEED randomizes).
    return random.Random(f"shadow-demo/{kind}/{record_id}")


def _card_number(rng: random.Random) -> str:
    return "4111" + "".join(str(rng.randrange(10)) for _ in range(12))


def product(product_id: int) -> Product | None:
    if not 1 <= product_id <= seeds.PRODUCT_COUNT:
        return None
    rng = _rng("product", product_id)
    name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
    price = rng.randrange(2, 80) * 1000 + rng.choice(_PRICE_ENDINGS_MILLS)
    # SKUs are not in id order, so sorting items by SKU really reorders them.
    sku = f"SKU-{rng.randrange(1000, 9999)}-{product_id:03d}"
    return Product(product_id, sku, name, price, rng.randrange(0, 250))


def order(order_id: int) -> Order | None:
    if not 1 <= order_id <= seeds.ORDER_COUNT:
        return None
    rng = _rng("order", order_id)
    chosen = rng.sample(range(1, seeds.PRODUCT_COUNT + 1), rng.randint(1, 5))
    items = []
    for line, product_id in enumerate(chosen, start=1):
        p = product(product_id)
        assert p is not None  # chosen from the valid range
        items.append(LineItem(line, p.sku, p.name, rng.randint(1, 3), p.price_mills))
    created = date(2026, 1, 1) + timedelta(days=rng.randrange(320))
    return Order(order_id, rng.randint(1, seeds.USER_COUNT), rng.choice(_STATUSES), created.isoformat(),
                 "EUR", _card_number(rng), tuple(items))


def user(user_id: int) -> User | None:
    if not 1 <= user_id <= seeds.USER_COUNT:
        return None
    rng = _rng("user", user_id)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return User(user_id, f"{first} {last}", f"{first}.{last}{user_id}@example.com".lower(),
                rng.choice(_CITIES), _card_number(rng))


# ---------------------------------------------------------------- rendering: monolith vs candidate

def _money(mills: int, decimals: int) -> float:
    return round(mills / 1000, decimals)


def _item_json(item: LineItem) -> JsonObject:
    return {"line": item.line, "sku": item.sku, "name": item.name, "quantity": item.quantity,
            "unit_price": _money(item.unit_price_mills, 3)}


def monolith_order_json(o: Order) -> JsonObject:
    return {
        "id": o.id,
        "customer_id": o.customer_id,
        "status": o.status,
        "created_on": o.created_on,
        "currency": o.currency,
        "items": [_item_json(i) for i in sorted(o.items, key=lambda i: i.line)],
        "total": _money(o.total_mills, seeds.MONOLITH_TOTAL_DECIMALS),
        "payment": {"method": "card", "card_number": o.card_number},
    }


def candidate_order_json(o: Order) -> JsonObject:
    """The orders service's rendering: same data, the seeded differences (see seeds.py)."""
    return {
        "id": o.id,
        "customerId": o.customer_id,  # seeded: renamed field
        "status": o.status,
        "created_on": o.created_on,
        "currency": o.currency,
        "items": [_item_json(i) for i in sorted(o.items, key=lambda i: i.sku)],  # seeded: order
        "total": _money(o.total_mills, seeds.CANDIDATE_TOTAL_DECIMALS),  # seeded: rounding
        "payment": {"method": "card", "card_number": o.card_number},
    }


def product_json(p: Product) -> JsonObject:
    return {"id": p.id, "sku": p.sku, "name": p.name, "price": _money(p.price_mills, 3), "stock": p.stock}


def user_json(u: User) -> JsonObject:
    return {"id": u.id, "name": u.name, "email": u.email, "city": u.city, "card_number": u.card_number}


def order_page_ids(page: int) -> list[int]:
    first = (page - 1) * seeds.ORDERS_PAGE_SIZE + 1
    return [i for i in range(first, first + seeds.ORDERS_PAGE_SIZE) if 1 <= i <= seeds.ORDER_COUNT]


def page_count() -> int:
    return -(-seeds.ORDER_COUNT // seeds.ORDERS_PAGE_SIZE)


# ---------------------------------------------------------------- HTTP: aiohttp apps

def _respond(body: JsonObject, status: int = 200) -> web.Response:
    """A JSON answer stamped with the volatile fields every instance adds (seeds.VOLATILE_*)."""
    request_id = uuid.uuid4().hex
    # A fixed-width timestamp: isoformat() drops ".000000", which would change the body length.
    generated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stamped = {**body, "generated_at": generated_at, "request_id": request_id}
    return web.Response(status=status, text=json.dumps(stamped), content_type="application/json",
                        headers={"X-Request-Id": request_id})


def _error(status: int, message: str) -> web.Response:
    return _respond({"error": message}, status)


def _int_param(value: str | None, default: int) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        return None


def _path_id(request: web.Request) -> int | None:
    try:
        return int(request.match_info["id"])
    except ValueError:
        return None


@dataclass(frozen=True)
class NewOrder:
    customer_id: int
    items: tuple[tuple[int, int], ...]  # (product id, quantity)
    card_number: str


def parse_new_order(payload: object) -> NewOrder | str:
    """Validate a POST /api/orders body; a string is the reason it was rejected."""
    if not isinstance(payload, Mapping):
        return "body must be a JSON object"
    customer = payload.get("customer_id", payload.get("customerId"))
    if not isinstance(customer, int) or user(customer) is None:
        return "customer_id must name an existing user"
    raw_items = payload.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        return "items must be a non-empty list"
    items = []
    for n, raw in enumerate(raw_items):
        if not isinstance(raw, Mapping):
            return f"items[{n}] must be an object"
        product_id, quantity = raw.get("product_id"), raw.get("quantity", 1)
        if not isinstance(product_id, int) or product(product_id) is None:
            return f"items[{n}].product_id must name an existing product"
        if not isinstance(quantity, int) or not 1 <= quantity <= 99:
            return f"items[{n}].quantity must be an integer 1..99"
        items.append((product_id, quantity))
    payment = payload.get("payment")
    card = payment.get("card_number") if isinstance(payment, Mapping) else None
    if not isinstance(card, str) or not card.isdigit() or len(card) != 16:
        return "payment.card_number must be 16 digits"
    return NewOrder(customer, tuple(items), card)


def build_order(order_id: int, new: NewOrder) -> Order:
    items = []
    for line, (product_id, quantity) in enumerate(new.items, start=1):
        p = product(product_id)
        assert p is not None  # validated by parse_new_order
        items.append(LineItem(line, p.sku, p.name, quantity, p.price_mills))
    return Order(order_id, new.customer_id, "pending", datetime.now(UTC).date().isoformat(), "EUR",
                 new.card_number, tuple(items))


def _orders_routes(render: Callable[[Order], JsonObject], *, detail_delay: Callable[[], float],
                   list_fails: Callable[[], bool], joins: tuple[str, ...] = ()) -> list[web.RouteDef]:
    """Routes of /api/orders*, shared by the monolith and the service; `render` sets the dialect.
    Each data access is a traced query (shadow/demo/tracing.py); `joins` are the tables the
    monolith also reads to show an order (its coupling), and the candidate's seeded delay sits in
    its order lookup."""
    # Created orders get ids after the seeded ones and are not stored: the data stays a pure
    # function of ids, and two monolith processes never disagree about an order that exists.
    next_id = [seeds.ORDER_COUNT + 1]

    async def list_orders(request: web.Request) -> web.Response:
        if list_fails():
            return _error(500, "internal error")
        page = _int_param(request.query.get("page"), 1)
        if page is None or page < 1:
            return _error(400, "page must be a positive integer")
        with query("SELECT", "orders"):
            orders = [o for o in map(order, order_page_ids(page)) if o is not None]
        with query("SELECT", "order_items"):
            rendered = [render(o) for o in orders]
        return _respond({"page": page, "pages": page_count(), "orders": rendered})

    async def get_order(request: web.Request) -> web.Response:
        order_id = _path_id(request)
        with query("SELECT", "orders"):
            delay = detail_delay()
            if delay > 0:
                await asyncio.sleep(delay)
            o = order(order_id) if order_id is not None else None
        if o is None:
            return _error(404, f"no order {request.match_info['id']}")
        with query("SELECT", "order_items"):
            body = render(o)
        for table in joins:
            with query("SELECT", table):
                pass
        return _respond(body)

    async def create_order(request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            return _error(400, "body must be JSON")
        with query("SELECT", "users"), query("SELECT", "products"):  # validation reads both
            new = parse_new_order(payload)
        if isinstance(new, str):
            return _error(400, new)
        with query("INSERT", "orders"), query("INSERT", "order_items"):
            created = build_order(next_id[0], new)
            next_id[0] += 1
        return _respond(render(created), 201)

    return [web.get("/api/orders", list_orders), web.get("/api/orders/{id}", get_order),
            web.post("/api/orders", create_order)]


def _health(instance: str) -> Callable[[web.Request], Any]:
    async def health(request: web.Request) -> web.Response:
        return _respond({"status": "ok", "instance": instance})

    return health


def monolith_app(instance: str = "monolith") -> web.Application:
    """The shop monolith: orders, products, users, health and an HTML home page."""

    async def home(request: web.Request) -> web.Response:
        with query("SELECT", "products"):
            rows = "".join(
                f"<li><a href='/api/products/{p.id}'>{p.name}</a> {_money(p.price_mills, 3)} EUR</li>"
                for p in map(product, range(1, 11)) if p is not None)
        html = (f"<!doctype html><html><head><title>Acme Shop</title></head><body><h1>Acme Shop</h1>"
                f"<ul>{rows}</ul><footer>rendered {datetime.now(UTC).isoformat()}</footer></body></html>")
        return web.Response(text=html, content_type="text/html")

    async def list_products(request: web.Request) -> web.Response:
        with query("SELECT", "products"):
            products = [product_json(p) for p in map(product, range(1, seeds.PRODUCT_COUNT + 1)) if p is not None]
        return _respond({"products": products})

    async def get_product(request: web.Request) -> web.Response:
        product_id = _path_id(request)
        with query("SELECT", "products"):
            p = product(product_id) if product_id is not None else None
        if p is None:
            return _error(404, f"no product {request.match_info['id']}")
        return _respond(product_json(p))

    async def get_user(request: web.Request) -> web.Response:
        user_id = _path_id(request)
        with query("SELECT", "users"):
            u = user(user_id) if user_id is not None else None
        if u is None:
            return _error(404, f"no user {request.match_info['id']}")
        return _respond(user_json(u))

    app = web.Application()
    app.add_routes([
        web.get("/", home),
        web.get("/health", _health(instance)),
        web.get("/api/products", list_products),
        web.get("/api/products/{id}", get_product),
        web.get("/api/users/{id}", get_user),
        *_orders_routes(monolith_order_json, detail_delay=lambda: 0.0, list_fails=lambda: False,
                        joins=("products", "users")),
    ])
    setup_tracing(app, instance)
    return app


def orders_service_app(*, extra_latency_ms: float = seeds.CANDIDATE_EXTRA_LATENCY_MS,
                       jitter_ms: float = seeds.CANDIDATE_LATENCY_JITTER_MS,
                       error_rate: float = seeds.CANDIDATE_ERROR_RATE, seed: int = 0) -> web.Application:
    """The extracted orders service: /api/orders* with the seeded differences."""
    rng = random.Random(seed)  # drives only the seeded latency and errors, never the data

    def detail_delay() -> float:
        return max(0.0, extra_latency_ms + rng.uniform(-jitter_ms, jitter_ms)) / 1000

    def list_fails() -> bool:
        return rng.random() < error_rate

    app = web.Application()
    app.add_routes([
        web.get("/health", _health("orders")),
        *_orders_routes(candidate_order_json, detail_delay=detail_delay, list_fails=list_fails),
    ])
    setup_tracing(app, "orders")
    return app


# ---------------------------------------------------------------- process entry point

def bind_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    return sock


READY_PREFIX = "LISTENING "


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shadow.demo.services",
                                     description="Run one demo upstream until SIGTERM.")
    parser.add_argument("kind", choices=("monolith", "orders"))
    parser.add_argument("--name", default=None, help="instance name (shown by /health)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed when ready)")
    parser.add_argument("--error-rate", type=float, default=seeds.CANDIDATE_ERROR_RATE)
    parser.add_argument("--extra-latency-ms", type=float, default=seeds.CANDIDATE_EXTRA_LATENCY_MS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "monolith":
        app = monolith_app(args.name or "monolith")
    else:
        app = orders_service_app(extra_latency_ms=args.extra_latency_ms, error_rate=args.error_rate,
                                 seed=args.seed)
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    # The parent waits for this line: it means the socket accepts connections now.
    print(f"{READY_PREFIX}http://{host}:{port}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
