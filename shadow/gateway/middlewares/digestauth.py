"""Traefik's `digestAuth` (pkg/middlewares/auth/digest_auth.go, go-http-auth's DigestAuth).

Users are `user:realm:HA1` lines (HA1 = MD5 hex of `user:realm:password`, htdigest's format) from
`users` and `usersFile`; the user is looked up under the middleware's `realm` (default `traefik`).
A request without valid Digest credentials gets 401 with
`WWW-Authenticate: Digest realm="…", nonce="…", opaque="…", algorithm="MD5", qop="auth"`; a valid
response for a nonce this gateway did not issue (or forgot) gets the same with `stale=true`. The
nonce count must grow per nonce (replays refused). At most 1000 (+100) nonces are remembered, the
least recently seen forgotten first. `headerField` carries the user upstream; `removeHeader` drops
Authorization.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass

from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest, first_header, without_header

__all__ = ["DigestAuth", "DigestAuthenticator", "digest_params"]

DEFAULT_REALM = "traefik"
CLIENT_CACHE_SIZE = 1000
CLIENT_CACHE_TOLERANCE = 100


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()


def digest_params(value: str) -> dict[str, str] | None:
    """go-http-auth's DigestAuthParams: the key=value pairs of a `Digest …` header, or None."""
    if not value.startswith("Digest "):
        return None
    out: dict[str, str] = {}
    rest = value[len("Digest "):]
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = rest.find('"', i + 1)
            end = len(rest) if end < 0 else end
            out[key] = rest[i + 1:end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            out[key] = rest[i:end].strip()
            i = end
    return out


@dataclass(frozen=True)
class DigestAuth:
    name: str
    users: tuple[tuple[str, str], ...]  # ("user:realm", HA1)
    realm: str = DEFAULT_REALM
    remove_header: bool = False
    header_field: str = ""


def _random_key() -> str:
    return base64.b64encode(os.urandom(12)).decode()


class DigestAuthenticator:
    """The middleware's state: the opaque value and the nonces it issued with their counts."""

    def __init__(self, settings: DigestAuth) -> None:
        self.settings = settings
        self.opaque = _random_key()
        self.clients: OrderedDict[str, int] = OrderedDict()  # nonce → last nonce count (0: unused)
        self._users = dict(settings.users)

    def _challenge(self, stale: bool) -> LocalAnswer:
        if len(self.clients) > CLIENT_CACHE_SIZE + CLIENT_CACHE_TOLERANCE:
            for _ in range(CLIENT_CACHE_TOLERANCE * 2):
                self.clients.popitem(last=False)
        nonce = _random_key()
        self.clients[nonce] = 0
        value = (f'Digest realm="{self.settings.realm}", nonce="{nonce}", opaque="{self.opaque}", '
                 f'algorithm="MD5", qop="auth"')
        if stale:
            value += ", stale=true"
        return LocalAnswer(401, (("Content-Type", "text/plain"), ("Www-Authenticate", value)), b"401 Unauthorized\n")

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest | LocalAnswer:
        auth = digest_params(first_header(req.headers, "Authorization"))
        user = self._verify(req, auth)
        if user is None or user == "":
            return self._challenge(stale=user == "")
        headers = list(req.headers)
        if self.settings.header_field:
            headers = [*without_header(headers, self.settings.header_field), (self.settings.header_field, user)]
        if self.settings.remove_header:
            headers = without_header(headers, "Authorization")
        return req.with_headers(headers)

    def _verify(self, req: MiddlewareRequest, auth: dict[str, str] | None) -> str | None:
        """The user; "" for a valid answer to an unknown nonce (stale); None otherwise."""
        if auth is None:
            return None
        auth.setdefault("algorithm", "MD5")
        if auth.get("opaque") != self.opaque or auth["algorithm"] != "MD5" or auth.get("qop") != "auth":
            return None
        uri = auth.get("uri", "")
        if uri != req.uri:
            path = uri.split("?", 1)[0]
            if len(path) > len(req.path) or not req.path.startswith(path):
                return None
        username = auth.get("username", "")
        ha1 = self._users.get(f"{username}:{self.settings.realm}", "")
        ha2 = _md5(f"{req.method}:{uri}")
        parts = [ha1, auth.get("nonce", ""), auth.get("nc", ""), auth.get("cnonce", ""), auth["qop"], ha2]
        if not hmac.compare_digest(_md5(":".join(parts)), auth.get("response", "")):
            return None
        try:
            nc = int(auth.get("nc", ""), 16)
        except ValueError:
            return None
        nonce = auth.get("nonce", "")
        if nonce not in self.clients:
            return ""
        if self.clients[nonce] != 0 and self.clients[nonce] >= nc:
            return None
        self.clients[nonce] = nc
        self.clients.move_to_end(nonce)
        return username
