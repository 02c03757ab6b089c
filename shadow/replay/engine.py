"""The replay engine: schedules recorded requests, sends each to every target, captures the rows.

Scheduling is by absolute deadlines from one start instant (`t0 + offset`), never by sleeping
"a bit" between sends, so timer jitter and slow sends do not accumulate: `--rate` offsets are
n / rate, `--speed` offsets are the recorded gaps divided by the factor, and the default sends as
fast as a concurrency limit allows. All rows of one source request are submitted together once
every target answered (or failed), so an interrupted request leaves no half-pair behind and a
resumed run can redo it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from shadow.capture.endpoints import template_path
from shadow.gateway.http1 import MAX_IDLE_PER_HOST, Http1Pool, ProtocolError
from shadow.replay.filters import EntryFilter, Rewrite
from shadow.replay.resume import ReplayState, SourceProgress, exchange_id, request_id
from shadow.replay.sources import Headers, Source, SourceEntry, SourceError

# Real traffic repeats paths: template each distinct one once.
_endpoint = functools.lru_cache(maxsize=65_536)(template_path)


class RowSink(Protocol):
    """What the engine writes to: shadow.capture.writer.CaptureWriter, or a list in unit tests."""

    def submit(self, row: dict[str, Any]) -> bool: ...

    def flush(self) -> None: ...


class ListSink:
    """Keeps rows in memory (tests, benchmarks without capture)."""

    def __init__(self, keep: bool = True) -> None:
        self.rows: list[dict[str, Any]] = []
        self.keep = keep
        self.count = 0

    def submit(self, row: dict[str, Any]) -> bool:
        self.count += 1
        if self.keep:
            self.rows.append(row)
        return True

    def flush(self) -> None:
        pass


@dataclass(frozen=True)
class Target:
    role: str  # primary | candidate | secondary
    name: str  # the `service` column
    url: str | None  # base URL; None: answer with the recorded response

    @property
    def recorded(self) -> bool:
        return self.url is None


@dataclass(frozen=True)
class ReplayConfig:
    targets: tuple[Target, ...]
    entry_filter: EntryFilter = field(default_factory=EntryFilter)
    rewrite: Rewrite = field(default_factory=Rewrite)
    concurrency: int = 16  # source requests in flight (each goes to every target)
    rate: float | None = None  # source requests per second
    speed: float | None = None  # recorded timing divided by this factor
    limit: int | None = None  # at most this many eligible source requests (across loops)
    loops: int = 1
    sequential: bool = False  # one request at a time, targets in order
    timeout_s: float = 10.0  # per call
    grace_s: float | None = None  # after a stop, in-flight calls get this long (default: timeout_s)
    verify_tls: bool = True
    checkpoint_s: float = 2.0
    record_schedule: bool = False  # keep (scheduled, actual) send offsets, for tests/bench


@dataclass
class TargetStats:
    calls: int = 0
    errors: int = 0  # transport errors (no response)
    server_errors: int = 0  # 5xx responses


@dataclass
class ReplayStats:
    requests: int = 0  # source requests replayed to completion
    skipped_unsafe: int = 0
    skipped_filtered: int = 0
    already_done: int = 0  # skipped on --resume
    cancelled: int = 0  # in flight when a stop cut them off (not captured; a resume redoes them)
    shed: int = 0  # rows the capture writer refused
    targets: dict[str, TargetStats] = field(default_factory=dict)
    source_errors: list[SourceError] = field(default_factory=list)
    interrupted: bool = False
    checkpoint_error: str | None = None  # the last failed checkpoint (the replay went on)
    started: float = 0.0
    ended: float = 0.0
    max_lag_s: float = 0.0  # worst lateness of a send against its schedule
    schedule: list[tuple[float, float]] = field(default_factory=list)  # (scheduled, actual) offsets

    @property
    def duration_s(self) -> float:
        return max(self.ended - self.started, 1e-9)

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.targets.values())


@dataclass(slots=True)
class Job:
    source: Source
    identity: str
    loop: int
    entry: SourceEntry
    request_id: str
    endpoint: str  # templated recorded path, the same on every row of the request
    captured_roles: frozenset[str] = frozenset()  # already in the capture: not sent again


class Progress(Protocol):
    def update(self, n: int = 1) -> object: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...


class RecordedClock:
    """Send offsets (seconds from the replay's start) that follow the recorded timing / speed.

    Offsets come from each entry's distance to the first entry of its segment (one source in one
    loop), not from summed gaps, so rounding never drifts. They never go backwards: a recording
    stored in completion order (mitmdump -w writes a flow when its response ends) has starts
    slightly out of order, and such an entry is sent right after the previous one. A new segment
    (next source, next loop) starts where the previous one ended."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.segment: object = None
        self.base = 0.0
        self.first_ts = 0
        self.last = 0.0

    def offset(self, segment: object, ts_ns: int | None) -> float:
        if ts_ns is None:
            return self.last
        if segment != self.segment:
            self.segment, self.base, self.first_ts = segment, self.last, ts_ns
        self.last = max(self.last, self.base + max(0, ts_ns - self.first_ts) / 1e9 / self.speed)
        return self.last


