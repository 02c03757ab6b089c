"""Entry points and TLS end to end: a Traefik file with two entry points — `web` redirecting to
`websecure` as Traefik's `http.redirections` does, `websecure` terminating TLS with a certificate of
the `tls:` section — and a router on websecure using a chain of headers, rateLimit and retry, served
to real TLS clients that trust a private CA made in the test (trustme)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import GatewayProcess
from tests.upstream import Upstream, free_port, wait_listening

CONFIG = """
entryPoints:
  web:
    address: ":{web}"
    http:
      redirections:
        entryPoint: {{to: websecure, scheme: https}}
  websecure:
    address: "127.0.0.1:{websecure}"
    http:
      tls: {{}}
tls:
  certificates:
    - certFile: shop.crt
      keyFile: shop.key
http:
  routers:
    shop:
      rule: "Host(`shop.test`)"
      entryPoints: [websecure]
      middlewares: [edge]
      service: app
      tls: {{}}
  middlewares:
    edge: {{chain: {{middlewares: [secure-headers, limit, retry-twice]}}}}
    secure-headers:
      headers: {{stsSeconds: 63072000, customRequestHeaders: {{X-Edge: "1"}}}}
    limit: {{rateLimit: {{average: 100, burst: 50}}}}
    retry-twice: {{retry: {{attempts: 2}}}}
  services:
    app:
      loadBalancer:
        servers: [{{url: "{app}"}}]
shadow:
  capture: {{enabled: false}}
"""


class Env:
    def __init__(self, ca_pem: Path, web: int, websecure: int, app: Upstream) -> None:
        self.web, self.websecure, self.app = web, websecure, app
        self.context = ssl.create_default_context(cafile=str(ca_pem))  # trusts only the test's CA
        self.plain = httpx.Client(timeout=10.0, follow_redirects=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder = Path(tmp_path_factory.mktemp("tls"))
    ca = trustme.CA()
    cert = ca.issue_cert("shop.test")
    cert.private_key_pem.write_to_path(str(folder / "shop.key"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "shop.crt"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    web, websecure = free_port(), free_port()
    with Upstream("app") as app:
        path = folder / "gateway.yaml"
        path.write_text(CONFIG.format(web=web, websecure=websecure, app=app.url))
        with GatewayProcess(path, port=web):
            wait_listening(websecure)  # the second entry point's listener starts beside the first
            e = Env(folder / "ca.pem", web, websecure, app)
            yield e
            e.plain.close()


def test_web_redirects_to_websecure(env: Env) -> None:
    resp = env.plain.get(f"http://127.0.0.1:{env.web}/cart?x=1", headers={"Host": "shop.test"})
    assert resp.status_code == 301
    assert resp.headers["Location"] == f"https://shop.test:{env.websecure}/cart?x=1"


def test_websecure_serves_a_real_tls_client_through_the_chain(env: Env) -> None:
    # SNI and Host are shop.test; the TCP connection goes to 127.0.0.1 (no DNS: the transport maps it)
    with httpx.Client(verify=env.context, timeout=30.0) as client:
        resp = client.get(f"https://127.0.0.1:{env.websecure}/cart",
                          headers={"Host": "shop.test"}, extensions={"sni_hostname": "shop.test"})
    assert resp.status_code == 200, resp.text
    seen = json.loads(resp.text)
    assert seen["headers"]["x-edge"] == "1"
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert resp.headers["Strict-Transport-Security"] == "max-age=63072000"  # sent over TLS


def test_plain_http_on_websecure_matches_no_tls_router(env: Env) -> None:
    resp = env.plain.get(f"http://127.0.0.1:{env.websecure}/cart", headers={"Host": "shop.test"})
    assert resp.status_code == 404  # the router serves TLS requests only


def test_a_client_that_does_not_trust_the_ca_is_refused(env: Env) -> None:
    with httpx.Client(verify=ssl.create_default_context(), timeout=30.0) as client, pytest.raises(httpx.ConnectError):
        client.get(f"https://127.0.0.1:{env.websecure}/cart", headers={"Host": "shop.test"},
                   extensions={"sni_hostname": "shop.test"})
