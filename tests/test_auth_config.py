"""The jwt middleware's options and multi-layer routers (parentRefs) in the config loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadow.auth.jwt import JwtSettings
from shadow.auth.oidc import OidcSettings
from shadow.errors import ConfigError
from shadow.gateway.config import load_config, parse_config
from shadow.gateway.routing import resolve_router
from shadow.gateway.rules import RequestView

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "auth.yaml"

BASE = """\
http:
  routers:
    api: {rule: "PathPrefix(`/api`)", middlewares: [jwt]}
    beta: {rule: "Header(`X-Plan`, `beta`)", parentRefs: [api], service: svc}
    rest: {rule: "PathPrefix(`/`)", parentRefs: [api], service: svc, priority: 1}
  services:
    svc: {loadBalancer: {servers: [{url: "http://127.0.0.1:1"}]}}
  middlewares:
    jwt:
      jwt:
%s
"""


def jwt_config(options: str) -> str:
    return BASE % "\n".join("        " + line for line in options.strip().splitlines())


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE)
    jwt = config.middlewares["jwt"]
    assert isinstance(jwt, JwtSettings)
    assert jwt.forward_headers == (("X-User", "sub"), ("X-Plan", "plan"), ("X-Org", "org.name"))
    assert jwt.audience == ("orders-api",) and jwt.leeway_s == 30 and not jwt.forward_authorization
    admin = config.middlewares["jwt-admin"]
    assert isinstance(admin, JwtSettings) and admin.discovery and admin.claims is not None
    assert config.shadow.identity_client_key_claim == "sub" and config.shadow.identity_hash_client_key
    login = config.middlewares["login"]
    assert isinstance(login, OidcSettings) and login.session_expiry_s == 8 * 3600 and "email" in login.scopes
    assert {"x-user", "x-plan", "x-org"} <= set(config.shadow.capture.redaction.headers)


def test_children_match_after_the_parent() -> None:
    config = load_config(EXAMPLE)
    view = RequestView(method="GET", host="h", path="/api/orders", headers=(("X-Plan", "beta"),))
    router, inherited = resolve_router(config, view)
    assert router is not None and router.name == "api-beta"
    assert [m.name for m in inherited] == ["jwt"]
    router, _ = resolve_router(config, RequestView(method="GET", host="h", path="/api/x"))
    assert router is not None and router.name == "api-rest"
    router, inherited = resolve_router(config, RequestView(method="GET", host="h", path="/other"))
    assert router is not None and router.name == "public" and inherited == ()


def test_no_child_matches_is_404() -> None:
    config = parse_config(BASE.replace(', priority: 1', ', priority: 1') .replace('PathPrefix(`/`)", parentRefs', 'Path(`/api/only`)", parentRefs')
                          % "        signingSecret: s")
    router, _ = resolve_router(config, RequestView(method="GET", host="h", path="/api/x"))
    assert router is None


@pytest.mark.parametrize(("options", "message"), [
    ("signingSecret: s\npublicKey: x", "jwt: name one key source, found signingSecret and publicKey"),
    ("audience: a", "needs a key source"),
    ("jwksUrl: ftp://x/jwks", "http.middlewares.jwt.jwt.jwksUrl: must be an http:// or https:// URL"),
    ("signingSecret: s\nclaims: 'Equals(\"a\", \"b\") &&'", "http.middlewares.jwt.jwt.claims: expected a function such as Equals, found 'end of expression' at column 20"),
    ("signingSecret: s\nalgorithms: [RS256]", "jwt.algorithms[0]: algorithm 'RS256' cannot be used with a signingSecret"),
    ("jwksUrl: http://x/jwks\nalgorithms: [HS256]", "algorithm 'HS256' cannot be used with public keys"),
    ("signingSecret: s\nforwardHeaders: {'bad header': sub}", "bad header name 'bad header'"),
    ("signingSecret: s\njwksFile: x.json", "jwt.jwksFile: not supported yet"),
    ("signingSecret: s\nleway: 5s", "jwt.leway: unknown key (did you mean 'leeway'?)"),
    ("publicKey: not a key", "http.middlewares.jwt.jwt.publicKey: cannot import the public key"),
])
def test_jwt_option_errors(options: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(jwt_config(options), "gw.yaml")
    assert message in str(info.value) and str(info.value).startswith("gw.yaml:")


@pytest.mark.parametrize(("text", "message"), [
    (BASE.replace("parentRefs: [api], service: svc}", "parentRefs: [apii], service: svc}", 1),
     "http.routers.beta.parentRefs[0]: no router named 'apii' (did you mean 'api'?)"),
    (BASE.replace('middlewares: [jwt]}', 'middlewares: [jwt], service: svc}'),
     "http.routers.api.service: a parent router (named in parentRefs) has middlewares and no service"),
    (BASE.replace("parentRefs: [api], service: svc}", "parentRefs: [api]}", 1), "http.routers.beta.service: required"),
    (BASE.replace('middlewares: [jwt]}', 'middlewares: [jwt], parentRefs: [beta]}')
     .replace("parentRefs: [api], service: svc}", "parentRefs: [api]}", 1), "parentRefs cycle"),
])
def test_parent_ref_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text % "        signingSecret: s", "gw.yaml")
    assert message in str(info.value)


OIDC = """\
http:
  routers:
    app: {rule: "PathPrefix(`/`)", service: svc, middlewares: [login]}
  services:
    svc: {loadBalancer: {servers: [{url: "http://127.0.0.1:1"}]}}
  middlewares:
    login:
      oidc:
