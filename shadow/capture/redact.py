"""Redaction of secrets before anything is written: headers, cookies and JSON body fields.

Rules (RedactionSettings):

* Headers named in `settings.headers` (case-insensitive; Authorization, Proxy-Authorization, Cookie
  and Set-Cookie are always included) are redacted. In "hash" mode the value becomes
  ``"redacted:" + 16 hex of HMAC-SHA256(key, value)`` so equal secrets stay equal across rows and
  restarts; an Authorization scheme ("Bearer", "Basic") is kept in front. Cookie and Set-Cookie
  keep their cookie names and attributes and hash each cookie *value* (so a sticky-session cookie
  is still recognisable). In "remove" mode the header is dropped.
* Query parameters named in `settings.query_params` (case-insensitive) are redacted in the `query` and
  `url` columns; a password in a URL's userinfo (``https://user:pw@host``) always is.
* JSON fields (request and response bodies): a bare name ("password") matches that key at any
  depth (case-insensitive); "/a/*/b" is an RFC 6901 pointer where "*" matches any one key or
  index. In "hash" mode the value is replaced by ``"redacted:…"`` over its canonical JSON; in
  "remove" mode the key (or array element) is dropped. A body that is not JSON, or malformed JSON,
  is left unchanged; a JSON body in which nothing matched is returned byte-for-byte unchanged.

The HMAC key: settings.key, else $SHADOW_REDACTION_KEY, else generated once and stored in
``<capture dir>/.shadow-key`` (mode 0600) — see `load_redaction_key`.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

import orjson

from shadow.capture.settings import DEFAULT_REDACTED_HEADERS, RedactionSettings
from shadow.errors import CaptureError

__all__ = ["KEY_ENV", "KEY_FILE", "REDACTED_PREFIX", "UNPARSED", "Redactor", "load_redaction_key"]

KEY_ENV = "SHADOW_REDACTION_KEY"
KEY_FILE = ".shadow-key"
REDACTED_PREFIX = "redacted:"

_TOKEN_CACHE_SIZE = 4096
_TOKEN_CACHE_VALUE_MAX = 512


class _Unparsed:
    def __repr__(self) -> str:
        return "UNPARSED"


UNPARSED: Any = _Unparsed()  # redact_json did not parse the body (not JSON, or nothing to redact)

_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
_COOKIE_ATTRIBUTES = frozenset(
    {"path", "domain", "expires", "max-age", "secure", "httponly", "samesite", "partitioned", "priority"}
)


def load_redaction_key(capture_dir: str | Path, settings: RedactionSettings) -> bytes:
    """The HMAC key: explicit, else from the environment, else `<capture_dir>/.shadow-key` (created once)."""
    if settings.key:
        return settings.key
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    path = Path(capture_dir) / KEY_FILE
    try:
        Path(capture_dir).mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process may have created it a moment ago and not written it yet: wait a little.
            for _ in range(50):
                key = path.read_text().strip()
                if key:
                    return key.encode()
                time.sleep(0.02)
            raise CaptureError(f"{path}: redaction key file is empty; delete it or set ${KEY_ENV}") from None
        key_text = secrets.token_hex(32)
        with os.fdopen(fd, "w") as f:
            f.write(key_text + "\n")
            f.flush()
            os.fsync(f.fileno())
        return key_text.encode()
    except OSError as e:
        raise CaptureError(f"{path}: cannot read or create the redaction key: {e.strerror or e}") from None


def _parse_pointer(pointer: str) -> tuple[str, ...]:
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:])


class Redactor:
    """Applies one RedactionSettings with one key. Thread-safe (its only state is a token cache)."""

    def __init__(self, settings: RedactionSettings, key: bytes) -> None:
        self.settings = settings
        self.key = key
        self.remove = settings.mode == "remove"
        self.header_names = frozenset(h.lower() for h in (*DEFAULT_REDACTED_HEADERS, *settings.headers))
        bare: set[str] = set()
        pointers: list[tuple[str, ...]] = []
        for f in settings.json_fields:
            if f.startswith("/"):
                pointers.append(_parse_pointer(f))
            elif f:
                bare.add(f.lower())
        self.bare_fields = frozenset(bare)
        self.pointers = tuple(pointers)
        # A body can only match if one of these (lower-cased) key names occurs in it: checked before parsing.
        # A pointer ending in "*" or an index has no key of its own: then any JSON body is parsed.
        tokens: set[bytes] = {b.encode() for b in bare}
        self._always_parse = False
        for ptr in pointers:
            keys = [seg for seg in ptr if seg != "*" and not seg.isdigit()]
            if keys:
                tokens.add(keys[-1].lower().encode())
            else:
                self._always_parse = True
        self._tokens = tuple(tokens)
        # Byte-level lower-casing only folds ASCII: non-ASCII names (which a JSON encoder may also
        # escape as \uXXXX) skip the pre-check and are matched on the parsed keys.
        self._ascii_bare = all(f.isascii() for f in bare)
        if not self._ascii_bare:
            self._always_parse = True
        self.redacts_json = bool(self.bare_fields or self.pointers)
        self.query_names = frozenset(q.lower() for q in settings.query_params)
        # Sessions send the same Authorization and cookies over and over: remember their tokens.
        self._tokens_cache: dict[str | bytes, str] = {}

    # -- values -----------------------------------------------------------------------------------
    def token(self, value: str | bytes) -> str:
        """"redacted:" + 16 hex of HMAC-SHA256(key, value)."""
        cached = self._tokens_cache.get(value)
        if cached is not None:
            return cached
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        token = REDACTED_PREFIX + hmac.digest(self.key, data, "sha256").hex()[:16]
        if len(value) <= _TOKEN_CACHE_VALUE_MAX:  # credentials are short; a redacted JSON object may not be
            if len(self._tokens_cache) >= _TOKEN_CACHE_SIZE:
                self._tokens_cache.clear()  # crude but bounded; the same few credentials repeat
            self._tokens_cache[value] = token
        return token

    # -- headers ----------------------------------------------------------------------------------
    def header_value(self, name: str, value: str) -> str | None:
        """The stored value of header `name`, or None to drop it. `name` must be lower case."""
        if name not in self.header_names:
            return value
        if self.remove:
            return None
        if name in _AUTH_HEADERS:
            scheme, sep, credentials = value.partition(" ")
            if sep and credentials and scheme.isalpha():
                return f"{scheme} {self.token(credentials.strip())}"
            return self.token(value)
        if name == "cookie":
            return self._cookie_pairs(value, ";", attributes=False)
        if name == "set-cookie":
            return self._cookie_pairs(value, ";", attributes=True)
        return self.token(value)

    def _cookie_pairs(self, value: str, sep: str, *, attributes: bool) -> str:
        out = []
        for i, part in enumerate(value.split(sep)):
            name, eq, val = part.strip().partition("=")
            if not eq:
                # A bare word: a flag attribute (Secure) or a nameless cookie value; hash the latter.
                keep = attributes and i > 0 and name.lower() in _COOKIE_ATTRIBUTES
                out.append(name if keep else self.token(name))
            elif attributes and i > 0 and name.lower() in _COOKIE_ATTRIBUTES:
                out.append(f"{name}={val}")
            else:
                out.append(f"{name}={self.token(val)}")
        return "; ".join(out)

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        names = self.header_names
        for name, value in headers:
            lname = name.lower()
            if lname not in names:
                out.append((name, value))
                continue
            redacted = self.header_value(lname, value)
            if redacted is not None:
                out.append((name, redacted))
        return out

    # -- URLs and query strings ---------------------------------------------------------------------
    def query(self, query: str) -> str:
        """`query` with configured parameters' values redacted (or the parameters dropped)."""
        if not self.query_names or not query:
            return query
        out = []
        changed = False
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if unquote_plus(name).lower() in self.query_names:
                changed = True
                if self.remove:
                    continue
                out.append(f"{name}={quote(self.token(unquote_plus(value)), safe=':')}")
            else:
                out.append(part)
        return "&".join(out) if changed else query

    def url(self, url: str) -> str:
        """`url` with a password in its userinfo and configured query parameters redacted."""
        if not url or ("@" not in url and not self.query_names):
            return url
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, password = userinfo.partition(":")
            if colon:
                netloc = f"{user}@{hostport}" if self.remove else f"{user}:{self.token(password)}@{hostport}"
        query = self.query(parts.query)
        if netloc == parts.netloc and query == parts.query:
            return url
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    # -- JSON bodies ------------------------------------------------------------------------------
    def json_body(self, body: bytes) -> bytes:
        """`body` with configured JSON fields redacted; unchanged if nothing matched or not JSON."""
        return self.redact_json(body)[0]

    def redact_json(self, body: bytes) -> tuple[bytes, Any]:
        """(`json_body(body)`, the parsed and redacted document or `UNPARSED`), so a caller that
        hashes the body next need not parse it again."""
        if not self.redacts_json or not body:
            return body, UNPARSED
        head = body[:64].lstrip()
        if head[:1] not in (b"{", b"["):
            return body, UNPARSED
        lowered = b""
        if not self._always_parse:
            # JSON escapes (\u0070assword) could hide a key from this check; JSON producers do not
            # escape ASCII letters, so the cheap check is worth it (most bodies have no such key).
            lowered = body.lower()
            if not any(t in lowered for t in self._tokens):
                return body, UNPARSED
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, UNPARSED
        changed = False
        if self.bare_fields:
            if self._ascii_bare:
                changed |= self._redact_bare(doc, self._key_spellings(body, lowered or body.lower()))
            else:
                changed |= self._redact_bare_casefold(doc)
        for pointer in self.pointers:
            changed |= self._redact_pointer(doc, pointer)
        return (orjson.dumps(doc) if changed else body), doc

    def _replacement(self, value: Any) -> str:
        if isinstance(value, str):
            return self.token(value)
        return self.token(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))

    def _key_spellings(self, body: bytes, lowered: bytes) -> frozenset[str]:
        """The spellings ("password", "Password", ...) under which bare field names occur in `body`,
        so the walk can match keys with a set intersection instead of lower-casing every key."""
        found: set[str] = set()
        for name in self.bare_fields:
            token = name.encode()
            start = lowered.find(token)
            while start >= 0:
                found.add(body[start:start + len(token)].decode("utf-8", "replace"))
                start = lowered.find(token, start + 1)
        return frozenset(found)

    def _redact_bare(self, root: Any, spellings: frozenset[str]) -> bool:
        hits: list[tuple[dict[str, Any], str]] = []

        # Plain recursion over containers only (most values are scalars); collect first, mutate after.
        def walk(node: Any) -> None:
            if type(node) is dict:
                if not spellings.isdisjoint(node):
                    hits.extend((node, k) for k in spellings.intersection(node))
                for v in node.values():
                    if type(v) is dict or type(v) is list:
                        walk(v)
            else:
                for v in node:
                    if type(v) is dict or type(v) is list:
                        walk(v)

        if spellings and (type(root) is dict or type(root) is list):
            walk(root)
        for parent, k in hits:
            if k not in parent:
                continue
            if self.remove:
                del parent[k]
            else:
                parent[k] = self._replacement(parent[k])
        return bool(hits)

    def _redact_bare_casefold(self, root: Any) -> bool:
        fields = self.bare_fields
        hits: list[tuple[dict[str, Any], str]] = []

        def walk(node: Any) -> None:
            if type(node) is dict:
                for k, v in node.items():
                    if k.lower() in fields:
                        hits.append((node, k))
                    elif type(v) is dict or type(v) is list:
                        walk(v)
            else:
                for v in node:
                    if type(v) is dict or type(v) is list:
                        walk(v)

        if type(root) is dict or type(root) is list:
            walk(root)
        for parent, k in hits:
            if self.remove:
                del parent[k]
            else:
                parent[k] = self._replacement(parent[k])
        return bool(hits)

    def _redact_pointer(self, node: Any, path: Sequence[str]) -> bool:
        if not path:
            return False
        head, rest = path[0], path[1:]
        if isinstance(node, dict):
            keys = list(node) if head == "*" else ([head] if head in node else [])
            changed = False
            for k in keys:
                if rest:
                    changed |= self._redact_pointer(node[k], rest)
                else:
                    if self.remove:
                        del node[k]
                    else:
                        node[k] = self._replacement(node[k])
                    changed = True
            return changed
        if isinstance(node, list):
            if head == "*":
                indexes = list(range(len(node)))
            elif head.isdigit() and int(head) < len(node):
                indexes = [int(head)]
            else:
                return False
            changed = False
            for i in reversed(indexes):  # reversed: removing keeps the remaining indexes valid
                if rest:
                    changed |= self._redact_pointer(node[i], rest)
                else:
                    if self.remove:
                        del node[i]
                    else:
                        node[i] = self._replacement(node[i])
                    changed = True
            return changed
        return False
