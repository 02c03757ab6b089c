"""What the gateway itself changed in a mirror copy, and which body differences follow from it.

A mirror copy is not byte for byte the client's request: the gateway adds its marking headers
(X-Shadow-Request, X-Shadow-Request-Id; shadow.gateway.mirror.mirror_headers), drops hop-by-hop headers
(Connection, Keep-Alive, …), may rewrite Host, and sends it to another server (another URL). A
candidate that echoes the request it received (httpbin's /get, /headers, /anything; any service
that returns its request id, URL or headers) then answers differently *because the gateway made
it so*. Those differences are the gateway's, not the candidate's.

The capture records both requests: the primary row's request headers and URL, and the copy's as
they were sent (`req_headers`, `url` of the mirror row). `copy_changes` compares the two;
`GatewayChanges.explain` says whether a body difference is derived from one of the changes:

* a key named like a header the copy gained, lost or changed, with that header's value
  (`/headers/X-Shadow-Request` added "1", `/headers/Connection` removed "keep-alive",
  `/headers/Host` changed "a:1" → "b:2");
* a string whose primary value, with each changed value of the request (URL, authority, changed
  header values) replaced by the copy's, is the candidate's value (`/url` "http://a:1/get" →
  "http://b:2/get");
* a string the candidate returns that carries a value only the copy had (its request id).

Without the copy's recorded headers (an old capture), the changes are taken from what
`mirror_headers` is known to do: the marking headers added, hop-by-hop headers dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from analyzers.diff import header_map
from analyzers.difference import Difference

GATEWAY_REASON = "gateway: changed in the copy"
# shadow.gateway.mirror hop-by-hop set: never copied onto a mirror
NOT_COPIED = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-authenticate", "proxy-authorization", "content-length", "expect"})
MIN_TOKEN_CHARS = 8  # an added value shorter than this ("1") is too common to trace inside a string


@dataclass(frozen=True)
class GatewayChanges:
    """The copy against the primary's request: header names (lower case) the copy gained, lost or
    changed with their values, and (primary text → copy text) replacements (URL, authority, changed
    header values), longest first."""

    added: Mapping[str, str]
    removed: Mapping[str, str]
    changed: Mapping[str, tuple[str, str]]
    replacements: tuple[tuple[str, str], ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.replacements)

    def explain(self, d: Difference) -> str | None:
        """The noise reason when body difference `d` follows from what the gateway changed."""
        if d.kind != "body" or d.noise:
            return None
        name = _last_token(d.pointer).lower()
        old, new = _string(d.old), _string(d.new)
        if d.op == "added" and name in self.added and _same(new, self.added[name]):
            return f"{GATEWAY_REASON} ({name} added)"
        if d.op == "removed" and name in self.removed and _same(old, self.removed[name]):
            return f"{GATEWAY_REASON} ({name} dropped)"
        if d.op == "changed" and name in self.changed:
            was, now = self.changed[name]
            if _same(old, was) and _same(new, now):
                return f"{GATEWAY_REASON} ({name} rewritten)"
        if d.op != "changed" or old is None or new is None:
            return None
        rewritten = old
        for a, b in self.replacements:
            rewritten = rewritten.replace(a, b)
        if rewritten != old and _same(new, rewritten):
            return f"{GATEWAY_REASON} (URL or header value echoed)"
        for value in self.added.values():
            if len(value) >= MIN_TOKEN_CHARS and value in new and value not in old:
                return f"{GATEWAY_REASON} (its request id echoed)"
        return None


# What the gateway may change in a copy, by header name (besides the hop-by-hop set it drops): its
# marks, Host, the trace context, and the proxy headers a router may add to one request only.
CHANGED_HEADERS = frozenset({"x-shadow-request", "x-shadow-request-id", "host", "traceparent", "tracestate",
                             "forwarded", "via", "x-real-ip", "x-forwarded-for", "x-forwarded-host",
                             "x-forwarded-proto", "x-forwarded-port", "x-forwarded-server", "x-forwarded-prefix"})


def may_be_gateways(d: Difference) -> bool:
    """A cheap filter before the requests are read: could `d` follow from the gateway's changes at
    all? (a key named like a header the gateway adds, drops or rewrites, or a changed string long
    enough to hold a URL, an authority or a request id)."""
    if d.kind != "body" or d.noise:
        return False
    name = _last_token(d.pointer).lower()
    if name in CHANGED_HEADERS or name in NOT_COPIED:
        return True
    return d.op == "changed" and d.new is not None and d.new.startswith('"') and len(d.new) >= MIN_TOKEN_CHARS


def copy_changes(primary_headers: Iterable[Any] | None, primary_url: str | None, copy_headers: Iterable[Any] | None,
                 copy_url: str | None, *, request_id: str | None = None) -> GatewayChanges:
    """What the gateway changed between the primary's request and the copy's (see module doc)."""
    a = header_map(primary_headers or ())
    if copy_headers is None:  # not recorded: what mirror_headers is known to do
        added = {"x-shadow-request": "1"}
        if request_id:
            added["x-shadow-request-id"] = request_id
        b_removed = {k: v for k, v in a.items() if k in NOT_COPIED}
        return GatewayChanges(added, b_removed, {}, _url_replacements(primary_url, copy_url))
    b = header_map(copy_headers)
    added = {k: v for k, v in b.items() if k not in a}
    removed = {k: v for k, v in a.items() if k not in b}
    changed = {k: (a[k], b[k]) for k in a.keys() & b.keys() if a[k] != b[k]}
    pairs = list(_url_replacements(primary_url, copy_url))
    pairs += [(x, y) for x, y in changed.values() if len(x) >= 3]
    pairs.sort(key=lambda p: -len(p[0]))
    return GatewayChanges(added, removed, changed, tuple(dict.fromkeys(pairs)))


def _url_replacements(primary_url: str | None, copy_url: str | None) -> tuple[tuple[str, str], ...]:
    if not primary_url or not copy_url or primary_url == copy_url:
        return ()
    pa, ca = urlsplit(primary_url), urlsplit(copy_url)
    out = [(primary_url, copy_url)]
    if pa.netloc != ca.netloc and pa.netloc and ca.netloc:
        out.append((f"{pa.scheme}://{pa.netloc}", f"{ca.scheme}://{ca.netloc}"))
        out.append((pa.netloc, ca.netloc))
        if pa.hostname and ca.hostname and pa.hostname != ca.hostname:
            out.append((pa.hostname, ca.hostname))
    return tuple(out)


def _last_token(pointer: str) -> str:
    return pointer[pointer.rfind("/") + 1:].replace("~1", "/").replace("~0", "~")


def _string(text: str | None) -> str | None:
    """A difference's value as a plain string: JSON strings unquoted, other values as their JSON text."""
    if text is None:
        return None
    if text.endswith("…"):
        return text  # cut at the engine's limit: compared as text (a prefix match, see _same)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]  # a header echoed as a one-element list (repeated headers, some frameworks)
    return text


def _same(value: str | None, expected: str) -> bool:
    if value is None:
        return False
    if value == expected:
        return True
    if value.endswith("…"):  # cut: the kept prefix must match (JSON text starts with a quote)
        kept = value[:-1].lstrip('"')
        return bool(kept) and expected.startswith(kept)
    return False


def explain_all(diffs: Sequence[Difference], changes: GatewayChanges | None) -> list[Difference]:
    """`diffs` with the differences the gateway's changes explain marked as noise (kept, labelled)."""
    if changes is None or changes.empty or not diffs:
        return list(diffs)
    out = []
    for d in diffs:
        reason = changes.explain(d)
        out.append(d._replace(noise=True, noise_reason=reason) if reason else d)
    return out
