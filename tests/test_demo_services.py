"""The demo upstreams: real processes on 127.0.0.1, checked for every behaviour seeds.py promises."""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shadow.demo import seeds, services
from shadow.demo.processes import Child, Supervisor, service_argv
from shadow.errors import ShadowError

VOLATILE_KEYS = {pointer.lstrip("/") for pointer in seeds.VOLATILE_BODY_FIELDS}


def stable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in VOLATILE_KEYS}


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Child]]:
    with Supervisor(tmp_path_factory.mktemp("logs")) as sup:
        yield sup.start_services({
            "monolith-a": service_argv("monolith", "--name", "monolith-a"),
            "monolith-b": service_argv("monolith", "--name", "monolith-b"),
            "orders": service_argv("orders"),
            "orders-failing": service_argv("orders", "--error-rate", "1", "--extra-latency-ms", "0"),
        })


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as c:
        yield c


def get(client: httpx.Client, child: Child, path: str, status: int = 200) -> dict[str, Any]:
    resp = client.get(child.url + path)
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    return body


# ---------------------------------------------------------------- data, without a server

def test_data_is_a_pure_function_of_ids() -> None:
    assert services.order(42) == services.order(42)
    assert services.product(7) == services.product(7)
    assert services.user(3) == services.user(3)
    assert services.order(42) != services.order(43)
    assert services.order(0) is None and services.order(seeds.ORDER_COUNT + 1) is None


def test_seeded_rendering_differences_hold_for_every_order() -> None:
    renamed = rounded = reordered = 0
    for order_id in range(1, seeds.ORDER_COUNT + 1):
        o = services.order(order_id)
        assert o is not None
        mono, cand = services.monolith_order_json(o), services.candidate_order_json(o)
        assert mono["customer_id"] == cand.pop("customerId")
        renamed += 1
        assert cand["total"] == round(mono["total"], 2)
        rounded += mono["total"] != cand["total"]
        assert sorted(mono["items"], key=lambda i: i["sku"]) == cand["items"]
        assert [i["line"] for i in mono["items"]] == sorted(i["line"] for i in mono["items"])
        reordered += mono["items"] != cand["items"]
        rest = {k: v for k, v in mono.items() if k not in ("customer_id", "total", "items")}
        assert rest == {k: v for k, v in cand.items() if k not in ("total", "items")}
    # Most orders show the rounding and reordering, not all: an analyzer must count, not assume.
    assert seeds.ORDER_COUNT * 0.5 < rounded < seeds.ORDER_COUNT
    assert seeds.ORDER_COUNT * 0.3 < reordered < seeds.ORDER_COUNT
    assert renamed == seeds.ORDER_COUNT


def test_new_order_validation_names_the_bad_field() -> None:
    good = {"customer_id": 3, "items": [{"product_id": 4, "quantity": 2}],
            "payment": {"card_number": "4111111111111111"}}
    assert isinstance(services.parse_new_order(good), services.NewOrder)
    assert services.parse_new_order([]) == "body must be a JSON object"
    assert "items[0].product_id" in str(services.parse_new_order({**good, "items": [{"product_id": 0}]}))
    assert "card_number" in str(services.parse_new_order({**good, "payment": {"card_number": "12"}}))


def test_seed_list_is_consistent() -> None:
    names = [d.name for d in seeds.SEEDED_DIFFERENCES]
    assert len(names) == len(set(names))
    kinds = {d.kind for d in seeds.SEEDED_DIFFERENCES}
    assert kinds == {"renamed_field", "numeric_rounding", "array_order", "latency", "error_rate"}
    for d in seeds.SEEDED_DIFFERENCES:
        assert d.endpoint in seeds.MIRRORED_ENDPOINTS
        assert bool(d.pointers) == (d.kind not in ("latency", "error_rate"))
        assert bool(d.candidate_pointers) == (d.kind == "renamed_field")
    renamed = next(d for d in seeds.SEEDED_DIFFERENCES if d.name == "customer-id-renamed")
    assert renamed.covers("/customer_id") and renamed.covers("/customerId")
    assert not renamed.covers("/customer_idx") and not renamed.covers("/total")
    reordered = next(d for d in seeds.SEEDED_DIFFERENCES if d.name == "items-reordered-in-list")
    assert reordered.covers("/orders/*/items/*/sku") and not reordered.covers("/orders/*/total")
    assert seeds.is_volatile_body_field("/generated_at") and not seeds.is_volatile_body_field("/total")
    assert {d.name for d in seeds.seeded_for(seeds.ORDERS_LIST)} == {
        "customer-id-renamed-in-list", "total-rounded-in-list", "items-reordered-in-list", "list-errors"}


