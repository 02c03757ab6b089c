"""TLS addon: the `tls:` section's certificates handed to mitmproxy, which terminates the clients' TLS.

mitmproxy's `certs` option takes `[domain=]path` entries, each a PEM file holding the certificate and
its key: every certificate is written (certificate + key) to a private temporary folder and listed
under each DNS name and IP of its subjectAltName (Traefik picks by SNI the same way); the default
certificate is listed as `*`. Applied when the gateway starts running and after every reload that
changes the section; the folder is removed when the gateway stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from addons.reload import ActiveConfig, GatewayState
from shadow.gateway.tls import TlsCertificate, TlsSettings

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


class Tls:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._applied: TlsSettings | None = None
        self._running = False
        self.options: Any = None
        state.on_activate.append(self._on_activate)

    def load(self, loader: Any) -> None:
        # Before the config addon's load, which may activate the first configuration at once.
        self.options = loader.master.options

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
        self._running = True
        self._apply()

    def done(self) -> None:
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None
