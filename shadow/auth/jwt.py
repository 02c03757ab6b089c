"""JWT verification for the `jwt` middleware (Traefik Hub's option names), pure and synchronous.

Signatures are checked by joserfc, never here: this module picks which algorithms a key source may
use (static secret → HMAC only; public key or JWKS → asymmetric only, so an HS256 token "signed"
with an RSA public key is refused before any key is touched), bounds the token's size, reads the
header only to learn `alg` and `kid`, and maps every failure to a `TokenRejected` carrying the HTTP
status and the `error_description` for `WWW-Authenticate`.

`JwksCache` holds a key set fetched from a JWKS URL: the addon (addons/auth.py) does the fetching
asynchronously; the cache decides *when* a fetch is due (never fetched, older than `max_age`, or an
unknown `kid` once the refresh floor has passed since the last attempt) so a flood of tokens with
made-up `kid`s cannot turn the gateway into a load generator against the identity provider.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc import errors as jose_errors
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet, OctKey, import_key

from shadow.auth.claims import ClaimExpr, claim_at

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "JwksCache",
    "JwtSettings",
    "TokenRejected",
    "VerifiedTokens",
    "bearer_token",
    "claim_header_value",
    "static_key_set",
    "upstream_headers",
    "verify_token",
]

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                         "EdDSA", "Ed25519")


@dataclass(frozen=True)
class JwtSettings:
    """One `jwt` middleware. Exactly one key source: `signing_secret`, `public_key`, `jwks_url`,
    or `issuer` alone (OIDC discovery: `{issuer}/.well-known/openid-configuration` → `jwks_uri`)."""

    name: str
    signing_secret: bytes | None = None
    public_key: str | None = None  # PEM or a JWK as JSON text
    jwks_url: str | None = None
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ()  # () = every algorithm the key source allows
    leeway_s: float = 30.0
    forward_headers: tuple[tuple[str, str], ...] = ()  # (header, dotted claim path)
    forward_authorization: bool = False
    forward_missing_claims: bool = False  # a missing claim: no header (True: an empty one)
    claims: ClaimExpr | None = None
    claims_text: str = ""
    token_query_key: str | None = None
    max_token_bytes: int = 8192
    jwks_timeout_s: float = 2.0
    jwks_refresh_floor_s: float = 30.0
    jwks_max_age_s: float = 3600.0

    @property
    def discovery(self) -> bool:
        return self.jwks_url is None and self.signing_secret is None and self.public_key is None

    @property
    def remote_keys(self) -> bool:
        return self.jwks_url is not None or self.discovery

    def allowed_algorithms(self) -> tuple[str, ...]:
        family = HMAC_ALGORITHMS if self.signing_secret is not None else ASYMMETRIC_ALGORITHMS
        if not self.algorithms:
            return family
        return tuple(a for a in self.algorithms if a in family)


class TokenRejected(Exception):
    """Why a request is refused: `status` 401 (bad or missing token) or 403 (claims condition),
    `description` for the client, `reason` a short counter name."""

    def __init__(self, description: str, *, reason: str, status: int = 401) -> None:
        super().__init__(description)
        self.description = description
        self.reason = reason
        self.status = status

    def www_authenticate(self) -> str:
        if self.reason == "missing":  # RFC 6750 §3.1: no error code when no credentials were sent
            return 'Bearer realm="shadow"'
        code = "insufficient_scope" if self.status == 403 else "invalid_token"
        text = self.description.replace("\\", "\\\\").replace('"', '\\"')
        return f'Bearer error="{code}", error_description="{text}"'


def static_key_set(settings: JwtSettings) -> KeySet | None:
    """The key set of `signingSecret` / `publicKey` (None for remote keys). Raises ValueError on a
    key joserfc cannot import (the config loader turns that into a ConfigError)."""
    if settings.signing_secret is not None:
        return KeySet([OctKey.import_key(settings.signing_secret)])
    if settings.public_key is not None:
        text = settings.public_key.strip()
        if not text.startswith(("-----BEGIN", "{")):
            raise ValueError("cannot import the public key: expected a PEM block or a JWK (JSON)")
        data: Any = json.loads(text) if text.startswith("{") else text
        try:
            with warnings.catch_warnings():  # "implicit key type": the PEM itself says which it is
                warnings.simplefilter("ignore")
                key = import_key(data)
        except (jose_errors.JoseError, ValueError, TypeError) as exc:
            raise ValueError(f"cannot import the public key: {exc}") from None
        if key.is_private:
            raise ValueError("publicKey holds a private key; give the public half")
        return KeySet([key])
    return None


def bearer_token(headers: Iterable[tuple[str, str]], query: Mapping[str, str] | None,
                 settings: JwtSettings) -> str:
    """The token from `Authorization: Bearer ...` (or the `tokenQueryKey` parameter)."""
    for name, value in headers:
        if name.lower() == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise TokenRejected("the Authorization header is not a Bearer token", reason="malformed")
            return token.strip()
    if settings.token_query_key and query and query.get(settings.token_query_key):
        return query[settings.token_query_key]
    raise TokenRejected("no bearer token", reason="missing")


def _segment_json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenRejected(f"malformed token: the {what} is not base64url JSON", reason="malformed") from None
    if not isinstance(value, dict):
        raise TokenRejected(f"malformed token: the {what} is not a JSON object", reason="malformed")
    return value


def token_header(token: str, settings: JwtSettings) -> dict[str, Any]:
    """The JOSE header, after the size cap and a shape check (no signature work yet)."""
    if len(token) > settings.max_token_bytes:
        raise TokenRejected(f"token larger than {settings.max_token_bytes} bytes", reason="oversized")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise TokenRejected("malformed token: expected header.payload.signature", reason="malformed")
    header = _segment_json(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenRejected("malformed token: no alg in the header", reason="malformed")
    if alg not in settings.allowed_algorithms():
        raise TokenRejected(f"algorithm {alg} is not accepted", reason="algorithm")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenRejected("malformed token: kid is not a string", reason="malformed")
    return header


def verify_token(token: str, keys: KeySet, settings: JwtSettings, *, now: float | None = None) -> dict[str, Any]:
    """Claims of a valid token; raises TokenRejected otherwise. `keys` is the static key set or the
    JWKS cache's current set (the caller refreshes it first for an unknown kid)."""
    header = token_header(token, settings)
    kid = header.get("kid")
    if not settings.remote_keys or (len(keys.keys) == 1 and kid is None):
        key = keys.keys[0]  # the one static key (signingSecret, publicKey) whatever kid the token names
    elif kid is None:
        raise TokenRejected("the token names no kid and the key set has several keys", reason="unknown_kid")
    else:
        found = [k for k in keys.keys if k.kid == kid]
        if not found:
            raise TokenRejected(f"unknown key id {kid!r}", reason="unknown_kid")
        key = found[0]
    try:
        decoded = jose_jwt.decode(token, key, algorithms=list(settings.allowed_algorithms()))
    except jose_errors.BadSignatureError:
        raise TokenRejected("bad signature", reason="signature") from None
    except (jose_errors.JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenRejected(f"token rejected: {_describe(exc)}", reason="malformed") from None
    claims = decoded.claims
    check_claims(claims, settings, now=time.time() if now is None else now)
    return claims


def _describe(exc: Exception) -> str:
    text = getattr(exc, "description", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0][:200]


def check_claims(claims: Mapping[str, Any], settings: JwtSettings, *, now: float) -> None:
    """exp (required), nbf, iat with leeway; issuer; audience; then the claims condition (403)."""
    leeway = settings.leeway_s
    exp = claims.get("exp")
    if exp is None:
        raise TokenRejected("the token has no exp claim", reason="claims")
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not math.isfinite(value)):  # json accepts NaN and Infinity
            raise TokenRejected(f"claim {name} is not a NumericDate", reason="claims")
    if now - leeway >= exp:
        raise TokenRejected("the token has expired", reason="expired")
    nbf = claims.get("nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenRejected("the token is not valid yet (nbf)", reason="not_yet_valid")
    iat = claims.get("iat")
    if iat is not None and iat > now + leeway:
        raise TokenRejected("the token was issued in the future (iat)", reason="not_yet_valid")
    if settings.issuer is not None and claims.get("iss") != settings.issuer:
        raise TokenRejected("wrong issuer", reason="issuer")
    if settings.audience:
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a in settings.audience for a in auds):
            raise TokenRejected("wrong audience", reason="audience")
    if settings.claims is not None and not settings.claims.evaluate(claims):
        raise TokenRejected("the token's claims do not satisfy the condition", reason="condition", status=403)


