"""One front addon that mitmproxy sees, dispatching to the gateway's concerns in order.

mitmproxy walks every addon object for every event (lifecycle and flow events, each followed by an
`update` event), looks each hook up by name, and builds the hook's arguments once per addon that
has it: with seven concern objects in the addon list that walk was most of what the gateway added
to mitmdump's CPU per request (bench/addon_dispatch.py). So mitmproxy gets one object, and the
concerns (config, auth, router, traffic, capture, mirror, telemetry: one module each, tested on
their own) are called from here, in the same order and with the same semantics:

- a concern's hook that raises is logged (like mitmproxy's "Addon error") and the next one runs;
- a hook that returns an awaitable (auth, a failover route) is awaited before the next one runs,
  as mitmproxy does; synchronous hooks stay synchronous (no coroutine per flow);
- `configure` errors (OptionsError: a rejected runtime `set`) propagate to mitmproxy unchanged.

Flow hooks (`request`, `response`, `error`) are bound per configuration: each concern says which
ones the active configuration needs (`flow_hooks(active)`), and a hook no concern needs is not an
attribute at all, so mitmproxy skips it for the price of one failed lookup. What a configuration
once needed stays bound (a reload never drops a hook that flows routed under the previous
configuration may still need).
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from addons.reload import ActiveConfig, GatewayState

logger = logging.getLogger(__name__)

FLOW_HOOKS = ("request", "responseheaders", "response", "error")
LIFECYCLE_HOOKS = ("load", "configure", "running", "done")
# Connection-level TLS hooks, called on every concern that has them (addons/tls.py), after mitmproxy's own.
TLS_HOOKS = ("tls_start_client", "tls_failed_client", "tls_start_server", "tls_failed_server")

Hook = Callable[..., Any]


class Concern(Protocol):
    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        """The flow hooks (of FLOW_HOOKS) this concern needs while `active` is in force."""
        ...


def _report(hook: Hook, exc: BaseException) -> None:
    owner = getattr(hook, "__self__", None)
    name = f"{type(owner).__name__}.{getattr(hook, '__name__', '?')}" if owner is not None else repr(hook)
    logger.error(f"Addon error in {name}: {exc}", exc_info=exc)


async def _run_all(hooks: Sequence[Hook], *args: Any) -> None:
    """Run `hooks` in order, awaiting any that returns an awaitable; one that raises is reported
    and the next one runs."""
    for hook in hooks:
        try:
            result = hook(*args)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception as exc:
            _report(hook, exc)


async def _finish(pending: Awaitable[Any], arg: Any, rest: Sequence[Hook], first: Hook) -> None:
    """Await the hook that went asynchronous, then run the remaining ones (awaiting as needed)."""
    try:
        await pending
    except Exception as exc:
        _report(first, exc)
    await _run_all(rest, arg)


def chain(hooks: Sequence[Hook]) -> Hook:
    """One callable running `hooks` in order, with mitmproxy's per-addon semantics (see the module
    docstring). A single hook is returned as it is: mitmproxy itself then isolates its errors."""
    if len(hooks) == 1:
        return hooks[0]
    ordered = tuple(hooks)

    def run(arg: Any) -> Awaitable[None] | None:
        for i, hook in enumerate(ordered):
            try:
                result = hook(arg)
            except Exception as exc:
                _report(hook, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                return _finish(result, arg, ordered[i + 1:], hook)
        return None

    return run


class GatewayAddon:
    """The gateway as one mitmproxy addon. `concerns` in hook order; each may define lifecycle hooks
    (load, configure, running, done) and flow hooks, and `flow_hooks(active)` for the latter."""

    name = "shadow_gateway"
    freeze_gc = True  # gc.freeze() once running (see `running`)

    def __init__(self, state: GatewayState, concerns: Sequence[object]) -> None:
        self.state = state
        self.concerns = tuple(concerns)
        self._bound: dict[str, list[object]] = {hook: [] for hook in FLOW_HOOKS}
        # Last listener: the concerns' own listeners (capture writer, telemetry exporter) ran first.
        state.on_activate.append(self._on_activate)

    # -- flow hooks, bound per configuration ---------------------------------------------------------
    def _on_activate(self, active: ActiveConfig, _previous: ActiveConfig | None) -> None:
        changed = False
        for concern in self.concerns:
            wanted = getattr(concern, "flow_hooks", None)
            hooks = wanted(active) if wanted is not None else frozenset(
                h for h in FLOW_HOOKS if callable(getattr(concern, h, None)))
            for hook in hooks:
                if concern not in self._bound[hook]:
                    self._bound[hook].append(concern)
                    changed = True
        if changed:
            self._bind()

    def _bind(self) -> None:
        for hook in FLOW_HOOKS:
            # Concern order, not the order in which configurations first needed them.
            owners = [c for c in self.concerns if c in self._bound[hook]]
            if owners:
                setattr(self, hook, chain([getattr(c, hook) for c in owners]))
            else:
                self.__dict__.pop(hook, None)

    def bound_hooks(self) -> dict[str, list[str]]:
        """Which concern classes each flow hook currently calls (diagnostics and tests)."""
        return {hook: [type(c).__name__ for c in self.concerns if c in owners]
                for hook, owners in self._bound.items() if owners}

    # -- lifecycle -------------------------------------------------------------------------------------
    def _lifecycle(self, hook: str) -> list[Hook]:
        return [h for c in self.concerns if callable(h := getattr(c, hook, None))]

    def load(self, loader: Any) -> None:
        for hook in self._lifecycle("load"):
            hook(loader)

    def configure(self, updated: set[str]) -> None:
        # Not isolated: an OptionsError must reach mitmproxy, which rolls the option back.
        for hook in self._lifecycle("configure"):
            hook(updated)

    async def running(self) -> None:
        await _run_all(self._lifecycle("running"))
        if self.freeze_gc:
            # Everything alive now (mitmproxy, the gateway's modules and pyarrow/numpy with capture
            # on, the configuration) lives as long as the process: move it out of the collector's
            # generations, so a full collection no longer re-scans it. Measured in mirror mode: full
            # collections fell from 2 × 85 ms to 1 × 10 ms per 10 s of load (≈ 40 µs per request).
            # A frozen object freed by reference counting is still freed; only cycles among startup
            # objects (none expected) would stay.
            gc.freeze()

    async def done(self) -> None:
        await _run_all(self._lifecycle("done"))

    # -- connection hooks: per client connection, synchronous ------------------------------------------------
    def client_connected(self, client: Any) -> None:
        for hook in self._lifecycle("client_connected"):
            hook(client)

    def client_disconnected(self, client: Any) -> None:
        for hook in self._lifecycle("client_disconnected"):
            hook(client)

    def tls_start_client(self, data: Any) -> None:
        for hook in self._lifecycle("tls_start_client"):
            hook(data)

    def tls_failed_client(self, data: Any) -> None:
        for hook in self._lifecycle("tls_failed_client"):
            hook(data)

    def tls_start_server(self, data: Any) -> None:
        for hook in self._lifecycle("tls_start_server"):
            hook(data)

    def tls_failed_server(self, data: Any) -> None:
        for hook in self._lifecycle("tls_failed_server"):
            hook(data)
