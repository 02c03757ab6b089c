"""Which backend server owns each MCP session (Streamable HTTP's `Mcp-Session-Id`).

The server that answered `initialize` issued the id; every later request of the session must reach
it. The table maps the id to that server's URL (a URL, not a service name: a reload that renames or
reweights services keeps the session where it is while the server is still configured). Bounded:
entries idle longer than `idle_s` go, and past `max_entries` the least recently used go first. Pure
(injectable clock); call from one thread (the proxy's event loop).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["SessionEntry", "SessionTable"]

SESSION_HEADER = "mcp-session-id"


@dataclass
class SessionEntry:
    server: str  # the server's base URL
    service: str  # the leaf service it was found in when the session began (for display)
    last_used: float
    init_body: bytes | None = None  # the client's initialize request (a mirror's candidate gets the same)


class SessionTable:
    def __init__(self, *, idle_s: float = 3600.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, SessionEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, session_id: str, server: str, service: str, init_body: bytes | None = None) -> None:
        now = self.clock()
        self._entries[session_id] = SessionEntry(server, service, now, init_body)
        self._entries.move_to_end(session_id)
        self._expire(now)

    def lookup(self, session_id: str) -> SessionEntry | None:
        """The session's entry (its use refreshed), None when unknown or idle too long."""
        now = self.clock()
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if now - entry.last_used > self.idle_s:
            del self._entries[session_id]
            return None
        entry.last_used = now
        self._entries.move_to_end(session_id)
        return entry

    def end(self, session_id: str) -> None:
        self._entries.pop(session_id, None)

    def _expire(self, now: float) -> None:
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            if len(self._entries) > self.max_entries or now - oldest.last_used > self.idle_s:
                del self._entries[oldest_id]
            else:
                break