%s
"""


def test_oidc_options() -> None:
    config = parse_config(OIDC % "        issuer: https://op.test\n        clientId: web\n"
                          "        session: {secret: 0123456789abcdef0123456789abcdef, expiry: 2h}\n"
                          "        forwardHeaders: {X-User: sub}")
    mw = config.middlewares["login"]
    assert isinstance(mw, OidcSettings)
    assert mw.session_expiry_s == 7200 and mw.scopes == ("openid",) and mw.redirect_path == "/oidc/callback"
    with pytest.raises(ConfigError, match=r"gw.yaml:\d+: http.middlewares.login.oidc.session: session.secret"):
        parse_config(OIDC % "        issuer: https://op.test\n        clientId: web\n        session: {secret: short}",
                     "gw.yaml")
    with pytest.raises(ConfigError, match=r"oidc\.redirectPath: must start with '/'"):
        parse_config(OIDC % "        issuer: https://op.test\n        clientId: web\n        redirectPath: cb\n"
                     "        session: {secret: 0123456789abcdef0123456789abcdef}", "gw.yaml")


def test_config_check_verbose_shows_parents_and_children() -> None:
    from click.testing import CliRunner

    from shadow.cli.config import check

    result = CliRunner().invoke(check, ["-v", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "api: PathPrefix(`/api`) -> (children) via jwt" in result.output
    assert "api-beta: Header(`X-Plan`, `beta`) -> beta-split (child of api)" in result.output


def test_child_matches_on_what_the_parents_middlewares_did() -> None:
    """No auth involved: a parent's headers/stripPrefix middlewares shape the request the children
    see, nested two layers deep, and the child inherits the parents' middlewares first."""
    from shadow.gateway.routing import route_plans, with_inherited

    config = parse_config("""\
http:
  routers:
    top: {rule: "PathPrefix(`/v1`)", middlewares: [tag, strip]}
    mid: {rule: "Header(`X-Tier`, `gold`)", parentRefs: [top], middlewares: [more]}
    leaf: {rule: "Path(`/orders`) && Header(`X-More`, `1`)", parentRefs: [mid], service: svc}
    other: {rule: "Path(`/v1/orders`)", parentRefs: [top], service: svc}
  services:
    svc: {loadBalancer: {servers: [{url: "http://127.0.0.1:1"}]}}
  middlewares:
    tag: {headers: {customRequestHeaders: {X-Tier: gold}}}
    strip: {stripPrefix: {prefixes: [/v1]}}
    more: {headers: {customRequestHeaders: {X-More: "1"}}}
""")
    router, inherited = resolve_router(config, RequestView(method="GET", host="h", path="/v1/orders"))
    assert router is not None and router.name == "leaf"  # /orders after stripPrefix, X-More from mid
    assert [m.name for m in inherited] == ["tag", "strip", "more"]
    plan = with_inherited(route_plans(config)["leaf"], inherited)
    assert [m.name for m in plan.middlewares] == ["tag", "strip", "more"]
    assert "top" not in route_plans(config) and "mid" not in route_plans(config)
