"""Crash-safe capture of rows (exchanges, spans, ...) to Hive-partitioned Parquet.

Data path:

1. `CaptureWriter.submit(row)` runs on the proxy's event loop and only appends to a bounded
   in-memory queue (no I/O, no hashing, no redaction). A full queue sheds the row and counts it.
2. One writer thread drains the queue every `BATCH_INTERVAL_S` (or sooner at `BATCH_ROWS` rows),
   runs `prepare` on each row (for exchanges: decode, hash, redact, truncate — see
   `prepare_exchange`), and appends one record batch to an Arrow IPC *stream* journal
   ``<dir>/<table>/_journal/<gateway>-<seq>.arrows`` (seq: a per-process run id and a counter, so
   names never repeat even for a configured, reused gateway id), fsync'd after every batch. Secrets are
   redacted before this first write.
3. A journal is *sealed* after `segment_rows` rows or `segment_seconds` after its first row, on
   `seal()` and at `close()`: its rows are written, one file per (UTC date, hour) of `ts`, as zstd
   Parquet with large row groups to a hidden temporary name (``.part-….parquet.<random>.tmp``, which
   no ``*.parquet`` glob matches — DuckDB's glob does match hidden ``.x.parquet`` names), fsync'd, atomically renamed to
   ``<dir>/<table>/dt=YYYY-MM-DD/hour=HH/part-<gateway>-<uuid>.parquet``, the directory fsync'd,
   and only then is the journal deleted. The uuid is derived from the journal's name and the
   partition, so re-sealing a journal after a crash in the middle of sealing rewrites the same
   files instead of duplicating rows.
4. Recovery: a new writer seals every journal whose owner is dead (each gateway process holds an
   flock on ``_journal/<gateway>.lock`` for its lifetime; the kernel drops it when the process
   dies, kill -9 included). A torn tail — a batch half-written at the kill — is expected: rows up
   to the last complete batch are kept. A journal with no readable batch and unreadable bytes is
   moved to ``_journal/corrupt/`` with a log line, never deleted.

Readers (shadow.capture.store, `shadow sql`) only ever see sealed Parquet: rows still in a live journal
become visible at the next seal.

Counters (`stats()` plus `update_counters`) are published atomically to
``<dir>/_stats/<gateway>.json`` (``<gateway>.<table>.json`` for other tables) every
`STATS_INTERVAL_S` and at close.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures.thread  # noqa: F401  (see below)
import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
import secrets
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shadow.capture.canonical import BodyDecodeError, body_hash, decode_body, is_json_type, json_value_hash
from shadow.capture.endpoints import template_path
from shadow.capture.redact import UNPARSED, Redactor, load_redaction_key
from shadow.capture.schema import EXCHANGES
from shadow.capture.settings import CaptureSettings, RedactionSettings
from shadow.errors import CaptureError

__all__ = [
    "BATCH_INTERVAL_S",
    "BATCH_ROWS",
    "CaptureStats",
    "CaptureWriter",
    "make_gateway_id",
    "prepare_exchange",
    "read_journal",
]

log = logging.getLogger("shadow.capture")

BATCH_INTERVAL_S = 0.1  # the writer thread journals what is queued at least this often
BATCH_ROWS = 1_000  # ...or as soon as this many rows are queued
ROW_GROUP_ROWS = 100_000  # Parquet row groups: ~100k rows (1k-row groups: 1.7x larger, 2x slower scans)
STATS_INTERVAL_S = 2.0
ERROR_LOG_INTERVAL_S = 10.0
LOCK_WAIT_S = 10.0  # how long a new writer waits for its gateway lock (a recoverer may be sealing its journals)
# Besides settings.max_queue rows, the queue holds at most this many body bytes (bodies arrive uncut):
# 20,000 queued rows of 1 MB bodies must shed, not take 20 GB. A single row always fits an empty queue.
MAX_QUEUE_BYTES = 256 * 1024 * 1024
# After YIELD_AFTER_S of continuous row preparation the writer thread sleeps YIELD_SLEEP_S. Without
# it, a busy writer keeps the GIL for whole switch intervals (5 ms) while the event loop waits to run;
# a real sleep (not sleep(0), after which this thread usually takes the GIL straight back) lets it in.
# Bounded by time, not rows, so an idle-ish writer never sleeps and a busy one loses ~5 % at most.
YIELD_AFTER_S = 0.001
YIELD_SLEEP_S = 0.00005
JOURNAL_DIR = "_journal"
CORRUPT_DIR = "corrupt"
STATS_DIR = "_stats"
JOURNAL_SUFFIX = ".arrows"
_NS_PER_HOUR = 3_600 * 1_000_000_000
_PART_NAMESPACE = uuid.UUID("6b0f1c52-3f7e-4d8a-9a55-0d5c2b7e9e11")


def make_gateway_id() -> str:
    """hostname-pid-random: unique per process, readable in file names and in the `gateway` column."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class CaptureStats:
    submitted: int = 0  # rows accepted by submit()
    shed: int = 0  # rows refused by submit() because the queue was full
    journaled: int = 0  # rows appended to a journal and fsync'd
    sealed_rows: int = 0  # rows written to sealed Parquet (recovered rows included)
    segments: int = 0  # Parquet files sealed
    write_errors: int = 0  # rows lost to a failed prepare, conversion or write (logged)
    disk_full_rows: int = 0  # of write_errors, rows dropped because the disk was full (ENOSPC / EDQUOT)
    recovered_rows: int = 0  # rows recovered from journals a dead process left
    corrupt_journals: int = 0  # unreadable journals moved to _journal/corrupt/
    queued: int = 0  # rows waiting for the writer thread right now
    extra: dict[str, int] = field(default_factory=dict)  # counters published via update_counters

    def as_dict(self) -> dict[str, int]:
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **extra}


