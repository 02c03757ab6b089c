"""Real HTTP upstreams on 127.0.0.1 for tests: threaded, recording every request they receive.

    with Upstream("monolith") as mono:          # echoes the request as JSON
        ...mono.url, mono.requests
    with Upstream("slow", delay=0.3) as slow:   # answers 0.3 s late
    with Upstream("custom", handler=fn) as up:  # fn(ReceivedRequest) -> (status, headers, body)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class ReceivedRequest:
    method: str
    path: str  # path with query, as sent
    headers: dict[str, str]  # last value wins; names lower-cased
    body: bytes
    header_list: list[tuple[str, str]] = field(default_factory=list)


Response = tuple[int, dict[str, str], bytes]
Handler = Callable[[ReceivedRequest], Response]


class DropConnection(Exception):
    """Raised by a handler: the upstream closes the connection without answering."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, timeout: float = 20.0) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def echo(name: str) -> Handler:
    def handle(req: ReceivedRequest) -> Response:
        body = json.dumps(
            {"upstream": name, "method": req.method, "path": req.path, "headers": req.headers,
             "body": req.body.decode("utf-8", "replace")}
        ).encode()
        return 200, {"Content-Type": "application/json"}, body

    return handle


class Upstream:
    def __init__(self, name: str = "upstream", *, handler: Handler | None = None, delay: float = 0.0,
                 port: int = 0) -> None:
        self.name = name
        self.handler = handler or echo(name)
        self.delay = delay
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least `count` requests arrived (mirrors arrive after the client's answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= count:
                return got
            time.sleep(0.01)
        return self.received()

    def start(self) -> Upstream:
        upstream = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the body waits for the peer's
            # delayed ACK (~40 ms on Linux) and every response looks 40 ms slow.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                header_list = [(k, v) for k, v in self.headers.items()]
                req = ReceivedRequest(self.command, self.path, {k.lower(): v for k, v in header_list},
                                      body, header_list)
                with upstream._lock:
                    upstream.requests.append(req)
                if upstream.delay:
                    time.sleep(upstream.delay)
                try:
                    status, headers, payload = upstream.handler(req)
                except DropConnection:
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"upstream-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
