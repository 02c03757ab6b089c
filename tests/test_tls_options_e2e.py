"""Traefik's TLS options end to end, with real TLS clients and CAs made in the test (trustme): mutual
TLS on an entry point (`http.tls.options` with `clientAuth.caFiles`: RequireAndVerifyClientCert),
`VerifyClientCertIfGiven` and `minVersion` chosen per router by SNI, `sniStrict` on another entry point.
A refused client gets a failed handshake and the gateway logs one line naming it."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import GatewayProcess
from tests.test_traefik_tls_e2e import wait_listening
from tests.upstream import Upstream, free_port

CONFIG = """
entryPoints:
  web:
    address: "127.0.0.1:{web}"
    http: {{tls: {{}}}}
  mtls:
    address: "127.0.0.1:{mtls}"
    http: {{tls: {{options: mutual}}}}
  strict:
    address: "127.0.0.1:{strict}"
    http: {{tls: {{options: strict}}}}
tls:
  certificates:
    - {{certFile: site.crt, keyFile: site.key}}
  options:
    mutual:
      clientAuth: {{caFiles: [clients-ca.pem]}}
    optional:
      clientAuth: {{caFiles: [clients-ca.pem], clientAuthType: VerifyClientCertIfGiven}}
    modern: {{minVersion: VersionTLS13}}
    strict: {{sniStrict: true}}
http:
  routers:
    api: {{rule: "Host(`api.test`)", entryPoints: [mtls], service: app}}
    shop: {{rule: "Host(`shop.test`)", entryPoints: [web, strict], service: app, tls: {{}}}}
    opt: {{rule: "Host(`opt.test`)", entryPoints: [web], service: app, tls: {{options: optional}}}}
    new: {{rule: "Host(`new.test`)", entryPoints: [web], service: app, tls: {{options: modern}}}}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{app}"}}]
shadow:
  capture: {{enabled: false}}
"""


class Env:
    def __init__(self, folder: Path, ports: dict[str, int], gateway: GatewayProcess, clients: trustme.CA,
                 stranger: trustme.CA) -> None:
        self.folder, self.ports, self.gateway = folder, ports, gateway
        self.clients, self.stranger = clients, stranger

    def context(self, client_ca: trustme.CA | None = None, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.folder / "server-ca.pem"))
        if client_ca is not None:
            client_ca.issue_cert("parent@example.test").configure_cert(context)
        if max_version is not None:
            context.maximum_version = max_version
        return context

    def get(self, entry_point: str, host: str, context: ssl.SSLContext) -> httpx.Response:
        with httpx.Client(verify=context, timeout=30.0) as client:
            return client.get(f"https://127.0.0.1:{self.ports[entry_point]}/hello", headers={"Host": host},
                              extensions={"sni_hostname": host})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder = Path(tmp_path_factory.mktemp("tlsopts"))
    server_ca, clients, stranger = trustme.CA(), trustme.CA(), trustme.CA()
    site = server_ca.issue_cert("api.test", "shop.test", "opt.test", "new.test")
    site.private_key_pem.write_to_path(str(folder / "site.key"))
    site.cert_chain_pems[0].write_to_path(str(folder / "site.crt"))
    server_ca.cert_pem.write_to_path(str(folder / "server-ca.pem"))
    clients.cert_pem.write_to_path(str(folder / "clients-ca.pem"))
    ports = {"web": free_port(), "mtls": free_port(), "strict": free_port()}
    with Upstream("app") as app:
        path = folder / "gateway.yaml"
        path.write_text(CONFIG.format(app=app.url, **ports))
        with GatewayProcess(path, port=ports["web"]) as gateway:
            wait_listening(ports["mtls"])
            wait_listening(ports["strict"])
            yield Env(folder, ports, gateway, clients, stranger)


def test_mtls_entry_point_serves_a_client_with_a_certificate_of_the_trusted_ca(env: Env) -> None:
    resp = env.get("mtls", "api.test", env.context(env.clients))
    assert resp.status_code == 200, resp.text
    assert json.loads(resp.text)["path"] == "/hello"


def test_mtls_entry_point_refuses_a_client_without_certificate(env: Env) -> None:
    with pytest.raises(httpx.HTTPError):
        env.get("mtls", "api.test", env.context())
    assert env.gateway.wait_for_output("refused on entry point mtls", timeout=20.0), env.gateway.output()[-2000:]


def test_mtls_entry_point_refuses_a_certificate_from_another_ca(env: Env) -> None:
    with pytest.raises(httpx.HTTPError):
        env.get("mtls", "api.test", env.context(env.stranger))


def test_mtls_applies_without_sni_too(env: Env) -> None:
    # A peer dialling an IP address sends no SNI: the entry point's options still apply.
    context = env.context(None)
    context.check_hostname = False
    with httpx.Client(verify=context, timeout=30.0) as client, pytest.raises(httpx.HTTPError):
        client.get(f"https://127.0.0.1:{env.ports['mtls']}/hello", headers={"Host": "api.test"})


def test_other_routers_on_the_same_gateway_need_no_client_certificate(env: Env) -> None:
    assert env.get("web", "shop.test", env.context()).status_code == 200


def test_verify_client_cert_if_given_by_sni(env: Env) -> None:
    assert env.get("web", "opt.test", env.context()).status_code == 200  # none given: served
    assert env.get("web", "opt.test", env.context(env.clients)).status_code == 200
    with pytest.raises(httpx.HTTPError):  # given, and not from the trusted CA: refused
        env.get("web", "opt.test", env.context(env.stranger))


def test_min_version_by_sni(env: Env) -> None:
    assert env.get("web", "new.test", env.context()).status_code == 200  # TLS 1.3 client
    with pytest.raises(httpx.HTTPError):
        env.get("web", "new.test", env.context(max_version=ssl.TLSVersion.TLSv1_2))
    # shop.test keeps the default options (TLS 1.2 allowed)
    assert env.get("web", "shop.test", env.context(max_version=ssl.TLSVersion.TLSv1_2)).status_code == 200


def test_sni_strict_refuses_an_unknown_server_name(env: Env) -> None:
    assert env.get("strict", "shop.test", env.context()).status_code == 200
    context = env.context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # even a client that would accept anything gets no certificate
    with pytest.raises(httpx.HTTPError):
        env.get("strict", "unknown.test", context)
