"""The jwt middleware end to end: a real mitmdump gateway, a JWKS server and upstreams on
127.0.0.1, tokens minted by joserfc. Every rejected request is a 401 (403 for a claims condition)
that no upstream and no mirror ever saw; valid ones route on their claims through parent/child
routers, one child weighted 50/50; the capture clusters by the token's subject."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest

from shadow.capture.redact import load_redaction_key
from shadow.capture.settings import RedactionSettings
from tests.auth_tokens import AUDIENCE, ISSUER, SECRET, Keys, claims, forge, make_keys, mint, mint_hs, tamper
from tests.conftest import GatewayProcess
from tests.upstream import ReceivedRequest, Response, Upstream, free_port

CONFIG = """
http:
  routers:
    secure: {{rule: "PathPrefix(`/secure`)", service: vault-mirrored, middlewares: [jwt]}}
    api: {{rule: "PathPrefix(`/api`)", middlewares: [jwt]}}
    api-beta: {{rule: "Header(`X-Plan`, `beta`)", parentRefs: [api], service: beta-split}}
    api-rest: {{rule: "PathPrefix(`/`)", priority: 1, parentRefs: [api], service: mono}}
    hs: {{rule: "PathPrefix(`/hs`)", service: mono, middlewares: [jwt-hs]}}
    disc: {{rule: "PathPrefix(`/disc`)", service: mono, middlewares: [jwt-disc]}}
    admin: {{rule: "PathPrefix(`/admin`)", service: vault, middlewares: [jwt-admin]}}
    down: {{rule: "PathPrefix(`/down`)", service: vault, middlewares: [jwt-down]}}
    slow: {{rule: "PathPrefix(`/slow`)", service: vault, middlewares: [jwt-slow]}}
  services:
    vault-mirrored: {{mirroring: {{service: vault, mirrors: [{{name: vault-shadow, percent: 100}}]}}}}
    vault: {{loadBalancer: {{servers: [{{url: "{vault}"}}]}}}}
    vault-shadow: {{loadBalancer: {{servers: [{{url: "{vault_shadow}"}}]}}}}
    mono: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
    beta-old: {{loadBalancer: {{servers: [{{url: "{beta_old}"}}]}}}}
    beta-new: {{loadBalancer: {{servers: [{{url: "{beta_new}"}}]}}}}
    beta-split: {{weighted: {{services: [{{name: beta-old, weight: 1}}, {{name: beta-new, weight: 1}}]}}}}
  middlewares:
    jwt:
      jwt:
        jwksUrl: "{jwks}/jwks"
        issuer: "{issuer}"
        audience: "{audience}"
        jwksRefreshFloor: 200ms
        forwardHeaders: {{X-User: sub, X-Plan: plan, X-Org: org.name, X-Missing: no.such.claim}}
    jwt-hs:
      jwt: {{signingSecret: "{secret}", forwardAuthorization: true, forwardHeaders: {{X-User: sub}}}}
    jwt-disc:
      jwt: {{issuer: "{jwks}"}}
    jwt-admin:
      jwt: {{jwksUrl: "{jwks}/jwks", claims: 'Contains("groups", "admin") || Equals("org.name", "root")'}}
    jwt-down:
      jwt: {{jwksUrl: "http://127.0.0.1:{dead}/jwks", jwksTimeout: 500ms}}
    jwt-slow:
      jwt: {{jwksUrl: "{slow}/jwks", jwksTimeout: 300ms}}
shadow:
  capture: {{dir: "{capture}", segmentSeconds: 1}}
  identity: {{clientKeyClaim: sub}}
