"""A real HTTP/1.1 upstream on 127.0.0.1 that answers with large bodies written piece by piece (it
never holds them): `/size/N` answers N bytes with a Content-Length, `/endless` a chunked body that
goes on until the client closes (at most `endless_cap` bytes), anything else a small chunked JSON
answer. It counts the bytes it wrote per request and which requests ended, so a test can tell that
the gateway stopped reading. Used by the hardening tests and bench/hardening.py."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

PIECE = 1 << 20


class BigBodyServer:
    def __init__(self, *, endless_cap: int = 512 * PIECE, path: str | None = None) -> None:
        """`path`: answer every request as if it asked for this path (a mirror target)."""
        self.endless_cap = endless_cap
        self.path = path
        self.lock = threading.Lock()
        self.written: list[int] = []  # bytes written per finished request
        self.started = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def finished(self) -> list[int]:
        with self.lock:
            return list(self.written)

    def wait_finished(self, count: int, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.finished()) < count:
            time.sleep(0.05)
        return self.finished()

    def start(self) -> BigBodyServer:
        owner = self
        piece = b"x" * PIECE

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with owner.lock:
                    owner.started += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                written = 0
                path = owner.path or self.path
                try:
                    if path.startswith("/size/"):
                        size = int(path.rsplit("/", 1)[1])
                        self.send_response(200)
                        self.send_header("Content-Type", "application/octet-stream")
                        self.send_header("Content-Length", str(size))
                        self.end_headers()
                        while written < size:
                            n = min(PIECE, size - written)
                            self.wfile.write(piece[:n])
                            written += n
                    elif path.startswith("/endless"):
                        self.send_response(200)
                        self.send_header("Content-Type", "application/octet-stream")
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        head = f"{PIECE:x}\r\n".encode()
                        while written < owner.endless_cap:
                            self.wfile.write(head + piece + b"\r\n")
                            written += PIECE
                        self.wfile.write(b"0\r\n\r\n")
                        self.close_connection = True
                    else:
                        body = b'{"ok": true, "path": "' + path.encode() + b'"}'
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        self.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
                        written = len(body)
                except (ConnectionError, OSError):
                    self.close_connection = True
                finally:
                    with owner.lock:
                        owner.written.append(written)

            do_POST = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> BigBodyServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak RSS of a process while the `with` block runs (sampled every 20 ms on a thread)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))
