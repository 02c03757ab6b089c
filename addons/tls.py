"""TLS addon: the `tls:` section's certificates handed to mitmproxy, which terminates the clients' TLS,
and Traefik's TLS options (versions, cipher suites, sniStrict, clientAuth for mutual TLS) applied to
each client handshake.

mitmproxy's `certs` option takes `[domain=]path` entries, each a PEM file holding the certificate and
its key: every certificate is written (certificate + key) to a private temporary folder and listed
under each DNS name and IP of its subjectAltName (Traefik picks by SNI the same way); the default
certificate is listed as `*`. Applied when the gateway starts running and after every reload that
changes the section; the folder is removed when the gateway stops.

TLS options: mitmproxy builds one cached pyOpenSSL context per set of arguments in its TlsConfig
addon's `tls_start_client`, which runs after script addons and keeps a connection one of them set; when the options the connection gets
(shadow.gateway.routing.connection_tls_options: entry point and SNI) differ from mitmproxy's
defaults, the connection is built here on a context of our own per options (same certificate,
same ALPN choice), with the client CA store and verify mode of the clientAuthType. A client refused
(no certificate, one from another CA, an expired one, no SNI under sniStrict) gets a failed
handshake and the gateway logs one line naming the client, the entry point and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitmproxy.addons.tlsconfig import AppData
from OpenSSL import SSL

from addons.reload import ActiveConfig, GatewayState
from shadow.gateway.config import LoadBalancerService
from shadow.gateway.entrypoints import select_entry_point
from shadow.gateway.routing import connection_tls_options
from shadow.gateway.tls import TlsCertificate, TlsOptions, TlsSettings
from shadow.gateway.transport import UpstreamTls, transports_by_address

if TYPE_CHECKING:
    from mitmproxy.tls import TlsData

logger = logging.getLogger(__name__)


def certificate_names(cert_pem: bytes) -> list[str]:
    """The DNS names and IP addresses a PEM certificate is valid for (subjectAltName, else its CN)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return names


_VERSIONS = {"VersionTLS10": "TLS1", "VersionTLS11": "TLS1_1", "VersionTLS12": "TLS1_2", "VersionTLS13": "TLS1_3",
             "": "UNBOUNDED"}


def server_context(options: TlsOptions, extra_chain: tuple[Any, ...], dhparams: Any) -> SSL.Context:
    """A server-side pyOpenSSL context for `options`, built by mitmproxy's own function (not its cached
    copy: this one's verify settings are ours), plus clientAuth's verify mode and CA store."""
    from mitmproxy.addons.tlsconfig import alpn_select_callback
    from mitmproxy.net import tls as net_tls

    build = net_tls.create_client_proxy_context.__wrapped__
    context: SSL.Context = build(
        method=net_tls.Method.TLS_SERVER_METHOD, min_version=net_tls.Version[_VERSIONS[options.min_version]],
        max_version=net_tls.Version[_VERSIONS[options.max_version]], cipher_list=options.cipher_suites or None,
        ecdh_curve=None, chain_file=None, alpn_select_callback=alpn_select_callback, request_client_cert=False,
        extra_chain_certs=extra_chain, dhparams=dhparams)
    if options.requests_client_cert:
        mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if options.requires_client_cert else 0)
        if options.verifies_client_cert:
            from cryptography import x509
            from OpenSSL import crypto

            cas = [crypto.X509.from_cryptography(ca) for ca in x509.load_pem_x509_certificates(options.client_ca_pem)]
            store = context.get_cert_store()
            assert store is not None
            for ca in cas:
                store.add_cert(ca)
            context.set_client_ca_list([ca.get_subject() for ca in cas])
            context.set_verify(mode, None)  # OpenSSL's chain verification against the store
        else:
            context.set_verify(mode, net_tls.accept_all)
    return context