def claim_header_value(value: Any) -> str:
    """A claim as a header value: strings as they are, lists comma-joined, other values as JSON;
    CR/LF dropped (no header injection); UTF-8 bytes carried as latin-1 characters so the gateway's
    latin-1 header codec sends the claim's UTF-8 bytes unchanged."""
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, list):
        text = ",".join(v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in value)
    else:
        text = json.dumps(value, separators=(",", ":"))
    text = text.replace("\r", "").replace("\n", "").replace("\0", "")
    return text.encode("utf-8").decode("latin-1")


class Forwarding(Protocol):
    @property
    def forward_headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def forward_authorization(self) -> bool: ...
    @property
    def forward_missing_claims(self) -> bool: ...


def normalized_header_name(name: str) -> str:
    """How a WSGI/CGI backend sees a header name: case and `_`/`-` do not matter (`X_Plan` is
    read as `HTTP_X_PLAN`, the same variable as `X-Plan`)."""
    return name.lower().replace("_", "-")


def upstream_headers(headers: Sequence[tuple[str, str]], claims: Mapping[str, Any],
                     settings: Forwarding) -> list[tuple[str, str]]:
    """The request headers after a successful check: every `forwardHeaders` header replaced by its
    claim. A client-sent header that normalises to a claim header's name (case, `_` for `-`:
    `X_Plan` for `X-Plan`) never survives, so no backend reads a spoofed twin; a missing claim
    is not forwarded at all unless `forwardMissingClaims` (then as an empty header, as Traefik
    Hub does). The Authorization header is removed unless `forwardAuthorization`."""
    drop = {normalized_header_name(h) for h, _ in settings.forward_headers}
    if not settings.forward_authorization:
        drop.add("authorization")
    out = [(k, v) for k, v in headers if normalized_header_name(k) not in drop]
    for header, path in settings.forward_headers:
        value = claim_at(claims, path)
        if value is not None or settings.forward_missing_claims:
            out.append((header, claim_header_value(value)))
    return out


