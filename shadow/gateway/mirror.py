"""Mirror dispatch: send copies of a served request to shadow services, fire-and-forget.

The client's request is sacred, so everything here is bounded and never awaited by the proxy:
`MirrorDispatcher.submit` only starts a task (or sheds the copy when `max_in_flight` copies are
already out), each copy is abandoned after `timeout_s`, and its outcome goes to a callback (the
gateway captures it). One pooled `aiohttp.ClientSession` carries every copy: on this machine it was
the only client that kept up with mitmdump (see /work/shared/reference/dataplane.md).

The decisions (is this request mirrored to that target? with which headers? is it re-sent to the
primary?) are pure functions so they are tested without a network.

Zero-config noise evidence (`ResendSettings`, `resend_skip_reason`, `ResendBudget`): by default a
few safe (GET/HEAD) requests of each mirrored endpoint are sent to the primary a second time,
through the same dispatcher, marked like every copy and captured as role=secondary, exactly as a
configured `role: secondary` mirror would be. Where the primary's own second answer differs too,
the analysis knows a field is noise (analyzers/noise.py) without the user configuring anything.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
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
class ResendSettings:
    """shadow.mirroring.resend: re-send a share of the safe mirrored requests to the primary and
    capture the second answer as role=secondary (noise evidence with zero set-up)."""

    enabled: bool = True
    # Of each endpoint's eligible requests, by Traefik's mirror-percent rule: 5 re-sends the 1st,
    # 21st, 41st... so an endpoint has evidence from its first request on.
    percent: int = 5
    per_endpoint: int = 50  # at most this many re-sends per endpoint per window; the rest are counted as capped
    window_s: float = 60.0


@dataclass(frozen=True)
class MirroringSettings:
    timeout_s: float = 5.0  # a mirror call slower than this is abandoned and captured as an error
    max_in_flight: int = 256  # mirror calls beyond this are shed and counted
    # Bytes the copies in flight may hold at once: each reserves its request body plus the response
    # body it may read (the capture's maxBodyBytes); a copy that would pass this is shed and counted.
    max_bytes_in_flight: int = 256 * 1024 * 1024
    targets: dict[str, MirrorTargetSettings] = field(default_factory=dict)  # by mirror service name
    resend: ResendSettings = field(default_factory=ResendSettings)

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


def percent_due(seen: int, sent: int, percent: int, denominator: int = 100) -> bool:
    """Traefik's mirror-percent rule: the `seen`-th request gets a copy when fewer than
    seen × percent / denominator have had one, so copies are evenly spaced and the first always
    gets one (integers only: a Gateway API fraction is exact)."""
    return sent * denominator < seen * percent


SAFE_RESEND_METHODS = frozenset({"GET", "HEAD"})

# Why a request is not re-sent to the primary (pure decision, see `resend_skip_reason`).
RESEND_DISABLED = "disabled"
RESEND_UNSAFE = "unsafe-method"
RESEND_SECONDARY_CONFIGURED = "secondary-configured"
RESEND_NOT_MIRRORED = "not-mirrored"
RESEND_PRIMARY_FAILED = "primary-failed"


def resend_skip_reason(method: str, *, settings: ResendSettings, secondary_configured: bool,
                       candidate_copies: int, primary_answered: bool = True) -> str | None:
    """Why this mirrored request must not be re-sent to the primary, or None when it may be.

    Only GET and HEAD: a second call must never repeat a side effect. Never when the route's
    mirroring already has a `role: secondary` mirror (that one is the evidence), and only when a
    candidate copy actually went out (a secondary answer is evidence only beside a candidate's).
    Never when the primary did not answer: a failing primary gets no extra load.
    """
    if not settings.enabled or settings.percent <= 0:
        return RESEND_DISABLED
    if method.upper() not in SAFE_RESEND_METHODS:
        return RESEND_UNSAFE
    if secondary_configured:
        return RESEND_SECONDARY_CONFIGURED
    if candidate_copies <= 0:
        return RESEND_NOT_MIRRORED
    if not primary_answered:
        return RESEND_PRIMARY_FAILED
    return None


RESEND = "resend"
RESEND_NOT_DUE = "not-due"
RESEND_CAPPED = "capped"


# Re-sends allowed ahead of the overall share, so the first requests of the first endpoints all get
# evidence; beyond it the overall share holds even when every path is new (untemplated ids, slugs).
RESEND_BURST = 20


class ResendBudget:
    """Which eligible requests are re-sent: per endpoint, `percent` of them evenly spaced (the first
    always), and at most `per_endpoint` per `window_s`; overall, never more than `percent` % of all
    eligible requests plus RESEND_BURST. Remembers at most `max_endpoints` endpoints (the least
    recently seen are forgotten first), so untemplated paths cannot grow memory."""

    def __init__(self, settings: ResendSettings, *, max_endpoints: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.max_endpoints = max_endpoints
        self._clock = clock
        self._seen = self._sent = 0  # over every endpoint
        # endpoint -> [eligible requests seen, re-sends due, window start, re-sends in this window]
        self._state: OrderedDict[str, list[float]] = OrderedDict()

    def reconfigure(self, settings: ResendSettings) -> None:
        self.settings = settings

    def __len__(self) -> int:
        return len(self._state)

    def take(self, endpoint: str) -> str:
        """RESEND, RESEND_NOT_DUE or RESEND_CAPPED for one eligible request of `endpoint`."""
        now = self._clock()
        state = self._state.pop(endpoint, None)
        if state is None:
            state = [0, 0, now, 0]
            while len(self._state) >= self.max_endpoints:
                self._state.popitem(last=False)
        self._state[endpoint] = state
        state[0] += 1
        self._seen += 1
        if not percent_due(int(state[0]), int(state[1]), self.settings.percent):
            return RESEND_NOT_DUE
        state[1] += 1  # a capped re-send still counts as done, so spacing stays even after the window
        if now - state[2] >= self.settings.window_s:
            state[2], state[3] = now, 0
        over_share = self._sent * 100 >= self._seen * self.settings.percent + RESEND_BURST * 100
        if state[3] >= self.settings.per_endpoint or over_share:
            return RESEND_CAPPED
        state[3] += 1
        self._sent += 1
        return RESEND


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


PREPARE_KEY = "prepare"  # MirrorRequest.context: async (request) -> request, awaited just before sending


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
    ssl: Any = True  # aiohttp's ssl= for an https copy (shadow.gateway.transport.client_ssl)
    path_prefix: str = ""  # the server's preserved path prefix (left out of the captured path)


@dataclass(frozen=True)
class MirrorResult:
    request: MirrorRequest
    ts_ns: int  # when the copy was sent
    latency_ms: float  # sent → response body complete (or → error)
    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    error: str | None  # transport error text; None when a response came
    truncated: bool = False  # the body is a prefix: reading stopped at the response body limit


class RateLimitedLog:
    """Emit at most one line per `interval_s` for each kind of warning; the next line of a kind says
    how many of that kind were suppressed. Kinds are limited separately, so a flood of one kind
    (mirror failures) never hides another (sheds). `kind` defaults to the message's text before its
    first ':' (or the whole message); at most MAX_KINDS kinds are tracked, later ones share "other"."""

    MAX_KINDS = 64

    def __init__(self, emit: Callable[[str], None], interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._emit, self._interval, self._clock = emit, interval_s, clock
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}  # suppressed since the kind's last emitted line
        self.suppressed: dict[str, int] = {}  # suppressed in all, by kind

    def counters(self, prefix: str = "warnings_suppressed_") -> dict[str, int]:
        """Lines suppressed so far, one counter per kind (names with `-` and spaces as `_`)."""
        return {prefix + kind.replace("-", "_").replace(" ", "_"): n for kind, n in self.suppressed.items()}

    def __call__(self, message: str, kind: str | None = None) -> bool:
        if kind is None:
            kind = message.partition(":")[0]
        if kind not in self._last and len(self._last) >= self.MAX_KINDS:
            kind = "other"
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._pending[kind] = self._pending.get(kind, 0) + 1
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return False
        pending = self._pending.pop(kind, 0)
        if pending:
            message = f"{message} ({pending} more lines of this kind suppressed)"
        self._last[kind] = now
        self._emit(message)
        return True


@dataclass
class MirrorCounters:
    sent: int = 0  # copies started
    completed: int = 0  # a response came (any status)
    shed: int = 0  # not started: max_in_flight copies were already out
    shed_bytes: int = 0  # not started: the copies in flight already held max_bytes_in_flight
    truncated: int = 0  # response body cut at the limit (the rest not read: connection closed)
    errors: int = 0  # transport errors other than timeouts
    timeouts: int = 0  # abandoned after timeout_s
    callback_errors: int = 0  # the result callback raised (e.g. capture failed)

    def as_dict(self) -> dict[str, int]:
        return {
            "mirror_sent": self.sent, "mirror_completed": self.completed, "mirror_shed": self.shed,
            "mirror_errors": self.errors, "mirror_timeouts": self.timeouts,
            "mirror_callback_errors": self.callback_errors, "mirror_shed_bytes": self.shed_bytes,
            "mirror_truncated": self.truncated,
        }


async def _read_prefix(response: Any, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of an aiohttp response's body (< 0: all): (body, cut short)."""
    if limit < 0:
        return await response.read(), False
    out = bytearray()
    while len(out) <= limit:
        chunk = await response.content.readany()
        if not chunk:
            return bytes(out), False
        out += chunk
    return bytes(out[:limit]), True


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MirrorDispatcher:
    """Fire-and-forget mirror calls over one pooled aiohttp session, bounded and timed out.

    Must be used from one event loop (the proxy's). `submit` never blocks and never raises.
    """

    def __init__(self, *, max_in_flight: int, timeout_s: float,
                 on_result: Callable[[MirrorResult], None],
                 log_warning: Callable[[str], None] | None = None, client: str = "http1",
                 max_body_bytes: int = -1, max_bytes_in_flight: int = -1) -> None:
        """`client`: "http1" (shadow.gateway.http1 for http:// targets) or "aiohttp" (every copy).
        `max_body_bytes`: of a copy's response body, read at most this much (< 0: all) — the rest
        is never read, so a mirror answering 1 GB or an endless chunked body costs this much.
        `max_bytes_in_flight`: the copies out hold at most this many body bytes (< 0: no bound)."""
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self.max_bytes_in_flight = max_bytes_in_flight
        self.bytes_in_flight = 0  # reserved by the copies out (request body + response body limit)
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

    def counters_dict(self) -> dict[str, int]:
        """The counters and, per kind of warning, the lines the rate limit suppressed."""
        return {**self.counters.as_dict(), **self._warn.counters()}

    def reconfigure(self, *, max_in_flight: int, timeout_s: float, max_body_bytes: int | None = None,
                    max_bytes_in_flight: int | None = None) -> None:
        """New bounds apply to copies submitted from now on (a hot reload)."""
        self.max_in_flight, self.timeout_s = max_in_flight, timeout_s
        if max_body_bytes is not None:
            self.max_body_bytes = max_body_bytes
        if max_bytes_in_flight is not None:
            self.max_bytes_in_flight = max_bytes_in_flight

    def submit(self, request: MirrorRequest) -> bool:
        """Start sending `request`; False when it was shed (counted, logged at a limited rate)."""
        if self._closed or len(self._tasks) >= self.max_in_flight:
            self.counters.shed += 1
            self._warn(f"mirror shed: {self.max_in_flight} copies already in flight "
                       f"(target {request.target}; {self.counters.shed} shed so far)", kind="mirror-shed")
            return False
        reserved = len(request.body or b"") + max(self.max_body_bytes, 0)
        if 0 <= self.max_bytes_in_flight < self.bytes_in_flight + reserved and self._tasks:
            # (A copy alone is never shed for its size: maxBodySize is the route's limit for that.)
            self.counters.shed_bytes += 1
            self._warn(f"mirror shed: copies in flight already hold {self.bytes_in_flight} of "
                       f"{self.max_bytes_in_flight} bytes (target {request.target}; "
                       f"{self.counters.shed_bytes} shed so far)", kind="mirror-shed-bytes")
            return False
        self.counters.sent += 1
        self.bytes_in_flight += reserved
        task = asyncio.get_running_loop().create_task(self._send(request), name=f"mirror {request.target}")
        # The loop keeps only weak references to tasks: hold them until done.
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self.bytes_in_flight -= reserved

        task.add_done_callback(finished)
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
        truncated = False
        error: str | None = None
        try:
            prepare = request.context.get(PREPARE_KEY)
            if prepare is not None:  # e.g. the candidate's own MCP session, opened on first use
                async with asyncio.timeout(self.timeout_s):
                    request = await prepare(request)
                ts_ns, started = time.time_ns(), time.perf_counter()  # the copy's latency is its own call's
            split = Http1Pool.split_http_url(request.url) if self._http1 is not None else None
            if split is not None:
                assert self._http1 is not None
                async with asyncio.timeout(self.timeout_s):
                    status, resp_headers, body, truncated = await self._http1.request_bounded(
                        request.method, split[0], split[1], split[2], list(request.headers), request.body,
                        max_body=self.max_body_bytes)
                self.counters.completed += 1
                self._deliver(request, ts_ns, started, status, resp_headers, body, None, truncated)
                return
            async with asyncio.timeout(self.timeout_s):
                async with session.request(
                    request.method, URL(request.url, encoded=True), headers=list(request.headers),
                    data=request.body if request.body else None, allow_redirects=False, ssl=request.ssl,
                ) as response:
                    status = response.status
                    resp_headers = [(k.decode("latin-1"), v.decode("latin-1"))
                                    for k, v in response.raw_headers]
                    body, truncated = await _read_prefix(response, self.max_body_bytes)
                    if truncated:
                        response.close()  # the rest is never read: the connection is not reused
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
            self._warn(f"mirror to {request.target} ({request.upstream}) failed: {error}", kind="mirror-failed")
        self._deliver(request, ts_ns, started, status, resp_headers, body, error, truncated)

    def _deliver(self, request: MirrorRequest, ts_ns: int, started: float, status: int | None,
                 headers: list[tuple[str, str]], body: bytes, error: str | None, truncated: bool = False) -> None:
        if truncated:
            self.counters.truncated += 1
        result = MirrorResult(request, ts_ns, (time.perf_counter() - started) * 1000.0, status, headers,
                              body, error, truncated)
        try:
            self._on_result(result)
        except Exception as exc:  # capture must never break mirroring, nor the proxy
            self.counters.callback_errors += 1
            self._warn(f"mirror result handling failed: {describe_error(exc)}", kind="mirror-result")

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