def test_check_diff_fields_against_the_answer_key() -> None:
    # The shape of a report's diff fields on the demo (taken from a real run), trimmed.
    found = [
        ("/api/orders", "/orders/*/items/*/sku", False), ("/api/orders", "/orders/*/customerId", False),
        ("/api/orders", "/orders/*/customer_id", False), ("/api/orders", "/orders/*/total", False),
        ("/api/orders/{id}", "/items/*/line", False), ("/api/orders/{id}", "/customer_id", False),
        ("/api/orders/{id}", "/total", False), ("/api/orders", "/error", False),
        ("/api/orders/{id}", "/generated_at", True), ("/api/orders/{id}", "/request_id", True),
    ]
    assert seeds.check_diff_fields(found).ok
    without_total = [row for row in found if row[1] != "/total"]
    check = seeds.check_diff_fields([*without_total, ("/api/orders", "/generated_at", False)])
    assert [d.name for d in check.missing] == ["total-rounded"]
    assert check.volatile_as_real == (("/api/orders", "/generated_at"),)
    assert not check.ok
    # A seed counts only on its own endpoint.
    moved = [(("/api/orders" if e == "/api/orders/{id}" else e), p, n) for e, p, n in found]
    assert {d.name for d in seeds.check_diff_fields(moved).missing} == {
        "customer-id-renamed", "total-rounded", "items-reordered"}


# ---------------------------------------------------------------- over HTTP, real processes

def test_two_monolith_instances_agree_except_volatile_fields(upstreams: dict[str, Child],
                                                             client: httpx.Client) -> None:
    for path in ("/api/orders/17", "/api/orders?page=3", "/api/products/5", "/api/products", "/api/users/9"):
        a, b = get(client, upstreams["monolith-a"], path), get(client, upstreams["monolith-b"], path)
        assert stable(a) == stable(b), path
        for key in VOLATILE_KEYS:
            assert a[key] != b[key], (path, key)


def test_volatile_fields_change_on_every_call(upstreams: dict[str, Child], client: httpx.Client) -> None:
    for name in ("monolith-a", "orders"):
        first = client.get(upstreams[name].url + "/api/orders/5")
        second = client.get(upstreams[name].url + "/api/orders/5")
        assert stable(first.json()) == stable(second.json())
        assert first.json()["generated_at"] != second.json()["generated_at"]
        assert first.json()["request_id"] != second.json()["request_id"]
        assert first.headers["x-request-id"] == first.json()["request_id"]
        assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_orders_service_differs_only_as_seeded(upstreams: dict[str, Child], client: httpx.Client) -> None:
    for order_id in (1, 7, 123, 500):
        mono = stable(get(client, upstreams["monolith-a"], f"/api/orders/{order_id}"))
        cand = stable(get(client, upstreams["orders"], f"/api/orders/{order_id}"))
        assert "customer_id" not in cand and cand["customerId"] == mono["customer_id"]
        assert cand["total"] == round(mono["total"], 2)
        assert cand["items"] == sorted(mono["items"], key=lambda i: i["sku"])
    # Order 7 shows all three body differences at once (checked against the data above).
    mono7 = get(client, upstreams["monolith-a"], "/api/orders/7")
    cand7 = get(client, upstreams["orders"], "/api/orders/7")
    assert mono7["total"] != cand7["total"] and mono7["items"] != cand7["items"]
    assert len(str(mono7["total"]).split(".")[1]) == 3


def test_orders_list_pages_render_in_each_dialect(upstreams: dict[str, Child], client: httpx.Client) -> None:
    mono = get(client, upstreams["monolith-a"], "/api/orders?page=2")
    cand = get(client, upstreams["orders"], "/api/orders?page=2")
    assert [o["id"] for o in mono["orders"]] == list(range(11, 21)) == [o["id"] for o in cand["orders"]]
    assert all("customerId" in o and "customer_id" not in o for o in cand["orders"])
    assert mono["pages"] == cand["pages"] == services.page_count()
    get(client, upstreams["monolith-a"], "/api/orders?page=x", status=400)


def test_unknown_ids_are_404_on_both(upstreams: dict[str, Child], client: httpx.Client) -> None:
    for name in ("monolith-a", "orders"):
        assert get(client, upstreams[name], "/api/orders/9999", status=404)["error"] == "no order 9999"
        get(client, upstreams[name], "/api/orders/abc", status=404)
    get(client, upstreams["monolith-a"], "/api/users/0", status=404)
    get(client, upstreams["monolith-a"], "/api/products/61", status=404)


def test_candidate_detail_is_slower(upstreams: dict[str, Child], client: httpx.Client) -> None:
    # A lower bound only: the seeded asyncio.sleep guarantees it however loaded the machine is.
    floor_s = (seeds.CANDIDATE_EXTRA_LATENCY_MS - seeds.CANDIDATE_LATENCY_JITTER_MS) / 1000
    for _ in range(3):
        started = time.perf_counter()
        get(client, upstreams["orders"], "/api/orders/3")
        assert time.perf_counter() - started >= floor_s


