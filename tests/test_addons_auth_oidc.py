"""The oidc middleware end to end: a browser-style client (cookies handled by hand), a real
mitmdump gateway, and a minimal OpenID provider on 127.0.0.1 built from authlib's server side
(tests/oidc_provider.py: authorization code + PKCE S256 required + OpenID id tokens, refresh)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.oidc_provider import OpenIDProvider
from tests.upstream import Upstream

CLIENT_ID, CLIENT_SECRET = "shadow-web", "web-secret"
SESSION_SECRET = "0123456789abcdef0123456789abcdef-session"

CONFIG = """
http:
  routers:
    app: {{rule: "PathPrefix(`/app`) || PathPrefix(`/oidc`)", service: app, middlewares: [login]}}
  services:
    app: {{loadBalancer: {{servers: [{{url: "{app}"}}]}}}}
  middlewares:
    login:
      oidc:
        issuer: "{issuer}"
        clientId: {client_id}
        clientSecret: {client_secret}
        scopes: [openid, profile]
        leeway: 0s
        session: {{name: sid, secret: "{session_secret}", expiry: 1h}}
        forwardHeaders: {{X-User: sub, X-Email: email}}
shadow:
  capture: {{enabled: false}}
"""


@dataclass
class Env:
    gw: GatewayProcess
    provider: OpenIDProvider
    op: Upstream
    app: Upstream


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    provider = OpenIDProvider()
    provider.add_client(CLIENT_ID, CLIENT_SECRET)
    op = Upstream("op", handler=provider.handle).start()
    provider.state.issuer = op.url
    app = Upstream("app").start()
    config = tmp_path_factory.mktemp("oidc") / "gw.yaml"
    config.write_text(CONFIG.format(app=app.url, issuer=op.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                    session_secret=SESSION_SECRET))
    gw = GatewayProcess(config).start()
    try:
        yield Env(gw, provider, op, app)
    finally:
        gw.close()
        op.stop()
        app.stop()


def set_cookies(resp: httpx.Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in resp.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(line)
        out.update({k: m.value for k, m in jar.items()})
    return out


def login(env: Env, client: httpx.Client) -> dict[str, str]:
    """Browser steps: protected page → provider → callback → back; returns the cookies kept."""
    first = client.get(f"{env.gw.url}/app/page?x=1")
    assert first.status_code == 302
    location = first.headers["location"]
    assert location.startswith(f"{env.op.url}/authorize?")
    asked = parse_qs(urlsplit(location).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["client_id"] == [CLIENT_ID]
    state_cookie = set_cookies(first)
    to_callback = client.get(location)
    assert to_callback.status_code == 302
    callback = client.get(to_callback.headers["location"], cookies=state_cookie)
    assert callback.status_code == 302 and callback.headers["location"] == "/app/page?x=1", callback.text
    cookies = set_cookies(callback)
    assert cookies["sid"] and cookies.get("sid_state") == ""
    return {"sid": cookies["sid"]}


def test_authorization_code_flow_with_pkce_then_session(env: Env) -> None:
    with httpx.Client(timeout=30.0) as client:
        cookies = login(env, client)
        assert env.provider.state.grants == ["authorization_code"]
        page = client.get(f"{env.gw.url}/app/page", cookies=cookies)
        assert page.status_code == 200
        seen = env.app.requests[-1]
        assert seen.headers["x-user"] == "alice" and seen.headers["x-email"] == "alice@example.com"
        assert "sid" not in seen.headers.get("cookie", "")  # the session never reaches the upstream
        # An altered session cookie is no session: back to the provider, nothing forwarded.
        before = len(env.app.requests)
        forged = cookies["sid"][:-4] + ("AAAA" if not cookies["sid"].endswith("AAAA") else "BBBB")
        # (a fresh client: the one above keeps the valid cookie in its jar)
        again = httpx.get(f"{env.gw.url}/app/page", cookies={"sid": forged}, timeout=10)
        assert again.status_code == 302 and again.headers["location"].startswith(f"{env.op.url}/authorize?")
        post = httpx.post(f"{env.gw.url}/app/page", cookies={"sid": forged}, content=b"x", timeout=10)
        assert post.status_code == 401
        assert len(env.app.requests) == before


def test_callback_with_a_wrong_state_is_refused(env: Env) -> None:
    with httpx.Client(timeout=30.0) as client:
        first = client.get(f"{env.gw.url}/app/other")
        to_callback = client.get(first.headers["location"])
        url = to_callback.headers["location"].replace("state=", "state=x")
        assert client.get(url, cookies=set_cookies(first)).status_code == 401


def test_expired_id_token_is_refreshed_and_logout_clears_the_session(env: Env) -> None:
    env.provider.state.id_token_lifetime = 1
    try:
        with httpx.Client(timeout=30.0) as client:
            cookies = login(env, client)
            time.sleep(1.2)
            refreshed = client.get(f"{env.gw.url}/app/page", cookies=cookies)
            assert refreshed.status_code == 200 and env.provider.state.grants[-1] == "refresh_token"
            assert set_cookies(refreshed)["sid"] not in ("", cookies["sid"])  # a new session cookie
            out = client.get(f"{env.gw.url}/oidc/logout")
            assert out.status_code == 302 and out.headers["location"] == f"{env.op.url}/logout"
            assert set_cookies(out)["sid"] == ""
    finally:
        env.provider.state.id_token_lifetime = 300


def _login_cookies(env: Env, client: httpx.Client, path: str) -> httpx.Response:
    """Protected page → provider → the gateway's callback (its answer)."""
    first = client.get(f"{env.gw.url}{path}")
    to_callback = client.get(first.headers["location"])
    return client.get(to_callback.headers["location"], cookies=set_cookies(first))


