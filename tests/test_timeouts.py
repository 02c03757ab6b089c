"""shadow.gateway.timeouts: which respondingTimeouts limit a client connection has passed."""

from __future__ import annotations

from shadow.gateway.timeouts import ConnectionClock, RespondingTimeouts

T = RespondingTimeouts(read_s=60, write_s=0, idle_s=180)


def test_a_connection_that_never_sends_a_whole_request_passes_read_timeout() -> None:
    clock = ConnectionClock(T, now=0)
    # Trickled bytes are activity, but never a whole request: the read limit still counts from the open.
    assert clock.expired(59, last_activity=58) is None
    assert clock.expired(61, last_activity=60.5) == "readTimeout"


def test_keep_alive_idle_then_a_slow_next_request() -> None:
    clock = ConnectionClock(T, now=0)
    clock.request_read(1)
    assert clock.expired(500, last_activity=1) is None  # waiting for the upstream: writeTimeout 0 = none
    clock.answered(500)
    assert clock.expired(500.5, last_activity=500.5) is None  # the answer being written
    assert clock.expired(679, last_activity=500.5) is None
    assert clock.expired(681, last_activity=500.5) == "idleTimeout"
    # Another connection: the client starts its next request after 100 s idle, then trickles it.
    clock = ConnectionClock(T, now=0)
    clock.request_read(1)
    clock.answered(2)
    assert clock.expired(102, last_activity=102) is None  # now reading, from 102
    assert clock.expired(161, last_activity=160) is None
    assert clock.expired(163, last_activity=162) == "readTimeout"


def test_write_timeout_and_http2_streams_and_upgrades() -> None:
    clock = ConnectionClock(RespondingTimeouts(read_s=60, write_s=10, idle_s=180), now=0)
    clock.request_read(1)
    clock.request_read(2)  # a second stream on the same connection
    clock.answered(5)
    assert clock.expired(8, last_activity=8) is None  # one exchange still open: not idle
    assert clock.expired(13, last_activity=8) == "writeTimeout"
    upgraded = ConnectionClock(T, now=0)
    upgraded.request_read(1)
    upgraded.answered(2, upgraded=True)  # 101: a WebSocket now, not HTTP exchanges
    assert upgraded.expired(10_000, last_activity=3) is None


def test_zero_disables_a_limit() -> None:
    clock = ConnectionClock(RespondingTimeouts(read_s=0, write_s=0, idle_s=0), now=0)
    assert not clock.timeouts.enabled and clock.expired(1e9, last_activity=0) is None