# -- exchange preparation (writer thread) -------------------------------------------------------------


def _header_pairs(headers: Any) -> list[tuple[str, str]] | None:
    """Normalise (name, value) tuples, {"name","value"} dicts or a mapping to a list of str pairs."""
    if headers is None:
        return None
    # Fast paths for what the gateway sends (mitmproxy's bytes pairs) and for str pairs.
    if not headers:
        return []
    try:
        first = headers[0][0]
        if type(first) is bytes:
            return [(n.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for n, v in headers]
        if type(first) is str and all(type(n) is str and type(v) is str for n, v in headers):
            return [(n, v) for n, v in headers]
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
        pass  # mixed or other shapes: the general loop below
    if isinstance(headers, Mapping):
        items: Iterable[Any] = headers.items()
    else:
        items = headers
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, Mapping):
            name, value = item["name"], item["value"]
        else:
            name, value = item
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out.append((str(name), str(value)))
    return out


def _header(headers: list[tuple[str, str]] | None, name: str) -> str | None:
    if headers:
        for n, v in headers:
            if n.lower() == name:
                return v
    return None


def _to_ns(ts: Any) -> int:
    if ts is None:
        return time.time_ns()
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    if isinstance(ts, int):
        return ts
    raise ValueError(f"ts must be int ns since epoch or datetime, not {type(ts).__name__}")


def _as_bytes(body: Any) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    raise ValueError(f"a body must be bytes, not {type(body).__name__}")


@functools.lru_cache(maxsize=8)
def _redactor_for(redaction: RedactionSettings, key: bytes) -> Redactor:
    return Redactor(redaction, key)


def prepare_exchange(row: dict[str, Any], settings: CaptureSettings, key: bytes,
                     redactor: Redactor | None = None) -> dict[str, Any]:
    """Make a submitted exchange row safe and complete for disk. Runs in the writer thread.

    Fills `exchange_id` (uuid4 hex), `ts` (now), `truncated`, `path`/`query` (from `url`),
    `endpoint` (template_path), `resp_content_type`; decodes req/resp bodies per Content-Encoding
    (bodies are stored decoded; a body that fails to decode is kept raw and the reason goes to
    `capture_note`; a request whose body was decoded loses its Content-Encoding header, so that it
    replays as stored, while a response keeps it); redacts secrets in headers, cookies, the URL
    (path, query, fragment, userinfo), JSON, form and multipart bodies (shadow.capture.redact); computes `body_hash` and `body_size` over the full decoded, redacted
    response body; then cuts bodies at `settings.max_body_bytes`.
    """
    r = redactor or _redactor_for(settings.redaction, key)
    out = dict(row)
    notes: list[str] = []
    if not out.get("exchange_id"):
        out["exchange_id"] = uuid.uuid4().hex
    out["ts"] = _to_ns(out.get("ts"))
    url = out.get("url")
    if url and (out.get("path") is None or out.get("query") is None):
        parts = urlsplit(url)
        if out.get("path") is None:
            out["path"] = parts.path or "/"
        if out.get("query") is None:
            out["query"] = parts.query
    if out.get("path"):
        out["path"] = r.path(out["path"])  # before the endpoint is derived from it (";api_key=...")
    if out.get("endpoint") is None and out.get("path") is not None:
        out["endpoint"] = template_path(out["path"])

    req_headers = _header_pairs(out.get("req_headers"))
    resp_headers = _header_pairs(out.get("resp_headers"))
    if out.get("resp_content_type") is None:
        out["resp_content_type"] = _header(resp_headers, "content-type")

    limit = settings.max_body_bytes
    truncated = bool(out.get("truncated"))
    decode_limit = max(64 * 1024 * 1024, 16 * limit)
    for side, headers in (("req", req_headers), ("resp", resp_headers)):
        body = _as_bytes(out.get(f"{side}_body"))
        if body is None:
            out[f"{side}_body"] = None
            continue
        coding = _header(headers, "content-encoding")
        if coding:
            try:
                body = decode_body(body, coding, limit=decode_limit)
            except BodyDecodeError as e:
                notes.append(f"{side}_body kept raw: {e}")
            else:
                if side == "req" and req_headers is not None:
                    # The stored request must describe the stored body, so that it can be replayed
                    # as is. (The response keeps its Content-Encoding: the analyzers compare it.)
                    req_headers = [(n, v) for n, v in req_headers if n.lower() != "content-encoding"]
        if side == "resp" and out.get("body_size") is None:
            out["body_size"] = len(body)
        body, doc = r.body(body, _header(headers, "content-type"))
        if side == "resp":
            content_type = out["resp_content_type"]
            if doc is not UNPARSED and (not content_type or is_json_type(content_type)):
                out["body_hash"] = json_value_hash(doc)  # same value as body_hash(body, ...), one parse less
            else:
                out["body_hash"] = body_hash(body, content_type)
        if len(body) > limit:
            body = body[:limit]
            truncated = True
        out[f"{side}_body"] = body

    if out.get("query"):
        out["query"] = r.query(out["query"])
    if out.get("url"):
        out["url"] = r.url(out["url"])
    out["req_headers"] = r.headers(req_headers) if req_headers is not None else None
    out["resp_headers"] = r.headers(resp_headers) if resp_headers is not None else None
    out["truncated"] = truncated
    if notes:
        previous = out.get("capture_note")
        out["capture_note"] = "; ".join([previous, *notes] if previous else notes)
    return out


