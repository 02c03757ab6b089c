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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mitmproxy.addons.tlsconfig import AppData
from OpenSSL import SSL

from addons.reload import ActiveConfig, GatewayState
from shadow.gateway.entrypoints import select_entry_point
from shadow.gateway.routing import connection_tls_options
from shadow.gateway.tls import TlsCertificate, TlsOptions, TlsSettings

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
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="shadow-tls-")
        data = cert.cert_pem.rstrip(b"\n") + b"\n" + cert.key_pem
        path = Path(self._dir.name) / (hashlib.sha256(data).hexdigest()[:16] + ".pem")
        if not path.exists():
            path.write_bytes(data)
            path.chmod(0o600)
        return path

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
