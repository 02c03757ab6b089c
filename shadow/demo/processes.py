"""Child processes of the demo: start, wait until ready, stop cleanly, never leave one behind.

Every child runs in its own session, so a Ctrl-C in the terminal reaches only `shadow demo`, which
then stops the children in order (gateway first, so its capture is sealed while upstreams still
answer). A `Supervisor` stops whatever it started on exit, on an exception and at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from shadow.demo.services import READY_PREFIX
from shadow.errors import ShadowError


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    asked_to_stop: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def failure(self, what: str) -> ShadowError:
        tail = _tail(self.log_path)
        detail = f"\n  last lines of {self.log_path}:\n{tail}" if tail else f" (log: {self.log_path})"
        return ShadowError(f"{self.name} {what}{detail}")

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM, once: a second one may cut its clean exit short) without
        waiting."""
        if self.running() and not self.asked_to_stop:
            self.popen.send_signal(signal.SIGTERM)
            self.asked_to_stop = True

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the child and wait; SIGKILL its whole session if it or a grandchild it left
        behind (mitmdump under `shadow gateway`) is still there after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout_s)
        while _session_alive(self.popen.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return self.popen.returncode


def _session_alive(session_id: int) -> bool:
    try:
        os.killpg(session_id, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Supervisor:
    """Starts children and guarantees they stop: the ones stopped by name first, then all the rest at once."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        atexit.register(self.stop_all)

    def spawn(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_path.write_bytes(b"")
        # Append mode: the child's stderr and our copy of its stdout share the file safely.
        log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=log, start_new_session=True, env=env)
        except OSError as e:
            log.close()
            raise ShadowError(f"cannot start {name} ({argv[0]}): {e.strerror or e}") from e
        log.close()  # the child holds its own descriptor
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def start_service(self, name: str, argv: Sequence[str], *, timeout_s: float = 15.0) -> Child:
        """Start a child that prints `LISTENING <url>` once it accepts connections."""
        return self.start_services({name: argv}, timeout_s=timeout_s)[name]

    def start_services(self, argvs: Mapping[str, Sequence[str]], *, timeout_s: float = 15.0,
                       env: dict[str, str] | None = None) -> dict[str, Child]:
        """Start several such children at once (their imports overlap), then wait for each."""
        children = {name: self.spawn(name, argv, env=env) for name, argv in argvs.items()}
        for child in children.values():
            child.url = _wait_for_ready_line(child, timeout_s)
        return children

    def stop(self, child: Child, timeout_s: float = 10.0) -> int | None:
        code = child.stop(timeout_s)
        if child in self.children:
            self.children.remove(child)
        return code

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Stop every child still running, all at once: SIGTERM to each, then one shared deadline
        before SIGKILL (stopping one after another would add their worst cases up)."""
        children = list(reversed(self.children))
        for child in children:
            child.terminate()
        deadline = time.monotonic() + timeout_s
        for child in children:
            self.stop(child, max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()
        atexit.unregister(self.stop_all)


def _wait_for_ready_line(child: Child, timeout_s: float) -> str:
    """Read the child's stdout until READY_PREFIX; keep draining it to its log afterwards, so a
    chatty child never blocks on a full pipe."""
    assert child.popen.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    stdout = child.popen.stdout

    def pump() -> None:
        with open(child.log_path, "ab") as log:
            for raw in iter(stdout.readline, b""):
                lines.put(raw.decode(errors="replace").rstrip("\n"))
                log.write(raw)
                log.flush()
        lines.put(None)

    threading.Thread(target=pump, name=f"stdout-{child.name}", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise child.failure(f"did not start within {timeout_s:.0f} s")
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            child.popen.wait(5)
            raise child.failure(f"exited with code {child.popen.returncode} before it was ready")
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX):].strip()


def wait_for_port(child: Child, host: str, port: int, *, timeout_s: float = 30.0) -> None:
    """Wait until `host:port` accepts connections, failing fast if `child` exits. A bare connect,
    not an HTTP request, so readiness checks never show up in a capture."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.running():
            raise child.failure(f"exited with code {child.popen.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as e:
            last = e.strerror or str(e)
        time.sleep(0.05)
    raise child.failure(f"did not accept connections on {host}:{port} within {timeout_s:.0f} s ({last})")


def service_argv(kind: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shadow.demo.services", kind, *extra]