# -- journals ---------------------------------------------------------------------------------------


def read_journal(path: Path) -> tuple[list[pa.RecordBatch], pa.Schema | None, str | None]:
    """Read a journal up to its last complete batch: (batches, schema or None, problem or None).

    `problem` describes a torn tail or unreadable data; schema None means nothing was readable.
    """
    batches: list[pa.RecordBatch] = []
    try:
        if path.stat().st_size == 0:
            return [], None, "empty file"
        # Memory-mapped: a 100k-row segment of 2 KB bodies is read zero-copy from the page cache
        # instead of being copied onto the heap while it is sealed.
        with pa.memory_map(str(path), "r") as f:
            try:
                reader = pa.ipc.open_stream(f)
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
                return [], None, f"no readable stream header ({e})"
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    return batches, reader.schema, None
                except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
                    # A message cut short (the writer was killed while appending it) reads as "Expected
                    # to (be able to) read N bytes..."; anything else is damage, not a torn tail.
                    kind = "torn" if "Expected to" in str(e) else "unreadable"
                    return batches, reader.schema, f"{kind} after {len(batches)} batches ({e})"
    except OSError as e:
        return [], None, f"cannot open ({e.strerror or e})"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdirs_synced(path: Path, stop: Path) -> None:
    """mkdir -p, fsyncing each parent whose entry we created (so a crash cannot lose a directory)."""
    if path.is_dir():
        return
    missing: list[Path] = []
    p = path
    while not p.is_dir() and p != stop and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        _fsync_dir(d.parent)


def _column_options(schema: pa.Schema) -> dict[str, Any]:
    """Dictionary-encode strings only, and no min/max statistics for bodies (mostly unique, large):
    14 % smaller and 15 % faster to write than pyarrow's defaults on 2 KB JSON bodies."""
    def bulky(t: pa.DataType) -> bool:
        return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_nested(t)

    return {
        "use_dictionary": [f.name for f in schema if pa.types.is_string(f.type)],
        "write_statistics": [f.name for f in schema if not bulky(f.type)],
    }


def _write_parquet_atomically(table: pa.Table, final: Path) -> None:
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd", row_group_size=ROW_GROUP_ROWS,
                           **_column_options(table.schema))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def _partition_hours(table: pa.Table, fallback_ns: int) -> list[tuple[int, pa.Table]]:
    """Split rows by the UTC hour of `ts` (rows without ts, or tables without it, use fallback_ns)."""
    fallback_hour = fallback_ns // _NS_PER_HOUR
    if "ts" not in table.column_names or not pa.types.is_timestamp(table.schema.field("ts").type):
        return [(fallback_hour, table)]
    ts = pc.fill_null(pc.cast(table.column("ts"), pa.int64()), fallback_ns)
    hours = pc.divide(ts, pa.scalar(_NS_PER_HOUR, pa.int64()))  # integer division (ts >= 1970)
    distinct = pc.unique(hours).to_pylist()
    if len(distinct) == 1:
        return [(int(distinct[0]), table)]
    return [(int(h), table.filter(pc.equal(hours, h))) for h in sorted(distinct)]


def _hour_dirs(hour: int) -> tuple[str, str]:
    t = datetime.fromtimestamp(hour * 3600, UTC)
    return f"dt={t:%Y-%m-%d}", f"hour={t:%H}"


