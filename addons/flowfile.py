"""mitmproxy flow files for replay (shadow/replay/sources.py): one record's state dict, read the way
mitmproxy.io.FlowReader would but only the parts a replay uses, older formats through mitmproxy's
own migrations. The one place outside the proxy addons that needs mitmproxy, so it lives here."""

from __future__ import annotations

from typing import Any

from mitmproxy.io import compat, tnetstring
from mitmproxy.version import FLOW_FORMAT_VERSION


def _span(buf: bytes, pos: int) -> tuple[int, int, int, int]:
    """(payload start, payload end, type byte, next position) of the tnetstring at `pos`."""
    colon = buf.index(b":", pos, pos + 12)
    start = colon + 1
    end = start + int(buf[pos:colon])
    if end >= len(buf):
        raise ValueError("a value runs past the end of its record")
    return start, end, buf[end], end + 1


# The parts of a flow record a replay reads; the others (server_conn with its certificates,
# websocket messages, metadata, ...) are skipped over by their length prefix without parsing.
_FLOW_KEYS = frozenset({"type", "version", "request", "response", "error"})


def flow_state(record: bytes) -> dict[Any, Any]:
    """The state dict of one flow record, as mitmproxy.io.FlowReader would produce it before
    Flow.from_state (which would double the cost per flow for objects used once)."""
    view = memoryview(record)
    start, end, _, _ = _span(record, 0)
    state: dict[Any, Any] = {}
    pos = start
    while pos < end:
        ks, ke, _, pos = _span(record, pos)
        key = record[ks:ke].decode()
        vs, ve, vt, pos = _span(record, pos)
        if key in _FLOW_KEYS:
            state[key] = tnetstring.parse(vt, view[vs:ve])
        elif key == "client_conn" and vt == ord("}"):
            conn: dict[str, Any] = {}
            cpos = vs
            while cpos < ve:
                cks, cke, _, cpos = _span(record, cpos)
                cvs, cve, cvt, cpos = _span(record, cpos)
                if record[cks:cke] == b"peername":
                    conn["peername"] = tnetstring.parse(cvt, view[cvs:cve])
            state[key] = conn
    if state.get("version") != FLOW_FORMAT_VERSION:
        # An older (or newer) format: the full record through mitmproxy's own migrations.
        full = tnetstring.parse(ord("}"), view[start:end])
        if not isinstance(full, dict):
            raise ValueError("not a flow record")
        return compat.migrate_flow(full)
    return state
