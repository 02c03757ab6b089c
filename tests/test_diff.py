"""The pure diff engine: status, headers, and each body kind."""

from __future__ import annotations

import gzip
import zlib

import brotli
import orjson

from analyzers.diff import Difference, ExchangeSide, diff_json, diff_pair, escape_token
from analyzers.rules import load_rules

JSON = "application/json"


def side(body: object, *, status: int = 200, ct: str | None = JSON, headers: list[tuple[str, str]] | None = None,
         **kw: object) -> ExchangeSide:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return ExchangeSide(status, headers or [], raw, ct, **kw)  # type: ignore[arg-type]


def ops(diffs: list[Difference]) -> list[tuple[str, str, str | None, str | None]]:
    return [(d.op, d.pointer, d.old, d.new) for d in diffs]


def test_identical_and_key_order_are_equal() -> None:
    assert diff_pair(side({"a": 1, "b": [1, 2]}), side({"a": 1, "b": [1, 2]})) == []
    assert diff_pair(side(b'{"a":1,"b":2}'), side(b'{ "b": 2, "a": 1 }')) == []


def test_equal_canonical_hashes_settle_without_parsing() -> None:
    # bodies that are not even JSON, but the capture says their canonical hashes match
    assert diff_pair(side(b"not json", body_hash="j:1"), side(b"other", body_hash="j:1")) == []


def test_scalar_changes_added_removed_and_type_changes() -> None:
    a = {"name": "x", "n": 1, "gone": True, "t": "1"}
    b = {"name": "y", "n": 1.0, "new": None, "t": 1}
    assert ops(diff_pair(side(a), side(b))) == [
        ("changed", "/name", '"x"', '"y"'),
        ("removed", "/gone", "true", None),
        ("type_changed", "/t", '"1"', "1"),
        ("added", "/new", None, "null"),
    ]  # 1 and 1.0 are one JSON number


def test_boolean_is_not_a_number_even_inside_equal_looking_subtrees() -> None:
    # Python says {"x": True} == {"x": 1}; the engine must not
    a = {"flags": {"x": True, "y": 0}, "n": 1}
    b = {"flags": {"x": 1, "y": False}, "n": 2}
    got = ops(diff_pair(side(a), side(b)))
    assert ("type_changed", "/flags/x", "true", "1") in got
    assert ("type_changed", "/flags/y", "0", "false") in got
    assert ("changed", "/n", "1", "2") in got
    assert ops(diff_pair(side({"a": [True]}), side({"a": [1]}))) == [("type_changed", "/a/0", "true", "1")]


def test_pointer_escaping_rfc6901() -> None:
    assert escape_token("a/b~c") == "a~1b~0c"
    d = diff_pair(side({"a/b": {"~k": 1}}), side({"a/b": {"~k": 2}}))
    assert [(x.pointer, x.pointer_template) for x in d] == [("/a~1b/~0k", "/a~1b/~0k")]


def test_array_templates_and_ordered_alignment() -> None:
    a = {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]}
    b = {"items": [{"id": 1, "v": "a"}, {"id": 9, "v": "z"}, {"id": 2, "v": "b"}, {"id": 3, "v": "C"}]}
    d = diff_pair(side(a), side(b))
    assert [(x.op, x.pointer, x.pointer_template) for x in d] == [
        ("added", "/items/1", "/items/*"), ("changed", "/items/2/v", "/items/*/v")]


def test_values_are_truncated() -> None:
    d = diff_json({"s": "x" * 1000}, {"s": "y" * 1000}, max_value_chars=50)
    assert d[0].old is not None and len(d[0].old) == 50 and d[0].old.endswith("…")


def test_status_and_transport_errors() -> None:
    assert ops(diff_pair(side({}), side({}, status=503))) == [("changed", "", "200", "503")]
    err = ExchangeSide(None, error="timeout")
    assert ops(diff_pair(side({"a": 1}), err)) == [("changed", "", "200", '"error: timeout"')]
    assert diff_pair(ExchangeSide(None, error="x"), ExchangeSide(None, error="y")) == []


def test_a_status_change_is_one_status_difference_not_body_fields() -> None:
    ok = side({"orders": [1, 2]}, headers=[("Content-Type", JSON), ("Cache-Control", "max-age=5")])
    error = side({"error": "boom"}, status=500, headers=[("Content-Type", JSON)])
    d = diff_pair(ok, error)
    assert [(x.kind, x.op, x.old, x.new, x.noise) for x in d] == [("status", "changed", "200", "500", False)]


