"""shadow.gateway.entrypoints: Traefik's entryPoints.forwardedHeaders, parsed and applied."""

from __future__ import annotations

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.gateway.entrypoints import (
    EntryPoint,
    is_managed_forwarded_header,
    select_entry_point,
    strip_untrusted_forwarded,
    trusts_forwarded,
)
from shadow.gateway.middlewares.ipstrategy import IPChecker
from shadow.gateway.timeouts import RespondingTimeouts

HTTP = """
http:
  routers:
    r: {rule: "PathPrefix(`/`)", service: s, entryPoints: [web]}
  services:
    s: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
"""

SPOOFED = [("X-Forwarded-For", "1.2.3.4"), ("x-real-ip", "1.2.3.4"), ("X_Forwarded_Proto", "https"),
           ("X-Scheme", "https"), ("X-Forwarded-Prefix", "/x"), ("Accept", "*/*"), ("X-Other", "kept")]


def test_entry_points_parsed_with_traefik_names() -> None:
    cfg = parse_config("entryPoints:\n  web:\n    address: ':8080'\n    forwardedHeaders:\n"
                       "      trustedIPs: ['10.0.0.0/8', '192.168.1.7']\n" + HTTP)
    ep = cfg.entry_points["web"]
    assert (ep.name, ep.address, ep.port, ep.insecure) == ("web", ":8080", 8080, False)
    assert ep.trusted_ips is not None and ep.trusted_ips.contains("10.1.2.3") and ep.trusted_ips.contains("192.168.1.7")
    assert cfg.routers[0].entry_points == ("web",)


def test_responding_timeouts_have_traefiks_names_and_defaults() -> None:
    cfg = parse_config("entryPoints:\n  web:\n    transport:\n      respondingTimeouts:\n"
                       "        readTimeout: 5s\n        idleTimeout: 1m\n        writeTimeout: 30\n" + HTTP)
    assert cfg.entry_points["web"].timeouts == RespondingTimeouts(read_s=5, write_s=30, idle_s=60)
    default = parse_config("entryPoints:\n  web: {address: ':80'}\n" + HTTP).entry_points["web"].timeouts
    assert default == RespondingTimeouts(read_s=60, write_s=0, idle_s=180)


def test_without_entry_points_nobody_is_trusted() -> None:
    cfg = parse_config(HTTP)
    assert dict(cfg.entry_points) == {}
    assert not trusts_forwarded(select_entry_point(cfg.entry_points, 8080), "127.0.0.1")


@pytest.mark.parametrize(("text", "where"), [
    ("entryPoints:\n  web: {address: 'nope'}\n", ":2: entryPoints.web.address: address 'nope' is not [host]:port"),
    ("entryPoints:\n  web:\n    forwardedHeaders: {trustedIPs: ['10.0.0.0/33']}\n",
     ":3: entryPoints.web.forwardedHeaders.trustedIPs: '10.0.0.0/33' is not an IP address or CIDR range"),
    ("entryPoints:\n  web:\n    forwardedHeaders: {trusted: []}\n",
     ":3: entryPoints.web.forwardedHeaders.trusted: unknown key"),
    ("entryPoints:\n  websecure: {address: ':443'}\n", ":6: http.routers.r.entryPoints[0]: no entry point named 'web'"),
    ("entryPoints:\n  web:\n    transport:\n      respondingTimeouts: {readTimeout: soon}\n",
     ":4: entryPoints.web.transport.respondingTimeouts.readTimeout: 'soon' is not a duration"),
    ("entryPoints:\n  web:\n    transport:\n      respondingTimeouts: {idleTimeout: -5s}\n",
     ":4: entryPoints.web.transport.respondingTimeouts.idleTimeout: '-5s' is not a duration"),
    ("entryPoints:\n  web:\n    transport:\n      respondingTimeouts: {readtimeout2: 1s}\n",
     ":4: entryPoints.web.transport.respondingTimeouts.readtimeout2: unknown key"),
    ("entryPoints:\n  web:\n    transport:\n      lifeCycle: {graceTimeOut: 1s}\n",
     ":4: entryPoints.web.transport.lifeCycle: not supported"),
])
def test_bad_entry_points_name_file_and_line(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text + HTTP, "gw.yaml")
    assert str(err.value).startswith("gw.yaml" + where), str(err.value)


def test_untrusted_client_loses_every_managed_header_spelling() -> None:
    assert strip_untrusted_forwarded(SPOOFED, None, "1.2.3.4") == [("Accept", "*/*"), ("X-Other", "kept")]
    trusted = EntryPoint("web", trusted_ips=IPChecker.parse(("127.0.0.1",)))
    assert strip_untrusted_forwarded(SPOOFED, trusted, "127.0.0.1") == SPOOFED
    assert strip_untrusted_forwarded(SPOOFED, trusted, "127.0.0.2") == [("Accept", "*/*"), ("X-Other", "kept")]
    assert strip_untrusted_forwarded(SPOOFED, EntryPoint("web", insecure=True), "8.8.8.8") == SPOOFED


