"""Redaction of secrets before anything is written: headers, cookies, URLs, JSON, form and multipart bodies.

Rules (RedactionSettings):

* Secret *names* (settings.DEFAULT_SECRET_SUFFIXES / DEFAULT_SECRET_NAMES unless `defaults` is off,
  plus `names`, `headers`, `query_params` and bare `json_fields`, minus `allow`) are matched after
  normalisation (`normalize_name`: case folded, non-alphanumerics removed, a header's "x-" prefix
  dropped, "api_key[]" / "user[password]" resolved to their last bracketed part). They apply to
  header names, query, fragment and path (";api_key=") parameters, form-urlencoded and multipart
  fields, and JSON keys at any depth (keys written with \\u escapes included).
* In "hash" mode a value becomes ``"redacted:" + the 64 hex of HMAC-SHA256(key, value)`` so equal
  secrets stay equal across rows and restarts; an Authorization scheme ("Bearer", "Basic") is kept
  in front. Cookie and Set-Cookie keep their cookie names and attributes and hash each cookie
  *value* (so a sticky-session cookie is still recognisable). In "remove" mode the header,
  parameter or field is dropped.
* A password in a URL's userinfo (``https://user:pw@host``) and any JWT-shaped parameter value are
  always redacted; URL-valued headers (Referer, Location, Content-Location) get the URL rules.
* JSON pointers in `json_fields` ("/a/*/b", "*" any one key or index) redact exactly that place.
  A body that is not JSON, or malformed JSON, is left unchanged; a body in which nothing matched
  is returned byte-for-byte unchanged.

The HMAC key lives outside the capture (`load_redaction_key`): settings.key, else
$SHADOW_REDACTION_KEY, else a key file (settings.key_file, else $SHADOW_REDACTION_KEY_FILE, else
~/.config/shadow/redaction.key), generated once with mode 0600. A capture folder still holding the
pre-session-7 ``.shadow-key`` is refused with a one-line migration message (its rows stay readable:
reading a capture never needs the key).
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

import orjson

from shadow.capture.settings import (
    DEFAULT_REDACTED_HEADERS,
    DEFAULT_SECRET_NAMES,
    DEFAULT_SECRET_SUFFIXES,
    RedactionSettings,
)
from shadow.errors import CaptureError

__all__ = ["KEY_ENV", "KEY_FILE_ENV", "LEGACY_KEY_FILE", "REDACTED_PREFIX", "UNPARSED", "Redactor",
           "default_key_file", "load_redaction_key", "normalize_name"]

KEY_ENV = "SHADOW_REDACTION_KEY"
KEY_FILE_ENV = "SHADOW_REDACTION_KEY_FILE"
LEGACY_KEY_FILE = ".shadow-key"  # where keys lived before session 7: inside the capture (refused now)
REDACTED_PREFIX = "redacted:"

_TOKEN_CACHE_SIZE = 4096
_TOKEN_CACHE_VALUE_MAX = 512
_NAME_CACHE_SIZE = 8192


class _Unparsed:
    def __repr__(self) -> str:
        return "UNPARSED"


UNPARSED: Any = _Unparsed()  # redact_json did not parse the body (not JSON, or nothing to redact)

_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
_URL_HEADERS = frozenset({"referer", "location", "content-location"})
_COOKIE_ATTRIBUTES = frozenset(
    {"path", "domain", "expires", "max-age", "secure", "httponly", "samesite", "partitioned", "priority"}
)
_BRACKETS = re.compile(r"[^\[\]]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_JWT_BYTES = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PARAM_SEPARATORS = re.compile(r"([&;])")
_PARAM_NAMES = re.compile(r"(?:^|[&;])([^=&;]*)=")
_MULTIPART_NAME = re.compile(rb'''(?i)content-disposition:[^\r\n]*?\bname\*?=(?:"([^"]*)"|([^;\s]+))''')


def _is_jwt(value: str) -> bool:
    return "eyJ" in value and _JWT.search(value) is not None


def normalize_name(name: str, *, header: bool = False) -> str:
    """The form secret names are compared in: "X-Api-Key" (header), "api_key[]", "apiKey" -> "apikey"."""
    if "[" in name:
        parts = _BRACKETS.findall(name)
        if parts:
            name = parts[-1]
    folded = "".join(c for c in name.casefold() if c.isalnum())
    if header and folded.startswith("x") and name[:2].lower() == "x-":
        folded = folded[1:]
    return folded


def default_key_file() -> Path:
    """$SHADOW_REDACTION_KEY_FILE, else $XDG_CONFIG_HOME/shadow/redaction.key (~/.config/...)."""
    explicit = os.environ.get(KEY_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "shadow" / "redaction.key"


def load_redaction_key(capture_dir: str | Path, settings: RedactionSettings) -> bytes:
    """The HMAC key, never stored inside the capture: settings.key, else $SHADOW_REDACTION_KEY, else
    the key file (settings.key_file, else `default_key_file()`), created once (mode 0600).

    A capture folder holding a legacy in-capture key (`.shadow-key`) is refused: anyone with a copy
    of the folder had the key. Its rows stay readable; the message says how to move on."""
    legacy = Path(capture_dir) / LEGACY_KEY_FILE
    if legacy.exists():
        raise CaptureError(
            f"{legacy}: this capture keeps its redaction key inside it, so anyone with a copy can recover "
            f"hashed values; move the file out (e.g. to {default_key_file()}, or set ${KEY_ENV} / "
            f"${KEY_FILE_ENV}) or delete it, then start again (the capture stays readable; see docs/capture.md)")
    if settings.key:
        return settings.key
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    path = Path(settings.key_file).expanduser() if settings.key_file else default_key_file()
    try:
        if Path(capture_dir).resolve() in path.resolve().parents:
            raise CaptureError(f"{path}: the redaction key file must not be inside the capture folder "
                               f"{capture_dir} (a copy of the capture would carry its key)")
    except OSError:
        pass
    return _read_or_create_key(path)


def _read_or_create_key(path: Path) -> bytes:
    hint = f"set ${KEY_ENV} or ${KEY_FILE_ENV}, or shadow.redaction.keyFile"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process may have created it a moment ago and not written it yet: wait a little.
            for _ in range(50):
                key = path.read_text().strip()
                if key:
                    return key.encode()
                time.sleep(0.02)
            raise CaptureError(f"{path}: redaction key file is empty; delete it or {hint}") from None
        key_text = secrets.token_hex(32)
        with os.fdopen(fd, "w") as f:
            f.write(key_text + "\n")
            f.flush()
            os.fsync(f.fileno())
        return key_text.encode()
    except OSError as e:
        raise CaptureError(f"{path}: cannot read or create the redaction key ({e.strerror or e}); {hint}") from None


def _parse_pointer(pointer: str) -> tuple[str, ...]:
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:])


class Redactor:
    """Applies one RedactionSettings with one key. Thread-safe (its only state is caches)."""

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
                bare.add(f)
        self.pointers = tuple(pointers)
        self.allowed = frozenset(normalize_name(n) for n in settings.allow)
        exact = {normalize_name(n) for n in (*bare, *settings.names, *settings.query_params)}
        exact |= {normalize_name(h, header=True) for h in settings.headers}
        suffixes: tuple[str, ...] = ()
        if settings.defaults:
            exact |= set(DEFAULT_SECRET_NAMES)
            suffixes = DEFAULT_SECRET_SUFFIXES
        exact.discard("")
        self.exact_names = frozenset(exact - self.allowed)
        self.suffixes = tuple(w for w in suffixes if w not in self.allowed)
        # A body is parsed only if one of its keys may be secret (`_may_hold_secret`). A pointer
        # ending in "*" or an index has no key of its own: then every body parses.
        self._harmless_keys: set[bytes] = set()  # lower-cased JSON keys seen and known not to be secret
        self._always_parse = False
        pointer_keys: set[bytes] = set()
        for ptr in pointers:
            keys = [seg for seg in ptr if seg != "*" and not seg.isdigit()]
            if keys:
                pointer_keys.add(keys[-1].lower().encode())
            else:
                self._always_parse = True
        self._pointer_keys = tuple(pointer_keys)
        self.redacts_json = bool(self.exact_names or self.suffixes or self.pointers)
        # Sessions send the same Authorization and cookies over and over: remember their tokens.
        self._tokens_cache: dict[str | bytes, str] = {}
        self._names_cache: dict[str, bool] = {}
        self._header_cache: dict[str, bool] = {}
        self._params_cache: dict[str, bool] = {}

    # -- names ------------------------------------------------------------------------------------
    def _normalized_is_secret(self, norm: str) -> bool:
        if not norm or norm in self.allowed:
            return False
        return norm in self.exact_names or norm.endswith(self.suffixes)

    def is_secret_name(self, name: str) -> bool:
        """Is a parameter, field or JSON key called `name` a secret (see normalize_name)?"""
        cache = self._names_cache
        hit = cache.get(name)
        if hit is None:
            hit = self._normalized_is_secret(normalize_name(name))
            if len(cache) >= _NAME_CACHE_SIZE:
                cache.clear()
            cache[name] = hit
        return hit

    def is_secret_header(self, lname: str) -> bool:
        """Is the header `lname` (lower case) redacted?"""
        hit = self._header_cache.get(lname)
        if hit is None:
            hit = lname in self.header_names or self._normalized_is_secret(normalize_name(lname, header=True))
            if len(self._header_cache) >= _NAME_CACHE_SIZE:
                self._header_cache.clear()
            self._header_cache[lname] = hit
        return hit

    # -- values -----------------------------------------------------------------------------------
    def token(self, value: str | bytes) -> str:
        """"redacted:" + the 64 hex of HMAC-SHA256(key, value) (full length: no brute-forcing a short tag)."""
        cached = self._tokens_cache.get(value)
        if cached is not None:
            return cached
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        token = REDACTED_PREFIX + hmac.digest(self.key, data, "sha256").hex()
        if len(value) <= _TOKEN_CACHE_VALUE_MAX:  # credentials are short; a redacted JSON object may not be
            if len(self._tokens_cache) >= _TOKEN_CACHE_SIZE:
                self._tokens_cache.clear()  # crude but bounded; the same few credentials repeat
            self._tokens_cache[value] = token
        return token

    # -- headers ----------------------------------------------------------------------------------
    def header_value(self, name: str, value: str) -> str | None:
        """The stored value of header `name`, or None to drop it. `name` must be lower case."""
        if name in _URL_HEADERS:
            return self.url(value)
        if not self.is_secret_header(name):
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
        for name, value in headers:
            lname = name.lower()
            if lname not in _URL_HEADERS and not self.is_secret_header(lname):
                out.append((name, value))
                continue
            redacted = self.header_value(lname, value)
            if redacted is not None:
                out.append((name, redacted))
        return out

    # -- URLs, query strings, form bodies ----------------------------------------------------------
    def _is_secret_param(self, raw_name: str) -> bool:
        hit = self._params_cache.get(raw_name)
        if hit is None:
            hit = self.is_secret_name(unquote_plus(raw_name))
            if len(self._params_cache) >= _NAME_CACHE_SIZE:
                self._params_cache.clear()
            self._params_cache[raw_name] = hit
        return hit

    def query(self, query: str) -> str:
        """`query` (or a form-urlencoded body, or a fragment) with secret parameters' values redacted
        (or the parameters dropped). "&" and ";" both separate parameters."""
        if not query or "=" not in query:
            return query
        if "eyJ" not in query and not any(map(self._is_secret_param, _PARAM_NAMES.findall(query))):
            return query
        parts = _PARAM_SEPARATORS.split(query)  # [param, sep, param, sep, ...]
        out: list[str] = []
        changed = False
        for i in range(0, len(parts), 2):
            part = parts[i]
            name, eq, value = part.partition("=")
            if eq and (self._is_secret_param(name) or _is_jwt(unquote_plus(value))):
                changed = True
                if self.remove:
                    continue
                part = f"{name}={quote(self.token(unquote_plus(value)), safe=':')}"
            if out:
                out.append(parts[i - 1])
            out.append(part)
        return "".join(out) if changed else query

    def path(self, path: str) -> str:
        """`path` with secret path parameters (";api_key=...") and JWT-shaped segments redacted."""
        if ";" not in path and "eyJ" not in path:
            return path
        segments = path.split("/")
        changed = False
        for i, segment in enumerate(segments):
            head, semi, params = segment.partition(";")
            new_params = self.query(params) if semi else params
            if self.remove and semi and not new_params:
                semi = ""
            new_head = head
            if "eyJ" in head and _JWT.search(unquote_plus(head)):
                new_head = self.token(unquote_plus(head))
            if new_head != head or new_params != params:
                segments[i] = new_head + semi + new_params
                changed = True
        return "/".join(segments) if changed else path

    def url(self, url: str) -> str:
        """`url` with a userinfo password, secret path / query / fragment parameters and JWTs redacted."""
        if not url:
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
        path = self.path(parts.path)
        query = self.query(parts.query)
        fragment = self.query(parts.fragment)  # OAuth's implicit flow returns #access_token=...
        if (netloc, path, query, fragment) == (parts.netloc, parts.path, parts.query, parts.fragment):
            return url
        return urlunsplit((parts.scheme, netloc, path, query, fragment))

    # -- bodies -----------------------------------------------------------------------------------
    def body(self, body: bytes, content_type: str | None) -> tuple[bytes, Any]:
        """(`body` with secrets redacted, the parsed JSON document or `UNPARSED`): JSON (by its first
        byte), form-urlencoded and multipart/form-data (by `content_type`)."""
        if not body:
            return body, UNPARSED
        ctype = (content_type or "").lower()
        if ctype.startswith("application/x-www-form-urlencoded"):
            text = body.decode("latin-1")
            redacted = self.query(text)
            return (body if redacted is text else redacted.encode("latin-1")), UNPARSED
        if ctype.startswith("multipart/"):
            return self.multipart(body, content_type or ""), UNPARSED
        return self.redact_json(body)

    def multipart(self, body: bytes, content_type: str) -> bytes:
        """A multipart body with the content of secret-named parts (and JWT-shaped contents) redacted."""
        boundary = ""
        for param in content_type.split(";")[1:]:
            k, _, v = param.strip().partition("=")
            if k.lower() == "boundary":
                boundary = v.strip().strip('"')
        if not boundary:
            return body
        delimiter = b"--" + boundary.encode("latin-1")
        chunks = body.split(delimiter)
        changed = False
        for i in range(1, len(chunks)):
            chunk = chunks[i]
            head, sep, content = chunk.partition(b"\r\n\r\n")
            if not sep:
                continue
            trailer = b"\r\n" if content.endswith(b"\r\n") else b""
            value = content[: len(content) - len(trailer)]
            match = _MULTIPART_NAME.search(head)
            name = (match.group(1) or match.group(2) or b"").decode("utf-8", "replace") if match else ""
            if (name and self.is_secret_name(name)) or _JWT_BYTES.fullmatch(value.strip()):
                changed = True
                replacement = b"" if self.remove else self.token(value).encode()
                chunks[i] = head + sep + replacement + trailer
        return delimiter.join(chunks) if changed else body

    def json_body(self, body: bytes) -> bytes:
        """`body` with secret JSON fields redacted; unchanged if nothing matched or not JSON."""
        return self.redact_json(body)[0]

    def _may_hold_secret(self, body: bytes) -> bool:
        """False only when no key of `body` can be a secret name (most bodies: then they are not parsed).

        A key is a quoted string followed by a colon: the text before each '":' back to its opening
        quote. Splitting is one C call, and the keys of an endpoint's bodies repeat, so the set of keys
        already known to be harmless settles most bodies with one set difference."""
        if self._always_parse or b"\\u" in body:  # a \u escape (\u0070assword) can spell any key
            return True
        text = body.lower()
        if b'" ' in text or b'"\t' in text or b'"\r' in text or b'"\n' in text:
            text = re.sub(rb'"\s+:', b'":', text)  # '"key" : value' styles
        keys = {chunk[chunk.rfind(b'"') + 1:] for chunk in text.split(b'":')[:-1]}
        unknown = keys - self._harmless_keys
        if not unknown:
            return False
        for key in unknown:
            if key in self._pointer_keys or self.is_secret_name(key.decode("utf-8", "replace")):
                return True
        if len(self._harmless_keys) + len(unknown) > _NAME_CACHE_SIZE:
            self._harmless_keys = set()
        self._harmless_keys |= unknown
        return False

    def redact_json(self, body: bytes) -> tuple[bytes, Any]:
        """(`json_body(body)`, the parsed and redacted document or `UNPARSED`), so a caller that
        hashes the body next need not parse it again."""
        if not self.redacts_json or not body:
            return body, UNPARSED
        head = body[:64].lstrip()
        if head[:1] not in (b"{", b"["):
            return body, UNPARSED
        if not self._may_hold_secret(body):
            return body, UNPARSED
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, UNPARSED
        changed = self._redact_names(doc)
        for pointer in self.pointers:
            changed |= self._redact_pointer(doc, pointer)
        return (orjson.dumps(doc) if changed else body), doc

    def _replacement(self, value: Any) -> str:
        if isinstance(value, str):
            return self.token(value)
        return self.token(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))

    def _redact_names(self, root: Any) -> bool:
        """Redact every value whose key is a secret name, at any depth (the value is not walked)."""
        if type(root) is not dict and type(root) is not list:
            return False
        is_secret = self.is_secret_name
        hits: list[tuple[dict[str, Any], str]] = []

        # Plain recursion over containers only (most values are scalars); collect first, mutate after.
        def walk(node: Any) -> None:
            if type(node) is dict:
                for k, v in node.items():
                    if is_secret(k):
                        hits.append((node, k))
                    elif type(v) is dict or type(v) is list:
                        walk(v)
            else:
                for v in node:
                    if type(v) is dict or type(v) is list:
                        walk(v)

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
