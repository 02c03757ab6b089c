"""Multi-cluster addon: both sides of the bridge (shadow/multicluster/ holds the logic).

Child: on an uplink entry point (hub.uplinkEntryPoints, mutual TLS required by its tls options),
`GET /.hub/uplinks` answers the advertisement of the uplinks offered there; any plain-HTTP request
on such an entry point is refused (403): the parent only ever comes over mutual TLS.

Parent (hub.multiCluster): a task polls every child's advertisement each `pollInterval` (each call
bounded by `pollTimeout`, mutual TLS with the provider's CA and client certificate). When what the
children advertise changes, the configuration is rebuilt with the generated uplink services and
swapped in like a hot reload (addons/reload.py `apply_generated`): atomically, and a rebuild that
fails leaves the running configuration in force. A child that answers garbage or cannot be reached
keeps its last good advertisement for `gracePeriod`, then its uplinks are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState, ShadowConfig
from shadow.gateway.config import Service
from shadow.gateway.entrypoints import select_entry_point
from shadow.gateway.mirror import describe_error
from shadow.gateway.transport import ssl_context
from shadow.multicluster.advertisement import MAX_ADVERTISEMENT_BYTES, advertisement, parse_advertisement
from shadow.multicluster.services import ChildState, current_uplinks, uplink_services
from shadow.multicluster.settings import ADVERTISEMENT_PATH, Child, MultiCluster

logger = logging.getLogger(__name__)

JSON = {"Content-Type": "application/json", "Cache-Control": "no-store"}
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


class MultiClusterBridge:
    def __init__(self, state: GatewayState, config: ShadowConfig) -> None:
        self.state = state
        self.config = config
        self.children: dict[str, ChildState] = {}
        self._current: set[str] = set()  # children whose uplinks are in the configuration
        self._rejected: dict[str, Service] | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self.polls = self.poll_failures = self.updates = 0
        state.extra_counters.append(lambda: {"multicluster_polls": self.polls,
                                             "multicluster_poll_failures": self.poll_failures,
                                             "multicluster_updates": self.updates})

    # -- child: the advertisement -----------------------------------------------------------------------
    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        return frozenset({"request"}) if active.config.hub.uplink_entry_points else frozenset()

    def request(self, flow: http.HTTPFlow) -> None:
        active = self.state.active
        if active is None or flow.response or flow.error or not flow.live:
            return
        sockname = flow.client_conn.sockname
        entry_point = select_entry_point(active.config.entry_points, sockname[1] if sockname else None)
        if entry_point is None or not entry_point.uplink:
            return
        if not flow.client_conn.tls_established:
            flow.response = http.Response.make(403, b"uplink entry point: mutual TLS required\n", TEXT)
            return
        if flow.request.path.partition("?")[0] != ADVERTISEMENT_PATH:
            return
        if flow.request.method not in ("GET", "HEAD"):
            flow.response = http.Response.make(405, b"Method Not Allowed\n", {**TEXT, "Allow": "GET, HEAD"})
            return
        cluster = self.state.gateway_id or active.config.shadow.gateway_id or ""
        flow.response = http.Response.make(200, advertisement(cluster, active.config.hub.uplinks, entry_point.name),
                                           JSON)

    # -- parent: polling the children ------------------------------------------------------------------
    def running(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll_loop(), name="shadow multi-cluster poll")

    async def _poll_loop(self) -> None:
        while True:
            active = self.state.active
            provider = active.config.hub.multi_cluster if active is not None else None
            if provider is None:
                await asyncio.sleep(1.0)
                continue
            try:
                await self.poll_once(provider)
            except Exception as exc:  # keep polling whatever happened
                logger.warning(f"shadow gateway: multi-cluster: poll failed: {describe_error(exc)}")
            await asyncio.sleep(provider.poll_interval_s)

    async def poll_once(self, provider: MultiCluster) -> bool:
        """Poll every child once and apply what changed. True when a new configuration is in force."""
        results = await asyncio.gather(*(self._fetch(provider, child) for child in provider.children))
        now = time.monotonic()
        states: dict[str, ChildState] = {}
        for child, (uplinks, error) in zip(provider.children, results, strict=True):
            before = self.children.get(child.name, ChildState(child.name))
            after = before.polled(now, uplinks, error)
            self.polls += 1
            if uplinks is None:
                self.poll_failures += 1
                if error != before.error:
                    logger.warning(f"shadow gateway: multi-cluster: child {child.name} ({child.address}): {error}; "
                                   f"its last uplinks are kept for {provider.grace_period_s:g}s")
            elif before.error or before.last_ok is None:
                logger.info(f"shadow gateway: multi-cluster: child {child.name} advertises "
                            f"{', '.join(f'{u.name} (weight {u.weight})' for u in uplinks) or 'no uplinks'}")
            states[child.name] = after
        self.children = states
        current = current_uplinks(states.values(), now, provider.grace_period_s)
        for name in sorted(self._current - set(current)):
            logger.warning(f"shadow gateway: multi-cluster: child {name} dropped: no good answer for "
                           f"{provider.grace_period_s:g}s (grace period); its uplinks are removed")
        self._current = set(current)
        generated = uplink_services(provider, current)
        return await self._apply(generated)

    async def _apply(self, generated: Mapping[str, Service]) -> bool:
        active = self.state.active
        if active is None:
            return False
        current = {name: svc for name, svc in active.config.services.items() if name in generated}
        stale = [name for name in self.state.generated or {} if name not in generated]
        if current == dict(generated) and not stale:
            return False
        if await self.config.apply_generated(generated, quiet=generated == self._rejected):
            self.updates += 1
            self._rejected = None
            return True
        self._rejected = dict(generated)  # the same rejection is logged once, not at every poll
        return False

    async def _fetch(self, provider: MultiCluster, child: Child) -> tuple[Any, str]:
        """(the child's uplinks, "") or (None, what went wrong)."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        try:
            async with asyncio.timeout(provider.poll_timeout_s):
                async with self._session.get(child.address + ADVERTISEMENT_PATH, allow_redirects=False,
                                             ssl=ssl_context(provider.transport)) as resp:
                    body = await resp.content.read(MAX_ADVERTISEMENT_BYTES + 1)
                    if resp.status != 200:
                        return None, f"answered {resp.status} to {ADVERTISEMENT_PATH}"
            return parse_advertisement(body), ""
        except TimeoutError:
            return None, f"no answer within {provider.poll_timeout_s:g}s"
        except ValueError as exc:
            return None, f"bad advertisement: {exc}"
        except (aiohttp.ClientError, OSError) as exc:
            return None, describe_error(exc)

    async def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None
