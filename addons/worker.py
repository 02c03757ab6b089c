"""Worker mode: what one of `shadow gateway --workers N`'s processes needs from mitmproxy.

- SO_REUSEPORT: N mitmdump processes accept on one address and the kernel spreads the connections
  among them. mitmproxy has no option for it: its listeners are `asyncio.start_server(handler,
  host, port)` in `AsyncioServerInstance.listen` (mitmproxy/proxy/mode_servers.py), and they are
  opened before a `-s` script is loaded (scripts load asynchronously). So a worker is started as
  `python -m addons.worker MITMDUMP-ARGS...`: this module replaces that method by one passing
  `reuse_port=True` (TCP only; UDP modes keep mitmproxy's own listener), then runs mitmdump's own
  entry point with the arguments unchanged.
- `shadow_worker`: the worker's name (w0, w1, ...), appended to the gateway id, so each worker
  has its own capture writer, journal, Parquet file names and `gateway` column value.
- `shadow_config_origin`: the user's config file when `shadow_config` is the supervisor's
  snapshot of it (the validated bytes every worker loads, see shadow/workers/supervisor.py):
  errors name the user's file and relative paths resolve against its folder.

The supervisor (shadow/workers/) starts the workers this way and sets both options; a plain
`shadow gateway` (one process) does none of this.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

from mitmproxy.proxy import mode_servers

from addons.reload import GatewayState

logger = logging.getLogger(__name__)

WORKER_OPTION = "shadow_worker"
ORIGIN_OPTION = "shadow_config_origin"

_original_listen: Callable[..., Any] | None = None


async def _listen_reusing_port(self: Any, host: str, port: int) -> list[Any]:
    if self.mode.transport_protocol != "tcp" or port == 0:
        # UDP listeners, and a port 0 (mitmproxy then picks a free port per process, which workers
        # cannot share): mitmproxy's own way.
        assert _original_listen is not None
        return list(await _original_listen(self, host, port))
    return [await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True)]


def reuse_port(on: bool) -> None:
    """Open mitmproxy's TCP listeners with SO_REUSEPORT (on) or its own way (off)."""
    global _original_listen
    cls = mode_servers.AsyncioServerInstance
    if on and _original_listen is None:
        _original_listen = cls.listen
        cls.listen = _listen_reusing_port  # type: ignore[method-assign]
    elif not on and _original_listen is not None:
        cls.listen = _original_listen  # type: ignore[method-assign]
        _original_listen = None


class Worker:
    """Declares the worker options and hands them to the gateway's state."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.options: Any = None

    def load(self, loader: Any) -> None:
        self.options = loader.master.options
        loader.add_option(WORKER_OPTION, str, "",
                          "This worker's name, appended to the gateway id (set by `shadow gateway --workers N`).")
        loader.add_option(ORIGIN_OPTION, str, "",
                          "The user's config file when shadow_config is the workers' supervisor's snapshot of it.")

    def configure(self, updated: set[str]) -> None:
        if WORKER_OPTION in updated:
            self.state.worker = self.options.shadow_worker
        if ORIGIN_OPTION in updated:
            self.state.config_origin = self.options.shadow_config_origin or None


def main() -> None:
    """mitmdump with SO_REUSEPORT listeners: `python -m addons.worker MITMDUMP-ARGS...`."""
    from mitmproxy.tools.main import mitmdump

    reuse_port(True)
    sys.argv[0] = "mitmdump"
    sys.exit(mitmdump())


if __name__ == "__main__":
    main()
