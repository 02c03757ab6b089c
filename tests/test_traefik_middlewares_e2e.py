"""Traefik's middlewares end to end: a Traefik-style file (entryPoints with forwardedHeaders, chains of
headers, rateLimit, retry and redirectScheme, basicAuth, ipAllowList, replacePathRegex) loads unchanged
into a real gateway (mitmdump + addons/gateway.py) in front of real upstreams on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.upstream import ReceivedRequest, Upstream, free_port

# htpasswd -m (apr1) for user "alice", password "s3cret"
ALICE = "alice:$apr1$abcdefgh$M2T3erDstkD7SsE2QQnfH0"

CONFIG = """
entryPoints:
  web:
    address: ":{port}"
    forwardedHeaders:
      trustedIPs: ["10.0.0.0/8"]     # the test client (127.0.0.1) is not trusted
http:
  routers:
    app:
      rule: "PathPrefix(`/`)"
      entryPoints: [web]
      middlewares: [edge]
      service: app
    www:
      rule: "Host(`www.example.com`)"
      middlewares: [security-headers, to-https]
      service: app
    limited:
      rule: "PathPrefix(`/limited`)"
      middlewares: [one-per-minute]
      service: app
    flaky:
      rule: "PathPrefix(`/flaky`)"
      middlewares: [edge]
      service: half-dead
    private:
      rule: "PathPrefix(`/private`)"
      middlewares: [auth]
      service: app
    internal:
      rule: "PathPrefix(`/internal`)"
      middlewares: [office-only]
      service: app
    old:
      rule: "PathPrefix(`/old`)"
      middlewares: [old-to-new]
      service: app
    digest:
      rule: "PathPrefix(`/digest`)"
      middlewares: [htdigest]
      service: app
    broken:
      rule: "PathPrefix(`/broken`)"
      middlewares: [pretty-errors]
      service: bare
    guarded:
      rule: "PathPrefix(`/guarded`)"
      middlewares: [auth-server]
      service: app
    bare:
      rule: "PathPrefix(`/bare`)"
      middlewares: [sniff, small-bodies, strict-escapes]
      service: bare
    zipped:
      rule: "PathPrefix(`/zipped`)"
      middlewares: [gzip-small]
      service: app
    api:
      rule: "PathPrefix(`/api`)"
      middlewares: [cors-secure]
      service: app
  middlewares:
    edge:
      chain:
        middlewares: [security-headers, limit, retry-twice]
    security-headers:
      headers:
        customRequestHeaders: {{X-Edge: "1"}}
        customResponseHeaders: {{X-Frame-Options: DENY}}
    limit:
      rateLimit: {{average: 1000, burst: 1000}}
    retry-twice:
      retry: {{attempts: 3}}
    to-https:
      redirectScheme: {{scheme: https, permanent: true}}
    one-per-minute:
      rateLimit: {{average: 1, period: 1m, burst: 2}}
    auth:
      basicAuth:
        users: ["{alice}"]
        realm: shop
        removeHeader: true
        headerField: X-User
    office-only:
      ipAllowList: {{sourceRange: ["10.0.0.0/8"]}}
    old-to-new:
      replacePathRegex: {{regex: "^/old/(.*)", replacement: "/new/$1"}}
    htdigest:
      digestAuth:
        users: ["test:traefik:a2688e031edb4be6a3797f3882655c05"]
        headerField: X-Digest-User
        removeHeader: true
    pretty-errors:
      errors:
        status: ["500-599"]
        service: app
        query: "/oops/{{status}}?from={{url}}"
        statusRewrites: {{"502-504": 503}}
    auth-server:
      forwardAuth:
        address: "{auth}/check"
        trustForwardHeader: true
        authResponseHeaders: [X-Auth-User]
        addAuthCookiesToResponse: [sess]
    sniff:
      contentType: {{}}
    small-bodies:
      buffering: {{maxRequestBodyBytes: 10, memRequestBodyBytes: 5}}
    strict-escapes:
      encodedCharacters: {{allowEncodedSlash: true}}
    gzip-small:
      compress: {{encodings: [gzip, br], minResponseBodyBytes: 10}}
    cors-secure:
      headers:
        accessControlAllowMethods: [GET, PUT]
        accessControlAllowOriginListRegex: ['^https://[a-z]+\\.shop\\.example$']
        accessControlMaxAge: 600
        addVaryHeader: true
        stsSeconds: 31536000
        forceSTSHeader: true
        contentTypeNosniff: true
        allowedHosts: ["127.0.0.1:{port}"]
  services:
    app:
      loadBalancer:
        servers: [{{url: "{app}"}}]
    bare:
      loadBalancer:
        servers: [{{url: "{bare}"}}]
    half-dead:
      loadBalancer:
        servers: [{{url: "http://127.0.0.1:{dead}"}}, {{url: "{app}"}}]
