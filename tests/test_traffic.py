"""Pure traffic-shifting primitives: Traefik's WRR, HRW, sticky cookie, health board."""

from __future__ import annotations

import hashlib
from collections import Counter

from shadow.gateway.traffic import (
    EdfWrr,
    HealthBoard,
    StickyCookie,
    default_cookie_name,
    fnv1a_64,
    hrw_pick,
    parse_cookie_header,
    set_cookie_header,
    sticky_value,
)


def test_wrr_proportions_exact_over_each_cycle() -> None:
    wrr = EdfWrr([("a", 5), ("b", 3), ("c", 1), ("gone", 0), ("neg", -2)], seed="svc")
    assert set(wrr.order) == {"a", "b", "c"}  # weight <= 0 removes a child
    for _cycle in range(4):
        picks = Counter(wrr.pick() for _ in range(9))
        assert picks == {"a": 5, "b": 3, "c": 1}


def test_wrr_is_deterministic_and_smooth() -> None:
    one = EdfWrr([("a", 1), ("b", 1), ("c", 2)], seed="s")
    two = EdfWrr([("a", 1), ("b", 1), ("c", 2)], seed="s")
    seq = [one.pick() for _ in range(40)]
    assert seq == [two.pick() for _ in range(40)]
    # EDF interleaves: the weight-2 child never gets 3 turns in a row
    assert all(seq[i:i + 3] != ["c", "c", "c"] for i in range(len(seq) - 2))


def test_wrr_skips_unhealthy_and_none_left() -> None:
    wrr = EdfWrr([("a", 1), ("b", 1)])
    assert {wrr.pick(lambda n: n == "b") for _ in range(6)} == {"b"}
    assert wrr.pick(lambda n: False) is None
    assert EdfWrr([("a", 0)]).pick() is None


def test_fnv1a_64_reference_values() -> None:
    # FNV-1a 64 test vectors (from the FNV reference): "" and "a".
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C


def test_hrw_stable_per_key_and_spread_by_weight() -> None:
    children = [("monolith", 1.0), ("orders-next", 3.0)]
    keys = [f"10.0.{i // 256}.{i % 256}" for i in range(4000)]
    first = [hrw_pick(k, children) for k in keys]
    assert first == [hrw_pick(k, children) for k in keys]  # stable
    share = first.count("orders-next") / len(first)
    assert 0.71 < share < 0.79  # weight 3 of 4
    even = [hrw_pick(k, [("monolith", 1.0), ("orders-next", 1.0)]) for k in keys]
    assert 0.45 < even.count("monolith") / len(keys) < 0.55


def test_hrw_names_differing_in_one_last_byte_follow_traefik() -> None:
    # Traefik's score hashes key + name with FNV-1a: names that differ only in their last byte get
    # nearly equal hashes, so the weight decides almost alone. We match Traefik, caveat included.
    keys = [f"client-{i}" for i in range(500)]
    assert {hrw_pick(k, [("a", 1.0), ("b", 3.0)]) for k in keys} == {"b"}


def test_hrw_moves_only_the_keys_of_a_dead_child() -> None:
    children = [("a", 1.0), ("b", 1.0), ("c", 1.0)]
    keys = [f"client-{i}" for i in range(600)]
    before = {k: hrw_pick(k, children) for k in keys}
    after = {k: hrw_pick(k, children, lambda n: n != "c") for k in keys}
    assert all(after[k] == before[k] for k in keys if before[k] != "c")
    assert all(after[k] in ("a", "b") for k in keys)
    assert hrw_pick("x", children, lambda n: False) is None


def test_sticky_cookie_value_name_and_attributes() -> None:
    assert sticky_value("orders-next") == hashlib.sha256(b"orders-next").hexdigest()[:16]
    name = default_cookie_name("canary")
    assert name == "_" + hashlib.sha1(b"_TRAEFIK_BACKEND_canary").hexdigest()[:5]
    assert len(name) == 6
    full = StickyCookie("sid", secure=True, http_only=True, same_site="lax", max_age=60, path="/api",
                        domain=".example.com")
    assert set_cookie_header(full, "v") == \
        "sid=v; Path=/api; Domain=example.com; Max-Age=60; HttpOnly; Secure; SameSite=Lax"
    assert set_cookie_header(StickyCookie("sid"), "v") == "sid=v; Path=/"
    assert set_cookie_header(StickyCookie("sid", max_age=-1), "v") == "sid=v; Path=/; Max-Age=0"
    assert set_cookie_header(StickyCookie("sid", same_site="bogus"), "v") == "sid=v; Path=/"


def test_parse_cookie_header() -> None:
    assert parse_cookie_header(["a=1; b=\"2\"", "a=3; c"]) == {"a": "1", "b": "2"}


def test_health_board_active_and_passive() -> None:
    now = [100.0]
    board = HealthBoard(clock=lambda: now[0])
    assert board.is_up("s", "u")  # servers start healthy
    assert board.set_active("s", "u", False) and not board.is_up("s", "u")
    assert not board.set_active("s", "u", False)
    assert board.set_active("s", "u", True) and board.is_up("s", "u")
    assert not board.record_failure("s", "u", window_s=10, max_failed=2)
    now[0] += 11  # the first failure left the window
    assert not board.record_failure("s", "u", window_s=10, max_failed=2)
    assert board.record_failure("s", "u", window_s=10, max_failed=2)
    assert not board.is_up("s", "u")
    now[0] += 10
    assert board.is_up("s", "u")  # tried again after the window
    board.set_active("s", "u", False)
    board.forget(lambda name: name != "s")
    assert board.is_up("s", "u")
