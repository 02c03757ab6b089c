"""Traefik's dynamic `tls:` section: the certificates the gateway serves to TLS clients.

    tls:
      certificates:
        - certFile: /certs/shop.crt      # PEM; relative paths: against the config file's folder
          keyFile: /certs/shop.key
      stores:
        default:
          defaultCertificate: {certFile: /certs/default.crt, keyFile: /certs/default.key}

The files are read and checked at load (a missing or unreadable file, or a PEM without a
certificate or key, is a config error naming the line). mitmproxy picks the certificate whose names
match the client's SNI (addons/tls.py hands them over); the default certificate serves the rest.
`options` (minVersion, cipherSuites, clientAuth for mTLS…) are refused as not supported yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shadow.yamlconfig import YamlReader

__all__ = ["TlsCertificate", "TlsSettings", "parse_tls"]


@dataclass(frozen=True)
class TlsCertificate:
    cert_pem: bytes
    key_pem: bytes
    source: str  # the certFile as written, for messages


@dataclass(frozen=True)
class TlsSettings:
    certificates: tuple[TlsCertificate, ...] = ()
    default_certificate: TlsCertificate | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.certificates) or self.default_certificate is not None


def _read(reader: YamlReader, node: dict[Any, Any], key: str, where: str, base_dir: Path, marker: bytes) -> bytes:
    text = reader.required_string(node, key, where)
    path = Path(text) if Path(text).is_absolute() else base_dir / text
    try:
        data = path.read_bytes()
    except OSError as exc:
        reader.fail(f"cannot read {str(path)!r}: {exc.strerror or exc}", f"{where}.{key}", reader.value_line(node, key))
    if marker not in data:
        what = "a certificate" if marker == b"CERTIFICATE-----" else "a private key"
        reader.fail(f"{str(path)!r} holds no PEM {what}", f"{where}.{key}", reader.value_line(node, key))
    return data


def _certificate(reader: YamlReader, node: Any, where: str, line: int | None, base_dir: Path) -> TlsCertificate:
    body = reader.mapping(node, where, line, allow_null=False)
    reader.check_keys(body, where, ("certFile", "keyFile", "stores"))
    cert = _read(reader, body, "certFile", where, base_dir, b"CERTIFICATE-----")
    key = _read(reader, body, "keyFile", where, base_dir, b"PRIVATE KEY-----")
    return TlsCertificate(cert, key, str(body["certFile"]))


def parse_tls(reader: YamlReader, node: Any, line: int | None, base_dir: Path) -> TlsSettings:
    tls = reader.mapping(node, "tls", line)
    reader.check_keys(tls, "tls", ("certificates", "stores"), unsupported=("options",))
    items = reader.sequence(tls, "certificates", "tls")
    certificates = tuple(_certificate(reader, item, f"tls.certificates[{i}]", reader.item_line(items, i), base_dir)
                         for i, item in enumerate(items))
    stores = reader.mapping(tls.get("stores"), "tls.stores", reader.value_line(tls, "stores"))
    reader.check_keys(stores, "tls.stores", ("default",))
    default = None
    if "default" in stores:
        store = reader.mapping(stores["default"], "tls.stores.default", reader.value_line(stores, "default"))
        reader.check_keys(store, "tls.stores.default", ("defaultCertificate",), unsupported=("defaultGeneratedCert",))
        if store.get("defaultCertificate") is not None:
            default = _certificate(reader, store["defaultCertificate"], "tls.stores.default.defaultCertificate",
                                   reader.value_line(store, "defaultCertificate"), base_dir)
    return TlsSettings(certificates, default)