# aiohttp sends "Content-Length: 0" on a bodiless request of any method but these; Http1Pool adds
# it itself for POST/PUT/PATCH, so the engine adds it for the others (DELETE, custom methods).
_NO_EMPTY_LENGTH = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "POST", "PUT", "PATCH"})


def _http1_safe(method: str, headers: Headers) -> bool:
    """Whether Http1Pool can write this request as aiohttp would: its head is latin-1 text without
    line breaks (aiohttp refuses or re-encodes the rest, so those stay on aiohttp)."""
    try:
        text = "".join([method, *(k + v for k, v in headers)])
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return "\r" not in text and "\n" not in text


class _TargetURL:
    def __init__(self, base: str) -> None:
        u = urlsplit(base)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"{base!r} is not an http(s) URL")
        self.scheme, self.netloc, self.prefix = u.scheme, u.netloc, u.path.rstrip("/")
        self.base = f"{u.scheme}://{u.netloc}{self.prefix}"
        self.origin_len = len(self.base) - len(self.prefix)  # url[origin_len:] is path?query
        # Plain-http targets go through Http1Pool: (host to connect to, port). None: aiohttp sends
        # (https, or a URL it should reject per request with an error row as it always did).
        self.http1: tuple[str, int] | None = None
        if u.scheme == "http":
            with contextlib.suppress(ValueError):
                if u.hostname:
                    self.http1 = (u.hostname, u.port or 80)

    def url(self, path: str, query: str) -> str:
        return f"{self.base}{path}" + (f"?{query}" if query else "")


