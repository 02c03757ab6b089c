"""shadow.gateway.http1: framing (Content-Length, chunked, close-delimited, no-body statuses), keep-alive
reuse, a stale pooled connection retried, cancellation closes the connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shadow.gateway.http1 import Http1Pool, ProtocolError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            head += await reader.readexactly(int(line.split(b":")[1]))
    return head


async def with_server(handler: Handler, body: Callable[[Http1Pool, int], Awaitable[None]]) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http1Pool()
    try:
        await asyncio.wait_for(body(pool, port), 10)
    finally:
        await pool.close()
        server.close()


def test_keep_alive_reuses_one_connection_and_sends_host_and_length() -> None:
    connections: list[int] = []
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
            await writer.drain()
        writer.close()

    async def body(pool: Http1Pool, port: int) -> None:
        for _ in range(3):
            assert await pool.request("GET", "127.0.0.1", port, "/a?b=1", [("Accept", "*/*")], None) == (
                200, [("Content-Length", "5"), ("X-A", "b")], b"hello")
        status, _h, _b = await pool.request("POST", "127.0.0.1", port, "/p", [("Host", "shop")], b"{}")
        assert status == 200

    asyncio.run(with_server(handler, body))
    assert len(connections) == 1
    assert seen[0].startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert seen[3] == b"POST /p HTTP/1.1\r\nHost: shop\r\nContent-Length: 2\r\n\r\n{}"


def test_chunked_close_delimited_interim_and_bodiless_responses() -> None:
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil close",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer[:10])  # split across writes: the parser waits for the rest
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(answer[10:])
            await writer.drain()
        writer.close()

    async def body(pool: Http1Pool, port: int) -> None:
        assert (await pool.request("GET", "127.0.0.1", port, "/", [], None))[::2] == (200, b"abcde")
        assert (await pool.request("GET", "127.0.0.1", port, "/", [], None))[::2] == (204, b"")
        assert (await pool.request("GET", "127.0.0.1", port, "/", [], None))[::2] == (200, b"until close")

    asyncio.run(with_server(handler, body))


def test_stale_pooled_connection_is_retried_on_a_fresh_one() -> None:
    count = [0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # keep-alive announced, but the server closes after one exchange

    async def body(pool: Http1Pool, port: int) -> None:
        for _ in range(3):
            assert (await pool.request("GET", "127.0.0.1", port, "/", [], None))[2] == b"ok"

    asyncio.run(with_server(handler, body))
    assert count[0] == 3


def test_timeout_closes_the_connection_and_garbage_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b"/slow" in request:
            await asyncio.sleep(5)
        else:
            writer.write(b"SPDY/9 nope\r\n\r\n")
            await writer.drain()
        writer.close()

    async def body(pool: Http1Pool, port: int) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.request("GET", "127.0.0.1", port, "/slow", [], None)
        with pytest.raises(ProtocolError, match="bad status line"):
            await pool.request("GET", "127.0.0.1", port, "/bad", [], None)

    asyncio.run(with_server(handler, body))


def test_split_http_url() -> None:
    assert Http1Pool.split_http_url("http://h:8080/a/b?c=1") == ("h", 8080, "/a/b?c=1")
    assert Http1Pool.split_http_url("http://h") == ("h", 80, "/")
    assert Http1Pool.split_http_url("http://[::1]:81/x") == ("::1", 81, "/x")
    assert Http1Pool.split_http_url("https://h/x") is None


def test_body_limit_cuts_large_and_endless_bodies_and_closes_their_connection() -> None:
    """Issue 17 item 2: a mirror answering far more than the capture keeps (here 64 MB announced,
    or an endless chunked body) is read only up to the limit; the connection is then closed, so
    the bytes held stay bounded. Bodies within the limit keep their connection."""
    sent = {"big": 0, "endless": 0}
    stop = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await read_request(reader)
                if b"/small" in request:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
                    await writer.drain()
                    continue
                if b"/big" in request:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
                    key, chunk = "big", b"x" * 65536
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    key, chunk = "endless", b"10000\r\n" + b"y" * 65536 + b"\r\n"
                for _ in range(1024):  # 64 MB at most; the client closes long before
                    writer.write(chunk)
                    await writer.drain()
                    sent[key] += len(chunk)
                stop.set()
                return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def body(pool: Http1Pool, port: int) -> None:
        status, _h, small, cut = await pool.request_bounded("GET", "127.0.0.1", port, "/small", [], None, max_body=3)
        assert (status, small, cut) == (200, b"abc", False)
        status, _h, big, cut = await pool.request_bounded("GET", "127.0.0.1", port, "/big", [], None,
                                                          max_body=100_000)
        assert (status, len(big), cut) == (200, 100_000, True) and set(big) == {ord("x")}
        status, _h, endless, cut = await pool.request_bounded("GET", "127.0.0.1", port, "/endless", [], None,
                                                              max_body=100_001)
        assert (status, len(endless), cut) == (200, 100_001, True) and set(endless) == {ord("y")}

    asyncio.run(with_server(handler, body))
    assert not stop.is_set()  # the server never got to write its whole 64 MB: the client closed
    assert sent["big"] < 64 * 1024 * 1024 and sent["endless"] < 64 * 1024 * 1024
