"""Run the live view: in the foreground (`shadow serve`) or beside the gateway (`shadow gateway
--live-view`), whose own process only waits on mitmdump, so the analysis never shares a CPU
timeslice with the proxy's event loop."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from shadow.errors import ShadowError
from shadow.web.app import create_app
from shadow.web.live import LiveAnalysis, pipeline_analyzer

__all__ = ["LiveServer", "start_live_view"]


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so a busy port is a one-line error before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ShadowError(f"live view: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclass
class LiveServer:
    live: LiveAnalysis
    server: uvicorn.Server
    sock: socket.socket
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C (uvicorn handles the signals in the main thread)."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.close()

    def start(self) -> LiveServer:
        """Serve from a daemon thread (uvicorn installs no signal handlers off the main thread)."""
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="shadow-live-view", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.live.stop()
        self.sock.close()


def start_live_view(capture: Path, *, host: str = "127.0.0.1", port: int = 8090, policy_file: Path | None = None,
                    config_file: Path | None = None, interval: float = 2.0, learn_endpoints: bool = False,
                    title: str | None = None) -> LiveServer:
    """Bind, start the analysis thread and build the server (call `.serve_forever()` or `.start()`)."""
    analyze = pipeline_analyzer(policy_file, learn_endpoints=learn_endpoints)  # a bad policy: error now
    sock = bind(host, port)
    live = LiveAnalysis(capture, analyze, policy_file=policy_file, interval=interval).start()
    app = create_app(live, config_file=config_file, title=title)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return LiveServer(live=live, server=uvicorn.Server(config), sock=sock)
