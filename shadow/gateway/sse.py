"""Server-sent events cut into whole events as a stream goes by (the AI gateway's usage filter, the MCP
gateway's answer reader). Pure: bytes in, bytes out; no I/O."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SseEventFilter", "event_data"]


class SseEventFilter:
    """Passes an SSE byte stream on event by event: each whole event (up to and with its blank line,
    `\\n\\n` or `\\r\\n\\r\\n`) goes through `rewrite`, which returns the bytes to send in its place (the
    event itself, another event, or b"" to drop it). Events go out as soon as their blank line arrives,
    so nothing waits for more than the rest of its own event; `feed(b"")` (end of stream) flushes an
    unterminated tail unchanged."""

    def __init__(self, rewrite: Callable[[bytes], bytes]) -> None:
        self._rewrite = rewrite
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            rest, self._pending = bytes(self._pending), bytearray()
            return rest
        self._pending += chunk
        out = bytearray()
        while True:
            end, size = self._event_end()
            if end < 0:
                break
            event = bytes(self._pending[:end + size])
            del self._pending[:end + size]
            out += self._rewrite(event)
        return bytes(out)

    def _event_end(self) -> tuple[int, int]:
        found = [(i, n) for i, n in ((self._pending.find(b"\n\n"), 2), (self._pending.find(b"\r\n\r\n"), 4))
                 if i >= 0]
        return min(found) if found else (-1, 0)


def event_data(event: bytes) -> bytes | None:
    """The event's data (its `data:` lines joined by newlines, as the SSE spec says), None without any."""
    lines = [line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
