"""Loading Traefik's middleware options (shadow/gateway/middlewares/config.py): Traefik's names and
defaults; an unknown option, or a value Traefik refuses, is one error naming file, line and field."""

from __future__ import annotations

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.gateway.middlewares.inflightreq import InFlightReq
from shadow.gateway.middlewares.ipallowlist import IPAllowList
from shadow.gateway.middlewares.ratelimit import RateLimit
from shadow.gateway.middlewares.retry import Retry

HEAD = """http:
  routers:
    r: {rule: "PathPrefix(`/`)", service: s, middlewares: [m]}
  services:
    s: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
  middlewares:
"""


def config(middlewares: str):  # type: ignore[no-untyped-def]
    return parse_config(HEAD + middlewares, "gw.yaml")


@pytest.mark.parametrize(("text", "error"), [
    ("    m: {plugin: {blockpath: {regex: '^/x'}}}\n",
     "gw.yaml:7: http.middlewares.m.plugin: not supported by the shadow gateway (Traefik plugins"),
    ("    m: {rateLimit: {average: 10, burts: 5}}\n", "gw.yaml:7: http.middlewares.m.rateLimit.burts: unknown key"),
    ("    m: {retry: {attempts: 3, initialIntervall: 1s}}\n",
     "gw.yaml:7: http.middlewares.m.retry.initialIntervall: unknown key"),
    ("    m: {retry: {}}\n", "gw.yaml:7: http.middlewares.m.retry.attempts: incorrect (or empty) value for attempt"),
    ("    m: {retry: {attempts: 2, disableRetryOnNetworkError: true}}\n",
     "http.middlewares.m.retry: retry middleware requires at least HTTP status codes or retry on TCP"),
    ("    m: {retry: {attempts: 2, status: ['5xx']}}\n", "http.middlewares.m.retry.status[0]: expected a status code"),
    ("    m: {redirectScheme: {permanent: true}}\n", "http.middlewares.m.redirectScheme.scheme: you must provide"),
    ("    m:\n      redirectRegex:\n        regex: '^(a)\\1'\n        replacement: x\n",
     "gw.yaml:9: http.middlewares.m.redirectRegex.regex: invalid regular expression `^(a)\\1` (Go's RE2 syntax)"),
    ("    m:\n      stripPrefixRegex:\n        regex:\n          - '^/ok'\n          - '(?=x)'\n",
     "gw.yaml:11: http.middlewares.m.stripPrefixRegex.regex: invalid regular expression `(?=x)`"),
    ("    m: {replacePathRegex: {regex: '[', replacement: x}}\n",
     "gw.yaml:7: http.middlewares.m.replacePathRegex.regex: invalid regular expression `[`"),
    ("    m: {ipAllowList: {sourceRange: [foo]}}\n",
     "gw.yaml:7: http.middlewares.m.ipAllowList.sourceRange: 'foo' is not an IP address or CIDR range"),
    ("    m: {ipAllowList: {sourceRange: [10.0.0.1], rejectStatusCode: 600}}\n",
     "http.middlewares.m.ipAllowList.rejectStatusCode: invalid HTTP status code 600"),
    ("    m: {ipAllowList: {sourceRange: []}}\n", "sourceRange is empty"),
    ("    m: {ipWhiteList: {sourceRange: [10.0.0.1], rejectStatusCode: 404}}\n",
     "http.middlewares.m.ipWhiteList.rejectStatusCode: unknown key"),
    ("    m: {ipAllowList: {sourceRange: [10.0.0.1], ipStrategy: {depth: 1, excluded: []}}}\n",
     "http.middlewares.m.ipAllowList.ipStrategy.excluded: unknown key"),
    ("    m: {inFlightReq: {amount: 0}}\n", "http.middlewares.m.inFlightReq.amount: amount must be positive"),
    ("    m: {basicAuth: {users: ['nocolon']}}\n", "http.middlewares.m.basicAuth.users[0]: expected user:hash"),
    ("    m: {basicAuth: {usersFile: /nonexistent/users}}\n", "http.middlewares.m.basicAuth.usersFile: cannot read"),
    ("    m: {chain: {middlewares: [n]}}\n    n: {chain: {middlewares: [m]}}\n",
     "gw.yaml:8: http.middlewares.n.chain.middlewares[0]: chain cycle: m -> n -> m"),
    ("    m: {chain: {middlewares: [nope]}}\n", "gw.yaml:7: http.middlewares.m.chain.middlewares[0]: no middleware named 'nope'"),
    ("    m: {passTLSClientCert: {pem: true}}\n",
     "gw.yaml:7: http.middlewares.m.passTLSClientCert: not supported by the shadow gateway: it terminates no TLS"),
    ("    m: {grpcWeb: {allowOrigins: ['*']}}\n", "gw.yaml:7: http.middlewares.m.grpcWeb: not supported by the shadow"),
    ("    m: {digestAuth: {users: ['test:traefik']}}\n",
     "gw.yaml:7: http.middlewares.m.digestAuth.users[0]: expected user:realm:hash"),
    ("    m: {buffering: {retryExpression: 'IsNetworkError()'}}\n",
     "gw.yaml:7: http.middlewares.m.buffering.retryExpression: not supported yet"),
])
def test_bad_middleware_options_name_the_line(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(text)
    assert error in str(err.value), str(err.value)


def test_defaults_are_traefiks() -> None:
    cfg = config("    m: {chain: {middlewares: [rl, rt, ip, fl]}}\n    rl: {rateLimit: {}}\n"
                 "    rt: {retry: {attempts: 4}}\n    ip: {ipWhiteList: {sourceRange: [10.0.0.0/8]}}\n"
                 "    fl: {inFlightReq: {amount: 3}}\n")
    rl, rt, ip, fl = (cfg.middlewares[n] for n in ("rl", "rt", "ip", "fl"))
    assert isinstance(rl, RateLimit) and rl.average == 0 and rl.burst == 1 and rl.period_s == 1.0
    assert isinstance(rt, Retry) and rt.attempts == 4 and rt.initial_interval_s == 0 and rt.max_request_body_bytes == -1
    assert isinstance(ip, IPAllowList) and ip.reject_status_code == 403
    assert isinstance(fl, InFlightReq) and fl.source.request_host  # inFlightReq counts per Host by default
    # the chain is expanded in the router's list, in order
    assert cfg.routers[0].middlewares == ("rl", "rt", "ip", "fl")


def test_nested_chains_expand_in_order() -> None:
    cfg = config("    m: {chain: {middlewares: [a, inner, d]}}\n    inner: {chain: {middlewares: [b, c]}}\n"
                 "    a: {addPrefix: {prefix: /a}}\n    b: {addPrefix: {prefix: /b}}\n"
                 "    c: {addPrefix: {prefix: /c}}\n    d: {addPrefix: {prefix: /d}}\n")
    assert cfg.routers[0].middlewares == ("a", "b", "c", "d")


def test_example_traefik_file_loads() -> None:
    from pathlib import Path

    from shadow.gateway.config import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "docs" / "examples" / "traefik.yaml")
    assert {r.name for r in cfg.routers} == {"shop", "www", "admin"}
    shop = next(r for r in cfg.routers if r.name == "shop")
    assert shop.middlewares == ("security-headers", "limit", "retry-twice", "gzip")  # the chain, expanded
    assert set(cfg.entry_points) == {"web", "internal"}