def seal_journal(path: Path, table_dir: Path) -> tuple[int, int, str | None]:
    """Write a journal's complete batches to partitioned Parquet and delete it.

    Returns (rows, files, problem). A journal with unreadable bytes and no complete batch is moved to
    `_journal/corrupt/` (rows == -1); one with only a header, or a header and a torn first batch, is
    deleted (nothing to keep).
    """
    batches, schema, problem = read_journal(path)
    if not batches:
        size = path.stat().st_size if path.exists() else 0
        if schema is not None and (problem is None or problem.startswith("torn")):
            # A header and no complete batch (killed while appending the first one): nothing to keep.
            path.unlink(missing_ok=True)
            if problem:
                log.warning("capture journal %s: %s; no complete rows, removed", path, problem)
            return 0, 0, problem
        if size == 0:
            path.unlink(missing_ok=True)
            return 0, 0, None
        corrupt = path.parent / CORRUPT_DIR
        corrupt.mkdir(exist_ok=True)
        target = corrupt / path.name
        if target.exists():
            target = corrupt / f"{path.stem}-{secrets.token_hex(3)}{path.suffix}"
        os.rename(path, target)
        _fsync_dir(path.parent)
        log.error("capture journal %s is unreadable (%s); moved to %s — nothing was deleted", path, problem, target)
        return -1, 0, problem
    assert schema is not None
    table = pa.Table.from_batches(batches, schema=schema)
    gateway = path.stem.rsplit("-", 1)[0]
    files = 0
    for hour, part in _partition_hours(table, int(path.stat().st_mtime_ns)):
        dt_dir, hour_dir = _hour_dirs(hour)
        directory = table_dir / dt_dir / hour_dir
        _mkdirs_synced(directory, table_dir.parent)
        part_id = uuid.uuid5(_PART_NAMESPACE, f"{path.stem}/{dt_dir}/{hour_dir}").hex
        _write_parquet_atomically(part, directory / f"part-{gateway}-{part_id}.parquet")
        files += 1
    path.unlink()
    _fsync_dir(path.parent)
    if problem:
        log.warning("capture journal %s: %s; kept %d complete rows", path, problem, table.num_rows)
    return table.num_rows, files, problem


class _GatewayLock:
    """An flock on `_journal/<gateway>.lock`, held for the owner's lifetime (released by the kernel on death)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            # A recoverer removes a dead owner's lock file before releasing it. A lock taken on a file
            # that is no longer at the path protects nothing: take the one that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)

    def acquire(self, timeout: float) -> bool:
        """try_acquire, retried for `timeout` seconds (a recoverer may hold a restarted owner's lock)."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def release(self, *, remove: bool) -> None:
        if self.fd is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self.fd)
        self.fd = None


def _remove_temporaries(table_dir: Path, owner: str) -> None:
    """Half-written Parquet a dead owner left (invisible to readers, but they take space)."""
    own = re.compile(rf"^\.part-{re.escape(owner)}-[0-9a-f]{{32}}\.parquet\.[0-9a-f]+\.tmp$")
    for tmp in table_dir.glob(f"dt=*/hour=*/.part-{owner}-*.tmp"):
        if own.match(tmp.name):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _remove_stale_locks(journal_dir: Path, min_age_s: float = 300.0) -> None:
    """Lock files of dead gateways that left no journal. Only old ones: a process that has just created
    its lock file and not yet taken the lock must not lose it."""
    now = time.time()
    for path in journal_dir.glob("*.lock"):
        owner = path.name[: -len(".lock")]
        try:
            if now - path.stat().st_mtime < min_age_s or any(journal_dir.glob(f"{owner}-*{JOURNAL_SUFFIX}")):
                continue
        except OSError:
            continue
        lock = _GatewayLock(path)
        with contextlib.suppress(OSError):
            if lock.try_acquire():
                lock.release(remove=True)


def recover_journals(table_dir: Path) -> tuple[int, int, int]:
    """Seal the journals of dead gateways: (rows recovered, files written, journals moved to corrupt/)."""
    journal_dir = table_dir / JOURNAL_DIR
    if not journal_dir.is_dir():
        return 0, 0, 0
    rows = files = corrupt = 0
    owners = sorted({p.stem.rsplit("-", 1)[0] for p in journal_dir.glob(f"*{JOURNAL_SUFFIX}")
                     if not p.name.startswith(".")})
    for owner in owners:
        lock = _GatewayLock(journal_dir / f"{owner}.lock")
        if not lock.try_acquire():
            continue  # its process is alive and still writing
        try:
            _remove_temporaries(table_dir, owner)
            # Listed again under the lock: another recoverer may have sealed them meanwhile.
            for journal in sorted(journal_dir.glob(f"{owner}-*{JOURNAL_SUFFIX}"),
                                  key=lambda p: (len(p.stem), p.stem)):
                if journal.stem.rsplit("-", 1)[0] != owner:
                    continue
                try:
                    n, f, _problem = seal_journal(journal, table_dir)
                except Exception as e:  # startup must go on; the journal stays for the next attempt
                    log.error("capture journal %s could not be sealed (%s); left in place", journal, e)
                    continue
                if n < 0:
                    corrupt += 1
                else:
                    rows += n
                    files += f
        finally:
            lock.release(remove=True)
    _remove_stale_locks(journal_dir)
    return rows, files, corrupt


# -- the writer -----------------------------------------------------------------------------------------


def queued_body_bytes(row: Mapping[str, Any]) -> int:
    """Body bytes a queued row holds (bodies are cut only in the writer thread, so they count in full)."""
    size = 0
    body = row.get("resp_body")
    if body:
        size += len(body)
    body = row.get("req_body")
    if body:
        size += len(body)
    return size


