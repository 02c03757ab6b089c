"""Parsing of the `jwt` middleware's options (hooked into shadow.gateway.config's middleware parser).

Traefik Hub's names: `signingSecret`, `signingSecretBase64Encoded`, `publicKey`, `jwksUrl`,
`forwardHeaders`, `forwardAuthorization`, `claims`, `tokenQueryKey` (`jwksFile` is refused as not
supported yet). Added here, named in the same style: `issuer` (checked against `iss`; alone, it is
also the OIDC discovery URL), `audience` (string or list), `algorithms`, `leeway` (default 30s),
`maxTokenSize` (bytes, default 8192), `jwksTimeout` (2s), `jwksRefreshFloor` (30s), `jwksMaxAge` (1h).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from shadow.auth.claims import ClaimSyntaxError, parse_claims
from shadow.auth.jwt import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, JwtSettings, static_key_set
from shadow.auth.oidc import OidcSettings
from shadow.yamlconfig import HEADER_NAME

if TYPE_CHECKING:
    from shadow.yamlconfig import YamlReader

__all__ = ["parse_jwt_middleware", "parse_oidc_middleware"]

_KEYS = ("signingSecret", "signingSecretBase64Encoded", "publicKey", "jwksUrl", "forwardHeaders",
         "forwardAuthorization", "forwardMissingClaims", "claims", "tokenQueryKey", "issuer", "audience", "algorithms", "leeway",
         "maxTokenSize", "jwksTimeout", "jwksRefreshFloor", "jwksMaxAge")


def _http_url(reader: YamlReader, body: dict[Any, Any], key: str, where: str) -> str | None:
    value = reader.string(body, key, where)
    if value is not None and not value.startswith(("http://", "https://")):
        reader.fail(f"must be an http:// or https:// URL, got {value!r}", f"{where}.{key}",
                    reader.value_line(body, key))
    return value


def parse_jwt_middleware(reader: YamlReader, name: str, body: dict[Any, Any], where: str) -> JwtSettings:
    reader.check_keys(body, where, _KEYS, unsupported=("jwksFile",))
    secret_text = reader.string(body, "signingSecret", where)
    secret: bytes | None = None
    if secret_text is not None:
        secret = secret_text.encode()
        if reader.boolean(body, "signingSecretBase64Encoded", where, False):
            try:
                secret = base64.b64decode(secret_text, validate=True)
            except (binascii.Error, ValueError):
                reader.fail("signingSecret is not valid base64", f"{where}.signingSecret",
                            reader.value_line(body, "signingSecret"))
    public_key = reader.string(body, "publicKey", where)
    jwks_url = _http_url(reader, body, "jwksUrl", where)
    issuer = reader.string(body, "issuer", where)
    sources = [k for k, v in (("signingSecret", secret), ("publicKey", public_key), ("jwksUrl", jwks_url))
               if v is not None]
    if len(sources) > 1:
        reader.fail(f"name one key source, found {' and '.join(sources)}", where, reader.node_line(body))
    if not sources and (issuer is None or not issuer.startswith(("http://", "https://"))):
        reader.fail("needs a key source: signingSecret, publicKey, jwksUrl, or an http(s) issuer "
                    "for OIDC discovery", where, reader.node_line(body))
    audience_node = body.get("audience")
    audience = ((reader.string(body, "audience", where) or "",) if isinstance(audience_node, str)
                else reader.string_list(body, "audience", where))
    algorithms = reader.string_list(body, "algorithms", where)
    family = HMAC_ALGORITHMS if secret is not None else ASYMMETRIC_ALGORITHMS
    items = reader.sequence(body, "algorithms", where)
    for i, alg in enumerate(algorithms):
        if alg not in family:
            kind = "a signingSecret (HMAC)" if secret is not None else "public keys"
            reader.fail(f"algorithm {alg!r} cannot be used with {kind}; choose from {', '.join(family)}",
                        f"{where}.algorithms[{i}]", reader.item_line(items, i))
    claims_text, claims = _parse_claims_option(reader, body, where)
    forward = _parse_forward_headers(reader, body, where)
    settings = JwtSettings(
        name=name, signing_secret=secret, public_key=public_key, jwks_url=jwks_url, issuer=issuer,
        audience=audience, algorithms=algorithms,
        leeway_s=reader.duration(body, "leeway", where, 30.0),
        forward_headers=forward,
        forward_authorization=reader.boolean(body, "forwardAuthorization", where, False),
        forward_missing_claims=reader.boolean(body, "forwardMissingClaims", where, False),
        claims=claims, claims_text=claims_text or "",
        token_query_key=reader.string(body, "tokenQueryKey", where),
        max_token_bytes=reader.integer(body, "maxTokenSize", where, 8192, minimum=64),
        jwks_timeout_s=reader.duration(body, "jwksTimeout", where, 2.0),
        jwks_refresh_floor_s=reader.duration(body, "jwksRefreshFloor", where, 30.0),
        jwks_max_age_s=reader.duration(body, "jwksMaxAge", where, 3600.0),
    )
    if settings.jwks_timeout_s <= 0:
        reader.fail("must be positive", f"{where}.jwksTimeout", reader.value_line(body, "jwksTimeout"))
    try:
        static_key_set(settings)
    except ValueError as exc:
        reader.fail(str(exc), f"{where}.publicKey" if public_key else f"{where}.signingSecret",
                    reader.value_line(body, "publicKey" if public_key else "signingSecret"))
    return settings


_OIDC_KEYS = ("issuer", "clientId", "clientSecret", "redirectPath", "logoutPath", "scopes", "session",
              "forwardHeaders", "forwardMissingClaims", "claims", "leeway", "timeout")


def parse_oidc_middleware(reader: YamlReader, name: str, body: dict[Any, Any], where: str) -> OidcSettings:
    import os

    reader.check_keys(body, where, _OIDC_KEYS)
    issuer = _http_url(reader, body, "issuer", where) or reader.required_string(body, "issuer", where)
    paths = {}
    for key, default in (("redirectPath", "/oidc/callback"), ("logoutPath", "/oidc/logout")):
        value = reader.string(body, key, where, default=default) or default
        if not value.startswith("/"):
            reader.fail(f"must start with '/', got {value!r}", f"{where}.{key}", reader.value_line(body, key))
        paths[key] = value
    s_where = f"{where}.session"
    sess = reader.mapping(body.get("session"), s_where, reader.value_line(body, "session"))
    reader.check_keys(sess, s_where, ("name", "secret", "secretEnv", "expiry"))
    secret = reader.string(sess, "secret", s_where)
    secret_env = reader.string(sess, "secretEnv", s_where)
    if secret_env is not None:
        secret = os.environ.get(secret_env)
        if not secret:
            reader.fail(f"environment variable {secret_env} is not set", f"{s_where}.secretEnv",
                        reader.value_line(sess, "secretEnv"))
    if secret is None or len(secret) < 32:
        reader.fail("session.secret (or secretEnv) of at least 32 characters is required", s_where,
                    reader.value_line(body, "session") if "session" in body else reader.node_line(body))
    _, claims = _parse_claims_option(reader, body, where)
    forward = _parse_forward_headers(reader, body, where)
    scopes = reader.string_list(body, "scopes", where) or ("openid",)
    if "openid" not in scopes:
        scopes = ("openid", *scopes)
    return OidcSettings(
        name=name, issuer=issuer, client_id=reader.required_string(body, "clientId", where),
        client_secret=reader.string(body, "clientSecret", where) or "", session_secret=secret.encode(),
        redirect_path=paths["redirectPath"], logout_path=paths["logoutPath"], scopes=scopes,
        session_name=reader.string(sess, "name", s_where, default="shadow_session") or "shadow_session",
        session_expiry_s=reader.duration(sess, "expiry", s_where, 86400.0),
        forward_headers=forward, claims=claims,
        forward_missing_claims=reader.boolean(body, "forwardMissingClaims", where, False),
        leeway_s=reader.duration(body, "leeway", where, 30.0),
        jwks_timeout_s=reader.duration(body, "timeout", where, 2.0))


def _parse_claims_option(reader: YamlReader, body: dict[Any, Any], where: str) -> tuple[str | None, Any]:
    """`claims:` of a jwt or oidc middleware: the text and its parsed condition (None when absent)."""
    claims_text = reader.string(body, "claims", where)
    if claims_text is None:
        return None, None
    try:
        return claims_text, parse_claims(claims_text)
    except ClaimSyntaxError as exc:
        reader.fail(f"{exc.message} at column {exc.column} of {claims_text!r}", f"{where}.claims",
                    reader.value_line(body, "claims"))


def _parse_forward_headers(reader: YamlReader, body: dict[Any, Any], where: str) -> tuple[tuple[str, str], ...]:
    """`forwardHeaders:` (header -> claim path) of a jwt or oidc middleware."""

    fh_where = f"{where}.forwardHeaders"
    fh = reader.mapping(body.get("forwardHeaders"), fh_where, reader.value_line(body, "forwardHeaders"))
    forward: list[tuple[str, str]] = []
    for header in fh:
        if not isinstance(header, str) or not HEADER_NAME.match(header):
            reader.fail(f"bad header name {header!r}", f"{fh_where}.{header}", reader.key_line(fh, header))
        forward.append((header, reader.required_string(fh, header, fh_where)))
    return tuple(forward)
