"""OIDC middleware for browser traffic: the pure parts (no I/O).

Authorization-code flow with PKCE (RFC 7636, S256) against the issuer's discovery document. The
addon (addons/auth.py) does the HTTP calls; this module builds the authorization URL, the state
cookie and the session cookie, and decides what a request needs (login, callback, logout, refresh
or pass). Cookies are JWE compact tokens (`dir` + A256GCM, key = SHA-256 of the configured secret):
AES-GCM both encrypts and authenticates, so a cookie cannot be read nor altered without the
secret. Every cookie carries its own expiry, checked on decode. A session longer than one cookie
(an id token with many claims) is split into NAME_0, NAME_1, … (`session_set_cookies`), as
oauth2-proxy does: a browser silently drops a cookie over 4096 bytes, which shows as a login loop.

Options (Traefik Hub's OIDC middleware names where reference/traefik.md gives none, in the same
style): `issuer`, `clientId`, `clientSecret`, `redirectPath` (default `/oidc/callback`),
`logoutPath` (`/oidc/logout`), `scopes` ([openid]), `session: {name, secret, expiry}`,
`forwardHeaders`, `claims` (as the jwt middleware's).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from joserfc import errors as jose_errors
from joserfc import jwe
from joserfc.jwk import OctKey

from shadow.auth.claims import ClaimExpr

__all__ = ["CookieCodec", "OidcSettings", "SessionTooLarge", "authorization_url", "local_path", "pkce_pair",
           "session_cookie_names", "session_set_cookies", "session_value"]

# A browser keeps a cookie of up to 4096 bytes, name, value and attributes together (RFC 6265 §6.1's
# minimum, the limit of the major browsers); a longer Set-Cookie is dropped without a word. A chunk's
# value leaves room for its name and attributes.
COOKIE_VALUE_CHARS = 3800
# At most this many chunks (≈ 30 KB of cookies on every request): beyond, request headers outgrow
# what common servers accept (8–32 KB), so the login is refused with a clear reason instead.
MAX_SESSION_CHUNKS = 8
MAX_SESSION_CHARS = COOKIE_VALUE_CHARS * MAX_SESSION_CHUNKS


@dataclass(frozen=True)
class OidcSettings:
    name: str
    issuer: str
    client_id: str
    client_secret: str
    session_secret: bytes
    redirect_path: str = "/oidc/callback"
    logout_path: str = "/oidc/logout"
    scopes: tuple[str, ...] = ("openid",)
    session_name: str = "shadow_session"
    session_expiry_s: float = 86400.0
    forward_headers: tuple[tuple[str, str], ...] = ()
    forward_authorization: bool = False  # the session cookie is always stripped; kept for symmetry
    forward_missing_claims: bool = False  # a missing claim: no header (True: an empty one)
    claims: ClaimExpr | None = None
    leeway_s: float = 30.0
    jwks_timeout_s: float = 2.0

    @property
    def state_cookie(self) -> str:
        return self.session_name + "_state"


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_url(endpoint: str, settings: OidcSettings, *, redirect_uri: str, state: str, nonce: str,
                      challenge: str) -> str:
    query = urlencode({"response_type": "code", "client_id": settings.client_id, "redirect_uri": redirect_uri,
                       "scope": " ".join(settings.scopes), "state": state, "nonce": nonce,
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


class CookieCodec:
    """Encrypted and authenticated cookie values with an expiry (JWE dir/A256GCM via joserfc)."""

    def __init__(self, secret: bytes) -> None:
        self._key = OctKey.import_key(hashlib.sha256(secret).digest())

    def encode(self, payload: Mapping[str, Any], *, expires_at: float) -> str:
        body = json.dumps({"v": dict(payload), "exp": int(expires_at)}, separators=(",", ":")).encode()
        return jwe.encrypt_compact({"alg": "dir", "enc": "A256GCM"}, body, self._key)

    def decode(self, value: str, *, now: float | None = None) -> dict[str, Any] | None:
        """The payload, or None when the cookie is forged, altered, malformed or expired."""
        if not value or len(value) > MAX_SESSION_CHARS:
            return None
        try:
            obj = jwe.decrypt_compact(value, self._key, algorithms=["dir", "A256GCM"])
            data = json.loads(obj.plaintext or b"")
        except (jose_errors.JoseError, ValueError, TypeError, KeyError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("v"), dict):
            return None
        if not isinstance(data.get("exp"), int) or data["exp"] <= (time.time() if now is None else now):
            return None
        return data["v"]


def request_cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    """name → value of the request's Cookie headers (the first of a name wins)."""
    out: dict[str, str] = {}
    for name, value in headers:
        if name.lower() == "cookie":
            for part in value.split(";"):
                key, sep, val = part.strip().partition("=")
                if sep and key not in out:
                    out[key] = val
    return out


