"""Mirror dispatch: send copies of a served request to shadow services, fire-and-forget.

The client's request is sacred, so everything here is bounded and never awaited by the proxy:
`MirrorDispatcher.submit` only starts a task (or sheds the copy when `max_in_flight` copies are
already out), each copy is abandoned after `timeout_s`, and its outcome goes to a callback (the
gateway captures it). One pooled `aiohttp.ClientSession` carries every copy: on this machine it was
the only client that kept up with mitmdump (see /work/shared/reference/dataplane.md).

The decisions (is this request mirrored to that target? with which headers?) are pure functions
so they are tested without a network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from shadow.gateway.http1 import Http1Pool, ProtocolError


# Settings of the `shadow.mirroring` config section (built by shadow/gateway/config.py).
@dataclass(frozen=True)
class MirrorTargetSettings:
    role: Literal["candidate", "secondary"] = "candidate"
    allow_unsafe: bool = False  # mirror POST/PUT/PATCH/DELETE to this target


@dataclass(frozen=True)
class MirroringSettings:
    timeout_s: float = 5.0  # a mirror call slower than this is abandoned and captured as an error
    max_in_flight: int = 256  # mirror calls beyond this are shed and counted
    targets: dict[str, MirrorTargetSettings] = field(default_factory=dict)  # by mirror service name

    def target(self, name: str) -> MirrorTargetSettings:
        return self.targets.get(name, MirrorTargetSettings())


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Headers that describe one connection, not the request: never copied onto a mirror (RFC 9110 §7.6.1),
# plus the framing headers aiohttp computes itself for the body it actually sends.
_NOT_COPIED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
     "proxy-authenticate", "proxy-authorization", "content-length", "expect"}
)

SHADOW_MARKER = "X-Shadow-Request"
SHADOW_REQUEST_ID = "X-Shadow-Request-Id"

# Why a mirror copy was not sent (pure decision, see `mirror_skip_reason`).
SKIP_UNSAFE = "unsafe-method"
SKIP_BODY_TOO_LARGE = "body-too-large"


def mirror_skip_reason(method: str, body_size: int, *, max_body_size: int,
                       target: MirrorTargetSettings) -> str | None:
    """Why this request must not be copied to this target, or None when it may be.

    Traefik's `maxBodySize` (−1 = unlimited): a larger body is not mirrored, the main request is
    served in full. Unsafe methods are never mirrored unless the target opts in, so a shadow
    never repeats a side effect by accident.
    """
    if method.upper() in UNSAFE_METHODS and not target.allow_unsafe:
        return SKIP_UNSAFE
    if max_body_size >= 0 and body_size > max_body_size:
        return SKIP_BODY_TOO_LARGE
    return None


def mirror_headers(headers: Iterable[tuple[str, str]], request_id: str, *,
                   host: str | None = None, traceparent: str | None = None) -> list[tuple[str, str]]:
    """The headers a mirror copy carries: the client's end-to-end headers, the shadow marker and
    the shared request id. `host` replaces the Host header (None: keep the client's);
    `traceparent` replaces the W3C trace context (the copy's own client span)."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower in _NOT_COPIED or lower in ("x-shadow-request", "x-shadow-request-id"):
            continue
        if (lower == "host" and host is not None) or (lower == "traceparent" and traceparent is not None):
            continue
        out.append((name, value))
    if host is not None:
        out.insert(0, ("Host", host))
    if traceparent is not None:
        out.append(("traceparent", traceparent))
    out.append((SHADOW_MARKER, "1"))
    out.append((SHADOW_REQUEST_ID, request_id))
    return out


@dataclass(frozen=True)
class MirrorRequest:
    """One copy to send. `body` None means "send no body" (mirrorBody: false)."""

    target: str  # the mirror service's name
    role: str  # candidate | secondary
    request_id: str
    method: str
    url: str  # full URL, already percent-encoded as the client sent it
    upstream: str  # base URL of the server called
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    context: dict[str, Any] = field(default_factory=dict)  # opaque data for the result callback


@dataclass(frozen=True)
class MirrorResult:
    request: MirrorRequest
    ts_ns: int  # when the copy was sent
    latency_ms: float  # sent → response body complete (or → error)
    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    error: str | None  # transport error text; None when a response came


class RateLimitedLog:
    """Emit at most one line per `interval_s`; the next line says how many were suppressed."""

    def __init__(self, emit: Callable[[str], None], interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._emit, self._interval, self._clock = emit, interval_s, clock
        self._last: float | None = None
        self._suppressed = 0

    def __call__(self, message: str) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self._suppressed += 1
            return False
        if self._suppressed:
            message = f"{message} ({self._suppressed} similar lines suppressed)"
        self._last, self._suppressed = now, 0
        self._emit(message)
        return True


@dataclass
class MirrorCounters:
    sent: int = 0  # copies started
    completed: int = 0  # a response came (any status)
    shed: int = 0  # not started: max_in_flight copies were already out
    errors: int = 0  # transport errors other than timeouts
    timeouts: int = 0  # abandoned after timeout_s
    callback_errors: int = 0  # the result callback raised (e.g. capture failed)

    def as_dict(self) -> dict[str, int]:
        return {
            "mirror_sent": self.sent, "mirror_completed": self.completed, "mirror_shed": self.shed,
            "mirror_errors": self.errors, "mirror_timeouts": self.timeouts,
            "mirror_callback_errors": self.callback_errors,
        }


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MirrorDispatcher:
    """Fire-and-forget mirror calls over one pooled aiohttp session, bounded and timed out.

    Must be used from one event loop (the proxy's). `submit` never blocks and never raises.
    """

    def __init__(self, *, max_in_flight: int, timeout_s: float,
                 on_result: Callable[[MirrorResult], None],
                 log_warning: Callable[[str], None] | None = None, client: str = "http1") -> None:
        """`client`: "http1" (shadow.gateway.http1 for http:// targets) or "aiohttp" (every copy)."""
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self._on_result = on_result
        self.counters = MirrorCounters()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: Any = None  # aiohttp.ClientSession, created on first use inside the loop
        # http:// copies go through shadow.gateway.http1 (a fraction of aiohttp's CPU per copy, see
        # bench/mirror_client.py); https:// and client="aiohttp" through the aiohttp session.
        self._http1: Http1Pool | None = Http1Pool() if client == "http1" else None
        self._closed = False
        self._warn = RateLimitedLog(log_warning or (lambda _m: None))

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def reconfigure(self, *, max_in_flight: int, timeout_s: float) -> None:
        """New bounds apply to copies submitted from now on (a hot reload)."""
        self.max_in_flight, self.timeout_s = max_in_flight, timeout_s

    def submit(self, request: MirrorRequest) -> bool:
        """Start sending `request`; False when it was shed (counted, logged at a limited rate)."""
        if self._closed or len(self._tasks) >= self.max_in_flight:
            self.counters.shed += 1
            self._warn(f"mirror shed: {self.max_in_flight} copies already in flight "
                       f"(target {request.target}; {self.counters.shed} shed so far)")
            return False
        self.counters.sent += 1
        task = asyncio.get_running_loop().create_task(self._send(request), name=f"mirror {request.target}")
        # The loop keeps only weak references to tasks: hold them until done.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _ensure_session(self) -> Any:
        if self._session is None:
            import aiohttp

            # limit=0: the dispatcher bounds copies in flight itself (max_in_flight).
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # capture gets the bytes as sent; the writer decodes
                cookie_jar=aiohttp.DummyCookieJar(),  # copies must not share cookies
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                trust_env=False,
                requote_redirect_url=False,
                # asyncio.timeout in _send bounds each copy; aiohttp's own timers would be a second,
                # redundant timer per copy.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
            )
        return self._session

    async def _send(self, request: MirrorRequest) -> None:
        # mitmproxy runs tasks eagerly: yield once so nothing below runs inside the proxy's hook.
        await asyncio.sleep(0)
        import aiohttp
        from yarl import URL

        session = self._ensure_session()
        ts_ns = time.time_ns()
        started = time.perf_counter()
        status: int | None = None
        resp_headers: list[tuple[str, str]] = []
        body = b""
        error: str | None = None
        try:
            split = Http1Pool.split_http_url(request.url) if self._http1 is not None else None
            if split is not None:
                assert self._http1 is not None
                async with asyncio.timeout(self.timeout_s):
                    status, resp_headers, body = await self._http1.request(
                        request.method, split[0], split[1], split[2], list(request.headers), request.body)
                self.counters.completed += 1
                self._deliver(request, ts_ns, started, status, resp_headers, body, None)
                return
            async with asyncio.timeout(self.timeout_s):
                async with session.request(
                    request.method, URL(request.url, encoded=True), headers=list(request.headers),
                    data=request.body if request.body else None, allow_redirects=False,
                ) as response:
                    status = response.status
                    resp_headers = [(k.decode("latin-1"), v.decode("latin-1"))
                                    for k, v in response.raw_headers]
                    body = await response.read()
            self.counters.completed += 1
        except TimeoutError:
            status, error = None, f"timeout after {self.timeout_s:g}s"
            self.counters.timeouts += 1
        except asyncio.CancelledError:
            error = "cancelled: gateway shutting down"
            self.counters.errors += 1
            self._deliver(request, ts_ns, started, None, [], b"", error)
            raise
        except (aiohttp.ClientError, OSError, ValueError, ProtocolError) as exc:
            status, error = None, describe_error(exc)
            self.counters.errors += 1
        if error is not None:
            self._warn(f"mirror to {request.target} ({request.upstream}) failed: {error}")
        self._deliver(request, ts_ns, started, status, resp_headers, body, error)

    def _deliver(self, request: MirrorRequest, ts_ns: int, started: float, status: int | None,
                 headers: list[tuple[str, str]], body: bytes, error: str | None) -> None:
        result = MirrorResult(request, ts_ns, (time.perf_counter() - started) * 1000.0, status, headers,
                              body, error)
        try:
            self._on_result(result)
        except Exception as exc:  # capture must never break mirroring, nor the proxy
            self.counters.callback_errors += 1
            self._warn(f"mirror result handling failed: {describe_error(exc)}")

    async def aclose(self, grace_s: float = 2.0) -> None:
        """Let copies in flight finish for up to `grace_s`, cancel the rest, close the pool."""
        self._closed = True
        pending = set(self._tasks)
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._http1 is not None:
            await self._http1.close()
