"""Canonical body hash and Content-Encoding decoding."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from shadow.capture.canonical import BodyDecodeError, body_hash, canonical_json, decode_body


def test_json_hash_ignores_key_order_and_whitespace() -> None:
    a = b'{"b": 1, "a": {"y": [1, 2], "x": null}}'
    b = b'{\n  "a": {"x": null, "y": [1,2]},\n  "b": 1\n}'
    assert body_hash(a, "application/json") == body_hash(b, "application/json; charset=utf-8")
    assert body_hash(a, "application/json").startswith("j:")
    assert len(body_hash(a, "application/json")) == 2 + 32


def test_json_hash_sees_values_types_and_array_order() -> None:
    base = body_hash(b'{"a": [1, 2]}', "application/json")
    assert body_hash(b'{"a": [2, 1]}', "application/json") != base
    assert body_hash(b'{"a": ["1", 2]}', "application/json") != base


def test_non_json_and_malformed_json_hash_bytes() -> None:
    assert body_hash(b"<html/>", "text/html").startswith("b:")
    assert body_hash(b'{"a": 1', "application/json").startswith("b:")  # malformed: raw bytes
    assert body_hash(b'{"a":1}', "text/plain") != body_hash(b'{"a": 1}', "text/plain")


def test_json_without_content_type_is_detected() -> None:
    assert body_hash(b' {"b":1,"a":2}', None) == body_hash(b'{"a":2,"b":1}', "application/json")
    assert body_hash(b"plain", None).startswith("b:")


def test_hash_is_stable_across_releases() -> None:
    # A stored capture is compared with later ones: this value must never change.
    assert body_hash(b'{"b":1,"a":2}', "application/json") == "j:" + __import__("hashlib").sha256(
        b'{"a":2,"b":1}').hexdigest()[:32]
    assert canonical_json(b'{"b":1,"a":2}') == b'{"a":2,"b":1}'


@pytest.mark.parametrize("coding,encode", [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send it
    ("br", brotli.compress), ("identity", lambda b: b), ("GZIP", gzip.compress),
])
def test_decode_body(coding: str, encode: object) -> None:
    body = b"hello " * 100
    assert decode_body(encode(body), coding) == body  # type: ignore[operator]


def test_decode_chain_and_errors() -> None:
    body = b'{"a": 1}'
    assert decode_body(brotli.compress(gzip.compress(body)), "gzip, br") == body
    assert decode_body(body, None) == body
    with pytest.raises(BodyDecodeError, match="gzip"):
        decode_body(b"nope", "gzip")
    with pytest.raises(BodyDecodeError, match="unsupported content-encoding 'compress'"):
        decode_body(b"x", "compress")
    with pytest.raises(BodyDecodeError, match="truncated"):
        decode_body(gzip.compress(body * 100)[:20], "gzip")
    with pytest.raises(BodyDecodeError, match="exceeds 100 bytes"):
        decode_body(gzip.compress(b"0" * 1000), "gzip", limit=100)