"""


@dataclass
class Env:
    gw: GatewayProcess
    client: httpx.Client
    keys: Keys
    jwks: Upstream
    jwks_state: dict[str, bool]
    ups: dict[str, Upstream]
    capture: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    keys = make_keys()
    state = {"rotated": False}
    holder: list[Upstream] = []

    def serve_jwks(req: ReceivedRequest) -> Response:
        base = holder[0].url
        if req.path.startswith("/jwks"):
            return 200, {"Content-Type": "application/json"}, json.dumps(keys.jwks(rotated=state["rotated"])).encode()
        if req.path == "/.well-known/openid-configuration":
            return 200, {"Content-Type": "application/json"}, json.dumps(
                {"issuer": base, "jwks_uri": f"{base}/jwks"}).encode()
        return 404, {}, b""

    tmp = tmp_path_factory.mktemp("auth")
    names = ("vault", "vault-shadow", "mono", "beta-old", "beta-new")
    ups = {n: Upstream(n).start() for n in names}
    jwks = Upstream("jwks", handler=serve_jwks).start()
    holder.append(jwks)
    slow = Upstream("slow-jwks", handler=serve_jwks, delay=20.0).start()
    config = tmp / "gw.yaml"
    config.write_text(CONFIG.format(
        vault=ups["vault"].url, vault_shadow=ups["vault-shadow"].url, mono=ups["mono"].url,
        beta_old=ups["beta-old"].url, beta_new=ups["beta-new"].url, jwks=jwks.url, slow=slow.url,
        dead=free_port(), issuer=ISSUER, audience=AUDIENCE, secret=SECRET, capture=tmp / "capture"))
    gw = GatewayProcess(config).start()
    client = httpx.Client(base_url=gw.url, timeout=30.0)
    try:
        yield Env(gw, client, keys, jwks, state, ups, tmp / "capture")
    finally:
        client.close()
        gw.close()
        for up in (*ups.values(), jwks, slow):
            up.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_security_suite_every_case_is_401_and_reaches_no_upstream(env: Env) -> None:
    k = env.keys
    pem = k.rsa.as_pem(private=False)
    cases: dict[str, Callable[[], httpx.Response]] = {
        "no token": lambda: env.client.get("/secure/a"),
        "alg none": lambda: env.client.get("/secure/a", headers=bearer(forge({"alg": "none", "kid": "rsa1"}, claims(), None))),
        "RS256/HS256 key confusion": lambda: env.client.get(
            "/secure/a", headers=bearer(forge({"alg": "HS256", "kid": "rsa1"}, claims(), pem))),
        "expired": lambda: env.client.get("/secure/a", headers=bearer(mint(k.rsa, "RS256", exp=int(time.time()) - 3600))),
        "not yet valid": lambda: env.client.get("/secure/a", headers=bearer(mint(k.ec, "ES256", nbf=int(time.time()) + 3600))),
        "wrong issuer": lambda: env.client.get("/secure/a", headers=bearer(mint(k.ed, "EdDSA", iss="https://evil.test"))),
        "wrong audience": lambda: env.client.get("/secure/a", headers=bearer(mint(k.rsa, "RS256", aud="other"))),
        "bad signature": lambda: env.client.get("/secure/a", headers=bearer(tamper(mint(k.rsa, "RS256")))),
        "unknown kid": lambda: env.client.get("/secure/a", headers=bearer(mint(k.rsa_unpublished, "RS256"))),
        "malformed": lambda: env.client.get("/secure/a", headers=bearer("abc.def.ghi")),
        "not bearer": lambda: env.client.get("/secure/a", headers={"Authorization": "Basic dXNlcjpwdw=="}),
        "oversized": lambda: env.client.get("/secure/a", headers=bearer(mint(k.rsa, "RS256", pad="x" * 9000))),
        "JWKS server down": lambda: env.client.get("/down/a", headers=bearer(mint(k.rsa, "RS256"))),
        "JWKS server slow": lambda: env.client.get("/slow/a", headers=bearer(mint(k.rsa, "RS256"))),
    }
    for name, send in cases.items():
        started = time.monotonic()
        resp = send()
        assert resp.status_code == 401, (name, resp.status_code, resp.text)
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer"), name
        if name != "no token":
            assert 'error="invalid_token", error_description="' in challenge, (name, challenge)
        assert time.monotonic() - started < 15, name  # before the slow JWKS server (20 s) answered: not waited for
    assert "JWKS fetch failed" in env.client.get("/down/b", headers=bearer(mint(k.rsa, "RS256"))).text
    time.sleep(0.3)  # let a wrongly forwarded request or mirror copy arrive, if there were one
    assert env.ups["vault"].requests == [] and env.ups["vault-shadow"].requests == []


def test_unknown_kid_refreshes_the_jwks_once_then_accepts_a_rotated_key(env: Env) -> None:
    k = env.keys
    fetches = lambda: sum(1 for r in env.jwks.requests if r.path == "/jwks")  # noqa: E731
    assert env.client.get("/api/x", headers=bearer(mint(k.rsa, "RS256"))).status_code == 200
    before = fetches()
    time.sleep(0.25)  # past the refresh floor
    assert env.client.get("/api/x", headers=bearer(mint(k.rsa_rotated, "RS256"))).status_code == 401
    assert fetches() == before + 1  # refreshed on the unknown kid
    assert env.client.get("/api/x", headers=bearer(mint(k.rsa_rotated, "RS256"))).status_code == 401
    assert fetches() == before + 1  # within the floor: no second fetch
    env.jwks_state["rotated"] = True
    time.sleep(0.25)
    assert env.client.get("/api/x", headers=bearer(mint(k.rsa_rotated, "RS256"))).status_code == 200


def test_claim_routing_through_parent_and_children(env: Env) -> None:
    k = env.keys
    for up in env.ups.values():
        up.requests.clear()
    for i in range(8):
        token = mint(k.rsa, "RS256", sub=f"beta-{i}", plan="beta")
        # The client's own X-Plan never counts: only the token's claim does.
        assert env.client.get(f"/api/orders/{i}", headers={**bearer(token), "X-Plan": "free"}).status_code == 200
    for i in range(3):
        token = mint(k.ec, "ES256", sub=f"free-{i}", plan="free")
        # Nor its underscore twin, which a WSGI/CGI backend would read as X-Plan.
        assert env.client.get("/api/orders", headers={**bearer(token), "X-Plan": "beta", "X_Plan": "beta",
                                                      "x_user": "root"}).status_code == 200
    old, new, mono = env.ups["beta-old"].requests, env.ups["beta-new"].requests, env.ups["mono"].requests
    assert len(old) == 4 and len(new) == 4  # weighted 1:1 among the beta users
    assert len(mono) == 3 and {r.headers["x-plan"] for r in mono} == {"free"}
    assert not any(name.lower() in ("x_plan", "x_user") for r in mono for name in r.headers)
    seen = old[0]
    assert seen.headers["x-plan"] == "beta" and seen.headers["x-org"] == "acme"
    assert seen.headers["x-user"].startswith("beta-") and "x-missing" not in seen.headers
    assert "authorization" not in seen.headers  # forwardAuthorization: false (the default)


def test_forward_authorization_and_hs256(env: Env) -> None:
    env.ups["mono"].requests.clear()
    token = mint_hs(sub="hs-user")
    resp = env.client.get("/hs/x", headers={**bearer(token), "X-User": "spoofed"})
    assert resp.status_code == 200
    got = env.ups["mono"].requests[-1]
    assert got.headers["authorization"] == f"Bearer {token}" and got.headers["x-user"] == "hs-user"
    assert [v for n, v in got.header_list if n.lower() == "x-user"] == ["hs-user"]
    assert env.client.get("/hs/x", headers=bearer(mint_hs(secret="wrong-secret-but-long-enough-0000000"))).status_code == 401


def test_oidc_discovery_finds_the_jwks(env: Env) -> None:
    token = mint(env.keys.ed, "EdDSA", iss=env.jwks.url)
    assert env.client.get("/disc/x", headers=bearer(token)).status_code == 200
    assert any(r.path == "/.well-known/openid-configuration" for r in env.jwks.requests)
    assert env.client.get("/disc/x", headers=bearer(mint(env.keys.ed, "EdDSA"))).status_code == 401  # iss differs


def test_claims_condition_is_403(env: Env) -> None:
    resp = env.client.get("/admin/x", headers=bearer(mint(env.keys.rsa, "RS256")))
    assert resp.status_code == 403 and 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    assert env.ups["vault"].requests == []
    ok = env.client.get("/admin/x", headers=bearer(mint(env.keys.rsa, "RS256", org={"name": "root"})))
    assert ok.status_code == 200 and len(env.ups["vault"].requests) == 1


def test_capture_clusters_by_subject_and_hashes_claim_headers(env: Env) -> None:
    env.gw.stop()
    rows = duckdb.connect().execute(
        f"SELECT client_key, status, req_headers FROM read_parquet('{env.capture}/exchanges/**/*.parquet', "
        "union_by_name=true, hive_partitioning=true) WHERE path LIKE '/api/orders/%' AND role = 'primary' "
        "OR (path LIKE '/api/orders/%' AND mode = 'split')").fetchall()
    assert len(rows) == 8
    # client_key: the capture's keyed hash of the sub claim (hashClientKey, default), one per user
    key = load_redaction_key(env.capture, RedactionSettings())  # the key file outside the capture (conftest)
    expected = sorted("redacted:" + hmac.digest(key, f"beta-{i}".encode(), "sha256").hex() for i in range(8))
    assert sorted(r[0] for r in rows) == expected
    for _, status, headers in rows:
        values = {h["name"].lower(): h["value"] for h in headers}
        assert status == 200
        assert values["x-user"].startswith("redacted:") and values["x-plan"].startswith("redacted:")
        assert "authorization" not in values
    stats = json.loads(next((env.capture / "_stats").glob("*.json")).read_text())
    counters = stats.get("counters", stats)
    assert counters["auth_rejected_algorithm"] >= 2  # alg none, HS256 key confusion
    assert counters["auth_rejected_jwks_unavailable"] >= 3  # down (twice) and slow: failed closed, counted
    assert counters["auth_jwks_failures"] >= 2 and counters["auth_passed"] >= 11
