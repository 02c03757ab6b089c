"""shadow.auth.jwt without a proxy: real tokens minted by joserfc, verified against real key sets."""

from __future__ import annotations

from dataclasses import replace

import pytest
from joserfc.jwk import KeySet

from shadow.auth.claims import parse_claims
from shadow.auth.jwt import (
    JwksCache,
    JwtSettings,
    TokenRejected,
    bearer_token,
    static_key_set,
    upstream_headers,
    verify_token,
)
from tests.auth_tokens import AUDIENCE, ISSUER, SECRET, Keys, claims, forge, make_keys, mint, mint_hs, tamper


@pytest.fixture(scope="module")
def keys() -> Keys:
    return make_keys()


@pytest.fixture(scope="module")
def jwks(keys: Keys) -> KeySet:
    return KeySet.import_key_set(keys.jwks())  # type: ignore[arg-type]


REMOTE = JwtSettings(name="jwt", jwks_url="http://127.0.0.1/jwks", issuer=ISSUER, audience=(AUDIENCE,), leeway_s=5)


def rejected(token: str, keyset: KeySet, settings: JwtSettings = REMOTE) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        verify_token(token, keyset, settings)
    return info.value


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_algorithms_verify(keys: Keys, jwks: KeySet, alg: str) -> None:
    key = {"RS256": keys.rsa, "ES256": keys.ec, "EdDSA": keys.ed}[alg]
    got = verify_token(mint(key, alg), jwks, REMOTE)
    assert got["sub"] == "user-1" and got["org"] == {"name": "acme"}


def test_hs256_with_a_static_secret() -> None:
    settings = JwtSettings(name="hs", signing_secret=SECRET.encode())
    keyset = static_key_set(settings)
    assert keyset is not None
    assert verify_token(mint_hs(), keyset, settings)["sub"] == "user-1"
    assert rejected(mint_hs(secret="another-secret-of-enough-length-000000"), keyset, settings).reason == "signature"


def test_static_public_key_pem(keys: Keys) -> None:
    settings = JwtSettings(name="pk", public_key=keys.rsa.as_pem(private=False).decode())
    keyset = static_key_set(settings)
    assert keyset is not None
    assert verify_token(mint(keys.rsa, "RS256"), keyset, settings)["plan"] == "beta"
    with pytest.raises(ValueError, match="private key"):
        static_key_set(JwtSettings(name="pk", public_key=keys.rsa.as_pem(private=True).decode()))


def test_security_cases(keys: Keys, jwks: KeySet) -> None:
    pem = keys.rsa.as_pem(private=False)
    good = claims()
    cases = {
        "alg none": (forge({"alg": "none", "kid": "rsa1"}, good, None), "algorithm"),
        "RS256/HS256 key confusion": (forge({"alg": "HS256", "kid": "rsa1"}, good, pem), "algorithm"),
        "expired": (mint(keys.rsa, "RS256", exp=1_000_000), "expired"),
        "not yet valid": (mint(keys.rsa, "RS256", nbf=4_000_000_000), "not_yet_valid"),
        "issued in the future": (mint(keys.rsa, "RS256", iat=4_000_000_000), "not_yet_valid"),
        "no exp": (mint(keys.rsa, "RS256", exp=None), "claims"),
        "wrong issuer": (mint(keys.rsa, "RS256", iss="https://evil.test"), "issuer"),
        "wrong audience": (mint(keys.rsa, "RS256", aud="other-api"), "audience"),
        "bad signature": (tamper(mint(keys.rsa, "RS256")), "signature"),
        "unknown kid": (mint(keys.rsa_unpublished, "RS256"), "unknown_kid"),
        "malformed": ("not.a.token", "malformed"),
        "two segments": ("abc.def", "malformed"),
        "oversized": (mint(keys.rsa, "RS256", pad="x" * 10_000), "oversized"),
    }
    for name, (token, reason) in cases.items():
        exc = rejected(token, jwks)
        assert (exc.reason, exc.status) == (reason, 401), name
        assert exc.www_authenticate().startswith('Bearer error="invalid_token", error_description="'), name


def test_leeway_accepts_a_just_expired_token(keys: Keys, jwks: KeySet) -> None:
    import time

    token = mint(keys.rsa, "RS256", exp=int(time.time()) - 2)
    assert verify_token(token, jwks, REMOTE)["sub"] == "user-1"  # leeway 5 s
    strict = JwtSettings(name="jwt", jwks_url="http://x/jwks", leeway_s=0)
    assert rejected(token, jwks, strict).reason == "expired"


def test_claims_condition_failure_is_403(keys: Keys, jwks: KeySet) -> None:
    settings = JwtSettings(name="jwt", jwks_url="http://x/jwks", claims=parse_claims('Contains("groups", "admin")'))
    exc = rejected(mint(keys.rsa, "RS256"), jwks, settings)
    assert exc.status == 403 and 'error="insufficient_scope"' in exc.www_authenticate()
    assert verify_token(mint(keys.rsa, "RS256", groups=["admin"]), jwks, settings)["sub"] == "user-1"