def test_headers_case_insensitive_and_default_ignores() -> None:
    a = side({}, headers=[("Content-Type", JSON), ("Date", "1"), ("X-Request-Id", "a"), ("Cache-Control", "no-store"),
                          ("X-Forwarded-For", "1.2.3.4"), ("Vary", "A"), ("Vary", "B")])
    b = side({}, headers=[("content-type", JSON), ("date", "2"), ("x-request-id", "b"), ("cache-control", "max-age=60"),
                          ("vary", "A"), ("vary", "B"), ("X-Shadow-Mirror", "1")])
    d = diff_pair(a, b)
    assert [(x.kind, x.op, x.pointer, x.old, x.new) for x in d] == [
        ("header", "changed", "/cache-control", '"no-store"', '"max-age=60"')]


def test_header_ignore_list_extend_and_cut() -> None:
    a = side({}, headers=[("ETag", '"1"'), ("X-Build", "7"), ("X-Build-Sha", "abc")])
    b = side({}, headers=[("ETag", '"2"'), ("X-Build", "8"), ("X-Build-Sha", "def")])
    assert [x.pointer for x in diff_pair(a, b)] == ["/x-build", "/x-build-sha"]  # ETag ignored by default
    rules = load_rules([{"header": "X-Build*"}, {"header": "etag", "ignore": False}])
    assert [x.pointer for x in diff_pair(a, b, rules)] == ["/etag"]
    fwd_a = side({}, headers=[("X-Forwarded-For", "1"), ("X-Forwarded-Proto", "http")])
    fwd_b = side({}, headers=[("X-Forwarded-For", "2"), ("X-Forwarded-Proto", "https")])
    one = load_rules([{"header": "X-Forwarded-For", "ignore": False}])  # cut one name out of a default glob
    assert [x.pointer for x in diff_pair(fwd_a, fwd_b, one)] == ["/x-forwarded-for"]
    back = load_rules([{"header": "X-Forwarded-For", "ignore": False}, {"header": "x-forwarded-*"}])
    assert diff_pair(fwd_a, fwd_b, back) == []  # a later rule wins
    scoped = load_rules([{"header": "x-build*", "endpoint": "/api/**"}])
    assert [x.pointer for x in diff_pair(a, b, scoped, endpoint="/api/x")] == []
    assert len(diff_pair(a, b, scoped, endpoint="/other")) == 2


def test_text_by_lines() -> None:
    d = diff_pair(side(b"one\ntwo\nthree\n", ct="text/plain; charset=utf-8"),
                  side(b"one\nTWO\nthree\nfour\n", ct="text/plain"))
    assert [(x.op, x.pointer, x.pointer_template, x.old, x.new) for x in d] == [
        ("changed", "/line/2", "/line/*", '"two"', '"TWO"'), ("added", "/line/4", "/line/*", None, '"four"')]


def test_invalid_json_falls_back_to_text() -> None:
    d = diff_pair(side(b"{oops\nline2"), side(b"{oops\nline3"))
    assert ops(d) == [("changed", "/line/2", '"line2"', '"line3"')]


def test_html_normalized_whitespace_and_attribute_order() -> None:
    a = b"<html><body><div class='a' id='x'>Hello   world</div><p>1</p><p>2</p></body></html>"
    b = b"<html>\n <body>\n  <div id='x' class='a'>Hello world</div>\n  <p>1</p><p>3</p></body></html>"
    d = diff_pair(side(a, ct="text/html"), side(b, ct="text/html; charset=utf-8"))
    assert [(x.op, x.pointer, x.pointer_template, x.old, x.new) for x in d] == [
        ("changed", "/html/body[1]/p[2]/text()", "/html/body[*]/p[*]/text()", '"2"', '"3"')]


def test_xml_structure_attributes_and_children() -> None:
    a = b'<?xml version="1.0"?><order id="1"><item sku="a"/><item sku="b"/></order>'
    b = b'<order id="2">\n  <item sku="a"/>\n  <item sku="b"/>\n  <note>x</note>\n</order>'
    d = diff_pair(side(a, ct="application/xml"), side(b, ct="text/xml"))
    assert [(x.op, x.pointer) for x in d] == [("changed", "/order/@id"), ("added", "/order/note[1]")]
    rules = load_rules([{"ignore": "/order/@id"}])
    assert [x.noise for x in diff_pair(side(a, ct="application/xml"), side(b, ct="text/xml"), rules)] == [True, False]


