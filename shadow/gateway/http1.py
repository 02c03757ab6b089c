"""A small HTTP/1.1 client for mirror copies to plain-http targets: pooled keep-alive connections
on asyncio protocols, one write per request, responses framed by Content-Length, chunked encoding
or connection close.

Why not aiohttp here: a mirror copy is a second HTTP exchange inside the proxy's one busy process,
and aiohttp's per-request Python (request and response objects, header multidicts, URL objects,
tracing hooks) is most of what a copy costs there; bench/mirror_client.py measures both on the
same copies. This client does only what a copy needs: no redirects, no cookies, no decompression
(the capture wants the bytes as sent), no proxies, no TLS (https targets still go through aiohttp).
Timeouts are the caller's (`asyncio.timeout` around `request`): a request that is cancelled or
fails closes its connection, so a connection goes back to the pool only after a complete exchange.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

Headers = list[tuple[str, str]]

MAX_HEAD_BYTES = 64 * 1024
MAX_IDLE_PER_HOST = 256  # = the default mirroring maxInFlight: a slow shadow keeps its connections warm
_NO_BODY_STATUS = frozenset({204, 304})


class ProtocolError(ValueError):
    """The server's answer is not valid HTTP/1.x."""


class _Response:
    __slots__ = ("body", "close", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes, close: bool) -> None:
        self.status, self.headers, self.body, self.close = status, headers, body, close


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False  # has completed an exchange (a reused connection may have been closed by the server)
        self._buf = bytearray()
        self._waiter: asyncio.Future[_Response] | None = None
        self._head_request = False
        self._received = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        # A body framed by the connection's end is complete now.
        if waiter is not None and not waiter.done() and not self._resolve(waiter, eof=True):
            waiter.set_exception(ConnectionResetError(
                "connection closed before a complete response" if self._received
                else "connection closed before any response"))

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._buf += data
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._resolve(waiter, eof=False)

    def _resolve(self, waiter: asyncio.Future[_Response], *, eof: bool) -> bool:
        """Settle `waiter` if the buffer holds a whole response (or a malformed one); False when
        more bytes are needed."""
        try:
            response = self._parse(eof=eof)
        except ProtocolError as e:
            waiter.set_exception(e)
            return True
        if response is None:
            return False
        waiter.set_result(response)
        return True

    def send(self, data: bytes, *, head: bool) -> asyncio.Future[_Response]:
        assert self.transport is not None
        self._buf.clear()
        self._received = False
        self._head_request = head
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _parse(self, *, eof: bool) -> _Response | None:
        """A complete response from the buffer, or None when more bytes are needed."""
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too long")
                return None
            lines = bytes(buf[:end]).split(b"\r\n")
            status_line = lines[0].split(b" ", 2)
            if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
                raise ProtocolError(f"bad status line {lines[0][:80]!r}")
            status = int(status_line[1])
            if 100 <= status < 200 and status != 101:
                del buf[:end + 4]  # an interim response (100 Continue, 103 Early Hints): skip it
                continue
            break
        headers: Headers = []
        length: int | None = None
        chunked = False
        close = status_line[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            name_s, value_s = name.decode("latin-1").strip(), value.decode("latin-1").strip()
            headers.append((name_s, value_s))
            lower = name_s.lower()
            if lower == "content-length":
                if not value_s.isdigit():
                    raise ProtocolError(f"bad Content-Length {value_s[:40]!r}")
                length = int(value_s)
            elif lower == "transfer-encoding":
                chunked = value_s.lower().endswith("chunked")
            elif lower == "connection":
                tokens = {t.strip().lower() for t in value_s.split(",")}
                if "close" in tokens:
                    close = True
                elif "keep-alive" in tokens:
                    close = False
        start = end + 4
        if self._head_request or status in _NO_BODY_STATUS:
            return _Response(status, headers, b"", close)
        if chunked:
            body = self._dechunk(start)
            if body is None:
                if eof:
                    raise ProtocolError("connection closed inside a chunked body")
                return None
            return _Response(status, headers, body, close)
        if length is not None:
            if len(buf) - start < length:
                if eof:
                    raise ProtocolError(f"connection closed after {len(buf) - start} of {length} body bytes")
                return None
            return _Response(status, headers, bytes(buf[start:start + length]), close)
        if not eof:  # framed by the connection's end
            return None
        return _Response(status, headers, bytes(buf[start:]), True)

    def _dechunk(self, pos: int) -> bytes | None:
        buf = self._buf
        out = bytearray()
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            pos = line_end + 2
            if size == 0:
                # Trailers (ignored) end with an empty line.
                trailer_end = buf.find(b"\r\n", pos)
                while trailer_end >= 0 and trailer_end != pos:
                    pos = trailer_end + 2
                    trailer_end = buf.find(b"\r\n", pos)
                if trailer_end < 0:
                    return None
                return bytes(out)
            if len(buf) < pos + size + 2:
                return None
            out += buf[pos:pos + size]
            pos += size + 2


class Http1Pool:
    """Keep-alive connections by (host, port). One event loop; not thread-safe."""

    def __init__(self, max_idle_per_host: int = MAX_IDLE_PER_HOST) -> None:
        self._idle: defaultdict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self._max_idle = max_idle_per_host
        self._closed = False

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        _transport, conn = await loop.create_connection(_Connection, host, port)
        return conn

    async def request(self, method: str, host: str, port: int, target: str, headers: Headers,
                      body: bytes | None, *, retry_stale: bool = True) -> tuple[int, Headers, bytes]:
        """Send one request (`target`: path?query as sent; `headers` as given, Host included when
        the caller wants one other than host:port). Returns (status, headers, body).

        A reused keep-alive connection reset before any answer is taken for one the server had
        closed, and the request is sent once more on a fresh one (as Go's transport does), unless
        `retry_stale` is False: a caller that counts its own tries must see every failure."""
        if self._closed:
            raise ConnectionError("client closed")
        head = [f"{method} {target} HTTP/1.1\r\n"]
        has_host = False
        for name, value in headers:
            if not has_host and len(name) == 4 and name.lower() == "host":
                has_host = True
            head.append(f"{name}: {value}\r\n")
        if not has_host:
            head.insert(1, f"Host: {host if port == 80 else f'{host}:{port}'}\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body) if body else 0}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if body:
            data += body
        key = (host, port)
        idle = self._idle[key]
        while True:
            conn = None
            while idle:
                candidate = idle.pop()
                if not candidate.closed:
                    conn = candidate
                    break
            reused = conn is not None
            if conn is None:
                conn = await self._connect(host, port)
            try:
                response = await conn.send(data, head=method == "HEAD")
            except ConnectionResetError:
                conn.abort()
                if reused and retry_stale and not conn._received:  # a stale keep-alive connection: once more
                    continue
                raise
            except BaseException:  # cancelled (timeout), protocol error: the connection's state is unknown
                conn.abort()
                raise
            if response.close or conn.closed or len(idle) >= self._max_idle:
                if not conn.closed and conn.transport is not None:
                    conn.transport.close()
            else:
                conn.used = True
                idle.append(conn)
            return response.status, response.headers, response.body

    @staticmethod
    def split_http_url(url: str) -> tuple[str, int, str] | None:
        """(host, port, path?query) of an http:// URL; None for other schemes."""
        if not url.startswith("http://"):
            return None
        rest = url[7:]
        slash = rest.find("/")
        authority, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        if authority.startswith("["):  # [v6]:port
            close = authority.find("]")
            host, port_text = authority[1:close], authority[close + 2:]
        else:
            host, _, port_text = authority.partition(":")
        if not port_text:
            return host, 80, target
        if not port_text.isdigit():
            raise ValueError(f"bad port in {url[:100]!r}")
        return host, int(port_text), target

    async def close(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()


PASSTHROUGH_SKIPPED_HEADERS = ("User-Agent", "Accept", "Accept-Encoding")


def passthrough_session(*, skip_headers: tuple[str, ...] = PASSTHROUGH_SKIPPED_HEADERS) -> Any:
    """An aiohttp session that sends a client's request as it came: no pool limit, no cookie jar, bodies
    not decompressed, and none of aiohttp's default headers (`skip_headers`) added. Used where the
    gateway itself sends a routed request (failover, retry, error pages, forwardAuth)."""
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(),
                                 auto_decompress=False, skip_auto_headers=skip_headers)
