"""Traefik's dynamic `tls:` section: the certificates the gateway serves to TLS clients.

    tls:
      certificates:
        - certFile: /certs/shop.crt      # PEM; relative paths: against the config file's folder
          keyFile: /certs/shop.key
      stores:
        default:
          defaultCertificate: {certFile: /certs/default.crt, keyFile: /certs/default.key}

      options:
        default:                         # applies to every TLS router without options of its own
          minVersion: VersionTLS12       # Traefik's default; VersionTLS10..VersionTLS13
          maxVersion: VersionTLS13       # default: the highest
          cipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # Go's names; TLS 1.3 suites are fixed
          sniStrict: false               # true: a client without an SNI matching a certificate is refused
        mtls:
          clientAuth:
            caFiles: [/certs/clients-ca.pem]          # PEM file(s), or the PEM text itself
            clientAuthType: RequireAndVerifyClientCert

The files are read and checked at load (a missing or unreadable file, or a PEM without a
certificate or key, is a config error naming the line). mitmproxy picks the certificate whose names
match the client's SNI (addons/tls.py hands them over); the default certificate serves the rest.

TLS options are Traefik's (pkg/tls/tlsmanager.go): `caFiles` alone means RequireAndVerifyClientCert;
`clientAuthType` is NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or
RequireAndVerifyClientCert (the two verifying kinds need caFiles). A router picks options with
`tls: {options: NAME}`; the connection gets the options of the TLS routers whose `Host` rule names
the client's SNI on that entry point (`options_for_connection`), the `default` options otherwise
(also when two routers disagree on a host, as Traefik does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shadow.yamlconfig import YamlReader

__all__ = ["CLIENT_AUTH_TYPES", "GO_CIPHER_SUITES", "TLS_VERSIONS", "TlsCertificate", "TlsOptions", "TlsSettings",
           "options_for_connection", "parse_tls", "read_file_or_content", "rule_hosts"]

TLS_VERSIONS = ("VersionTLS10", "VersionTLS11", "VersionTLS12", "VersionTLS13")
CLIENT_AUTH_TYPES = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                     "RequireAndVerifyClientCert")
# Go's crypto/tls names (Traefik's cipherSuites) → OpenSSL's. TLS 1.3 suites are accepted and have no
# effect, as in Go (they cannot be configured there either).
GO_CIPHER_SUITES = {
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": "",
    "TLS_AES_256_GCM_SHA384": "",
    "TLS_CHACHA20_POLY1305_SHA256": "",
}
# preferServerCipherSuites is deprecated and ignored by Go (and Traefik) too.
_TLS_OPTION_KEYS = ("minVersion", "maxVersion", "cipherSuites", "clientAuth", "sniStrict", "preferServerCipherSuites")
_TLS_OPTION_UNSUPPORTED = ("curvePreferences", "alpnProtocols", "disableSessionTickets")


@dataclass(frozen=True)
class TlsOptions:
    """One `tls.options.<name>` entry (Traefik's defaults)."""

    name: str = "default"
    min_version: str = "VersionTLS12"
    max_version: str = ""  # "" = the highest the library offers
    cipher_suites: tuple[str, ...] = ()  # OpenSSL names of the TLS <= 1.2 suites; () = the library's
    client_auth_type: str = "NoClientCert"
    client_ca_pem: bytes = b""  # the clientAuth.caFiles, concatenated
    sni_strict: bool = False

    @property
    def requests_client_cert(self) -> bool:
        return self.client_auth_type != "NoClientCert"

    @property
    def verifies_client_cert(self) -> bool:
        return self.client_auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")

    @property
    def requires_client_cert(self) -> bool:
        return self.client_auth_type in ("RequireAnyClientCert", "RequireAndVerifyClientCert")


@dataclass(frozen=True)
class TlsCertificate:
    cert_pem: bytes
    key_pem: bytes
    source: str  # the certFile as written, for messages


@dataclass(frozen=True)
class TlsSettings:
    certificates: tuple[TlsCertificate, ...] = ()
    default_certificate: TlsCertificate | None = None
    options: tuple[TlsOptions, ...] = ()  # tls.options, by name; "default" is implied when absent

    def option(self, name: str) -> TlsOptions:
        for opt in self.options:
            if opt.name == name:
                return opt
        return TlsOptions()

    @property
    def enabled(self) -> bool:
        return bool(self.certificates) or self.default_certificate is not None


def read_file_or_content(reader: YamlReader, text: str, where: str, line: int | None, base_dir: Path,
                         marker: bytes) -> bytes:
    """Traefik's FileOrContent: PEM text as it is, else a file (relative: to `base_dir`) holding `marker`."""
    shown = "the PEM text"
    if "-----BEGIN" in text:
        data = text.encode()
    else:
        path = Path(text) if Path(text).is_absolute() else base_dir / text
        shown = repr(str(path))
        try:
            data = path.read_bytes()
        except OSError as exc:
            reader.fail(f"cannot read {shown}: {exc.strerror or exc}", where, line)
    if marker not in data:
        what = "a certificate" if marker == b"CERTIFICATE-----" else "a private key"
        reader.fail(f"{shown} holds no PEM {what}", where, line)
    return data


def _read(reader: YamlReader, node: dict[Any, Any], key: str, where: str, base_dir: Path, marker: bytes) -> bytes:
    return read_file_or_content(reader, reader.required_string(node, key, where), f"{where}.{key}",
                                reader.value_line(node, key), base_dir, marker)


def _certificate(reader: YamlReader, node: Any, where: str, line: int | None, base_dir: Path) -> TlsCertificate:
    body = reader.mapping(node, where, line, allow_null=False)
    reader.check_keys(body, where, ("certFile", "keyFile", "stores"))
    cert = _read(reader, body, "certFile", where, base_dir, b"CERTIFICATE-----")
    key = _read(reader, body, "keyFile", where, base_dir, b"PRIVATE KEY-----")
    return TlsCertificate(cert, key, str(body["certFile"]))


def parse_tls(reader: YamlReader, node: Any, line: int | None, base_dir: Path) -> TlsSettings:
    tls = reader.mapping(node, "tls", line)
    reader.check_keys(tls, "tls", ("certificates", "stores", "options"))
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
    return TlsSettings(certificates, default, _parse_options(reader, tls, base_dir))


def _parse_options(reader: YamlReader, tls: dict[Any, Any], base_dir: Path) -> tuple[TlsOptions, ...]:
    section = reader.mapping(tls.get("options"), "tls.options", reader.value_line(tls, "options"))
    out: list[TlsOptions] = []
    for name in section:
        where = f"tls.options.{name}"
        node = reader.mapping(section[name], where, reader.value_line(section, name))
        reader.check_keys(node, where, _TLS_OPTION_KEYS, unsupported=_TLS_OPTION_UNSUPPORTED)
        versions = []
        for key, default in (("minVersion", "VersionTLS12"), ("maxVersion", "")):
            value = reader.string(node, key, where, default=default, allow_empty=True) or ""
            if value and value not in TLS_VERSIONS:
                reader.fail(f"unknown TLS version {value!r} (one of {', '.join(TLS_VERSIONS)})", f"{where}.{key}",
                            reader.value_line(node, key))
            versions.append(value)
        if versions[1] and TLS_VERSIONS.index(versions[1]) < TLS_VERSIONS.index(versions[0] or "VersionTLS12"):
            reader.fail(f"maxVersion {versions[1]} is below minVersion {versions[0]}", f"{where}.maxVersion",
                        reader.value_line(node, "maxVersion"))
        suites: list[str] = []
        items = reader.sequence(node, "cipherSuites", where)
        for i, suite in enumerate(reader.string_list(node, "cipherSuites", where)):
            if suite not in GO_CIPHER_SUITES:
                reader.fail(f"invalid CipherSuite: {suite}", f"{where}.cipherSuites[{i}]", reader.item_line(items, i))
            if GO_CIPHER_SUITES[suite]:
                suites.append(GO_CIPHER_SUITES[suite])
        auth_type, ca = _parse_client_auth(reader, node, where, base_dir)
        out.append(TlsOptions(str(name), versions[0], versions[1], tuple(suites), auth_type, ca,
                              reader.boolean(node, "sniStrict", where, False)))
    return tuple(out)


def _parse_client_auth(reader: YamlReader, node: dict[Any, Any], where: str, base_dir: Path) -> tuple[str, bytes]:
    """clientAuth as Traefik's buildTLSConfig reads it: caFiles alone → RequireAndVerifyClientCert."""
    c_where = f"{where}.clientAuth"
    auth = reader.mapping(node.get("clientAuth"), c_where, reader.value_line(node, "clientAuth"))
    reader.check_keys(auth, c_where, ("caFiles", "clientAuthType"))
    items = reader.sequence(auth, "caFiles", c_where)
    ca = b"".join(read_file_or_content(reader, text, f"{c_where}.caFiles[{i}]", reader.item_line(items, i), base_dir,
                                       b"CERTIFICATE-----").rstrip(b"\n") + b"\n"
                  for i, text in enumerate(reader.string_list(auth, "caFiles", c_where)))
    auth_type = "RequireAndVerifyClientCert" if ca else "NoClientCert"
    given = reader.string(auth, "clientAuthType", c_where, default="", allow_empty=True) or ""
    if given:
        line = reader.value_line(auth, "clientAuthType")
        if given not in CLIENT_AUTH_TYPES:
            reader.fail(f"unknown client auth type {given!r} (one of {', '.join(CLIENT_AUTH_TYPES)})",
                        f"{c_where}.clientAuthType", line)
        if not ca and given in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
            reader.fail(f"invalid clientAuthType: {given}, CAFiles is required", f"{c_where}.clientAuthType", line)
        auth_type = given
    return auth_type, ca


_HOST_CALL = re.compile(r"\bHost\(([^)]*)\)")
_QUOTED = re.compile(r"`([^`]*)`|\"((?:[^\"\\]|\\.)*)\"")


def rule_hosts(rule_text: str) -> list[str]:
    """The domains of a rule's `Host(...)` matchers, lower-cased (Traefik's domain parsing for TLS)."""
    out: list[str] = []
    for call in _HOST_CALL.finditer(rule_text):
        for m in _QUOTED.finditer(call.group(1)):
            host = (m.group(1) if m.group(1) is not None else m.group(2)).strip().lower()
            if host:
                out.append(host)
    return out


def _host_matches(pattern: str, sni: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = sni.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == sni


def options_for_connection(routes: Iterable[tuple[str, tuple[str, ...], str]], entry_point: str | None,
                           sni: str | None) -> str:
    """The TLS options name for a connection: `routes` are the TLS routers' (rule text, entry points —
    empty: all —, options name). The options of the routers on this entry point whose Host names the
    SNI; "default" without SNI, without a match, or when routers disagree (Traefik logs a conflict)."""
    if not sni:
        return "default"
    sni = sni.lower().rstrip(".")
    found: set[str] = set()
    exact: set[str] = set()
    for rule, entry_points, name in routes:
        if entry_points and entry_point is not None and entry_point not in entry_points:
            continue
        for host in rule_hosts(rule):
            if host == sni:
                exact.add(name or "default")
            elif _host_matches(host, sni):
                found.add(name or "default")
    chosen = exact or found
    return next(iter(chosen)) if len(chosen) == 1 else "default"
