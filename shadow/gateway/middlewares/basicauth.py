"""Traefik's `basicAuth` (pkg/middlewares/auth/basic_auth.go).

Users are `name:hash` lines (`users`, and `usersFile`: one per line, blank and `#` lines skipped);
hashes in htpasswd formats as go-http-auth's CheckSecret reads them: bcrypt (`$2y$`, `$2a$`,
`$2b$`, `$2x$`), `{SHA}` (base64 SHA-1) and MD5-crypt (`$apr1$`, `$1$`); anything else never
matches (plain-text passwords are not accepted, as in Traefik). An unknown user is checked
against some user's hash anyway (no timing oracle for user names). Failure → 401 with
`WWW-Authenticate: Basic realm="<realm>"` (default realm `traefik`). Success: `headerField` (if
set) carries the user name upstream, and `removeHeader: true` drops Authorization.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

import bcrypt
from passlib.hash import apr_md5_crypt, md5_crypt

from shadow.gateway.middlewares.request import (
    LocalAnswer,
    MiddlewareRequest,
    first_header,
    without_header,
)

__all__ = ["BasicAuth", "check_secret", "parse_users"]

DEFAULT_REALM = "traefik"


def check_secret(password: str, secret: str) -> bool:
    """go-http-auth's CheckSecret."""
    raw = password.encode("utf-8", "surrogateescape")
    try:
        if secret.startswith(("$2a$", "$2b$", "$2x$", "$2y$")):
            hashed = secret.encode()
            if secret.startswith("$2x$"):  # same as $2y$ for 7-bit passwords (go-http-auth's note)
                hashed = b"$2y$" + hashed[4:]
            return bcrypt.checkpw(raw, hashed)
        if secret.startswith("{SHA}"):
            want = base64.b64decode(secret[5:], validate=True)
            return hmac.compare_digest(hashlib.sha1(raw).digest(), want)
        if secret.startswith("$apr1$"):
            return bool(apr_md5_crypt.verify(raw, secret))
        if secret.startswith("$1$"):
            return bool(md5_crypt.verify(raw, secret))
    except (ValueError, TypeError, binascii.Error):
        return False
    return False


def parse_users(lines: list[str]) -> dict[str, str]:
    """`user:hash` lines → {user: hash}; ValueError naming a line that is not exactly `user:hash`."""
    users: dict[str, str] = {}
    for line in lines:
        parts = line.split(":")
        if len(parts) != 2:
            raise ValueError(f"error parsing BasicUser: {line}")
        users[parts[0]] = parts[1]
    return users


def users_file_lines(text: str) -> list[str]:
    """A users file's lines: trimmed, blank and `#` lines skipped."""
    return [s for raw in text.split("\n") if (s := raw.strip()) and not s.startswith("#")]


def _decode_basic(value: str) -> tuple[str, str] | None:
    """Go's Request.BasicAuth: `Basic <base64 user:password>` (scheme case-insensitive)."""
    if len(value) < 6 or value[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:], validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


@dataclass(frozen=True)
class BasicAuth:
    name: str
    users: tuple[tuple[str, str], ...]  # (user, hash), file users first as Traefik appends
    realm: str = DEFAULT_REALM
    remove_header: bool = False
    header_field: str = ""

    def user_of(self, req: MiddlewareRequest) -> str | None:
        """The user name the request's Basic credentials carry (for the capture), or None."""
        credentials = _decode_basic(first_header(req.headers, "Authorization"))
        return credentials[0] if credentials is not None else None

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest | LocalAnswer:
        users = dict(self.users)
        credentials = _decode_basic(first_header(req.headers, "Authorization"))
        authenticated = False
        if credentials is not None:
            user, password = credentials
            secret = users.get(user, "")
            if secret:
                authenticated = check_secret(password, secret)
            elif users:
                check_secret(password, next(iter(users.values())))  # same cost for an unknown user
        if not authenticated:
            return LocalAnswer(401, (("Content-Type", "text/plain; charset=utf-8"),
                                     ("Www-Authenticate", f'Basic realm="{self.realm}"')),
                               b"401 Unauthorized\n")
        assert credentials is not None
        headers = list(req.headers)
        if self.header_field:
            headers = [*without_header(headers, self.header_field), (self.header_field, credentials[0])]
        if self.remove_header:
            headers = without_header(headers, "Authorization")
        return req.with_headers(headers)
