"""Large upstream answers go to the client as they arrive instead of being held whole.

mitmproxy holds a whole body in memory before the `response` hook: one 1 GB answer took the
gateway from 224 MB to 4.27 GB, and the client's first byte came after 3.6 s (issue 17). An answer
longer than `shadow.gateway.streamLargerThan` (or of unknown length: chunked, close-delimited) is
streamed instead; `PrefixStream` passes its chunks on and keeps only the prefix the capture stores
(`shadow.capture.maxBodyBytes`), and the row says `truncated` when the body was longer.

An answer of unknown length is held until it passes the limit (then flushed and streamed), so a
small chunked answer still reaches the client in one piece and is captured whole.
"""

from __future__ import annotations

from collections.abc import Callable


def should_stream(content_length: int | None, larger_than: int) -> bool:
    """Stream an answer with this Content-Length (None: unknown, chunked or close-delimited)?
    `larger_than` < 0: never."""
    if larger_than < 0:
        return False
    return content_length is None or content_length > larger_than


class PrefixStream:
    """mitmproxy's `response.stream` callable: returns the chunks to send for each chunk received
    (b"" marks the end). Holds at most `hold` bytes before streaming starts, keeps the first `keep`
    bytes for the capture, counts the whole size; `on_end(kept)` runs once the body has ended."""

    __slots__ = ("_held", "_passing", "hold", "keep", "kept", "on_end", "total")

    def __init__(self, *, hold: int, keep: int, on_end: Callable[[bytes], None] | None = None) -> None:
        self.hold, self.keep, self.on_end = hold, keep, on_end
        self.kept = bytearray()
        self.total = 0
        self._held = bytearray()
        self._passing = hold <= 0

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)

    def __call__(self, chunk: bytes) -> list[bytes]:
        if chunk:
            self.total += len(chunk)
            room = self.keep - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
            if self._passing:
                return [chunk]
            self._held += chunk
            if len(self._held) <= self.hold:
                return []
        # Past the limit, or the end of the body: what was held goes out now (never an empty chunk:
        # on a chunked HTTP/1.1 answer that would end the body).
        self._passing = True
        held, self._held = bytes(self._held), bytearray()
        if not chunk and self.on_end is not None:
            self.on_end(bytes(self.kept))
        return [held] if held else []
