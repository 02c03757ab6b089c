"""analyzers.suggest: each suggested rule loads with load_rules and actually accepts its difference."""

from __future__ import annotations

import io

import orjson
import pytest
from ruamel.yaml import YAML

from analyzers.diff import ExchangeSide, diff_pair
from analyzers.rules import load_rules
from analyzers.suggest import round_up, suggested_rules

JSON = "application/json"
ENDPOINT = "/api/orders/{id}"


def side(body: object, headers: list[tuple[str, str]] | None = None) -> ExchangeSide:
    return ExchangeSide(200, headers or [("Content-Type", JSON)], orjson.dumps(body), JSON)


CASES = [
    ({"generated_at": "2026-12-07T14:00:00Z", "id": 1}, {"generated_at": "2026-12-07T14:00:01Z", "id": 1}),
    ({"total": 12.345}, {"total": 12.35}),
    ({"items": [{"sku": "a"}, {"sku": "b"}]}, {"items": [{"sku": "b"}, {"sku": "a"}]}),
    ({"customer_name": "Ada"}, {"customerName": "Ada"}),
    ({"lines": [{"note": "x"}, {"note": "y"}]}, {"lines": [{"note": "x"}, {"note": "z"}]}),
    ({"old": 1}, {"old": 1, "extra": True}),
    ([3, 1, 2], [1, 2, 3]),
]


@pytest.mark.parametrize(("a", "b"), CASES)
def test_every_suggestion_round_trips_and_accepts_the_difference(a: object, b: object) -> None:
    real = diff_pair(side(a), side(b), load_rules([]), endpoint=ENDPOINT)
    assert real and not any(d.noise for d in real)
    for d in real:
        lines = suggested_rules(ENDPOINT, d.kind, d.op, d.pointer_template, d.old, d.new)
        assert lines
        for line in lines:  # each alternative alone accepts it, as YAML pasted under `rules:`
            raw = YAML(typ="safe").load(io.StringIO("rules:\n  " + line + "\n"))
            rules = load_rules(raw["rules"])
            again = [x for x in diff_pair(side(a), side(b), rules, endpoint=ENDPOINT)
                     if (x.kind, x.pointer) == (d.kind, d.pointer)]
            assert all(x.noise for x in again), (line, again)  # noise, or (unordered) no difference left
            # scoped: another endpoint still sees it as real
            other = diff_pair(side(a), side(b), rules, endpoint="/api/users/{id}")
            assert any(not x.noise for x in other)


def test_suggestion_texts() -> None:
    assert suggested_rules(ENDPOINT, "body", "changed", "/total", "12.345", "12.35") == [
        '- {path: "/total", tolerance: {abs: 0.005}, endpoint: "/api/orders/{id}"}',
        '- {ignore: "/total", endpoint: "/api/orders/{id}"}']
    assert suggested_rules(ENDPOINT, "body", "reordered", "/items", "[]", "[]") == [
        '- {path: "/items", array: unordered, endpoint: "/api/orders/{id}"}']
    assert suggested_rules(ENDPOINT, "header", "changed", "/x-build", '"1"', '"2"') == [
        '- {header: "x-build", endpoint: "/api/orders/{id}"}']
    assert suggested_rules(ENDPOINT, "status", "changed", "", "200", "500") == []


def test_header_suggestion_accepts_the_header() -> None:
    a = side({}, [("Content-Type", JSON), ("X-Build", "1")])
    b = side({}, [("Content-Type", JSON), ("X-Build", "2")])
    (d,) = diff_pair(a, b, endpoint=ENDPOINT)
    (line,) = suggested_rules(ENDPOINT, d.kind, d.op, d.pointer_template, d.old, d.new)
    rules = load_rules(YAML(typ="safe").load(io.StringIO("rules:\n  " + line + "\n"))["rules"])
    assert diff_pair(a, b, rules, endpoint=ENDPOINT) == []  # an ignored header is not compared at all


def test_round_up() -> None:
    assert [round_up(x) for x in (0.0049, 0.005, 0.012, 3.0, 0.1 + 0.2, 0.0)] == [0.005, 0.005, 0.02, 3.0, 0.3, 0.0]