def without_cookies(headers: list[tuple[str, str]], names: set[str]) -> list[tuple[str, str]]:
    """The headers with the named cookies removed (an emptied Cookie header is dropped): the
    session never reaches an upstream."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name.lower() != "cookie":
            out.append((name, value))
            continue
        kept = [p.strip() for p in value.split(";") if p.strip() and p.strip().partition("=")[0] not in names]
        if kept:
            out.append((name, "; ".join(kept)))
    return out


class SessionTooLarge(ValueError):
    """The sealed session does not fit in MAX_SESSION_CHUNKS cookies."""


def session_cookie_names(cookies: Mapping[str, str], name: str) -> set[str]:
    """The request's cookies that carry session `name`: `name` itself and its chunks NAME_0, NAME_1, …
    (not NAME_state, the login state cookie)."""
    prefix = name + "_"
    return {k for k in cookies if k == name or (k.startswith(prefix) and k[len(prefix):].isdigit())}


def session_value(cookies: Mapping[str, str], name: str) -> str:
    """The sealed session: the `name` cookie, else its chunks NAME_0, NAME_1, … joined in order."""
    if name in cookies:
        return cookies[name]
    parts: list[str] = []
    for i in range(MAX_SESSION_CHUNKS):
        part = cookies.get(f"{name}_{i}")
        if part is None:
            break
        parts.append(part)
    return "".join(parts)


def session_set_cookies(name: str, value: str, *, max_age: int, secure: bool,
                        present: AbstractSet[str] = frozenset()) -> list[str]:
    """Set-Cookie lines carrying the sealed session `value`: one `name` cookie when it fits, else
    NAME_0, NAME_1, …; the cookies of `present` (the request's, from `session_cookie_names`) that the
    new set does not use are expired, so no stale chunk outlives a shorter session."""
    if len(value) > MAX_SESSION_CHARS:
        raise SessionTooLarge(f"the session is too large for cookies ({len(value)} characters sealed, at most "
                              f"{MAX_SESSION_CHARS} in {MAX_SESSION_CHUNKS} cookies): the identity provider's "
                              "id token carries too many claims")
    if len(value) <= COOKIE_VALUE_CHARS:
        used = {name: value}
    else:
        used = {f"{name}_{i}": value[start:start + COOKIE_VALUE_CHARS]
                for i, start in enumerate(range(0, len(value), COOKIE_VALUE_CHARS))}
    lines = [set_cookie(k, v, max_age=max_age, secure=secure) for k, v in used.items()]
    lines += [set_cookie(k, "", max_age=0, secure=secure) for k in sorted(present - used.keys())]
    return lines


def set_cookie(name: str, value: str, *, max_age: int | None, secure: bool) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def local_path(target: str) -> str:
    """Where to send the browser back after login: the page asked for, as long as it is a path on
    this site ("//evil.example/x" or "/\\evil.example" would be read by browsers as another host:
    an open redirect), else "/"."""
    if not target.startswith("/") or target.startswith(("//", "/\\")) or any(c in target for c in "\r\n"):
        return "/"
    return target