class JwksCache:
    """The key set of one JWKS URL and when to fetch it again (no I/O here)."""

    def __init__(self, *, refresh_floor_s: float, max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_floor_s = refresh_floor_s
        self.max_age_s = max_age_s
        self.clock = clock
        self.keys: KeySet | None = None
        self.fetched_at = -1.0
        self.last_attempt: float | None = None
        self.fetches = 0
        self.failures = 0

    def has_kid(self, kid: str | None) -> bool:
        if self.keys is None:
            return False
        if kid is None:
            return len(self.keys.keys) == 1
        return any(k.kid == kid for k in self.keys.keys)

    def fresh_keys(self) -> KeySet | None:
        """The key set while younger than max_age, else None."""
        if self.keys is None or self.clock() - self.fetched_at >= self.max_age_s:
            return None
        return self.keys

    def fetch_due(self, kid: str | None) -> bool:
        """Fetch now? Stale or missing keys, or an unknown kid — but never twice within the floor."""
        now = self.clock()
        if self.last_attempt is not None and now - self.last_attempt < self.refresh_floor_s:
            return False
        if self.keys is None or now - self.fetched_at >= self.max_age_s:
            return True
        return not self.has_kid(kid)

    def attempt(self) -> None:
        self.last_attempt = self.clock()
        self.fetches += 1

    def store(self, document: Any) -> None:
        """Install a fetched JWKS document; raises ValueError when it is not a usable key set."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("the JWKS document has no keys list")
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (jose_errors.JoseError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"cannot import the JWKS: {_describe(exc)}") from None
        # Symmetric (oct) keys have no place in a published key set: they are dropped, so a JWKS can
        # never turn an HMAC algorithm on; a private asymmetric key means a misconfigured server.
        public = [k for k in keys.keys if k.key_type != "oct"]
        if any(k.is_private for k in public):
            raise ValueError("the JWKS holds private keys")
        self.keys = KeySet(public)
        self.fetched_at = self.clock()

    def failed(self) -> None:
        self.failures += 1


class VerifiedTokens:
    """Tokens whose signature already checked out, by (middleware, sha256 of the token), each with
    the key set object it was checked against: a hit counts only while that very key set is in
    force (a JWKS refresh installs a new object, so a rotated-out key stops matching at once).
    The time claims and the claims condition are checked again on every hit (`check_claims`);
    only the signature work is saved. Bounded: the oldest entry goes first."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[str, bytes], tuple[KeySet, dict[str, Any]]] = {}

    @staticmethod
    def _key(settings: JwtSettings, token: str) -> tuple[str, bytes]:
        return settings.name, hashlib.sha256(token.encode("latin-1", "replace")).digest()

    def get(self, settings: JwtSettings, token: str, keys: KeySet | None) -> dict[str, Any] | None:
        if keys is None:
            return None
        entry = self._entries.get(self._key(settings, token))
        return entry[1] if entry is not None and entry[0] is keys else None

    def put(self, settings: JwtSettings, token: str, keys: KeySet, claims: dict[str, Any]) -> None:
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[self._key(settings, token)] = (keys, claims)

    def clear(self) -> None:
        self._entries.clear()