shadow:
  capture: {{enabled: false}}
"""


def bare_handler(req: ReceivedRequest) -> tuple[int, dict[str, str], bytes]:
    """An upstream that sets no Content-Type; /broken/<code> answers that status."""
    if req.path.startswith("/broken/"):
        return int(req.path.split("/")[2]), {}, b"raw upstream error"
    return 200, {}, b"<html><p>no type</p></html>"


def auth_server(req: ReceivedRequest) -> tuple[int, dict[str, str], bytes]:
    """forwardAuth's server: X-Token good → 200 naming the user and setting a cookie; login → a
    redirect to sign in (relative: the gateway resolves it against the address); else 401."""
    token = req.headers.get("x-token", "")
    if token == "good":
        return 200, {"X-Auth-User": "alice", "Set-Cookie": "sess=from-auth; Path=/"}, b""
    if token == "login":
        return 302, {"Location": "/login?rd=1"}, b""
    return 401, {"WWW-Authenticate": 'Bearer realm="shop"', "Content-Type": "text/plain"}, b"denied"


class Env:
    auth: Upstream

    def __init__(self, gw: GatewayProcess, app: Upstream) -> None:
        self.gw, self.app = gw, app
        self.client = httpx.Client(base_url=gw.url, timeout=10.0, follow_redirects=False)

    def upstream_saw(self, resp: httpx.Response) -> dict[str, object]:
        assert resp.status_code == 200, resp.text
        seen: dict[str, object] = json.loads(resp.text)
        return seen


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with Upstream("app") as app, Upstream("bare", handler=bare_handler) as bare, \
            Upstream("auth", handler=auth_server) as auth:
        port = free_port()
        path = Path(tmp_path_factory.mktemp("traefik")) / "gateway.yaml"
        path.write_text(CONFIG.format(port=port, app=app.url, bare=bare.url, auth=auth.url, dead=free_port(),
                                      alice=ALICE))
        with GatewayProcess(path, port=port) as gw:
            e = Env(gw, app)
            e.auth = auth
            yield e
            e.client.close()


def test_chain_of_headers_ratelimit_retry_passes_and_forwarded_headers_are_replaced(env: Env) -> None:
    resp = env.client.get("/hello", headers={"X-Forwarded-For": "6.6.6.6", "X-Real-Ip": "6.6.6.6"})
    seen = env.upstream_saw(resp)
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["x-edge"] == "1"
    # 127.0.0.1 is not in trustedIPs: its X-Forwarded-For / X-Real-Ip were replaced, not passed on.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert resp.headers["X-Frame-Options"] == "DENY"


def test_redirect_scheme_answers_301_with_the_https_url(env: Env) -> None:
    resp = env.client.get("/cart?item=1", headers={"Host": "www.example.com"})
    assert resp.status_code == 301
    assert resp.headers["Location"] == "https://www.example.com/cart?item=1"
    post = env.client.post("/cart", headers={"Host": "www.example.com"})
    assert post.status_code == 308  # permanent, not GET


def test_rate_limit_answers_429_beyond_the_burst(env: Env) -> None:
    statuses = [env.client.get("/limited").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = env.client.get("/limited")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 1
    assert refused.headers["X-Retry-In"].endswith("s")


def test_retry_reaches_the_live_server_when_the_other_refuses(env: Env) -> None:
    before = len(env.app.requests)
    for i in range(4):  # round robin alternates: every other first attempt hits the dead server
        resp = env.client.get(f"/flaky/{i}")
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Frame-Options"] == "DENY"
    assert len(env.app.requests) - before == 4


def test_basic_auth(env: Env) -> None:
    missing = env.client.get("/private/x")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Basic realm="shop"'
    assert env.client.get("/private/x", auth=("alice", "wrong")).status_code == 401
    assert env.client.get("/private/x", auth=("mallory", "s3cret")).status_code == 401
    seen = env.upstream_saw(env.client.get("/private/x", auth=("alice", "s3cret")))
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["x-user"] == "alice"
    assert "authorization" not in headers  # removeHeader


def test_ip_allow_list_refuses_outsiders(env: Env) -> None:
    resp = env.client.get("/internal/metrics", headers={"X-Forwarded-For": "10.1.1.1"})
    assert resp.status_code == 403
    assert resp.text == "Forbidden"


def test_replace_path_regex(env: Env) -> None:
    seen = env.upstream_saw(env.client.get("/old/orders/7?x=1"))
    assert seen["path"] == "/new/orders/7?x=1"
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["x-replaced-path"] == "/old/orders/7"


def test_headers_cors_and_security_options(env: Env) -> None:
    before = len(env.app.requests)
    preflight = env.client.options("/api/items", headers={"Origin": "https://www.shop.example",
                                                          "Access-Control-Request-Method": "PUT"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://www.shop.example"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET,PUT"
    assert preflight.headers["Access-Control-Max-Age"] == "600"
    assert len(env.app.requests) == before  # answered by the gateway, nothing forwarded
    resp = env.client.get("/api/items", headers={"Origin": "https://www.shop.example"})
    env.upstream_saw(resp)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://www.shop.example"
    assert resp.headers["Vary"] == "Origin"
    assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert env.client.get("/api/items", headers={"Origin": "https://evil.example"}).headers.get(
        "Access-Control-Allow-Origin") is None
    bad_host = env.client.get("/api/items", headers={"Host": "evil.example"})
    assert bad_host.status_code == 500 and bad_host.text == "Bad Host\n"


def test_compress_encodes_by_accept_encoding(env: Env) -> None:
    gz = env.client.get("/zipped/x", headers={"Accept-Encoding": "br;q=0.5, gzip"})
    assert gz.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in gz.headers["Vary"]
    assert json.loads(gz.text)["path"] == "/zipped/x"  # httpx decoded it: a real gzip body
    br = env.client.get("/zipped/y", headers={"Accept-Encoding": "br"})
    assert br.headers["Content-Encoding"] == "br"
    plain = env.client.get("/zipped/z", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers


def test_content_type_buffering_and_encoded_characters(env: Env) -> None:
    sniffed = env.client.get("/bare/page")
    assert sniffed.status_code == 200
    assert sniffed.headers["Content-Type"] == "text/html; charset=utf-8"  # the upstream sent none
    assert env.client.post("/bare/form", content=b"0123456789").status_code == 200
    too_big = env.client.post("/bare/form", content=b"01234567890")
    assert too_big.status_code == 413
    assert env.client.get("/bare/a%2Fb").status_code == 200  # allowEncodedSlash
    refused = env.client.get("/bare/a%3Bb")
    assert refused.status_code == 400 and refused.content == b""


def test_forward_auth(env: Env) -> None:
    before = len(env.app.requests)
    denied = env.client.get("/guarded/x", headers={"X-Token": "bad", "X-Auth-User": "mallory"})
    assert denied.status_code == 401
    assert denied.headers["WWW-Authenticate"] == 'Bearer realm="shop"' and denied.text == "denied"
    login = env.client.get("/guarded/x", headers={"X-Token": "login"})
    assert login.status_code == 302
    assert login.headers["Location"] == f"{env.auth.url}/login?rd=1"
    assert len(env.app.requests) == before  # refused requests never reach the upstream
    ok = env.client.get("/guarded/x?y=1", headers={"X-Token": "good", "X-Auth-User": "mallory",
                                                   "X-Forwarded-Uri": "/spoofed"})
    headers = env.upstream_saw(ok)["headers"]
    assert isinstance(headers, dict)
    assert headers["x-auth-user"] == "alice"  # the auth server's value replaced the client's
    assert "sess=from-auth" in ok.headers.get("Set-Cookie", "")
    check = env.auth.requests[-1]
    assert check.method == "GET" and check.path == "/check"
    assert check.headers["x-forwarded-uri"] == "/guarded/x?y=1"  # the client's spoofed value was not trusted
    assert check.headers["x-forwarded-method"] == "GET"
    assert check.headers["x-forwarded-for"] == "127.0.0.1"


def test_errors_pages_replace_answers_in_range(env: Env) -> None:
    page = env.client.get("/broken/500")
    assert page.status_code == 500
    seen = json.loads(page.text)  # the app upstream (an echo) served the error page
    assert seen["path"] == "/oops/500?from=http%3A%2F%2F127.0.0.1%3A" + str(env.gw.port) + "%2Fbroken%2F500"
    rewritten = env.client.get("/broken/502")
    assert rewritten.status_code == 503  # statusRewrites
    assert json.loads(rewritten.text)["path"].startswith("/oops/503?")
    untouched = env.client.get("/broken/404")
    assert untouched.status_code == 404 and untouched.text == "raw upstream error"


def test_digest_auth_with_a_real_digest_client(env: Env) -> None:
    assert env.client.get("/digest/x").status_code == 401
    assert env.client.get("/digest/x", auth=httpx.DigestAuth("test", "wrong")).status_code == 401
    seen = env.upstream_saw(env.client.get("/digest/x", auth=httpx.DigestAuth("test", "test")))
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["x-digest-user"] == "test" and "authorization" not in headers
