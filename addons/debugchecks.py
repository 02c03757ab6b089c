"""Debug checks off: mitmproxy's type checks of message data, which it runs only while Python's
debug mode is on, are skipped once the gateway runs.

Every `Request` and `Response` mitmproxy builds has a `MessageData` whose `__post_init__` checks each
field's type, under `if __debug__:`: Python's `-O` removes it. For the Optional fields (content,
trailers, timestamp_end) mitmproxy's `check_option_type` tries each member of the union and raises
and catches a TypeError for the one that does not match: about 12 exceptions per proxied exchange,
each traceback a reference cycle left to the garbage collector (`bench/gc_stats.py`, and
docs/benchmarks.md for the instruction counts with and without). Once running, the gateway replaces
that `__post_init__` with a no-op, which is what `python -O` does for mitmproxy, and puts it back at
`done` or when `--set shadow_skip_debug_checks=false` asks for the checks.

A type error in a message the gateway builds then surfaces where the message is used rather than
where it is made; the in-process tests of the concerns (mitmproxy's test context, no `running`)
build their messages with the checks on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import http

logger = logging.getLogger(__name__)

OPTION = "shadow_skip_debug_checks"


def _unchecked(_data: object) -> None:
    """MessageData.__post_init__ without the debug-only type checks."""


class DebugChecksOff:
    def __init__(self) -> None:
        self.master: Any = None
        self.is_running = False
        self.saved: Callable[..., None] | None = None  # mitmproxy's __post_init__ while replaced

    def load(self, loader: Any) -> None:
        self.master = loader.master
        loader.add_option(OPTION, bool, True,
                          "Skip mitmproxy's debug-only type checks of every request and response it builds "
                          "(what python -O does) once the gateway runs.")

    def running(self) -> None:
        self.is_running = True
        self._apply()

    def configure(self, updated: set[str]) -> None:
        if OPTION in updated and self.is_running:
            self._apply()

    def done(self) -> None:
        self.is_running = False
        self._checks_on()

    def _apply(self) -> None:
        if self.master is not None and getattr(self.master.options, OPTION, False):
            self._checks_off()
        else:
            self._checks_on()

    def _checks_off(self) -> None:
        check = vars(http.MessageData).get("__post_init__")
        if self.saved is not None or check is None or check is _unchecked:
            return  # already off, or python -O (or a mitmproxy without the check): nothing to skip
        self.saved = check
        http.MessageData.__post_init__ = _unchecked  # type: ignore[method-assign]
        logger.info(f"mitmproxy's debug-only message type checks skipped ({OPTION})")

    def _checks_on(self) -> None:
        if self.saved is not None:
            http.MessageData.__post_init__ = self.saved  # type: ignore[method-assign]
            self.saved = None