def test_candidate_list_errors_at_the_configured_rate(upstreams: dict[str, Child], client: httpx.Client) -> None:
    for _ in range(5):
        assert get(client, upstreams["orders-failing"], "/api/orders", status=500)["error"] == "internal error"
    get(client, upstreams["orders-failing"], "/api/orders/3")  # only the list fails
    # The default rate (2 %) with the default seed: a few 500s in 300 calls, not none and not many.
    statuses = [client.get(upstreams["orders"].url + "/api/orders?page=1").status_code for _ in range(300)]
    assert 1 <= statuses.count(500) <= 15
    assert set(statuses) == {200, 500}
    assert all(client.get(upstreams["monolith-a"].url + "/api/orders").status_code == 200 for _ in range(50))


def test_post_creates_an_order_and_rejects_bad_bodies(upstreams: dict[str, Child], client: httpx.Client) -> None:
    new = {"customer_id": 3, "items": [{"product_id": 4, "quantity": 2}, {"product_id": 9}],
           "payment": {"card_number": "4111111111111111"}}
    mono = client.post(upstreams["monolith-a"].url + "/api/orders", json=new)
    cand = client.post(upstreams["orders"].url + "/api/orders", json=new)
    assert mono.status_code == cand.status_code == 201
    assert mono.json()["id"] > seeds.ORDER_COUNT and mono.json()["customer_id"] == 3
    assert cand.json()["customerId"] == 3 and cand.json()["total"] == round(mono.json()["total"], 2)
    bad = client.post(upstreams["monolith-a"].url + "/api/orders", json={**new, "customer_id": 0})
    assert bad.status_code == 400 and "customer_id" in bad.json()["error"]
    assert client.post(upstreams["orders"].url + "/api/orders", content=b"{").status_code == 400


def test_monolith_serves_the_rest_of_the_shop(upstreams: dict[str, Child], client: httpx.Client) -> None:
    assert len(get(client, upstreams["monolith-a"], "/api/products")["products"]) == seeds.PRODUCT_COUNT
    assert get(client, upstreams["monolith-a"], "/api/users/3")["card_number"].startswith("4111")
    assert get(client, upstreams["monolith-b"], "/health")["instance"] == "monolith-b"
    home = client.get(upstreams["monolith-a"].url + "/")
    assert home.headers["content-type"].startswith("text/html") and "Acme Shop" in home.text
    # The orders service owns orders only.
    assert client.get(upstreams["orders"].url + "/api/products").status_code == 404


# ---------------------------------------------------------------- process handling

def test_a_service_that_cannot_start_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with Supervisor(tmp_path) as sup, pytest.raises(ShadowError) as err:
            sup.start_service("monolith-x", service_argv("monolith", "--port", str(port)))
    message = err.value.format_message()
    assert "monolith-x exited with code 1 before it was ready" in message
    assert f"cannot listen on 127.0.0.1:{port}" in message


def test_supervisor_stops_every_child(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start_service("m", service_argv("monolith"))
        assert child.running()
    assert not child.running()
    assert child.popen.returncode is not None


STUBBORN_CHILD = """
import os, signal, sys, time
pids_file, report = sys.argv[1], sys.argv[2]

def on_term(signum, frame):
    # How many of the siblings are still alive when this one is asked to stop.
    pids = [int(p) for p in open(pids_file).read().split()]
    alive = 0
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive += 1
        except ProcessLookupError:
            pass
    with open(report, "w") as f:
        f.write(str(alive))

signal.signal(signal.SIGTERM, on_term)  # and keeps running: only SIGKILL ends it
print("up", flush=True)
time.sleep(60)
"""


def test_children_that_ignore_sigterm_are_asked_together_then_killed(tmp_path: Path) -> None:
    # Stopped one after another, the third would be asked only after the first two were killed
    # (three timeouts in a row); stopped together, each is asked while all three still run.
    pids_file = tmp_path / "pids"
    pids_file.write_text("")
    sup = Supervisor(tmp_path / "logs")
    children = [sup.spawn(f"stubborn-{n}", [sys.executable, "-c", STUBBORN_CHILD, str(pids_file),
                                            str(tmp_path / f"alive-{n}")]) for n in range(3)]
    for child in children:
        assert child.popen.stdout is not None and child.popen.stdout.readline() == b"up\n"
    pids_file.write_text(" ".join(str(c.pid) for c in children))
    sup.stop_all(timeout_s=1.0)
    assert all(child.popen.returncode == -signal.SIGKILL for child in children)
    assert sup.children == []
    assert [(tmp_path / f"alive-{n}").read_text() for n in range(3)] == ["3", "3", "3"]
