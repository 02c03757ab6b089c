"""analyzers.gateway_changes: what the gateway changed in a copy is not the candidate's difference."""

from __future__ import annotations

import orjson

from analyzers.diff import ExchangeSide, diff_pair
from analyzers.gateway_changes import GATEWAY_REASON, copy_changes, explain_all
from shadow.gateway.mirror import mirror_headers

JSON = "application/json"
CLIENT = [("Host", "shop.example"), ("Accept", "*/*"), ("Connection", "keep-alive"), ("User-Agent", "curl/8")]
PRIMARY_URL = "http://127.0.0.1:8001/anything?x=1"
COPY_URL = "http://127.0.0.1:8002/anything?x=1"


def echo(headers: list[tuple[str, str]], url: str, **extra: object) -> ExchangeSide:
    """What httpbin's /anything answers: the request it received."""
    body = {"headers": {k.title(): v for k, v in headers}, "url": url, "method": "GET", **extra}
    return ExchangeSide(200, [("Content-Type", JSON)], orjson.dumps(body), JSON)


def test_an_echoed_copy_differs_only_by_what_the_gateway_changed() -> None:
    copy = mirror_headers(CLIENT, "req-7f3a9c1e2b4d", host="127.0.0.1:8002")
    diffs = diff_pair(echo(CLIENT, PRIMARY_URL), echo(copy, COPY_URL))
    assert {(d.op, d.pointer) for d in diffs} == {
        ("added", "/headers/X-Shadow-Request"), ("added", "/headers/X-Shadow-Request-Id"),
        ("removed", "/headers/Connection"), ("changed", "/headers/Host"), ("changed", "/url")}
    changes = copy_changes(CLIENT, PRIMARY_URL, copy, COPY_URL)
    marked = explain_all(diffs, changes)
    assert all(d.noise and d.noise_reason and d.noise_reason.startswith(GATEWAY_REASON) for d in marked), marked


def test_a_real_difference_beside_the_gateway_changes_stays_real() -> None:
    copy = mirror_headers(CLIENT, "req-7f3a9c1e2b4d", host="127.0.0.1:8002")
    diffs = diff_pair(echo(CLIENT, PRIMARY_URL, total=10), echo(copy, COPY_URL, total=11))
    marked = explain_all(diffs, copy_changes(CLIENT, PRIMARY_URL, copy, COPY_URL))
    assert [(d.pointer, d.noise) for d in marked if not d.noise] == [("/total", False)]
    # a key named like a changed header but with another value is not the gateway's doing
    other = diff_pair(echo(CLIENT, PRIMARY_URL), echo([*copy[:-1], ("X-Shadow-Request-Id", "other")], COPY_URL))
    kept = explain_all(other, copy_changes(CLIENT, PRIMARY_URL, copy, COPY_URL))
    assert [d.pointer for d in kept if not d.noise] == ["/headers/X-Shadow-Request-Id"]


def test_the_copy_request_id_echoed_in_a_field() -> None:
    copy = mirror_headers(CLIENT, "0b5e6c1d9a7f4e21", host=None)
    p = ExchangeSide(200, [], b'{"trace": "gw-none"}', JSON)
    c = ExchangeSide(200, [], b'{"trace": "gw-0b5e6c1d9a7f4e21"}', JSON)
    marked = explain_all(diff_pair(p, c), copy_changes(CLIENT, PRIMARY_URL, copy, PRIMARY_URL))
    assert marked[0].noise and "request id" in (marked[0].noise_reason or "")


def test_without_the_copys_recorded_headers_the_known_changes_apply() -> None:
    copy = mirror_headers(CLIENT, "req-1234567890", host=None)
    diffs = diff_pair(echo(CLIENT, PRIMARY_URL), echo(copy, PRIMARY_URL))
    marked = explain_all(diffs, copy_changes(CLIENT, PRIMARY_URL, None, None, request_id="req-1234567890"))
    assert diffs and all(d.noise for d in marked)


def test_the_cheap_filter_lets_through_every_kind_of_gateway_change() -> None:
    from analyzers.difference import Difference
    from analyzers.gateway_changes import may_be_gateways

    def body(op: str, pointer: str, old: str | None = None, new: str | None = None) -> Difference:
        return Difference("body", op, pointer, pointer, old, new)

    assert may_be_gateways(body("added", "/headers/X-Shadow-Request", None, '"1"'))
    assert may_be_gateways(body("removed", "/headers/Connection", '"keep-alive"'))
    assert may_be_gateways(body("added", "/headers/X-Forwarded-For", None, '"127.0.0.1"'))
    assert may_be_gateways(body("changed", "/url", '"http://a:1/x"', '"http://b:2/x"'))
    # a number, a short word, an ordinary added key: no request is read for them
    assert not may_be_gateways(body("changed", "/price", "20", "21"))
    assert not may_be_gateways(body("changed", "/state", '"paid"', '"due"'))
    assert not may_be_gateways(body("added", "/discount", None, "5"))
    assert not may_be_gateways(Difference("body", "added", "/headers/Via", "/headers/Via", None, '"1.1 gw"', True, "x"))
