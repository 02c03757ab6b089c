"""shadow.auth.oidc without a proxy: PKCE, the authorization URL, cookies sealed with joserfc JWE."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

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


def test_a_session_too_long_for_one_cookie_is_chunked_and_read_back() -> None:
    from shadow.auth.oidc import (
        COOKIE_VALUE_CHARS,
        MAX_SESSION_CHARS,
        SessionTooLarge,
        session_cookie_names,
        session_set_cookies,
        session_value,
    )

    short = "s" * 100
    assert session_set_cookies("sid", short, max_age=60, secure=False) == [
        set_cookie("sid", short, max_age=60, secure=False)]
    sealed = "".join(chr(ord("a") + i % 26) for i in range(2 * COOKIE_VALUE_CHARS + 5))  # 3 chunks
    lines = session_set_cookies("sid", sealed, max_age=60, secure=True, present={"sid"})
    assert [line.partition("=")[0] for line in lines] == ["sid_0", "sid_1", "sid_2", "sid"]
    assert all(len(line.encode()) <= 4096 for line in lines)  # what a browser keeps
    assert lines[-1].startswith("sid=;") and "Max-Age=0" in lines[-1]  # the unchunked one expired
    jar = {line.partition("=")[0]: line.partition("=")[2].partition(";")[0] for line in lines[:-1]}
    assert session_value(jar, "sid") == sealed
    assert session_value({"sid": short, "sid_0": "stale"}, "sid") == short  # one cookie wins
    assert session_value({"sid_1": "x"}, "sid") == ""  # no chunk 0: no session
    # Shorter again: the chunks the new session does not use are expired.
    request = {**jar, "sid_state": "login", "sid_x": "other", "sidekick": "1"}
    present = session_cookie_names(request, "sid")
    assert present == {"sid_0", "sid_1", "sid_2"}
    again = session_set_cookies("sid", short, max_age=60, secure=False, present=present)
    assert [line.partition("=")[0] for line in again] == ["sid", "sid_0", "sid_1", "sid_2"]
    assert all("Max-Age=0" in line for line in again[1:])
    with pytest.raises(SessionTooLarge, match=r"too large for cookies \(\d+ characters sealed"):
        session_set_cookies("sid", "x" * (MAX_SESSION_CHARS + 1), max_age=60, secure=False)


def test_the_codec_reads_a_chunked_session_back() -> None:
    from shadow.auth.oidc import session_set_cookies, session_value

    codec = CookieCodec(b"k" * 32)
    claims = {"sub": "alice", "groups": [f"group-{i:04d}-with-a-long-name" for i in range(400)]}
    sealed = codec.encode({"claims": claims}, expires_at=2_000)
    lines = session_set_cookies("sid", sealed, max_age=60, secure=False)
    assert len(lines) > 2
    jar = {line.partition("=")[0]: line.partition("=")[2].partition(";")[0] for line in lines}
    assert codec.decode(session_value(jar, "sid"), now=1_000) == {"claims": claims}
