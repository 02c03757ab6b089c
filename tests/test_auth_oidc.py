"""shadow.auth.oidc without a proxy: PKCE, the authorization URL, cookies sealed with joserfc JWE."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

from shadow.auth.oidc import (
    CookieCodec,
    OidcSettings,
    authorization_url,
    pkce_pair,
    request_cookies,
    set_cookie,
    without_cookies,
)

SETTINGS = OidcSettings(name="login", issuer="https://op.test", client_id="web", client_secret="s",
                        session_secret=b"x" * 32, scopes=("openid", "email"))


def test_pkce_s256() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier


def test_authorization_url() -> None:
    url = authorization_url("https://op.test/auth?prompt=login", SETTINGS, redirect_uri="https://gw/cb",
                            state="st", nonce="no", challenge="ch")
    q = parse_qs(urlsplit(url).query)
    assert q["prompt"] == ["login"] and q["response_type"] == ["code"] and q["scope"] == ["openid email"]
    assert (q["state"], q["nonce"], q["code_challenge"], q["code_challenge_method"]) == (["st"], ["no"], ["ch"], ["S256"])


def test_cookie_codec_seals_and_expires() -> None:
    codec = CookieCodec(b"k" * 32)
    value = codec.encode({"sub": "alice"}, expires_at=2_000)
    assert "alice" not in value  # encrypted, not just signed
    assert codec.decode(value, now=1_000) == {"sub": "alice"}
    assert codec.decode(value, now=2_000) is None  # expired
    assert CookieCodec(b"other" * 8).decode(value, now=1_000) is None  # another secret
    head, key, iv, text, tag = value.split(".")
    flipped = text[:-1] + ("A" if text[-1] != "A" else "B")
    assert codec.decode(".".join((head, key, iv, flipped, tag)), now=1_000) is None  # altered
    assert codec.decode("garbage", now=1_000) is None and codec.decode("", now=1_000) is None


def test_cookie_helpers() -> None:
    headers = [("Cookie", "a=1; sid=s; b=2"), ("Cookie", "sid=t"), ("Accept", "*/*")]
    assert request_cookies(headers) == {"a": "1", "sid": "s", "b": "2"}
    assert without_cookies(headers, {"sid"}) == [("Cookie", "a=1; b=2"), ("Accept", "*/*")]
    assert set_cookie("sid", "v", max_age=60, secure=True) == "sid=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"


def test_return_path_is_never_another_host() -> None:
    from shadow.auth.oidc import local_path

    assert local_path("/app/page?x=1") == "/app/page?x=1"
    for target in ("//evil.example/x", "/\\evil.example", "https://evil.example/", "", "/a\r\nSet-Cookie: x=1"):
        assert local_path(target) == "/", target