def upstream_connection(transport: UpstreamTls, host: str, write_pem: Callable[[bytes], str]) -> SSL.Connection:
    """A client-side pyOpenSSL connection for `transport`: mitmproxy's context builder with the
    transport's CA file and client certificate, the server's name verified as mitmproxy does."""
    import ipaddress

    from mitmproxy.net import tls as net_tls

    context = net_tls.create_proxy_server_context(
        method=net_tls.Method.TLS_CLIENT_METHOD, min_version=net_tls.Version.TLS1_2,
        max_version=net_tls.Version.UNBOUNDED, cipher_list=None, ecdh_curve=None, verify=net_tls.Verify.VERIFY_PEER,
        ca_path=None, ca_pemfile=write_pem(transport.ca_pem),
        client_cert=write_pem(transport.cert_pem.rstrip(b"\n") + b"\n" + transport.key_pem)
        if transport.cert_pem else None, legacy_server_connect=False)
    conn = SSL.Connection(context)
    name = transport.name_for(host)
    param = SSL._lib.SSL_get0_param(conn._ssl)
    SSL._lib.X509_VERIFY_PARAM_set_hostflags(param, 0)
    try:
        ip = ipaddress.ip_address(name).packed
    except ValueError:
        encoded = name.encode("idna")
        conn.set_tlsext_host_name(encoded)
        ok = SSL._lib.X509_VERIFY_PARAM_set1_host(param, encoded, len(encoded))
    else:
        ok = SSL._lib.X509_VERIFY_PARAM_set1_ip(param, ip, len(ip))
    if ok != 1:
        raise ValueError(f"cannot verify the name {name!r}")
    conn.set_alpn_protos([b"http/1.1"])
    conn.set_connect_state()
    return conn


