"""Request framing checks the proxy underneath does not make (RFC 9112).

A request carrying two Host headers is ambiguous: the gateway would route on one while a backend
may read the other (request smuggling by routing). RFC 9112 §3.2 requires a server to answer 400 to
an HTTP/1.1 request with more than one Host field; the same holds for the other single-valued
framing fields: differing Content-Length values (§6.3), and Transfer-Encoding beside Content-Length
is already rejected by the HTTP/1 parser underneath.
"""

from __future__ import annotations

from collections.abc import Iterable


def framing_problem(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request with these header fields must be answered 400, or None when it is well framed.
    Runs on every request: a length test before any lower-casing."""
    hosts = 0
    lengths: set[bytes] = set()
    for name, value in fields:
        size = len(name)
        if size == 4 and name.lower() == b"host":
            hosts += 1
        elif size == 14 and name.lower() == b"content-length":
            lengths.update(part.strip() for part in value.split(b","))
    if hosts > 1:
        return "more than one Host header"
    if len(lengths) > 1:
        return "conflicting Content-Length values"
    return None
