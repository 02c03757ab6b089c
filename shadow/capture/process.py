"""Capture in a child process: the proxy only enqueues; decoding, hashing, redaction, Arrow
conversion, journaling and sealing run in a separate Python process with its own GIL.

Why: in the gateway, `CaptureWriter`'s thread shares the GIL with mitmproxy's event loop, and its
per-row Python work (two rows per mirrored request) was 20–29 % of the proxy's CPU samples
(docs/benchmarks.md, "Gateway"). Here the proxy pays a deque append per row on the event loop and,
on a feeder thread, one pickle per batch and a pipe write.

    proxy process                                       capture process (python -m shadow.capture.process)
    submit(row) -> deque -> feeder thread -> pickle --pipe--> CaptureWriter (thread mode: journal, seal)
                            ack thread  <-- stats, control answers --+

`CaptureProcessWriter` has `CaptureWriter`'s interface (submit, update_counters, stats, flush,
seal, close), so the gateway picks either with `open_capture_writer` (`shadow.capture.mode`).

Crash safety is the journal's, unchanged: the child's `CaptureWriter` holds the gateway lock,
journals with an fsync per batch and seals. The proxy killed (kill -9 included): the child reads
EOF on its pipe, journals what it received, seals and exits. The child killed: the proxy counts
every row sent to it and not reported journaled as shed, and starts a new child, whose
`CaptureWriter` recovers the dead child's journals as any restart does. (A row journaled in the
last ~0.2 s before a child's death can therefore be both recovered and counted as shed.) Rows
travel through a pipe, never through a file: secrets are redacted in the child before its first
write, as in thread mode.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from shadow.capture.settings import CaptureSettings
from shadow.capture.writer import (
    BATCH_ROWS,
    MAX_QUEUE_BYTES,
    STATS_DIR,
    CaptureStats,
    CaptureWriter,
    ControlledWriter,
    make_gateway_id,
    queued_body_bytes,
    register_open_writer,
    unregister_open_writer,
)
from shadow.errors import CaptureError

log = logging.getLogger("shadow.capture")

FEED_INTERVAL_S = 0.1  # the feeder sends what is queued at least this often (or at BATCH_ROWS rows): the
# same window as the thread writer's BATCH_INTERVAL_S for rows a kill -9 of the proxy loses
STATS_REPORT_S = 0.2  # how often the child reports its counters (journaled rows are acknowledged)
COUNTERS_SEND_S = 0.5  # how often the proxy's counters (submitted, shed, gateway's) go to the child
START_TIMEOUT_S = 60.0  # child start: interpreter, imports, journal recovery, gateway lock
RESTART_MIN_INTERVAL_S = 1.0
PIPE_BYTES = 1 << 20  # a larger pipe: fewer blocking writes and wake-ups for 2 KB-body batches
_HEADER = struct.Struct(">IB")  # payload length, kind

# Frames, proxy -> child
_SETUP, _ROWS, _COUNTERS, _FLUSH, _SEAL, _CLOSE = b"S", b"R", b"U", b"F", b"L", b"C"
# Frames, child -> proxy
_READY, _FAILED, _STATS, _DONE = b"Y", b"E", b"T", b"D"
_CONTROL = {"flush": _FLUSH, "seal": _SEAL, "close": _CLOSE}

# Counters that belong to the child's CaptureWriter (the proxy owns submitted, shed, queued, extra).
_CHILD_COUNTERS = ("journaled", "sealed_rows", "segments", "write_errors", "disk_full_rows", "recovered_rows",
                   "corrupt_journals")


def _write_frame(out: IO[bytes], kind: bytes, payload: bytes) -> None:
    out.write(_HEADER.pack(len(payload), kind[0]))
    out.write(payload)
    out.flush()


def _read_frame(inp: IO[bytes]) -> tuple[bytes, bytes] | None:
    """(kind, payload), or None at EOF (a frame cut short counts as EOF: the other side died)."""
    header = inp.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size, kind = _HEADER.unpack(header)
    payload = inp.read(size) if size else b""
    if len(payload) < size:
        return None
    return bytes([kind]), payload


def _grow_pipe(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class _Control:
    __slots__ = ("done", "error", "kind", "token")

    def __init__(self, kind: str, token: int) -> None:
        self.kind, self.token = kind, token
        self.done = threading.Event()
        self.error: str | None = None


class _Child:
    """One capture process and what the proxy knows of it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.stats: dict[str, int] = dict.fromkeys(_CHILD_COUNTERS, 0)
        self.sent = 0  # rows written to its pipe
        self.dead = threading.Event()
        self.reader: threading.Thread | None = None


