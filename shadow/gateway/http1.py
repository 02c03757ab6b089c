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
    __slots__ = ("body", "close", "headers", "status", "truncated")

    def __init__(self, status: int, headers: Headers, body: bytes, close: bool, truncated: bool = False) -> None:
        self.status, self.headers, self.body, self.close = status, headers, body, close
        self.truncated = truncated  # the body is a prefix: reading stopped at the caller's limit


class _Head:
    """A parsed response head and how its body is framed."""

    __slots__ = ("chunked", "close", "headers", "length", "status")

    def __init__(self, status: int, headers: Headers, length: int | None, chunked: bool, close: bool) -> None:
        self.status, self.headers, self.length, self.chunked, self.close = status, headers, length, chunked, close


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time, incrementally: the bytes held are
    the unparsed tail plus the body kept so far, never more than the caller's body limit (a mirror
    answering 1 GB, or an endless chunked body, costs at most `max_body` bytes here)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False  # has completed an exchange (a reused connection may have been closed by the server)
        self._buf = bytearray()  # received, not yet parsed
        self._waiter: asyncio.Future[_Response] | None = None
        self._head_request = False
        self._received = False
        self._max_body = -1  # < 0: unlimited
        self._head: _Head | None = None
        self._body = bytearray()  # the body kept (decoded from chunks)
        self._body_seen = 0  # body bytes received in all (content-length and close-framed bodies)
        self._chunk_left = -1  # chunked: bytes left in the current chunk (+2 for its CRLF); -1: a size line next
        self._in_trailers = False

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
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nothing asked for (a server talking out of turn): not kept
        self._buf += data
        self._resolve(waiter, eof=False)

    def _resolve(self, waiter: asyncio.Future[_Response], *, eof: bool) -> bool:
        """Settle `waiter` if the bytes so far make a whole response (or a malformed one, or a body
        past the limit); False when more bytes are needed."""
        try:
            response = self._parse(eof=eof)
        except ProtocolError as e:
            waiter.set_exception(e)
            return True
        if response is None:
            return False
        if response.truncated:
            # The rest of the body is not wanted: the connection cannot be reused, close it now
            # rather than read (possibly endless) bytes nobody keeps.
            response.close = True
            self.abort()
        waiter.set_result(response)
        return True

    def send(self, data: bytes, *, head: bool, max_body: int = -1) -> asyncio.Future[_Response]:
        assert self.transport is not None
        self._buf.clear()
        self._body = bytearray()
        self._body_seen = 0
        self._head = None
        self._chunk_left = -1
        self._in_trailers = False
        self._received = False
        self._head_request = head
        self._max_body = max_body
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _parse_head(self) -> _Head | None:
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
            del buf[:end + 4]
            if 100 <= status < 200 and status != 101:
                continue  # an interim response (100 Continue, 103 Early Hints): skip it
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
        return _Head(status, headers, length, chunked, close)

    def _keep(self, data: bytes | bytearray) -> bool:
        """Add body bytes; True when the kept body went past the limit (the body is cut there)."""
        limit = self._max_body
        if limit >= 0 and len(self._body) + len(data) > limit:
            self._body += data[:limit - len(self._body)]
            return True
        self._body += data
        return False

    def _parse(self, *, eof: bool) -> _Response | None:
        """A complete (or cut) response from the bytes so far, or None when more are needed."""
        head = self._head
        if head is None:
            head = self._head = self._parse_head()
            if head is None:
                return None
            if self._head_request or head.status in _NO_BODY_STATUS:
                return _Response(head.status, head.headers, b"", head.close)
        buf = self._buf
        if head.chunked:
            return self._parse_chunks(head, eof=eof)
        if head.length is not None:
            need = head.length - self._body_seen
            taken = buf[:need]
            self._body_seen += len(taken)
            del buf[:need]
            if self._keep(taken):
                return self._done(head, truncated=True)
            if self._body_seen < head.length:
                if eof:
                    raise ProtocolError(f"connection closed after {self._body_seen} of {head.length} body bytes")
                return None
            return self._done(head)
        # Framed by the connection's end.
        self._body_seen += len(buf)
        cut = self._keep(buf)
        buf.clear()
        if cut:
            return self._done(head, truncated=True)
        if not eof:
            return None
        head.close = True
        return self._done(head)

    def _done(self, head: _Head, *, truncated: bool = False) -> _Response:
        return _Response(head.status, head.headers, bytes(self._body), head.close, truncated)

    def _parse_chunks(self, head: _Head, *, eof: bool) -> _Response | None:
        buf = self._buf
        while True:
            if self._in_trailers:
                # Trailers (ignored) end with an empty line.
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    break
                del buf[:line_end + 2]
                if line_end == 0:
                    return self._done(head)
                continue
            if self._chunk_left < 0:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise ProtocolError("chunk size line too long")
                    break
                size_text = bytes(buf[:line_end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                del buf[:line_end + 2]
                if size == 0:
                    self._in_trailers = True
                    continue
                self._chunk_left = size + 2  # the data and its CRLF
            if not buf:
                break
            take = buf[:self._chunk_left]
            del buf[:self._chunk_left]
            self._chunk_left -= len(take)
            data = take if self._chunk_left >= 2 else take[:len(take) - (2 - self._chunk_left)]
            if self._keep(data):
                return self._done(head, truncated=True)
            if self._chunk_left == 0:
                self._chunk_left = -1
        if eof:
            raise ProtocolError("connection closed inside a chunked body")
        return None


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
        status, out_headers, out_body, _cut = await self.request_bounded(method, host, port, target, headers, body,
                                                                         retry_stale=retry_stale)
        return status, out_headers, out_body

    async def request_bounded(self, method: str, host: str, port: int, target: str, headers: Headers,
                              body: bytes | None, *, max_body: int = -1,
                              retry_stale: bool = True) -> tuple[int, Headers, bytes, bool]:
        """`request`, reading at most `max_body` body bytes (< 0: all). Returns (status, headers,
        body, truncated): a longer body is cut at `max_body` (truncated True) and its connection
        closed rather than read to its end."""
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
                response = await conn.send(data, head=method == "HEAD", max_body=max_body)
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
            return response.status, response.headers, response.body, response.truncated

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
