"""Traefik's compress tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/middlewares/compress/acceptencoding_test.go — Test_getCompressionEncoding (table in
compress_cases.py). Test_parseAcceptEncoding checks an internal list (its outcome is what
Test_getCompressionEncoding checks); compress_test.go and compression_handler_test.go exercise Go's
writers on a recorder; their rules (minimum size, content types, Content-Encoding already set, HEAD,
Vary) are checked below and end to end in tests/test_traefik_middlewares_e2e.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from shadow.gateway.middlewares.compress import (
    Compress,
    choose_encoding,
    compression_encoding,
    should_compress,
)
from tests.traefik.compress_cases import CASES


@pytest.mark.parametrize("case", CASES["Test_getCompressionEncoding"],
                         ids=[c["desc"] for c in CASES["Test_getCompressionEncoding"]])
def test_get_compression_encoding(case: dict[str, Any]) -> None:
    mw = Compress("test", tuple(case.get("supportedEncodings") or ("gzip", "br", "zstd")),
                  default_encoding=case.get("defaultEncoding", ""))
    assert compression_encoding(mw, case["acceptEncoding"]) == case["expected"]


def test_compression_rules() -> None:
    mw = Compress("c")
    assert choose_encoding(mw, "HEAD", [("Accept-Encoding", "gzip")]) is None
    assert choose_encoding(mw, "GET", []) is None  # no Accept-Encoding and no defaultEncoding
    assert choose_encoding(Compress("c", default_encoding="br"), "GET", []) == "br"
    assert choose_encoding(mw, "POST", [("Content-Type", "application/grpc"), ("Accept-Encoding", "gzip")]) is None
    assert should_compress(mw, [("Content-Type", "text/html")], 1024)
    assert not should_compress(mw, [("Content-Type", "text/html")], 1023)  # below minResponseBodyBytes
    assert not should_compress(mw, [("Content-Encoding", "br")], 5000)  # already encoded
    assert not should_compress(mw, [("Content-Type", "application/grpc")], 5000)
    excluded = Compress("c", excluded=(("text/event-stream", ()),))
    assert not should_compress(excluded, [("Content-Type", "text/event-stream")], 5000)
    included = Compress("c", included=(("application/json", ()),))
    assert should_compress(included, [("Content-Type", "application/json; charset=utf-8")], 5000)
    assert not should_compress(included, [("Content-Type", "text/html")], 5000)