class CaptureProcessWriter(ControlledWriter):
    """`CaptureWriter`'s interface, with the writing done by a child process (see module doc).

    Exchanges only (the child runs `prepare_exchange`). Starting it starts the child and waits
    until it has recovered dead gateways' journals and holds the gateway lock: a CaptureError
    there (folder not writable, gateway id in use) is raised here, as CaptureWriter would.
    """

    def __init__(self, settings: CaptureSettings, *, gateway_id: str | None = None,
                 max_queue_bytes: int = MAX_QUEUE_BYTES, start_timeout: float = START_TIMEOUT_S) -> None:
        self.settings = settings
        self.table = "exchanges"
        self.gateway_id = gateway_id or make_gateway_id()
        if "/" in self.gateway_id or self.gateway_id.startswith("."):
            raise CaptureError(f"gateway id {self.gateway_id!r} must not contain '/' or start with '.'")
        self.root = Path(settings.dir)
        self.table_dir = self.root / self.table
        self.stats_path = self.root / STATS_DIR / f"{self.gateway_id}.json"
        self.start_timeout = start_timeout
        self._max_queue = max(1, settings.max_queue)
        self._max_queue_bytes = max_queue_bytes
        self._queue: deque[dict[str, Any] | _Control] = deque()
        self._bytes_in = 0
        self._bytes_out = 0
        self._submitted = 0
        self._shed = 0
        self._restarts = 0
        self._extra: dict[str, int] = {}
        self._lock = threading.Lock()  # guards _extra, _base, _child swaps, _controls
        self._base: dict[str, int] = dict.fromkeys(_CHILD_COUNTERS, 0)  # dead children's last counters
        self._controls: dict[int, _Control] = {}
        self._next_token = 0
        self._wake = threading.Event()
        self._closed = False
        self._close_lock = threading.RLock()
        self._last_restart = 0.0
        self._child: _Child | None = None
        self._child = self._start_child()  # raises CaptureError
        self._feeder = threading.Thread(target=self._run, name="shadow-capture-feeder", daemon=True)
        self._feeder.start()
        register_open_writer(self)

    @property
    def pid(self) -> int | None:
        """The capture process's pid (None while it is being restarted)."""
        child = self._child
        return child.proc.pid if child is not None else None

    # -- event-loop side (same contract as CaptureWriter.submit) ----------------------------------------
    def submit(self, row: dict[str, Any]) -> bool:
        q = self._queue
        n = len(q)
        size = queued_body_bytes(row)
        if (n >= self._max_queue or self._closed
                or (n and self._bytes_in + size - self._bytes_out > self._max_queue_bytes)):
            self._shed += 1
            return False
        self._bytes_in += size
        q.append(row)
        self._submitted += 1
        if n == BATCH_ROWS:
            self._wake.set()
        return True

    def update_counters(self, counters: Mapping[str, int]) -> None:
        with self._lock:
            self._extra.update(counters)

    def stats(self) -> CaptureStats:
        with self._lock:
            child = self._child.stats if self._child is not None else {}
            merged = {k: self._base[k] + child.get(k, 0) for k in _CHILD_COUNTERS}
            extra = dict(self._extra)
        return CaptureStats(submitted=self._submitted, shed=self._shed, queued=len(self._queue),
                            extra={**extra, "capture_process_restarts": self._restarts}, **merged)

    def _proxy_counters(self) -> dict[str, int]:
        """What the child publishes in its stats file on the proxy's behalf (these keys override the
        child's own). The child's journaled/sealed counters count from its own start."""
        with self._lock:
            extra = dict(self._extra)
        return {**extra, "capture_process_restarts": self._restarts, "submitted": self._submitted,
                "shed": self._shed}

    def _worker_alive(self) -> bool:
        return self._feeder.is_alive()

    def _new_control(self, kind: str) -> _Control:
        with self._lock:
            self._next_token += 1
            return _Control(kind, self._next_token)

    def _finish_close(self, deadline: float) -> None:
        self._feeder.join(max(0.1, deadline - time.monotonic()))
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError, ValueError):
                assert child.proc.stdin is not None
                child.proc.stdin.close()  # EOF: a child still running closes itself
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("capture %s: the capture process did not exit; its journal is recovered at "
                          "the next start", self.table_dir)
                child.proc.kill()
                child.proc.wait()
        unregister_open_writer(self)

    # -- the child -------------------------------------------------------------------------------------
    def _start_child(self) -> _Child:
        self._last_restart = time.monotonic()
        repo = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # Own session: a Ctrl-C or a signal to the proxy's process group does not reach the child,
        # which stops when its pipe closes, after sealing.
        proc = subprocess.Popen([sys.executable, "-m", "shadow.capture.process"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, start_new_session=True, bufsize=0)
        assert proc.stdin is not None and proc.stdout is not None
        _grow_pipe(proc.stdin.fileno())
        setup = pickle.dumps({"settings": self.settings, "gateway_id": self.gateway_id,
                              "max_queue_bytes": self._max_queue_bytes}, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _write_frame(proc.stdin, _SETUP, setup)
            frame = self._read_ready(proc)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        kind, payload = frame
        if kind == _FAILED:
            proc.wait(5)
            raise CaptureError(payload.decode("utf-8", "replace"))
        child = _Child(proc)
        child.stats.update(pickle.loads(payload))
        child.reader = threading.Thread(target=self._read_child, args=(child,), name="shadow-capture-acks",
                                        daemon=True)
        child.reader.start()
        return child

    def _read_ready(self, proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        assert proc.stdout is not None
        result: list[tuple[bytes, bytes] | None] = []
        reader = threading.Thread(target=lambda: result.append(_read_frame(proc.stdout)), daemon=True)  # type: ignore[arg-type]
        reader.start()
        reader.join(self.start_timeout)
        if reader.is_alive():
            raise CaptureError(f"{self.table_dir}: the capture process did not start within "
                               f"{self.start_timeout:g} s")
        frame = result[0] if result else None
        if frame is None or frame[0] not in (_READY, _FAILED):
            code = proc.wait(5)
            raise CaptureError(f"{self.table_dir}: the capture process exited at start (status {code})")
        return frame

    def _read_child(self, child: _Child) -> None:
        """Ack thread: the child's counters and control answers, until its pipe closes."""
        assert child.proc.stdout is not None
        try:
            while (frame := _read_frame(child.proc.stdout)) is not None:
                kind, payload = frame
                if kind == _STATS:
                    counters = pickle.loads(payload)
                    with self._lock:
                        child.stats.update(counters)
                elif kind == _DONE:
                    token, error, counters = pickle.loads(payload)
                    with self._lock:
                        child.stats.update(counters)
                        control = self._controls.pop(token, None)
                    if control is not None:
                        control.error = error
                        control.done.set()
        except Exception:
            log.exception("capture %s: reading the capture process's answers failed", self.table_dir)
        finally:
            child.dead.set()
            self._wake.set()

    def _child_died(self, child: _Child) -> None:
        """Count what the dead child had not journaled as shed, fail waiting controls, start a new one."""
        with contextlib.suppress(Exception):
            child.proc.kill()
        code = child.proc.wait()
        with self._lock:
            unaccounted = child.sent - child.stats["journaled"] - child.stats["write_errors"]
            for k in _CHILD_COUNTERS:
                self._base[k] += child.stats[k]
            child.stats = dict.fromkeys(_CHILD_COUNTERS, 0)
            controls = list(self._controls.values())
            self._controls.clear()
        self._shed += max(0, unaccounted)
        for control in controls:
            control.error = "the capture process died"
            control.done.set()
        self._restarts += 1
        log.error("capture %s: the capture process exited (status %s); %d rows not journaled counted as shed; "
                  "restarting it", self.table_dir, code, max(0, unaccounted))
        self._child = None
        while not self._closed or self._queue:
            wait = RESTART_MIN_INTERVAL_S - (time.monotonic() - self._last_restart)
            if wait > 0:
                time.sleep(wait)
            try:
                self._child = self._start_child()
                return
            except Exception as e:
                log.error("capture %s: restarting the capture process failed: %s", self.table_dir, e)
                if self._closed:
                    return

    # -- feeder thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        last_counters = 0.0
        while True:
            self._wake.wait(FEED_INTERVAL_S)
            self._wake.clear()
            child = self._child
            if child is None or child.dead.is_set():
                if child is not None:
                    self._child_died(child)
                if self._child is None:  # closed while no child could be started
                    self._shed_queue("the capture process is not running")
                    return
                continue
            items = self._drain()
            rows: list[dict[str, Any]] = []
            try:
                for item in items:
                    if isinstance(item, _Control):
                        self._send_rows(child, rows)
                        rows = []
                        if item.kind == "close":
                            self._send_counters(child)
                        with self._lock:
                            self._controls[item.token] = item
                        assert child.proc.stdin is not None
                        _write_frame(child.proc.stdin, _CONTROL[item.kind], str(item.token).encode())
                        if item.kind == "close":
                            # Wait for the answer here, so no later frame races the child's exit.
                            while not item.done.wait(0.1):
                                if child.dead.is_set() and not item.done.wait(0.5):
                                    item.error = "the capture process died while closing"
                                    item.done.set()
                            return
                    else:
                        rows.append(item)
                        if len(rows) >= BATCH_ROWS:
                            self._send_rows(child, rows)
                            rows = []
                self._send_rows(child, rows)
                now = time.monotonic()
                if now - last_counters >= COUNTERS_SEND_S:
                    last_counters = now
                    self._send_counters(child)
            except (BrokenPipeError, ConnectionResetError, ValueError, OSError):
                # The child died mid-write: its reader sees EOF; rows sent are counted at the restart.
                child.dead.set()
                for item in items:
                    if isinstance(item, _Control) and not item.done.is_set():
                        item.error = "the capture process died"
                        item.done.set()
                        with self._lock:
                            self._controls.pop(item.token, None)

    def _drain(self) -> list[dict[str, Any] | _Control]:
        items: list[dict[str, Any] | _Control] = []
        q = self._queue
        size = 0
        while True:
            try:
                item = q.popleft()
            except IndexError:
                break
            if not isinstance(item, _Control):
                size += queued_body_bytes(item)
            items.append(item)
        self._bytes_out += size
        return items

    def _shed_queue(self, reason: str) -> None:
        for item in self._drain():
            if isinstance(item, _Control):
                item.error = reason
                item.done.set()
            else:
                self._shed += 1

    def _send_rows(self, child: _Child, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        payload = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
        child.sent += len(rows)  # counted before the write: a row cut off by the child's death is shed
        assert child.proc.stdin is not None
        _write_frame(child.proc.stdin, _ROWS, payload)

    def _send_counters(self, child: _Child) -> None:
        assert child.proc.stdin is not None
        _write_frame(child.proc.stdin, _COUNTERS, pickle.dumps(self._proxy_counters()))


def open_capture_writer(settings: CaptureSettings, *, gateway_id: str | None = None) -> Any:
    """The gateway's exchange writer: in a child process (`settings.mode == "process"`) or a thread."""
    if getattr(settings, "mode", "thread") == "process":
        return CaptureProcessWriter(settings, gateway_id=gateway_id)
    return CaptureWriter(settings, gateway_id=gateway_id)


# -- child side ------------------------------------------------------------------------------------------


def _child_main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the proxy decides; its pipe closing means stop

    def _terminate(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    # fd 1 carries frames; anything printed goes to stderr (the gateway's log) instead.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    inp = os.fdopen(0, "rb", buffering=1 << 16)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="[%(asctime)s.%(msecs)03d] shadow capture process: %(message)s", datefmt="%H:%M:%S")
    out_lock = threading.Lock()

    def send(kind: bytes, payload: bytes) -> None:
        with out_lock:
            _write_frame(out, kind, payload)

    frame = _read_frame(inp)
    if frame is None or frame[0] != _SETUP:
        return 2
    setup = pickle.loads(frame[1])
    import shadow.capture.writer as capture

    # This process has its own GIL: the writer thread need not yield to an event loop here.
    capture.YIELD_AFTER_S = float("inf")
    try:
        writer = CaptureWriter(setup["settings"], gateway_id=setup["gateway_id"],
                               max_queue_bytes=setup["max_queue_bytes"])
    except CaptureError as e:
        send(_FAILED, str(e).encode())
        return 1
    except Exception as e:
        send(_FAILED, f"{setup['settings'].dir}: the capture process could not start: {e}".encode())
        return 1

    def counters() -> dict[str, int]:
        s = writer.stats()
        return {k: getattr(s, k) for k in _CHILD_COUNTERS}

    send(_READY, pickle.dumps(counters()))
    stop_reporting = threading.Event()

    def report() -> None:
        last: dict[str, int] = {}
        while not stop_reporting.wait(STATS_REPORT_S):
            now = counters()
            if now != last:
                with contextlib.suppress(OSError):
                    send(_STATS, pickle.dumps(now))
                last = now

    reporter = threading.Thread(target=report, name="shadow-capture-report", daemon=True)
    reporter.start()
    try:
        while (frame := _read_frame(inp)) is not None:
            kind, payload = frame
            if kind == _ROWS:
                for row in pickle.loads(payload):
                    # Backpressure instead of shedding: a full queue here stops reading the pipe, the
                    # proxy's feeder then blocks, and the proxy's own bounded queue sheds and counts.
                    writer.submit_waiting(row)
            elif kind == _COUNTERS:
                writer.update_counters(pickle.loads(payload))
            elif kind in (_FLUSH, _SEAL, _CLOSE):
                error: str | None = None
                try:
                    {_FLUSH: writer.flush, _SEAL: writer.seal, _CLOSE: writer.close}[kind]()
                except Exception as e:
                    error = str(e)
                send(_DONE, pickle.dumps((int(payload), error, counters())))
                if kind == _CLOSE:
                    return 0
        log.warning("the gateway went away; sealing what was received")
        return 0
    finally:
        stop_reporting.set()
        writer.close()  # idempotent: after the proxy's death (EOF) or SIGTERM, journal and seal now


if __name__ == "__main__":
    sys.exit(_child_main())
