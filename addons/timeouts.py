"""Timeouts addon: closes client connections past their entry point's `respondingTimeouts`
(readTimeout, idleTimeout, writeTimeout; shadow/gateway/timeouts.py says what each one bounds).

mitmproxy tells the addon when a connection opens and closes, when a request has been read whole
(`request`) and when its answer is done (`response`, `error`); a check every second asks each
connection's `ConnectionClock` whether it passed a limit, and closes it as mitmproxy's own
inactivity timeout does (its connection handler's task cancelled: the usual clean-up runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from mitmproxy import connection, ctx, http

from addons.reload import ActiveConfig, GatewayState
from shadow.gateway.entrypoints import select_entry_point
from shadow.gateway.mirror import RateLimitedLog
from shadow.gateway.timeouts import ConnectionClock, RespondingTimeouts

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


class ConnectionTimeouts:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.clocks: dict[str, ConnectionClock] = {}  # by mitmproxy's client connection id
        self.closed: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._warn = RateLimitedLog(logger.info)
        state.extra_counters.append(lambda: {f"connections_closed_{k}": n for k, n in self.closed.items()})

    def flow_hooks(self, _active: ActiveConfig) -> frozenset[str]:
        return frozenset({"request", "response", "error"})

    def _timeouts_for(self, client: connection.Client) -> RespondingTimeouts:
        active = self.state.active
        if active is None:
            return RespondingTimeouts()
        port = client.sockname[1] if client.sockname else None
        ep = select_entry_point(active.config.entry_points, port)
        return ep.timeouts if ep is not None else RespondingTimeouts()

    # -- connection hooks (forwarded by addons/front.py) -------------------------------------------------
    def client_connected(self, client: connection.Client) -> None:
        timeouts = self._timeouts_for(client)
        if timeouts.enabled:
            self.clocks[client.id] = ConnectionClock(timeouts, time.time())

    def client_disconnected(self, client: connection.Client) -> None:
        self.clocks.pop(client.id, None)

    # -- flow hooks ------------------------------------------------------------------------------------
    def request(self, flow: http.HTTPFlow) -> None:
        clock = self.clocks.get(flow.client_conn.id)
        if clock is not None:
            clock.request_read(time.time())

    def response(self, flow: http.HTTPFlow) -> None:
        clock = self.clocks.get(flow.client_conn.id)
        if clock is not None:
            upgraded = flow.response is not None and flow.response.status_code == 101
            clock.answered(time.time(), upgraded=upgraded)

    def error(self, flow: http.HTTPFlow) -> None:
        clock = self.clocks.get(flow.client_conn.id)
        if clock is not None and flow.response is None:
            clock.answered(time.time())

    # -- the check -------------------------------------------------------------------------------------
    async def running(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="shadow connection timeouts")

    async def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            try:
                self.check(time.time())
            except Exception as exc:  # the check must never stop for good
                logger.warning(f"shadow gateway: connection timeouts check failed: {exc!r}")

    def check(self, now: float) -> None:
        proxyserver: Any = ctx.master.addons.get("proxyserver")
        connections = getattr(proxyserver, "connections", {}) if proxyserver is not None else {}
        for client_id, clock in list(self.clocks.items()):
            handler = connections.get(client_id)
            if handler is None:
                continue
            which = clock.expired(now, handler.timeout_watchdog.last_activity)
            if which is None:
                continue
            io = handler.transports.get(handler.client)
            if io is None or io.handler is None:
                continue
            self.clocks.pop(client_id, None)
            self.closed[which] += 1
            self._warn(f"shadow gateway: closing {handler.client.peername[0]}:{handler.client.peername[1]}: "
                       f"{which} passed ({self.closed[which]} so far)", kind=which)
            io.handler.cancel(which)
