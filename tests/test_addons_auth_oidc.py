"""The oidc middleware end to end: a browser-style client (cookies handled by hand), a real
mitmdump gateway, and a minimal OpenID provider on 127.0.0.1 (authorization endpoint that logs the
test user in at once, token endpoint checking PKCE S256, JWKS; id tokens signed by joserfc)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from tests.conftest import GatewayProcess
from tests.upstream import ReceivedRequest, Response, Upstream

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
class Provider:
    """The OpenID provider's state: issued codes and refresh tokens, and what it was asked."""

    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "op1"}))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    refresh_tokens: set[str] = field(default_factory=set)
    grants: list[str] = field(default_factory=list)
    id_token_lifetime: int = 300
    base: str = ""

    def id_token(self, nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.base, "aud": CLIENT_ID, "sub": "alice", "email": "alice@example.com",
                                  "iat": now, "exp": now + self.id_token_lifetime}
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode({"alg": "RS256", "kid": "op1"}, claims, self.key)

    def tokens(self, nonce: str | None) -> Response:
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens.add(refresh)
        body = {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "id_token": self.id_token(nonce),
                "refresh_token": refresh, "expires_in": self.id_token_lifetime}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def handle(self, req: ReceivedRequest) -> Response:
        path, _, query = req.path.partition("?")
        json_headers = {"Content-Type": "application/json"}
        if path == "/.well-known/openid-configuration":
            return 200, json_headers, json.dumps({
                "issuer": self.base, "authorization_endpoint": f"{self.base}/authorize",
                "token_endpoint": f"{self.base}/token", "jwks_uri": f"{self.base}/jwks",
                "end_session_endpoint": f"{self.base}/logout"}).encode()
        if path == "/jwks":
            return 200, json_headers, json.dumps(KeySet([self.key]).as_dict(private=False)).encode()
        if path == "/authorize":
            q = {k: v[0] for k, v in parse_qs(query).items()}
            if q.get("client_id") != CLIENT_ID or q.get("code_challenge_method") != "S256" or "openid" not in q["scope"]:
                return 400, {}, b"bad authorization request"
            code = secrets.token_urlsafe(16)
            self.codes[code] = q
            return 302, {"Location": f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}"}, b""
        if path == "/token":
            form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
            if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
                return 401, json_headers, b'{"error": "invalid_client"}'
            self.grants.append(form.get("grant_type", ""))
            if form.get("grant_type") == "authorization_code":
                asked = self.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if asked is None or asked["code_challenge"] != challenge or asked["redirect_uri"] != form.get("redirect_uri"):
                    return 400, json_headers, b'{"error": "invalid_grant"}'
                return self.tokens(asked["nonce"])
            if form.get("grant_type") == "refresh_token" and form.get("refresh_token") in self.refresh_tokens:
                return self.tokens(None)
            return 400, json_headers, b'{"error": "invalid_grant"}'
        return 404, {}, b""


@dataclass
class Env:
    gw: GatewayProcess
    provider: Provider
    op: Upstream
    app: Upstream


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    provider = Provider()
    op = Upstream("op", handler=provider.handle).start()
    provider.base = op.url
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
    with httpx.Client(timeout=10) as client:
        cookies = login(env, client)
        assert env.provider.grants == ["authorization_code"]
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
    with httpx.Client(timeout=10) as client:
        first = client.get(f"{env.gw.url}/app/other")
        to_callback = client.get(first.headers["location"])
        url = to_callback.headers["location"].replace("state=", "state=x")
        assert client.get(url, cookies=set_cookies(first)).status_code == 401


def test_expired_id_token_is_refreshed_and_logout_clears_the_session(env: Env) -> None:
    env.provider.id_token_lifetime = 1
    try:
        with httpx.Client(timeout=10) as client:
            cookies = login(env, client)
            time.sleep(1.2)
            refreshed = client.get(f"{env.gw.url}/app/page", cookies=cookies)
            assert refreshed.status_code == 200 and env.provider.grants[-1] == "refresh_token"
            assert set_cookies(refreshed)["sid"] not in ("", cookies["sid"])  # a new session cookie
            out = client.get(f"{env.gw.url}/oidc/logout")
            assert out.status_code == 302 and out.headers["location"] == f"{env.op.url}/logout"
            assert set_cookies(out)["sid"] == ""
    finally:
        env.provider.id_token_lifetime = 300