def test_a_session_with_many_claims_is_split_over_cookies(env: Env) -> None:
    env.provider.state.extra_claims = {"groups": [f"group-{i:04d}-with-a-long-name" for i in range(400)]}
    try:
        with httpx.Client(timeout=30.0) as client:
            callback = _login_cookies(env, client, "/app/big")
            assert callback.status_code == 302, callback.text
            assert all(len(line.encode()) <= 4096 for line in callback.headers.get_list("set-cookie"))
            cookies = {k: v for k, v in set_cookies(callback).items() if v}
            assert len(cookies) >= 3 and sorted(cookies) == [f"sid_{i}" for i in range(len(cookies))]
            page = client.get(f"{env.gw.url}/app/big", cookies=cookies)
            assert page.status_code == 200
            seen = env.app.requests[-1]
            assert seen.headers["x-user"] == "alice" and "sid" not in seen.headers.get("cookie", "")
            out = set_cookies(client.get(f"{env.gw.url}/oidc/logout"))
            assert out["sid"] == "" and all(out[name] == "" for name in cookies)  # every chunk cleared
        # Stale chunks (no valid session) and a short session now: one cookie, every chunk expired.
        env.provider.state.extra_claims = {}
        with httpx.Client(timeout=30.0) as client:
            client.cookies.update({name: "stale" for name in cookies})
            callback = _login_cookies(env, client, "/app/big")
            after = set_cookies(callback)
            assert after["sid"] and all(after[name] == "" for name in cookies)
        # More claims than 8 cookies hold: the login is refused with the reason, nothing forwarded.
        env.provider.state.extra_claims = {"groups": [f"group-{i:04d}-with-a-long-name" for i in range(1500)]}
        before = len(env.app.requests)
        with httpx.Client(timeout=30.0) as client:
            refused = _login_cookies(env, client, "/app/huge")
            assert refused.status_code == 401 and "too large for cookies" in refused.text
            assert not [k for k, v in set_cookies(refused).items() if k.startswith("sid") and v]
        assert len(env.app.requests) == before
        assert env.gw.wait_for_output("too large for cookies")
    finally:
        env.provider.state.extra_claims = {}