def test_managed_header_names_are_traefiks() -> None:
    assert is_managed_forwarded_header("X-Forwarded-Tls-Client-Cert-Info")
    assert is_managed_forwarded_header("x_real_ip")
    assert not is_managed_forwarded_header("X-Forwarded-Something")
    assert not is_managed_forwarded_header("Forwarded")  # RFC 7239's header is not one of Traefik's


def test_entry_point_by_port_or_the_only_one() -> None:
    web, admin = EntryPoint("web", port=8080), EntryPoint("admin", port=9000)
    assert select_entry_point({"web": web, "admin": admin}, 9000) is admin
    assert select_entry_point({"web": web, "admin": admin}, 1234) is None
    assert select_entry_point({"web": web}, 1234) is web


@pytest.mark.parametrize(("text", "where"), [
    ("tls:\n  certificates:\n    - {certFile: nope.crt, keyFile: nope.key}\n",
     ":3: tls.certificates[0].certFile: cannot read"),
    ("tls:\n  options: {default: {minVersion: TLS12}}\n", ":2: tls.options.default.minVersion: unknown TLS version"),
    ("tls:\n  options:\n    o:\n      cipherSuites: [TLS_FOO]\n",
     ":4: tls.options.o.cipherSuites[0]: invalid CipherSuite: TLS_FOO"),
    ("tls:\n  options:\n    o:\n      clientAuth: {clientAuthType: RequireAndVerifyClientCert}\n",
     ":4: tls.options.o.clientAuth.clientAuthType: invalid clientAuthType: RequireAndVerifyClientCert, CAFiles"),
    ("tls:\n  options:\n    o:\n      clientAuth: {clientAuthType: Always}\n",
     ":4: tls.options.o.clientAuth.clientAuthType: unknown client auth type 'Always'"),
    ("tls:\n  options:\n    o:\n      clientAuth: {caFiles: [missing.pem]}\n",
     ":4: tls.options.o.clientAuth.caFiles[0]: cannot read"),
    ("tls:\n  options:\n    o: {minVersion: VersionTLS13, maxVersion: VersionTLS12}\n",
     ":3: tls.options.o.maxVersion: maxVersion VersionTLS12 is below minVersion VersionTLS13"),
    ("entryPoints:\n  web:\n    http: {tls: {options: mtls}}\n",
     ":3: entryPoints.web.http.tls.options: unknown TLS options: mtls"),
    ("entryPoints:\n  web:\n    http: {redirections: {entryPoint: {to: secure}}}\n",
     ": entryPoints.web.http.redirections.entryPoint.to: no entry point named 'secure'"),
    ("entryPoints:\n  web:\n    http: {tls: {certResolver: le}}\n", ":3: entryPoints.web.http.tls.certResolver: not supported"),
])
def test_bad_tls_and_entry_point_http_name_file_and_line(tmp_path, text: str, where: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        parse_config(text + HTTP.replace(", entryPoints: [web]", ""), "gw.yaml", base_dir=tmp_path)
    assert str(err.value).startswith("gw.yaml" + where), str(err.value)


def test_entry_point_http_tls_and_redirection() -> None:
    cfg = parse_config("entryPoints:\n  web:\n    address: ':80'\n    http:\n"
                       "      redirections: {entryPoint: {to: websecure, scheme: https, permanent: false}}\n"
                       "  websecure: {address: ':443', http: {tls: {}}}\n" + HTTP.replace("[web]", "[websecure]"))
    web, secure = cfg.entry_points["web"], cfg.entry_points["websecure"]
    assert (web.redirect_to, web.redirect_scheme, web.redirect_permanent, web.tls) == ("websecure", "https", False, False)
    assert secure.tls and secure.port == 443


def test_routers_served_per_entry_point_and_tls() -> None:
    from shadow.gateway.routing import config_for_listener

    cfg = parse_config("""
entryPoints:
  web: {address: ':80'}
  websecure: {address: ':443', http: {tls: {}}}
http:
  routers:
    site: {rule: "PathPrefix(`/`)", service: s, entryPoints: [web, websecure]}
    admin: {rule: "PathPrefix(`/admin`)", service: s, entryPoints: [websecure]}
    api: {rule: "PathPrefix(`/api`)", service: s, tls: {}}
  services:
    s: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
""")
    web, secure = cfg.entry_points["web"], cfg.entry_points["websecure"]

    def names(ep: EntryPoint | None, tls: bool) -> set[str]:
        return {r.name for r in config_for_listener(cfg, ep, tls).routers}

    assert names(web, False) == {"site"}  # api is a TLS router; admin is on websecure
    assert names(web, True) == {"api"}
    assert names(secure, True) == {"site", "admin", "api"}  # websecure's routers are all TLS
    assert names(secure, False) == set()
    no_entry_points = parse_config(HTTP)  # routers naming entry points of a static config kept elsewhere
    assert config_for_listener(no_entry_points, None, False) is no_entry_points
