"""Traefik's buffering and contentType tests, ported.

Sources (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
- pkg/middlewares/buffering/buffering_test.go       TestBuffering
- pkg/middlewares/contenttype/content_type_test.go  TestAutoDetection
The upstream answers the request body back (buffering) or "Test" (contentType); the Go test's
DisableAutoDetection wrapper is Traefik v3's default, which the gateway shares (mitmproxy adds no
Content-Type).
"""

from __future__ import annotations

import os

import pytest

from shadow.gateway.middlewares.buffering import Buffering
from shadow.gateway.middlewares.contenttype import detect_content_type

PAYLOAD = os.urandom(127)  # math.MaxInt8 random bytes


@pytest.mark.parametrize(("desc", "max_request", "max_response", "expected"), [
    ("Unlimited response and request body size", 0, 0, 200),
    ("Limited request body size", 1, 0, 413),
    ("Limited response body size", 0, 1, 500),
])
def test_buffering(desc: str, max_request: int, max_response: int, expected: int) -> None:
    mw = Buffering("foo", max_request, max_response)
    answer = mw.check_request(len(PAYLOAD)) or mw.check_response(len(PAYLOAD))  # the upstream echoes the body
    assert (answer.status if answer is not None else 200) == expected


@pytest.mark.parametrize(("desc", "auto_detect", "content_type", "want"), [
    ("Keep the Content-Type returned by the server", False, "application/json", "application/json"),
    ("Don't auto-detect Content-Type header by default when not set by the server", False, "", ""),
    ("Keep the Content-Type returned by the server with auto-detection middleware", True, "application/json",
     "application/json"),
    ("Auto-detect when Content-Type header is not already set by the server with auto-detection middleware", True, "",
     "text/plain; charset=utf-8"),
])
def test_auto_detection(desc: str, auto_detect: bool, content_type: str, want: str) -> None:
    # what addons/router.py does with the answer: detect only when the middleware is on and no type was set
    got = content_type or (detect_content_type(b"Test") if auto_detect else "")
    assert got == want


@pytest.mark.parametrize(("data", "kind"), [  # Go's http.DetectContentType on common bodies
    (b"  <!DOCTYPE html><html>", "text/html; charset=utf-8"),
    (b"<p>hi</p>", "text/html; charset=utf-8"),
    (b"<?xml version='1.0'?><a/>", "text/xml; charset=utf-8"),
    (b'{"a": 1}', "text/plain; charset=utf-8"),  # Go has no JSON signature
    (b"%PDF-1.7", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n....", "image/png"),
    (b"\x1f\x8b\x08\x00", "application/x-gzip"),
    (b"\x00\x01\x02binary", "application/octet-stream"),
])
def test_detect_content_type(data: bytes, kind: str) -> None:
    assert detect_content_type(data) == kind