_WARM_UP_ROW: dict[str, Any] = {
    "request_id": "warm-up", "role": "primary", "mode": "serve", "method": "POST", "status": 200,
    "url": "http://warm.up/p;a=1?token=t&x=1", "path": "/p;a=1", "query": "token=t&x=1",
    "req_headers": [(b"Content-Type", b"application/json"), (b"Authorization", b"Bearer t")],
    "req_body": b'{"password": "p", "n": [1]}',
    "resp_headers": [(b"Content-Type", b"application/json"), (b"Content-Encoding", b"gzip")],
    "resp_body": b'\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xabV\xcaH\xcd\xc9\xc9W\xb2RP*\xcf/\xcaIQ\xaa\x05\x00"\xae\xa3\x86\x12\x00\x00\x00',
}


class _Marker:
    """A control item in the queue: everything queued before it is handled before `done` is set."""

    __slots__ = ("done", "error", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "flush" | "seal" | "close"
        self.done = threading.Event()
        self.error: BaseException | None = None


# Writers still open at interpreter exit are closed (flushed and sealed) by an atexit hook. pyarrow's
# Parquet writer imports concurrent.futures.thread lazily, and that import registers a threading
# atexit hook, which raises once shutdown has begun; it is imported above so sealing works then too.
_open_writers: weakref.WeakSet[Any] = weakref.WeakSet()  # CaptureWriter, CaptureProcessWriter


def register_open_writer(writer: Any) -> None:
    """Have `writer.close()` called at interpreter exit if it is still open then."""
    _open_writers.add(writer)


def unregister_open_writer(writer: Any) -> None:
    _open_writers.discard(writer)


@atexit.register
def _close_open_writers() -> None:
    for w in list(_open_writers):
        with contextlib.suppress(Exception):
            w.close()


class ControlledWriter:
    """The control protocol both writers share (CaptureWriter here, CaptureProcessWriter in
    shadow/capture/process.py): a control item travels through the same queue as the rows, so
    `flush`/`seal`/`close` return once everything submitted before them has been handled.

    A subclass sets `table_dir`, `_queue`, `_wake`, `_close_lock`, `_closed` and implements the
    three hooks below."""

    table_dir: Path
    _queue: collections.deque[Any]
    _wake: threading.Event
    _close_lock: threading.RLock
    _closed: bool

    def _worker_alive(self) -> bool:
        raise NotImplementedError

    def _new_control(self, kind: str) -> Any:
        """A control item with a `done` threading.Event and an `error` (None when it succeeded)."""
        raise NotImplementedError

    def _finish_close(self, deadline: float) -> None:
        """After the "close" control: stop the worker and release what the writer holds."""
        raise NotImplementedError

    def _control(self, kind: str, timeout: float) -> None:
        if not self._worker_alive():
            return
        control = self._new_control(kind)
        self._queue.append(control)
        self._wake.set()
        if not control.done.wait(timeout):
            raise CaptureError(f"{self.table_dir}: capture {kind} did not finish within {timeout:g} s")
        if control.error is not None:
            raise CaptureError(f"{self.table_dir}: capture {kind} failed: {control.error}")

    def flush(self, timeout: float = 10.0) -> None:
        """Block until every row submitted so far is journaled and fsync'd."""
        self._control("flush", timeout)

    def seal(self, timeout: float = 60.0) -> None:
        """Journal what is queued and seal the current segment into Parquet now."""
        self._control("seal", timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Flush, seal, stop the worker and publish final stats. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        try:
            self._control("close", timeout)
        finally:
            self._finish_close(deadline)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureWriter(ControlledWriter):
    """Journals submitted rows and seals them into Parquet under `settings.dir/<table>/`. See module doc.

    `table`/`schema`: what is written (exchanges by default; spans, ... use their own schema).
    `gateway_id`: names journals, Parquet files and the stats file, and fills the `gateway` column
    when the schema has one; generated (hostname-pid-random) when None.
    `prepare`: runs on each row in the writer thread before anything touches disk. For "exchanges"
    the default is `prepare_exchange` (decoding, hashing, redaction, truncation); a `prepare` given
    here replaces it, redaction included.
    `max_queue_bytes`: body bytes the queue may hold besides `settings.max_queue` rows.
    Creating a writer seals the journals that dead writers left in the table's folder.
    """

    def __init__(self, settings: CaptureSettings, *, table: str = "exchanges", schema: pa.Schema = EXCHANGES,
                 gateway_id: str | None = None,
                 prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 max_queue_bytes: int = MAX_QUEUE_BYTES) -> None:
        self.settings = settings
        self.table = table
        self.schema = schema
        self.gateway_id = gateway_id or make_gateway_id()
        if "/" in self.gateway_id or self.gateway_id.startswith("."):
            raise CaptureError(f"gateway id {self.gateway_id!r} must not contain '/' or start with '.'")
        self.root = Path(settings.dir)
        self.table_dir = self.root / table
        self.journal_dir = self.table_dir / JOURNAL_DIR
        stats_name = f"{self.gateway_id}.json" if table == "exchanges" else f"{self.gateway_id}.{table}.json"
        self.stats_path = self.root / STATS_DIR / stats_name
        try:
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            (self.root / STATS_DIR).mkdir(exist_ok=True)
        except OSError as e:
            raise CaptureError(f"{self.table_dir}: cannot create the capture folder: {e.strerror or e}") from None
        self._default_prepare = prepare is None and table == "exchanges"
        if self._default_prepare:
            key = load_redaction_key(self.root, settings.redaction)
            prepare = functools.partial(prepare_exchange, settings=settings, key=key,
                                        redactor=Redactor(settings.redaction, key))
        self._prepare = prepare
        self._fill_gateway = "gateway" in schema.names

        self._stats = CaptureStats()
        self._extra_lock = threading.Lock()
        self._queue: collections.deque[dict[str, Any] | _Marker] = collections.deque()
        self._max_queue = max(1, settings.max_queue)
        self._max_queue_bytes = max_queue_bytes
        # Body bytes queued = in - out; each counter has one writing thread (submit's / the writer's).
        self._bytes_in = 0
        self._bytes_out = 0
        self._wake = threading.Event()
        self._closed = False
        self._close_lock = threading.RLock()  # re-entrant: close() may run again from a signal handler

        # Current journal segment (writer thread only).
        self._seq = 0
        # Journal names (and the Parquet names derived from them) must never repeat, even when a
        # configured gateway id is reused by the next process: the sequence starts with a run id.
        self._run_id = f"{int(time.time()):x}{secrets.token_hex(2)}"
        self._journal_path: Path | None = None
        self._journal_file: Any = None
        self._journal_writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._segment_rows = 0
        self._segment_started = 0.0
        self._last_stats = 0.0
        self._unsealed: list[Path] = []  # our closed journals not sealed yet (a seal failed)
        self._late_markers: list[_Marker] = []
        self._row_error_logged = -ERROR_LOG_INTERVAL_S
        self._row_errors_unlogged = 0
        self._outage_since: float | None = None  # when journal writes started failing (disk full, ...)
        self._outage_rows = 0

        try:
            rows, files, corrupt = recover_journals(self.table_dir)
        except OSError as e:
            raise CaptureError(f"{self.journal_dir}: recovering journals failed: {e}") from None
        # Taken after recovery, so journals a dead process with the same id left were recovered too.
        self._lock = _GatewayLock(self.journal_dir / f"{self.gateway_id}.lock")
        if not self._lock.acquire(timeout=LOCK_WAIT_S):
            raise CaptureError(f"{self.journal_dir}: gateway id {self.gateway_id!r} is in use by a live process")
        self._stats.recovered_rows = rows
        self._stats.sealed_rows += rows
        self._stats.segments += files
        self._stats.corrupt_journals = corrupt
        if rows or corrupt:
            log.warning("capture %s: recovered %d rows from unsealed journals into %d files; %d corrupt",
                        self.table_dir, rows, files, corrupt)
        self._warm_up()
        self._thread = threading.Thread(target=self._run, name=f"shadow-capture-{table}", daemon=True)
        self._thread.start()
        _open_writers.add(self)

    def _warm_up(self) -> None:
        """Pay now, before the gateway accepts its first client, what the first batch would pay: lazy
        imports and caches of preparation and Arrow conversion (≈ 1 s on a loaded machine) and the
        journal file. Otherwise the first second of traffic sits in memory, where a kill -9 of the
        gateway and its capture process loses all of it."""
        if self._prepare is not None and self._default_prepare:  # a given prepare may have side effects
            with contextlib.suppress(Exception):
                self._to_batch([self._prepare(dict(_WARM_UP_ROW, gateway=self.gateway_id))])
        try:
            self._open_journal()
        except OSError as e:  # disk full at start: serve anyway; rows are counted until there is room
            self._journal_failed(e, 0)

    # -- event-loop side ---------------------------------------------------------------------------
    def submit(self, row: dict[str, Any]) -> bool:
        """Enqueue one row (no I/O). False, and counted as shed, when the queue is full (settings.max_queue
        rows or `max_queue_bytes` of bodies) or the writer is closed.

        Lock-free, for one producer thread (the event loop). Calls from several threads are safe for
        the rows, but the submitted/shed counters and the byte budget may then be approximate."""
        q = self._queue
        n = len(q)
        size = queued_body_bytes(row)
        if (n >= self._max_queue or self._closed
                or (n and self._bytes_in + size - self._bytes_out > self._max_queue_bytes)):
            self._stats.shed += 1
            return False
        self._bytes_in += size
        q.append(row)
        self._stats.submitted += 1
        if n == BATCH_ROWS:
            self._wake.set()
        return True

    def submit_waiting(self, row: dict[str, Any], poll_s: float = 0.005) -> bool:
        """`submit`, but wait for room instead of shedding: for a producer that can be slowed down
        (the capture process, which then stops reading its pipe). False only once closed."""
        size = queued_body_bytes(row)
        while not self._closed:
            n = len(self._queue)
            if n < self._max_queue and (not n or self._bytes_in + size - self._bytes_out <= self._max_queue_bytes):
                break
            time.sleep(poll_s)
        return self.submit(row)

    def update_counters(self, counters: Mapping[str, int]) -> None:
        """Set extra counters (e.g. mirror_shed) published with the stats; values replace earlier ones."""
        with self._extra_lock:
            self._stats.extra.update(counters)

    def stats(self) -> CaptureStats:
        with self._extra_lock:
            s = CaptureStats(**{**asdict(self._stats), "extra": dict(self._stats.extra)})
        s.queued = len(self._queue)
        return s

    def _worker_alive(self) -> bool:
        return self._thread.is_alive()

    def _new_control(self, kind: str) -> _Marker:
        return _Marker(kind)

    def _finish_close(self, deadline: float) -> None:
        self._thread.join(max(0.1, deadline - time.monotonic()))  # one budget for both waits
        if not self._thread.is_alive():
            self._lock.release(remove=True)
        _open_writers.discard(self)

    # -- writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                if self._cycle():
                    return
            except Exception:  # a bug must not silently stop capture: log it and keep the thread alive
                log.exception("capture %s: writer thread error", self.table_dir)
                time.sleep(BATCH_INTERVAL_S)

    def _cycle(self) -> bool:
        """One wake-up of the writer thread: drain, journal, seal if due. True when closed."""
        self._wake.wait(BATCH_INTERVAL_S)
        self._wake.clear()
        pending: list[dict[str, Any]] = []
        busy_since = batch_started = time.perf_counter()
        while True:
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            if not isinstance(item, _Marker):
                self._bytes_out += queued_body_bytes(item)
            if isinstance(item, _Marker):
                if item.kind == "close":
                    # Rows a racing submit() appended after the marker are kept too.
                    late_markers = []
                    for late in self._drain():
                        if isinstance(late, _Marker):
                            late_markers.append(late)
                        elif (prepared := self._prepare_row(late)) is not None:
                            pending.append(prepared)
                    for marker in late_markers:  # flushes that raced close(): answered once we are done
                        self._late_markers.append(marker)
                try:
                    self._write(pending)
                    pending = []
                    if item.kind in ("seal", "close"):
                        self._seal_current()
                except Exception as e:  # reported to the caller of flush/seal/close
                    item.error = e
                    pending = []
                if item.kind == "close":
                    self._publish_stats()
                    for marker in (*self._late_markers, item):
                        marker.error = marker.error or item.error
                        marker.done.set()
                    return True
                item.done.set()
                continue
            prepared = self._prepare_row(item)
            if prepared is not None:
                pending.append(prepared)
            now = time.perf_counter()
            if now - busy_since >= YIELD_AFTER_S:
                time.sleep(YIELD_SLEEP_S)  # let the event loop have the GIL (see YIELD_AFTER_S)
                busy_since = time.perf_counter()
            if len(pending) >= BATCH_ROWS or now - batch_started >= BATCH_INTERVAL_S:
                # Also inside the loop: a writer that is behind may never see an empty queue, and must
                # still journal, seal and publish on time.
                self._write_safely(pending)
                pending = []
                batch_started = time.perf_counter()
                self._housekeeping()
        self._write_safely(pending)
        self._housekeeping()
        return False

    def _housekeeping(self) -> None:
        """Seal the segment when it is due (rows or age); publish the stats when they are due."""
        if self._segment_rows and (
            self._segment_rows >= self.settings.segment_rows
            or time.monotonic() - self._segment_started >= self.settings.segment_seconds
        ):
            try:
                self._seal_current()
            except Exception:
                log.exception("capture %s: sealing failed; the journal stays and is retried", self.table_dir)
        if time.monotonic() - self._last_stats >= STATS_INTERVAL_S:
            self._publish_stats()

    def _drain(self) -> list[dict[str, Any] | _Marker]:
        items: list[dict[str, Any] | _Marker] = []
        while True:
            try:
                items.append(self._queue.popleft())
            except IndexError:
                return items

    def _prepare_row(self, row: dict[str, Any]) -> dict[str, Any] | None:
        try:
            if self._fill_gateway and not row.get("gateway"):
                row = {**row, "gateway": self.gateway_id}
            return self._prepare(row) if self._prepare is not None else row
        except Exception as e:
            self._stats.write_errors += 1
            self._row_error(f"dropped a row that could not be prepared: {e}")
            return None

    def _row_error(self, message: str) -> None:
        """Log a per-row problem at most once per ERROR_LOG_INTERVAL_S (a bad producer can send thousands)."""
        self._row_errors_unlogged += 1
        now = time.monotonic()
        if now - self._row_error_logged < ERROR_LOG_INTERVAL_S:
            return
        more = self._row_errors_unlogged - 1
        suffix = f" (and {more} more since the last report)" if more else ""
        log.error("capture %s: %s%s; write_errors=%d", self.table_dir, message, suffix, self._stats.write_errors)
        self._row_error_logged = now
        self._row_errors_unlogged = 0

    def _to_batch(self, rows: list[dict[str, Any]]) -> pa.RecordBatch:
        try:
            return pa.RecordBatch.from_pylist(rows, schema=self.schema)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            pass
        good = []
        for row in rows:  # find the bad rows, keep the others
            try:
                pa.RecordBatch.from_pylist([row], schema=self.schema)
                good.append(row)
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as e:
                self._stats.write_errors += 1
                self._row_error(f"dropped a row with a value that does not fit the schema: {e}")
        return pa.RecordBatch.from_pylist(good, schema=self.schema)

    def _write_safely(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._write(rows)
        except OSError:
            pass  # counted, and logged once per outage by _journal_failed
        except Exception as e:
            log.error("capture %s: journal write failed: %s", self.table_dir, e)

    def _open_journal(self) -> None:
        self._seq += 1
        name = f"{self.gateway_id}-{self._run_id}{self._seq:06d}{JOURNAL_SUFFIX}"
        path = self.journal_dir / name
        f = open(path, "xb")  # noqa: SIM115 — kept open for the segment's lifetime
        try:
            writer = pa.ipc.new_stream(f, self.schema)
            f.flush()
            os.fsync(f.fileno())
            _fsync_dir(self.journal_dir)
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)  # a disk-full retry every batch must not leave empty journals
            raise
        self._journal_path, self._journal_file, self._journal_writer = path, f, writer
        self._segment_rows = 0
        self._segment_started = time.monotonic()

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        batch = self._to_batch(rows)
        if batch.num_rows == 0:
            return
        try:
            if self._journal_writer is None:
                self._open_journal()
            assert self._journal_writer is not None
            if self._segment_rows == 0:
                self._segment_started = time.monotonic()  # a segment's age counts from its first row
            self._journal_writer.write_batch(batch)
            self._journal_file.flush()
            os.fsync(self._journal_file.fileno())
        except Exception as e:
            self._stats.write_errors += batch.num_rows
            if isinstance(e, OSError):
                self._journal_failed(e, batch.num_rows)
            # The journal may now end in a torn batch: seal what is readable, start afresh next time.
            with contextlib.suppress(Exception):
                self._seal_current()
            raise
        self._stats.journaled += batch.num_rows
        self._segment_rows += batch.num_rows
        if self._outage_since is not None:
            self._outage_over()

    def _journal_failed(self, error: OSError, rows: int) -> None:
        """Count rows a full disk (or another I/O error) dropped; log once per outage, not per batch."""
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            self._stats.disk_full_rows += rows
        self._outage_rows += rows
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.error("capture %s: cannot write the journal (%s); clients are still served, rows are counted "
                      "as dropped until the disk has room again", self.table_dir, error.strerror or error)

    def _outage_over(self) -> None:
        assert self._outage_since is not None
        seconds = time.monotonic() - self._outage_since
        log.warning("capture %s: writing again: %d rows were dropped during %.1f s without room on disk "
                    "(counters write_errors=%d, disk_full_rows=%d)", self.table_dir, self._outage_rows, seconds,
                    self._stats.write_errors, self._stats.disk_full_rows)
        self._outage_since = None
        self._outage_rows = 0
        self._publish_stats()  # the stats file could not be written meanwhile: say it now

    def _seal_current(self) -> None:
        if self._journal_writer is None or self._journal_path is None:
            self._seal_pending()
            return
        path = self._journal_path
        empty = self._segment_rows == 0  # no complete batch (a header, perhaps a torn batch): nothing to keep
        try:
            with contextlib.suppress(Exception):
                self._journal_writer.close()
            with contextlib.suppress(Exception):
                self._journal_file.flush()
                os.fsync(self._journal_file.fileno())
            with contextlib.suppress(Exception):
                self._journal_file.close()
        finally:
            self._journal_writer = None
            self._journal_file = None
            self._journal_path = None
            self._segment_rows = 0
        if empty:
            # Not queued behind a journal that cannot be sealed yet (disk full): one empty journal per
            # failed batch would pile up for the whole outage.
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            self._unsealed.append(path)
        self._seal_pending()

    def _seal_pending(self) -> None:
        """Seal our closed journals; one that fails (disk full, ...) stays on disk and is retried at the
        next seal, or recovered by the next process if we die first."""
        while self._unsealed:
            path = self._unsealed[0]
            rows, files, _problem = seal_journal(path, self.table_dir)  # raises: retried later
            self._unsealed.pop(0)
            if rows > 0:
                self._stats.sealed_rows += rows
                self._stats.segments += files
            elif rows < 0:
                self._stats.corrupt_journals += 1

    def _publish_stats(self) -> None:
        self._last_stats = time.monotonic()
        data = {"gateway": self.gateway_id, "table": self.table,
                "updated": datetime.now(UTC).isoformat(), **self.stats().as_dict()}
        tmp = self.stats_path.with_name(f".{self.stats_path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(data))
            os.replace(tmp, self.stats_path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()  # never leave a truncated file behind (disk full)
            if self._outage_since is None:  # during an outage its one line says enough
                log.warning("capture %s: cannot publish stats: %s", self.stats_path, e)
