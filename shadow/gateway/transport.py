"""How the gateway's own TLS connections to a server are made: trusted CAs, a client certificate
(mutual TLS), the server name to verify — Traefik's `serversTransport` subset that the multi-cluster
bridge needs (shadow/multicluster/ gives each child's servers one).

`UpstreamTls` is carried by a `Server` (`Server.transport`); every path that calls a server uses it:
mitmproxy's upstream connection for the client's request (addons/tls.py, `tls_start_server`) and
the aiohttp calls of health probes, failover re-sends, retries and mirror copies (`client_ssl`).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

__all__ = ["UpstreamTls", "client_ssl", "ssl_context", "transports_by_address"]


@dataclass(frozen=True)
class UpstreamTls:
    ca_pem: bytes  # the CAs a server's certificate must chain to (nothing else is trusted)
    cert_pem: bytes = b""  # client certificate (and chain) presented to the server; b"": none
    key_pem: bytes = b""
    server_name: str = ""  # verified name (and SNI); "": the server's host

    def name_for(self, host: str) -> str:
        return self.server_name or host


@lru_cache(maxsize=64)
def ssl_context(tls: UpstreamTls) -> ssl.SSLContext:
    """A client-side ssl context for `tls` (cached: one per distinct transport)."""
    import os
    import tempfile

    context = ssl.create_default_context(cadata=tls.ca_pem.decode("ascii", "replace"))
    if tls.cert_pem:
        # ssl only loads a client certificate from files: written to a private file, read, removed.
        fd, path = tempfile.mkstemp(prefix="shadow-client-", suffix=".pem")
        try:
            os.write(fd, tls.cert_pem.rstrip(b"\n") + b"\n" + tls.key_pem)
            os.close(fd)
            context.load_cert_chain(path)
        finally:
            os.unlink(path)
    return context


class HasTransport(Protocol):
    @property
    def transport(self) -> UpstreamTls | None: ...


class AddressedServer(HasTransport, Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def client_ssl(server: HasTransport) -> ssl.SSLContext | bool:
    """What aiohttp's `ssl=` gets for `server`: its transport's context, else True (default checks)."""
    return ssl_context(server.transport) if server.transport is not None else True


def transports_by_address(servers: Iterable[AddressedServer]) -> dict[tuple[str, int], UpstreamTls]:
    """(host, port) → transport of the servers that have one (the first wins)."""
    out: dict[tuple[str, int], UpstreamTls] = {}
    for server in servers:
        if server.transport is not None:
            out.setdefault((server.host, server.port), server.transport)
    return out