def test_audience_list_and_array_claim(keys: Keys, jwks: KeySet) -> None:
    settings = JwtSettings(name="jwt", jwks_url="http://x/jwks", audience=("a", "b"))
    assert verify_token(mint(keys.rsa, "RS256", aud=["z", "b"]), jwks, settings)
    assert rejected(mint(keys.rsa, "RS256", aud=["z"]), jwks, settings).reason == "audience"


def test_bearer_token_extraction() -> None:
    s = JwtSettings(name="jwt", signing_secret=b"k", token_query_key="access_token")
    assert bearer_token([("Authorization", "Bearer abc")], None, s) == "abc"
    assert bearer_token([], {"access_token": "q"}, s) == "q"
    with pytest.raises(TokenRejected) as info:
        bearer_token([("Authorization", "Basic dXNlcg==")], None, s)
    assert info.value.reason == "malformed"
    with pytest.raises(TokenRejected) as info:
        bearer_token([], None, s)
    assert info.value.www_authenticate() == 'Bearer realm="shadow"'


def test_forward_headers_replace_client_values_and_strip_authorization() -> None:
    s = JwtSettings(name="jwt", signing_secret=b"k",
                    forward_headers=(("X-User", "sub"), ("X-Org", "org.name"), ("X-Groups", "groups"),
                                     ("X-None", "missing.claim")))
    headers = [("Authorization", "Bearer t"), ("x-user", "spoofed"), ("Accept", "*/*"), ("X_User", "twin"),
               ("X-ORG", "caps"), ("x_none", "spoofed")]
    out = upstream_headers(headers, {"sub": "u1", "org": {"name": "Åcme\r\nX-Evil: 1"}, "groups": ["a", "b"]}, s)
    assert ("Accept", "*/*") in out
    assert not any(k.lower() == "authorization" for k, _ in out)
    assert [v for k, v in out if k.lower() == "x-user"] == ["u1"]
    org = next(v for k, v in out if k == "X-Org")
    assert org.encode("latin-1").decode("utf-8") == "ÅcmeX-Evil: 1"  # UTF-8 bytes, no CR/LF
    assert ("X-Groups", "a,b") in out
    # A client header that a WSGI/CGI backend reads as a claim header (case, `_` for `-`) is dropped.
    assert not any(v in ("twin", "caps", "spoofed") for _, v in out)
    # A missing claim is not forwarded (a backend cannot tell an empty header from a real claim)...
    assert not any(k.lower() == "x-none" for k, _ in out)
    # ...unless forwardMissingClaims asks for Traefik Hub's empty header.
    empty = upstream_headers(headers, {"sub": "u1"}, replace(s, forward_missing_claims=True))
    assert ("X-None", "") in empty
    kept = upstream_headers(headers, {"sub": "u1"}, JwtSettings(name="j", signing_secret=b"k", forward_authorization=True))
    assert ("Authorization", "Bearer t") in kept


def test_jwks_cache_refresh_floor() -> None:
    now = [100.0]
    cache = JwksCache(refresh_floor_s=10, max_age_s=3600, clock=lambda: now[0])
    assert cache.fetch_due("rsa1")  # nothing yet
    cache.attempt()
    cache.store(make_keys().jwks() | {})
    assert cache.keys is not None and {k.kid for k in cache.keys.keys} == {"rsa1", "ec1", "ed1"}
    assert not cache.fetch_due("rsa1")
    assert not cache.fetch_due("unknown")  # within the floor: no second fetch
    now[0] += 10
    assert cache.fetch_due("unknown") and not cache.fetch_due("rsa1")
    now[0] += 3600
    assert cache.fetch_due("rsa1")  # stale
    with pytest.raises(ValueError, match="no keys list"):
        cache.store({"nope": 1})


def test_verified_tokens_hit_only_for_the_same_key_set(keys: Keys, jwks: KeySet) -> None:
    from shadow.auth.jwt import VerifiedTokens

    cache = VerifiedTokens(max_entries=2)
    token = mint(keys.rsa, "RS256")
    cache.put(REMOTE, token, jwks, verify_token(token, jwks, REMOTE))
    assert cache.get(REMOTE, token, jwks) is not None
    refreshed = KeySet.import_key_set(keys.jwks())  # type: ignore[arg-type]
    assert cache.get(REMOTE, token, refreshed) is None  # a refreshed JWKS: checked again
    assert cache.get(REMOTE, token, None) is None
    for i in range(2):
        cache.put(REMOTE, f"t{i}", jwks, {})
    assert cache.get(REMOTE, token, jwks) is None  # the oldest went first


def test_non_finite_time_claims_are_refused() -> None:
    from shadow.auth.jwt import check_claims

    for bad in (float("nan"), float("inf")):
        with pytest.raises(TokenRejected, match="not a NumericDate"):
            check_claims({"exp": bad}, REMOTE, now=1_000)
