"""The telemetry addon's header handling on raw header lines (addons/telemetry.py), against what
mitmproxy's own multidict does with the same lines."""

from __future__ import annotations

import pytest
from mitmproxy import http

from addons.telemetry import with_header

CASES = [
    (),
    ((b"Host", b"h"),),
    ((b"Host", b"h"), (b"traceparent", b"old")),
    ((b"TraceParent", b"a"), (b"Host", b"h"), (b"traceparent", b"b"), (b"X-A", b"1")),
    ((b"tracestate", b"k=v"), (b"X-A", b"1")),
]


@pytest.mark.parametrize("fields", CASES)
def test_with_header_is_what_mitmproxy_setitem_does(fields: tuple[tuple[bytes, bytes], ...]) -> None:
    expected = http.Headers(fields)
    expected["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    present = any(k.lower() == b"traceparent" for k, _v in fields)
    got = with_header(fields, b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                      present=present)
    assert got == expected.fields


def test_a_failing_trace_leaves_the_mirror_copy_untraced() -> None:
    """trace_copy runs inside the Mirror concern: a telemetry fault is counted, and the copy goes out
    without a client span of its own instead of failing."""
    from mitmproxy.test import tflow

    from addons.reload import GatewayState
    from addons.telemetry import Telemetry, _FlowTrace

    telemetry = Telemetry(GatewayState())
    flow = tflow.tflow()
    assert telemetry.trace_copy(flow) is None and telemetry.errors == 0  # not traced: nothing to do
    telemetry._flows[flow] = _FlowTrace(None, 0, 1)  # type: ignore[arg-type]  # a broken trace
    assert telemetry.trace_copy(flow) is None and telemetry.errors == 1