class Tls:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._applied: TlsSettings | None = None
        self._running = False
        self.options: Any = None
        self.master: Any = None
        self._contexts: dict[tuple[TlsOptions, str], SSL.Context] = {}
        self._names: tuple[TlsSettings | None, frozenset[str]] = (None, frozenset())
        self._by_address: tuple[object, dict[tuple[str, int], UpstreamTls]] = (None, {})
        self.refused = 0
        state.on_activate.append(self._on_activate)
        state.extra_counters.append(lambda: {"tls_clients_refused": self.refused})

    def load(self, loader: Any) -> None:
        # Before the config addon's load, which may activate the first configuration at once.
        self.options = loader.master.options
        self.master = loader.master

    def _served_names(self, settings: TlsSettings) -> frozenset[str]:
        if self._names[0] is not settings:
            names = {n.lower() for cert in settings.certificates for n in certificate_names(cert.cert_pem)}
            self._names = (settings, frozenset(names))
        return self._names[1]

    def tls_start_client(self, data: TlsData) -> None:
        """The client connection on the TLS options it gets, when they are not mitmproxy's defaults.
        Script addons run before mitmproxy's TlsConfig, which leaves a connection set here alone."""
        active = self.state.active
        if active is None or data.ssl_conn is not None or data.is_dtls or self.master is None:
            return
        client = data.context.client
        entry_point = select_entry_point(active.config.entry_points, client.sockname[1] if client.sockname else None)
        options = connection_tls_options(active.config, entry_point, client.sni)
        if options == TlsOptions() and "default" not in {o.name for o in active.config.tls.options}:
            return  # mitmproxy's defaults are Traefik's default options
        entry = self.master.addons.get("tlsconfig").get_cert(data.context)
        key = (options, str(entry.chain_file))
        context = self._contexts.get(key)
        if context is None:
            if len(self._contexts) > 64:
                self._contexts.clear()
            certstore = self.master.addons.get("tlsconfig").certstore
            context = self._contexts[key] = server_context(options, tuple(entry.chain_certs[1:]), certstore.dhparams)
        conn = SSL.Connection(context)
        sni = (client.sni or "").lower().rstrip(".")
        served = self._served_names(active.config.tls)
        if not options.sni_strict or sni in served or any(
                n.startswith("*.") and sni.partition(".")[2] == n[2:] for n in served):
            conn.use_certificate(entry.cert.to_cryptography())
            conn.use_privatekey(entry.privatekey)
        # else sniStrict: no certificate to offer, the handshake fails (Traefik: "strict SNI enabled")
        # What mitmproxy's TlsConfig.tls_start_client gives its connection (reverse mode: no HTTP proxy case).
        conn.set_app_data(AppData(client_alpn=client.alpn, server_alpn=data.context.server.alpn,
                                  http2=self.options.http2))
        conn.set_accept_state()
        data.ssl_conn = conn

    def tls_start_server(self, data: TlsData) -> None:
        """The upstream connection to a server with a transport (a multi-cluster child): its CAs only,
        its client certificate, its name verified. Other servers: mitmproxy's TlsConfig, unchanged."""
        active = self.state.active
        if active is None or data.ssl_conn is not None or data.is_dtls:
            return
        server: Any = data.conn  # a mitmproxy Server here
        if server.address is None:
            return
        transport = self._transports(active).get((str(server.address[0]).lower(), int(server.address[1])))
        if transport is None:
            return
        data.ssl_conn = upstream_connection(transport, str(server.address[0]), self._write_pem)
        server.sni = transport.name_for(str(server.address[0]))
        server.alpn_offers = (b"http/1.1",)

    def _transports(self, active: ActiveConfig) -> dict[tuple[str, int], UpstreamTls]:
        if self._by_address[0] is not active.config:
            servers = [server for service in active.config.services.values()
                       if isinstance(service, LoadBalancerService) for server in service.servers]
            self._by_address = (active.config, transports_by_address(servers))
        return self._by_address[1]

    def _write_pem(self, data: bytes) -> str:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="shadow-tls-")
        path = Path(self._dir.name) / (hashlib.sha256(data).hexdigest()[:16] + ".pem")
        if not path.exists():
            path.write_bytes(data)
            path.chmod(0o600)
        return str(path)

    def tls_failed_server(self, data: TlsData) -> None:
        server: Any = data.conn
        if server.address is not None and self.state.active is not None and \
                (str(server.address[0]).lower(), int(server.address[1])) in self._transports(self.state.active):
            logger.warning(f"shadow gateway: tls: server {server.address[0]}:{server.address[1]} refused "
                           f"(mutual TLS): {server.error}")

    def tls_failed_client(self, data: TlsData) -> None:
        self.refused += 1
        client = data.context.client
        active = self.state.active
        entry_point = select_entry_point(active.config.entry_points, client.sockname[1] if client.sockname else None) \
            if active is not None else None
        peer = f"{client.peername[0]}:{client.peername[1]}" if client.peername else "?"
        logger.warning(f"shadow gateway: tls: client {peer} refused on entry point "
                       f"{entry_point.name if entry_point else '?'} (SNI {client.sni or 'none'}): {client.error}")

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        return frozenset()

    def _write(self, cert: TlsCertificate) -> Path:
        return Path(self._write_pem(cert.cert_pem.rstrip(b"\n") + b"\n" + cert.key_pem))

    def specs(self, settings: TlsSettings) -> list[str]:
        out: list[str] = []
        for cert in settings.certificates:
            path = self._write(cert)
            out += [f"{name}={path}" for name in certificate_names(cert.cert_pem)]
        if settings.default_certificate is not None:
            out.append(f"*={self._write(settings.default_certificate)}")
        return out

    def _apply(self) -> None:
        active = self.state.active
        if active is None or active.config.tls == self._applied:
            return
        self._applied = active.config.tls
        if self.options is not None:
            self.options.update_known(certs=self.specs(active.config.tls))
        if active.config.tls.enabled:
            logger.info(f"shadow gateway: tls: {len(active.config.tls.certificates)} certificate(s)"
                        f"{' and a default one' if active.config.tls.default_certificate else ''} served")

    def _on_activate(self, active: ActiveConfig, _previous: ActiveConfig | None) -> None:
        if not self._running:  # startup: before the listeners start, so the first client gets them
            self._apply()
        else:  # a reload runs inside mitmproxy's configure or the poll task: options change after it
            asyncio.get_running_loop().call_soon(self._apply)

    def running(self) -> None:
        self._contexts.clear()
        self._running = True
        self._apply()

    def done(self) -> None:
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None
