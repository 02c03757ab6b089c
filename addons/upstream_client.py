"""One HTTP client for the addons that send a request themselves instead of mitmproxy (retry,
errors pages): `http://` upstreams through shadow.gateway.http1's pooled keep-alive connections,
`https://` through one pooled aiohttp session. A connection that fails before the request was
written raises NotSent (safe to send again); other failures raise as they come."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from typing import Any

from mitmproxy import http

from addons.router import host_port
from shadow.gateway.config import Server
from shadow.gateway.http1 import Http1Pool, passthrough_session
from shadow.gateway.mirror import describe_error
from shadow.gateway.transport import client_ssl

FORWARD_TIMEOUT_S = 60.0
_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT})
_RESPONSE_DROP = frozenset({"transfer-encoding", "content-length", "connection", "keep-alive"})


class NotSent(Exception):
    """The connection failed before the request was written: safe to try again."""


def as_response(status: int, headers: list[tuple[str, str]], body: bytes) -> http.Response:
    """A mitmproxy response holding a buffered answer (framing headers recomputed)."""
    resp = http.Response.make(status, b"", ())
    kept = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers if k.lower() not in _RESPONSE_DROP)
    resp.headers.fields = (*kept, (b"Content-Length", str(len(body)).encode()))
    resp.raw_content = body
    return resp


class UpstreamClient:
    def __init__(self) -> None:
        self._pool = Http1Pool()
        self._session: Any = None

    def _ensure_session(self) -> Any:
        if self._session is None:
            self._session = passthrough_session()
        return self._session

    async def send(self, method: str, server: Server, target: str, headers: list[tuple[str, str]],
                   body: bytes | None, *, timeout_s: float = 0.0,
                   retry_stale: bool = True) -> tuple[int, list[tuple[str, str]], bytes]:
        """One exchange: (status, headers, body); NotSent when nothing was written. `timeout_s`
        bounds the whole exchange (0: the gateway's forwarding timeout); TimeoutError past it.
        `retry_stale`: see shadow.gateway.http1's pool (False when the caller counts its tries)."""
        limit = timeout_s if timeout_s > 0 else FORWARD_TIMEOUT_S
        if server.scheme == "http":
            try:
                async with asyncio.timeout(limit):
                    return await self._pool.request(method, server.host, server.port, target, headers, body,
                                                    retry_stale=retry_stale)
            except OSError as exc:
                # Only a failed connect means nothing was written (a reset comes after the write).
                if isinstance(exc, ConnectionRefusedError | socket.gaierror) or exc.errno in _CONNECT_ERRNOS:
                    raise NotSent(describe_error(exc)) from exc
                raise
        import aiohttp

        url = f"{server.scheme}://{host_port(server.host, server.port, server.scheme)}{target}"
        try:
            async with asyncio.timeout(limit):
                async with self._ensure_session().request(method, url, headers=headers, data=body or None,
                                                          allow_redirects=False, ssl=client_ssl(server)) as resp:
                    payload = await resp.read()
                    kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
                    return resp.status, kept, payload
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(describe_error(exc)) from exc

    async def close(self) -> None:
        await self._pool.close()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None
