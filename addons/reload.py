"""Config addon: the `shadow_config` option, loading, validation and hot reload.

It owns `GatewayState`, what the gateway's addons share: the configuration in force (swapped
atomically, read once per request), the capture writer, the mirror dispatcher, and per-flow routing
context. The file is polled (mtime + size, then content hash) and re-read on SIGHUP; a valid change
applies to the next request without touching open connections, an invalid one is logged as one
line naming file, line and field and the running configuration stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from mitmproxy import exceptions, http
from mitmproxy.proxy import mode_specs

from shadow.errors import ConfigError
from shadow.gateway.config import GatewayConfig, Service
from shadow.gateway.routing import MirrorCounter, RoutePlan, ServerPicker, route_plans
from shadow.gateway.watch import ConfigFileWatcher
from shadow.gatewayapi.provider import load_gateway_config
from shadow.workers.snapshot import load_snapshot
from shadow.yamlconfig import parse_duration

if TYPE_CHECKING:
    from shadow.capture.writer import CaptureWriter
    from shadow.gateway.exchange import ExchangeRecord
    from shadow.gateway.mirror import MirrorDispatcher, MirrorRequest, MirrorResult

logger = logging.getLogger(__name__)

OPTION = "shadow_config"
RELOAD_INTERVAL_OPTION = "shadow_reload_interval"
LOG_CONNECTIONS_OPTION = "shadow_log_connections"


@dataclass(frozen=True)
class ActiveConfig:
    """One generation of the configuration with the routing state built for it."""

    config: GatewayConfig
    plans: dict[str, RoutePlan]  # by router name
    picker: ServerPicker
    mirror_counter: MirrorCounter
    generation: int


@dataclass
class RouteContext:
    """What the router decided for one flow; read by the mirror and capture addons."""

    request_id: str
    router: str | None
    service: str | None  # the service whose answer the client gets
    upstream: str | None  # base URL of the server picked (None: answered locally)
    client_host: str  # the Host the client sent
    active: ActiveConfig | None
    plan: RoutePlan | None = None  # None: answered locally (no router matched)
    path: str = ""  # path?query after middlewares, before a server's preserved path prefix
    sent_at: float = 0.0  # time.time() when routing finished and mitmproxy sends the request upstream
    # Traffic shifting (shadow.gateway.shifting.Decision) when the route is controlled; a weighted / HRW
    # choice makes the captured row mode=split with this role and client_key.
    decision: Any = None
    split_role: str | None = None  # primary | candidate; None: not split traffic
    client_key: str | None = None

    @property
    def mirrored(self) -> bool:
        """The route goes through a mirroring service (the primary row's mode is then `mirror`)."""
        return self.plan is not None and self.plan.mirroring is not None


class MirrorTracer(Protocol):
    """Gives each mirror copy its own client span (addons/telemetry.py): the Mirror concern asks for
    the copy's `traceparent` when it builds the copy and reports the copy's result."""

    def trace_copy(self, flow: http.HTTPFlow) -> tuple[str, object] | None:
        """(the copy's traceparent value, what `copy_done` needs back), or None: the flow is not traced."""
        ...

    def copy_done(self, result: MirrorResult, traced: object) -> None: ...


class SessionAffinity(Protocol):
    """Keeps a stateful protocol's session on the server that began it (addons/mcp.py: MCP's
    `Mcp-Session-Id`). Asked by the router before it picks a server."""

    def pin(self, flow: http.HTTPFlow, plan: RoutePlan) -> tuple[Any, Any] | http.Response | None:
        """(LoadBalancerService, Server) to send the flow to; a Response to answer with (the session's
        server is gone); None: route as usual."""
        ...


class SkipCopy(Exception):
    """Raised by a MirrorRewriter: this copy is not sent (counted as mirror_skipped_<reason>)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CopyRewrite(NamedTuple):
    """What a MirrorRewriter did to a copy."""

    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    columns: Callable[[MirrorResult], dict[str, object]] | None  # the copy's row's extra columns
    prepare: Callable[[MirrorRequest], Awaitable[MirrorRequest]] | None = None  # awaited just before sending


class MirrorRewriter(Protocol):
    """Rewrites a mirror copy for its target (addons/ai.py: another model's name and credentials;
    addons/mcp.py: the candidate's own MCP session), and says which extra columns the copy's row gets
    once its answer is in. May raise SkipCopy."""

    def rewrite_copy(self, flow: http.HTTPFlow, target: str, headers: tuple[tuple[str, str], ...],
                     body: bytes | None) -> CopyRewrite | None:
        """The rewritten copy, or None: not this rewriter's flow."""
        ...


@dataclass
class GatewayState:
    active: ActiveConfig | None = None
    config_path: str | None = None
    gateway_id: str = ""
    worker: str = ""  # this process's name among `shadow gateway --workers N` (addons/worker.py), or ""
    config_origin: str | None = None  # the user's file when config_path is the workers' snapshot of it
    capture: CaptureWriter | None = None
    dispatcher: MirrorDispatcher | None = None
    # Weak: a flow's context lives exactly as long as mitmproxy keeps the flow.
    routes: weakref.WeakKeyDictionary[http.HTTPFlow, RouteContext] = field(
        default_factory=weakref.WeakKeyDictionary)
    records: weakref.WeakKeyDictionary[http.HTTPFlow, ExchangeRecord] = field(
        default_factory=weakref.WeakKeyDictionary)
    reloads: int = 0
    reload_failures: int = 0
    traffic: Any = None  # shadow.gateway.shifting.TrafficControl of the active configuration (addons/traffic.py)
    extra_counters: list[Callable[[], dict[str, int]]] = field(default_factory=list)
    # Called with (new, previous) after a configuration was swapped in.
    on_activate: list[Callable[[ActiveConfig, ActiveConfig | None], None]] = field(default_factory=list)
    mirror_tracer: MirrorTracer | None = None  # addons/telemetry.py when it exports spans
    mirror_rewriters: list[MirrorRewriter] = field(default_factory=list)  # addons/ai.py, addons/mcp.py: first answer wins
    affinity: SessionAffinity | None = None  # addons/mcp.py when a route has an mcp middleware
    # The multi-cluster provider's services (addons/multicluster.py), merged into every load of the file.
    generated: Mapping[str, Service] | None = None

    def counters(self) -> dict[str, int]:
        out = {"config_reloads": self.reloads, "config_reload_failures": self.reload_failures}
        if self.dispatcher is not None:
            out.update(self.dispatcher.counters_dict())
        for source in self.extra_counters:
            out.update(source())
        return out


def after_hooks(callback: Callable[[http.HTTPFlow], None], flow: http.HTTPFlow) -> None:
    """Run `callback(flow)` once the current hooks are done, i.e. after mitmproxy has handed the
    client its response: shadow work (capture rows, mirror copies) never delays the client's answer.
    Callbacks run in the order they were scheduled. Without a running loop (unit tests): now."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        callback(flow)
        return
    loop.call_soon(callback, flow)


def build_active(config: GatewayConfig, previous: ActiveConfig | None) -> ActiveConfig:
    """Routing state for `config`. Server rotation and mirror percent counters carry over from the
    previous generation, so a reload does not restart every mirror's 1-in-N sequence."""
    plans = route_plans(config)
    if previous is None:
        return ActiveConfig(config, plans, ServerPicker(), MirrorCounter(), 1)
    previous.picker.carry_over(config)
    previous.mirror_counter.carry_over(config)
    return ActiveConfig(config, plans, previous.picker, previous.mirror_counter, previous.generation + 1)


async def off_the_loop[T](fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a daemon thread of its own, awaited. Not asyncio.to_thread: the loop's executor
    threads are joined when the loop closes, so a reload still parsing held up the gateway's exit.
    Cancelling the wait leaves the parse to finish (bounded by shadow.yamlconfig's limits) unheard."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(outcome: tuple[bool, Any]) -> None:
        if done.done():  # cancelled meanwhile: nobody is waiting
            return
        ok, value = outcome
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # delivered to the awaiting task, raised there
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(deliver, outcome)

    threading.Thread(target=run, name="shadow config reload", daemon=True).start()
    return await done


def reverse_targets(options: Any) -> list[str]:
    """The targets of mitmdump's `--mode reverse:URL` options (distinct, in order)."""
    out: list[str] = []
    for spec in getattr(options, "mode", None) or ():
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue
        if isinstance(mode, mode_specs.ReverseMode):
            host, port = mode.address
            target = f"{mode.scheme}://{host}:{port}"
            if target not in out:
                out.append(target)
    return out


class ShadowConfig:
    """Declares `shadow_config`, loads it in `configure`, watches it while running."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.options: Any = None
        self.watcher: ConfigFileWatcher | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._sighup = False
        self.reload_interval = 1.0

    def load(self, loader: Any) -> None:
        # First: add_option may apply a deferred --set value and call configure right away.
        self.options = loader.master.options
        loader.add_option(OPTION, str, "", "The gateway's YAML configuration file (Traefik v3 http: "
                          "routers/services/middlewares plus a shadow: section).")
        # A string: mitmproxy cannot parse float options from the command line.
        loader.add_option(RELOAD_INTERVAL_OPTION, str, "1s",
                          "How often the shadow_config file is checked for changes (e.g. 1s, 500ms); "
                          "0 disables polling (SIGHUP still reloads).")
        loader.add_option(LOG_CONNECTIONS_OPTION, bool, True,
                          "Log every client/server connect and disconnect (mitmproxy's info lines).")
        # Reverse mode must connect lazily (an eager connection to a down reverse target drops the
        # client before any hook), and routing needs the client's Host, which reverse mode would
        # replace. Both are requirements of the gateway, not preferences.
        self.options.update_known(connection_strategy="lazy", keep_host_header=True)

    def configure(self, updated: set[str]) -> None:
        if RELOAD_INTERVAL_OPTION in updated:
            try:
                self.reload_interval = parse_duration(self.options.shadow_reload_interval)
            except (ValueError, ConfigError) as exc:
                self._reject(f"{RELOAD_INTERVAL_OPTION}: {exc}")
        if LOG_CONNECTIONS_OPTION in updated:
            logging.getLogger("mitmproxy.proxy.server").setLevel(
                logging.NOTSET if self.options.shadow_log_connections else logging.WARNING)
        if OPTION not in updated:
            return
        path = self.options.shadow_config
        if not path:
            self._reject(f"{OPTION} is not set: pass --set {OPTION}=FILE")
            return
        if (path == self.state.config_path and self.watcher is not None and self.state.active is not None
                and not self.watcher.poll(force=True)):
            return  # the same file, unchanged (e.g. mitmproxy rolling back a rejected value)
        try:
            config = self._load(path)  # a Traefik-style file or Gateway API manifests
        except ConfigError as exc:
            self._reject(str(exc))
            return
        watcher = ConfigFileWatcher(path)
        watcher.prime()
        self.watcher = watcher
        self.state.config_path = path
        self._activate(config)

    def _load(self, path: str, generated: Mapping[str, Service] | None = None) -> GatewayConfig:
        """The file at `path` with the multi-cluster services (`generated`, default: those in force)."""
        generated = self.state.generated if generated is None else generated
        origin = self.state.config_origin
        if origin:  # a worker: `path` is the supervisor's snapshot of the user's file
            return load_snapshot(path, origin, generated=generated)
        return load_gateway_config(path, generated=generated)

    def _reject(self, message: str) -> None:
        if self.state.active is None:
            # Startup. mitmproxy prints a traceback for any exception out of a script's configure;
            # an error log line is the user's one clear line, and mitmdump's ErrorCheck then exits 1.
            logger.error(f"shadow gateway: {message}")
        else:
            # A runtime `set shadow_config=...`: mitmproxy rolls the option back, the config stays.
            raise exceptions.OptionsError(message)

    def _activate(self, config: GatewayConfig) -> None:
        previous = self.state.active
        active = build_active(config, previous)
        self.state.active = active  # one reference swap: each request reads it once
        for listener in self.state.on_activate:
            try:
                listener(active, previous)
            except Exception as exc:
                if previous is None:
                    # Startup (e.g. a capture folder that cannot be created): one line, and
                    # mitmdump's ErrorCheck exits 1 rather than serving without capture.
                    logger.error(f"shadow gateway: {exc}")
                else:  # a listener must not undo a valid reload
                    logger.warning(f"shadow gateway: applying the new configuration: {exc}")
        if previous is None:
            logger.info(f"shadow gateway: loaded {config.source}: {config.summary()}")
            targets = reverse_targets(self.options)
            if targets:  # said once: a user passing --mode reverse:URL may expect that URL to serve
                logger.info(f"shadow gateway: the routers of {config.source} decide where every request goes "
                            f"(no match: 404); the --mode reverse target ({', '.join(targets)}) is not used")
        else:
            self.state.reloads += 1
            logger.info(f"shadow gateway: reloaded {config.source}: {config.summary()}")

    async def reload_if_changed(self, *, force: bool = False) -> bool:
        """Check the file; load and apply a changed one. True when a new configuration is in force."""
        watcher, path = self.watcher, self.state.config_path
        if watcher is None or path is None or not watcher.poll(force=force):
            return False
        try:
            config = await off_the_loop(self._load, path)  # YAML parsing off the event loop
        except ConfigError as exc:
            self.state.reload_failures += 1
            logger.error(f"shadow gateway: config reload rejected, previous configuration stays: {exc}")
            return False
        self._activate(config)
        return True

    async def apply_generated(self, generated: Mapping[str, Service], *, quiet: bool = False) -> bool:
        """The file loaded again with the multi-cluster provider's new services and swapped in; a load
        that fails is logged and changes nothing (the previous services stay in force)."""
        path = self.state.config_path
        if path is None:
            return False
        try:
            config = await off_the_loop(partial(self._load, generated=generated), path)
        except ConfigError as exc:
            self.state.reload_failures += 1
            if not quiet:
                logger.error(f"shadow gateway: multi-cluster update rejected, previous configuration stays: {exc}")
            return False
        self.state.generated = generated
        self._activate(config)
        return True

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.1)  # wakes often enough to answer SIGHUP promptly; polls per interval
            interval = self.reload_interval
            force = self._sighup
            if not force and (interval <= 0 or loop.time() - last < interval):
                continue
            self._sighup, last = False, loop.time()
            try:
                await self.reload_if_changed(force=force)
            except Exception as exc:  # keep watching whatever happened
                logger.warning(f"shadow gateway: checking {self.state.config_path}: {exc}")

    def running(self) -> None:
        if self._poll_task is None:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll(), name="shadow config watch")
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        self._sighup = True

    def done(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            self._poll_task = None
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