class ReplayEngine:
    def __init__(self, config: ReplayConfig, sources: list[Source], sink: RowSink, *,
                 state: ReplayState | None = None, captured: Mapping[str, frozenset[str]] | None = None,
                 progress: Progress | None = None,
                 checkpoint: Callable[[dict[str, Any]], None] | None = None,
                 backlog: Callable[[], int] | None = None, max_backlog: int = 5_000) -> None:
        if not config.targets:
            raise ValueError("no targets")
        self.config = config
        self.sources = sources
        self.sink = sink
        self.state = state or ReplayState.new()
        # Roles the capture already holds per request id (on --resume): a request is done when it
        # holds every role; one with some roles (a kill split its rows) is finished for the rest.
        self.captured = captured or {}
        self._roles = frozenset(t.role for t in config.targets)
        self.progress = progress
        self.checkpoint = checkpoint
        # A replay is not live traffic: when the writer falls behind, wait for it rather than shed.
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.stats = ReplayStats(targets={t.role: TargetStats() for t in config.targets})
        self._urls = {t.role: _TargetURL(t.url) for t in config.targets if t.url is not None}
        self._live = [t for t in config.targets if t.url is not None]
        self._stop_requested = 0
        self._wake: asyncio.Event | None = None  # a slot was freed, or a stop requested
        self._stopped: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._http1: Http1Pool | None = None
        self._checkpointing: asyncio.Future[None] | None = None

    # --- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        """First call: launch nothing more, let in-flight requests finish (up to grace_s).
        Second call: cancel what is still in flight."""
        self._stop_requested += 1
        self.stats.interrupted = True
        if self._wake is not None and self._stopped is not None:
            self._wake.set()
            self._stopped.set()
        if self._stop_requested > 1:
            for task in list(self._tasks):
                task.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop_requested > 0

    # --- plan -----------------------------------------------------------------------------------

    def jobs(self) -> Iterator[Job]:
        """Eligible, not yet done source requests in replay order (reads sources lazily)."""
        cfg = self.config
        eligible = 0
        identities = [s.identity for s in self.sources]
        for src, ident in zip(self.sources, identities, strict=True):
            self.state.sources.setdefault(ident, SourceProgress(path=str(src.path), identity=ident))
        failed: set[str] = set()
        for loop in range(cfg.loops):
            for src, ident in zip(self.sources, identities, strict=True):
                entries = src.entries()
                while True:
                    try:
                        entry = next(entries)
                    except StopIteration:
                        break
                    except (SourceError, OSError) as e:
                        if ident not in failed:  # reported once, not once per loop
                            failed.add(ident)
                            if isinstance(e, OSError):
                                e = SourceError(src.path, f"cannot read: {e.strerror or e}")
                            self.stats.source_errors.append(e)
                        break
                    reason = cfg.entry_filter.reject(entry)
                    if reason is not None:
                        if reason == "unsafe":
                            self.stats.skipped_unsafe += 1
                        else:
                            self.stats.skipped_filtered += 1
                        if self.progress is not None:
                            self.progress.update(1)
                        continue
                    if cfg.limit is not None and eligible >= cfg.limit:
                        return
                    eligible += 1
                    rid = request_id(self.state.run_id, ident, entry.index, loop)
                    have = self.captured.get(rid, frozenset())
                    if self._roles <= have or self.state.is_done(ident, loop, entry.index):
                        self.stats.already_done += 1
                        if self.progress is not None:
                            self.progress.update(1)
                        continue
                    yield Job(src, ident, loop, entry, rid, _endpoint(entry.path), have)

    # --- run ------------------------------------------------------------------------------------

    async def run(self) -> ReplayStats:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        if self.stopping:
            self._stopped.set()
        concurrency = 1 if cfg.sequential else max(1, cfg.concurrency)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300,
                                         ssl=cfg.verify_tls)
        self.stats.started = time.monotonic()
        ticker = asyncio.create_task(self._ticker())
        try:
            async with aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # capture the bytes as sent; the writer decodes
                # Send what was recorded, nothing the client library would add on its own.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),  # never carry cookies between requests
                timeout=aiohttp.ClientTimeout(total=cfg.timeout_s),
            ) as session:
                self._session = session
                # Up to `concurrency` sends to one host at once: all their connections stay warm for the next.
                self._http1 = Http1Pool(max_idle_per_host=max(MAX_IDLE_PER_HOST, concurrency))
                try:
                    await self._launch_all(loop, concurrency)
                    await self._drain(loop)
                finally:
                    await self._http1.close()
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            if self._checkpointing is not None:
                await asyncio.gather(self._checkpointing, return_exceptions=True)
            self.stats.ended = time.monotonic()
            self._refresh_progress()
        return self.stats

    async def _launch_all(self, loop: asyncio.AbstractEventLoop, concurrency: int) -> None:
        cfg = self.config
        assert self._wake is not None
        t0 = loop.time()
        launched = 0  # sends so far (jobs skipped as done do not count)
        clock = RecordedClock(cfg.speed) if cfg.speed else None
        for job in self.jobs():
            if self.stopping:
                break
            offset: float | None = None
            if cfg.rate:
                offset = launched / cfg.rate
            elif clock is not None:
                offset = clock.offset((job.identity, job.loop), job.entry.ts_ns)
            if offset is not None:
                delay = t0 + offset - loop.time()
                if delay > 0:
                    await self._sleep(delay)
                    if self.stopping:
                        break
            if self.backlog is not None and launched % 64 == 0:
                while self.backlog() > self.max_backlog and not self.stopping:
                    await self._sleep(0.02)
            while len(self._tasks) >= concurrency and not self.stopping:
                self._wake.clear()
                await self._wake.wait()
            if self.stopping:
                break
            actual = loop.time() - t0
            if offset is not None:
                self.stats.max_lag_s = max(self.stats.max_lag_s, actual - offset)
                if cfg.record_schedule:
                    self.stats.schedule.append((offset, actual))
            launched += 1  # noqa: SIM113 -- counts sends, not jobs
            task = asyncio.create_task(self._run_job(job))
            self._tasks.add(task)
            task.add_done_callback(self._job_done)

    async def _sleep(self, delay: float) -> None:
        """Sleep `delay` seconds, or less if a stop is requested."""
        assert self._stopped is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), delay)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._wake is not None:
            self._wake.set()
        if task.cancelled():
            self.stats.cancelled += 1

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        grace = self.config.grace_s if self.config.grace_s is not None else self.config.timeout_s
        stop_seen_at: float | None = None
        while self._tasks:
            if self.stopping and stop_seen_at is None:
                stop_seen_at = loop.time()
            if stop_seen_at is not None and loop.time() - stop_seen_at >= grace:
                for task in list(self._tasks):
                    task.cancel()
            await asyncio.wait(set(self._tasks), timeout=0.1)
        await asyncio.sleep(0)  # let done-callbacks of the last tasks run

    async def _ticker(self) -> None:
        next_checkpoint = time.monotonic() + self.config.checkpoint_s
        while True:
            await asyncio.sleep(0.25)
            self._refresh_progress()
            if self.checkpoint is not None and time.monotonic() >= next_checkpoint:
                snapshot = self.state.to_json()  # before the flush: all of it is then durable
                # Shielded and remembered: a checkpoint still writing when the run ends must finish
                # before the caller writes the final state, or a stale one could land last.
                self._checkpointing = asyncio.ensure_future(asyncio.to_thread(self.checkpoint, snapshot))
                try:
                    await asyncio.shield(self._checkpointing)
                except Exception as e:  # the capture is still the record of what is done
                    self.stats.checkpoint_error = str(e)
                next_checkpoint = time.monotonic() + self.config.checkpoint_s

    def _refresh_progress(self) -> None:
        if self.progress is None:
            return
        errs = " ".join(f"{role}={t.errors}" for role, t in self.stats.targets.items() if t.errors)
        skipped = self.stats.skipped_unsafe + self.stats.skipped_filtered
        self.progress.set_postfix_str(f"errors {errs or 0}, skipped {skipped}", refresh=False)

    # --- one request ------------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        targets, live = self.config.targets, self._live
        if job.captured_roles:
            targets = tuple(t for t in targets if t.role not in job.captured_roles)
            live = [t for t in targets if t.url is not None]
        if self.config.sequential:
            rows = [await self._call(t, job) for t in targets]
        else:
            rows = [self._count(t, self._recorded_row(t, job)) for t in targets if t.url is None]
            if len(live) == 1:  # the common case: no extra tasks per request
                rows.append(await self._call(live[0], job))
            elif live:
                rows.extend(await asyncio.gather(*(self._call(t, job) for t in live)))
        for row in rows:
            if not self.sink.submit(row):
                self.stats.shed += 1
        self.state.mark(job.identity, job.loop, job.entry.index)
        self.stats.requests += 1
        if self.progress is not None:
            self.progress.update(1)

    async def _call(self, target: Target, job: Job) -> dict[str, Any]:
        if target.url is None:
            return self._count(target, self._recorded_row(target, job))
        return self._count(target, await self._send(target, self._urls[target.role], job))

    def _count(self, target: Target, row: dict[str, Any]) -> dict[str, Any]:
        stats = self.stats.targets[target.role]
        stats.calls += 1
        if row["error"] is not None:
            stats.errors += 1
        elif row["status"] is not None and row["status"] >= 500:
            stats.server_errors += 1
        return row

    def _recorded_row(self, target: Target, job: Job) -> dict[str, Any]:
        e = job.entry
        rec = e.recorded
        return {
            "request_id": job.request_id,
            "exchange_id": exchange_id(job.request_id, target.role),
            "role": target.role,
            "mode": "replay",
            "service": rec.service if rec and rec.service else target.name,
            "router": None,
            "endpoint": job.endpoint,
            # The replay's clock, not the recording's: every row of a replay lands in the same time
            # window (and partition), which is what time-windowed analysis expects.
            "ts": time.time_ns(),
            "latency_ms": rec.latency_ms if rec else None,
            "method": e.method,
            "url": f"{e.scheme}://{e.host}{e.target}",
            "host": e.host,
            "path": e.path,
            "query": e.query,
            "upstream": (rec.upstream if rec else None) or "recorded",
            "req_headers": e.headers,
            "req_body": e.body,
            "status": rec.status if rec else None,
            "resp_headers": rec.headers if rec else [],
            "resp_body": rec.body if rec else None,
            "error": (rec.error if rec else "no recorded response") if not (rec and rec.status) else None,
            "client_key": e.client_key,
            "recorded": True,  # the analyzers do not compare this latency with live ones
        }

    async def _send(self, target: Target, base: _TargetURL, job: Job) -> dict[str, Any]:
        assert self._session is not None
        e = job.entry
        rw = self.config.rewrite
        path = rw.path(e.path)
        url = base.url(path, e.query)
        headers = rw.headers(e, base.netloc)
        ts = time.time_ns()
        started = time.perf_counter()
        status: int | None = None
        resp_headers: Headers = []
        body: bytes | None = None
        error: str | None = None
        try:
            target_path = url[base.origin_len:]  # path?query as sent
            if (base.http1 is not None and self._http1 is not None and target_path.startswith("/")
                    and _http1_safe(e.method, headers)):
                sent = headers if e.body or e.method in _NO_EMPTY_LENGTH else [*headers, ("Content-Length", "0")]
                # One deadline for connect + exchange, as aiohttp's ClientTimeout(total=...) was.
                async with asyncio.timeout(self.config.timeout_s):
                    status, resp_headers, body = await self._http1.request(
                        e.method, base.http1[0], base.http1[1], target_path, sent, e.body or None)
            else:
                async with self._session.request(
                    e.method, URL(url, encoded=True), headers=headers, data=e.body or None,
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    status = resp.status
                    resp_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        except TimeoutError:
            error = f"timeout after {self.config.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except (OSError, ProtocolError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency_ms = (time.perf_counter() - started) * 1000.0
        # One literal per row (resp_content_type, body_hash, body_size: the capture writer's job).
        return {
            "request_id": job.request_id,
            "exchange_id": exchange_id(job.request_id, target.role),
            "role": target.role,
            "mode": "replay",
            "service": target.name,
            "router": None,
            "endpoint": job.endpoint,
            "ts": ts,
            "latency_ms": latency_ms,
            "method": e.method,
            "url": url,
            "host": e.host,
            "path": path,
            "query": e.query,
            "upstream": base.base,
            "req_headers": headers,
            "req_body": e.body,
            "status": status,
            "resp_headers": resp_headers,
            "resp_body": body,
            "error": error,
            "client_key": e.client_key,
        }
