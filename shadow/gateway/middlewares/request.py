"""The request as middlewares see it, and the local answer a middleware may give instead."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

Headers = list[tuple[str, str]]


def header_values(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    lower = name.lower()
    return [v for k, v in headers if k.lower() == lower]


def first_header(headers: Iterable[tuple[str, str]], name: str) -> str:
    """Go's Header.Get: the first value, or ""."""
    lower = name.lower()
    for k, v in headers:
        if k.lower() == lower:
            return v
    return ""


def set_header(headers: Iterable[tuple[str, str]], name: str, value: str) -> Headers:
    """Go's Header.Set: every line of `name` replaced by one, at the first one's place (else last)."""
    lower = name.lower()
    out: Headers = []
    placed = False
    for k, v in headers:
        if k.lower() == lower:
            if not placed:
                out.append((name, value))
                placed = True
        else:
            out.append((k, v))
    if not placed:
        out.append((name, value))
    return out


def without_header(headers: Iterable[tuple[str, str]], name: str) -> Headers:
    lower = name.lower()
    return [(k, v) for k, v in headers if k.lower() != lower]


@dataclass(frozen=True, slots=True)
class MiddlewareRequest:
    method: str
    scheme: str  # the client's: "http" or "https" (TLS to the gateway)
    host: str  # the client's Host (may carry a port)
    path: str  # raw path, percent-escapes as sent, no query
    query: str = ""  # without '?'
    headers: tuple[tuple[str, str], ...] = ()
    remote_ip: str = ""  # the socket's peer address, no port
    request_uri: str | None = None  # the request target as sent (None: path?query); absolute-form keeps scheme://host
    meta: tuple[tuple[str, str], ...] = field(default=())  # e.g. the basicAuth user, for the capture
    body_size: int = 0  # bytes of the request body (buffering's maxRequestBodyBytes)

    def with_headers(self, headers: Iterable[tuple[str, str]]) -> MiddlewareRequest:
        return replace(self, headers=tuple(headers))

    def with_path(self, path: str) -> MiddlewareRequest:
        return replace(self, path=path, request_uri=None)

    @property
    def uri(self) -> str:
        if self.request_uri is not None:
            return self.request_uri
        return self.path + ("?" + self.query if self.query else "")

    def header(self, name: str) -> str:
        return first_header(self.headers, name)


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """An answer the gateway gives itself; nothing is forwarded."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


def text_answer(status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> LocalAnswer:
    """Go's http.Error: text/plain, nosniff, the text and a newline."""
    return LocalAnswer(status, (("Content-Type", "text/plain; charset=utf-8"),
                                ("X-Content-Type-Options", "nosniff"), *headers), (text + "\n").encode())