def test_form_fields() -> None:
    form = "application/x-www-form-urlencoded"
    d = diff_pair(side(b"a=1&b=2&m=x&m=y", ct=form), side(b"b=2&a=1&m=x&m=z&c=", ct=form))
    assert ops(d) == [("changed", "/m", '"[\\"x\\",\\"y\\"]"', '"[\\"x\\",\\"z\\"]"'), ("added", "/c", None, '""')]


def test_multipart_parts() -> None:
    ct = "multipart/form-data; boundary=XyZ"

    def body(value: str) -> bytes:
        return ("--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\nContent-Type: text/plain\r\n\r\n"
                f"{value}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--XyZ--\r\n").encode("latin-1")

    assert diff_pair(side(body("hello"), ct=ct), side(body("hello"), ct=ct)) == []
    d = diff_pair(side(body("hello"), ct=ct), side(body("world"), ct=ct))
    assert ops(d) == [("changed", "/part/title", '"hello"', '"world"')]


def test_binary_by_hash_and_length() -> None:
    d = diff_pair(side(b"\x00\x01\x02", ct="image/png"), side(b"\x00\x01", ct="image/png"))
    assert len(d) == 1 and d[0].pointer == "" and d[0].old is not None and d[0].old.startswith('"3 bytes, sha256:')


def test_encoded_bodies_are_decoded_first() -> None:
    doc = b'{"a": 1, "b": 2}'
    plain = side(doc)
    for coding, data in (("gzip", gzip.compress(doc)), ("deflate", zlib.compress(doc)), ("br", brotli.compress(doc))):
        assert diff_pair(side(data, content_encoding=coding), plain) == []
    assert ops(diff_pair(side(gzip.compress(doc), content_encoding="gzip"), side(b'{"a": 1, "b": 3}'))) == [
        ("changed", "/b", "2", "3")]


def test_truncated_bodies_are_flagged_not_diffed() -> None:
    d = diff_pair(side(b'{"a": [1, 2', truncated=True, body_hash="j:x"), side(b'{"a": [1, 3', body_hash="j:y"))
    assert [(x.op, x.noise) for x in d] == [("truncated", True)]
    assert "truncated" in (d[0].noise_reason or "")
    # the capture's hash covers the whole body: equal hashes settle a truncated pair as equal
    assert diff_pair(side(b'{"a": [1', truncated=True, body_hash="j:z"), side(b'{"a": [1', truncated=True,
                                                                              body_hash="j:z")) == []


def test_reordered_array_is_one_difference_at_the_array() -> None:
    items = [{"sku": f"S{i}", "qty": i} for i in range(5)]
    d = diff_pair(side({"items": items}), side({"items": list(reversed(items))}))
    assert [(x.op, x.pointer, x.pointer_template, x.noise) for x in d] == [("reordered", "/items", "/items", False)]
    # one element also changed: not the same multiset, so element by element as before
    changed = [dict(it) for it in reversed(items)]
    changed[0]["qty"] = 99
    assert {x.op for x in diff_pair(side({"items": items}), side({"items": changed}))} == {"changed"}
    # true and 1 are different JSON values: not a reordering of [1, true]
    assert [x.op for x in diff_pair(side({"a": [1, True]}), side({"a": [True, 1.5]}))] == ["type_changed", "type_changed"]


def test_renamed_key_is_one_difference_old_key_to_new_key() -> None:
    a = {"customer_name": "Ada", "id": 7, "total": 12.5}
    b = {"customerName": "Ada", "id": 7, "total": 12.5}
    d = diff_pair(side(a), side(b))
    assert [(x.op, x.pointer, x.old, x.new) for x in d] == [
        ("renamed", "/customer_name", '"/customer_name"', '"/customerName"')]
    # a removed key whose value went nowhere stays removed; a new key with another value stays added
    d = diff_pair(side({"a": 1, "b": 2}), side({"b": 2, "c": 3}))
    assert sorted((x.op, x.pointer) for x in d) == [("added", "/c"), ("removed", "/a")]
    # nested, and each added key is used once
    d = diff_pair(side({"o": {"x": 1, "y": 1}}), side({"o": {"z": 1, "y": 1}}))
    assert [(x.op, x.pointer, x.new) for x in d] == [("renamed", "/o/x", '"/o/z"')]
