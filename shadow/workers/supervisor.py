"""The supervisor of `shadow gateway --workers N`: N gateway processes on one address.

Each worker is the same mitmdump a single gateway runs, with three more options (addons/worker.py):
its listeners use SO_REUSEPORT (the kernel spreads connections across the workers), its name is
appended to the gateway id (its own capture writer, journal and Parquet files; no file is shared),
and it loads the supervisor's snapshot of the configuration.

The supervisor
- starts the workers and relays their output, each line prefixed with the worker's name;
- restarts a worker that exits while the gateway runs (kill -9 included), with a growing delay when
  one keeps dying at start; the new worker recovers the dead one's capture journal;
- reloads the configuration for all workers at once: it watches the user's file, validates a change
  once, writes those bytes to the snapshot and signals every worker (SIGHUP), which loads exactly
  them. An invalid change reaches no worker. A worker started later loads the same snapshot;
- on SIGTERM / SIGINT stops every worker with SIGTERM and waits for each to seal its capture.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from shadow.errors import ConfigError
from shadow.gateway.config import GatewayConfig
from shadow.gateway.watch import ConfigFileWatcher
from shadow.workers.snapshot import read_validated, write_snapshot

__all__ = ["RESTART_DELAY_MAX_S", "Supervisor", "WorkerProcess", "default_worker_count", "per_worker_limits"]

RESTART_DELAY_MAX_S = 10.0
STABLE_AFTER_S = 5.0  # a worker that ran this long before dying is restarted at once
LISTENING_MARK = " listening at "  # mitmproxy's "Reverse proxy listening at ..." line
RELOADED_MARK = "shadow gateway: reloaded "
REJECTED_MARK = "shadow gateway: config reload rejected"


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    started: float
    generation: int  # the configuration generation it runs
    listening: threading.Event = field(default_factory=threading.Event)
    relay: threading.Thread | None = None


class Supervisor:
    """Runs `count` workers built by `command_for(name)`; see the module docstring.

    `origin`: the user's config file (or Gateway API manifests); `snapshot`: the file the workers
    load (None: they read `origin` in place, for manifests). `out`: where lines are written."""

    def __init__(self, command_for: Callable[[str], list[str]], count: int, origin: Path,
                 snapshot: Path | None, *, reload_interval: float = 1.0, stop_timeout: float = 60.0,
                 out: TextIO | None = None) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.command_for = command_for
        self.names = [f"w{i}" for i in range(count)]
        self.origin = origin
        self.snapshot = snapshot
        self.reload_interval = reload_interval
        self.stop_timeout = stop_timeout
        self.out = out or sys.stdout
        self.workers: dict[str, WorkerProcess] = {}
        self.generation = 1
        self.restarts = 0
        self._delays: dict[str, float] = {}
        self._restart_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._reload_now = threading.Event()
        self._write_lock = threading.Lock()
        self._watcher = ConfigFileWatcher(origin)
        self._announced_generation = 0

    # -- output ---------------------------------------------------------------------------------
    def say(self, line: str) -> None:
        with self._write_lock:
            self.out.write(line.rstrip("\n") + "\n")
            self.out.flush()

    def _relay(self, worker: WorkerProcess) -> None:
        stream = worker.process.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if LISTENING_MARK in line:
                worker.listening.set()
            elif RELOADED_MARK in line:
                worker.generation = self.generation
            elif REJECTED_MARK in line:
                self.say(f"shadow gateway: worker {worker.name} rejected the configuration the supervisor "
                         "validated (a file it references changed?); it keeps its previous one")
            self.say(f"[{worker.name}] {line}")
        stream.close()

    # -- workers --------------------------------------------------------------------------------
    def _spawn(self, name: str) -> WorkerProcess:
        process = subprocess.Popen(self.command_for(name), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        worker = WorkerProcess(name, process, time.monotonic(), self.generation)
        worker.relay = threading.Thread(target=self._relay, args=(worker,), name=f"shadow relay {name}",
                                        daemon=True)
        worker.relay.start()
        self.workers[name] = worker
        return worker

    def start(self, timeout: float = 60.0) -> bool:
        """Start every worker; True once each is listening (False: one died or `timeout` passed)."""
        for name in self.names:
            self._spawn(name)
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            while not worker.listening.wait(0.1):
                if worker.process.poll() is not None or time.monotonic() > deadline or self._stop.is_set():
                    return False
        return True

    def _check_workers(self) -> None:
        now = time.monotonic()
        for name in self.names:
            worker = self.workers.get(name)
            if worker is not None and worker.process.poll() is None:
                continue
            if worker is not None:  # it just died
                code = worker.process.returncode
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                ran = now - worker.started
                delay = 0.0 if ran >= STABLE_AFTER_S else min(max(2 * self._delays.get(name, 0.25), 0.5),
                                                              RESTART_DELAY_MAX_S)
                self._delays[name] = delay
                self._restart_at[name] = now + delay
                del self.workers[name]
                if worker.relay is not None:
                    worker.relay.join(timeout=2.0)
                self.say(f"shadow gateway: worker {name} (pid {worker.process.pid}) {how} after {ran:.1f} s; "
                         f"restarting it{f' in {delay:.1f} s' if delay else ''}")
            if now >= self._restart_at.get(name, 0.0):
                self._restart_at.pop(name, None)
                new = self._spawn(name)
                self.restarts += 1
                self.say(f"shadow gateway: worker {name} restarted (pid {new.process.pid})")

    def pids(self) -> dict[str, int]:
        return {name: w.process.pid for name, w in self.workers.items()}

    # -- configuration --------------------------------------------------------------------------
    def prime(self) -> None:
        """The configuration the workers start with is in force (call before `start`)."""
        self._watcher.prime()

    def reload(self, *, force: bool = False) -> bool:
        """Validate a changed configuration once; if valid, apply it to every worker. True: applied."""
        if not self._watcher.poll(force=force):
            return False
        try:
            _config, text = read_validated(self.origin)
        except ConfigError as exc:
            self.say(f"shadow gateway: config reload rejected, no worker changed: {exc}")
            return False
        if self.snapshot is not None and text is not None:
            write_snapshot(self.snapshot, text)
        self.generation += 1
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGHUP)
        self.say(f"shadow gateway: configuration {self.origin} validated; applying it to "
                 f"{len(self.workers)} workers (generation {self.generation})")
        return True

    def _announce_reloaded(self) -> None:
        """One line once every running worker runs the latest generation (what tests and operators wait for)."""
        if self._announced_generation >= self.generation or self.generation == 1:
            return
        live = [w for w in self.workers.values() if w.process.poll() is None]
        if len(live) == len(self.names) and all(w.generation >= self.generation for w in live):
            self._announced_generation = self.generation
            self.say(f"shadow gateway: generation {self.generation} in force on all {len(live)} workers")

    # -- main loop ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_reload(self) -> None:
        self._reload_now.set()

    def run(self) -> int:
        """Supervise until `request_stop()`; then stop every worker. 0: every worker exited cleanly."""
        last_poll = time.monotonic()
        while not self._stop.wait(0.1):
            self._check_workers()
            now = time.monotonic()
            force = self._reload_now.is_set()
            if force or (self.reload_interval > 0 and now - last_poll >= self.reload_interval):
                self._reload_now.clear()
                last_poll = now
                try:
                    self.reload(force=force)
                except OSError as exc:  # e.g. the snapshot folder vanished: keep serving
                    self.say(f"shadow gateway: config reload failed: {exc}")
            self._announce_reloaded()
        return self.stop_all()

    def stop_all(self) -> int:
        """SIGTERM every worker, wait for each to seal its capture (SIGKILL after `stop_timeout`)."""
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        worst = 0
        for worker in self.workers.values():
            try:
                code = worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"shadow gateway: worker {worker.name} did not stop in {self.stop_timeout:.0f} s; "
                         "killing it (its capture journal is recovered at the next start)")
                worker.process.kill()
                code = worker.process.wait()
            if worker.relay is not None:
                worker.relay.join(timeout=2.0)
            if code not in (0, -signal.SIGTERM):
                worst = worst or 1
        self.workers.clear()
        return worst

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT stop the gateway; SIGHUP checks the configuration at once."""

        def stop(_signum: int, _frame: FrameType | None) -> None:
            self.request_stop()

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)


def per_worker_limits(config: GatewayConfig) -> list[str]:
    """Middlewares whose count lives in each worker (rateLimit, inFlightReq, token limits): with N
    workers a client whose connections reach several workers may get up to N times the limit."""
    from shadow.ai.config import TokenRateLimitSettings
    from shadow.gateway.middlewares.inflightreq import InFlightReq
    from shadow.gateway.middlewares.ratelimit import RateLimit

    return sorted(name for name, mw in config.middlewares.items()
                  if isinstance(mw, RateLimit | InFlightReq | TokenRateLimitSettings))


def default_worker_count() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
