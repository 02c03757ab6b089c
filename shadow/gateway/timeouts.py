"""Client connection timeouts with Traefik's `respondingTimeouts` names and defaults
(`entryPoints.<name>.transport.respondingTimeouts`), as Go's http.Server applies them:

- `readTimeout` (60s): a request must be read whole — head and body — within this long of the
  connection opening, or of its first byte after an idle keep-alive wait;
- `idleTimeout` (180s): a keep-alive connection with no request in progress is closed after this
  long (also one that has sent nothing at all since it opened, past `readTimeout`);
- `writeTimeout` (0 = none): from the end of the request to the end of its answer.

mitmproxy's own inactivity timeout (`tcp_timeout`, 600 s) resets on every byte, so a client
trickling one header byte a minute, or thousands of idle connections, would stay open for ever
(issue 17). `ConnectionClock` is the state machine of one connection, fed by the addon
(addons/timeouts.py) with what mitmproxy tells it; `expired` says which limit a connection passed.
A connection upgraded to another protocol (WebSocket, 101) is no longer an HTTP exchange and is
left alone, as Go's server does with hijacked connections.
"""

from __future__ import annotations

from dataclasses import dataclass

READ_TIMEOUT_S = 60.0
WRITE_TIMEOUT_S = 0.0
IDLE_TIMEOUT_S = 180.0
# Activity this soon after an answer went out is the answer being written, not the client talking.
ANSWER_WRITE_SLACK_S = 1.0


@dataclass(frozen=True)
class RespondingTimeouts:
    read_s: float = READ_TIMEOUT_S  # 0: no limit
    write_s: float = WRITE_TIMEOUT_S
    idle_s: float = IDLE_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return self.read_s > 0 or self.write_s > 0 or self.idle_s > 0


READ, WAIT, IDLE, UPGRADED = "read", "wait", "idle", "upgraded"


class ConnectionClock:
    """One client connection: reading a request, waiting for answers, or idle between requests."""

    __slots__ = ("open_exchanges", "phase", "since", "timeouts")

    def __init__(self, timeouts: RespondingTimeouts, now: float) -> None:
        self.timeouts = timeouts
        self.phase = READ  # a new connection: its first request is being read
        self.since = now
        self.open_exchanges = 0  # requests read whose answer has not gone out (HTTP/2: several)

    def request_read(self, now: float) -> None:
        self.open_exchanges += 1
        if self.phase != UPGRADED:
            self.phase, self.since = WAIT, now

    def answered(self, now: float, *, upgraded: bool = False) -> None:
        self.open_exchanges = max(0, self.open_exchanges - 1)
        if upgraded:
            self.phase = UPGRADED
        elif self.phase != UPGRADED and self.open_exchanges == 0:
            self.phase, self.since = IDLE, now

    def expired(self, now: float, last_activity: float) -> str | None:
        """The limit this connection has passed ("readTimeout", "idleTimeout", "writeTimeout"), or
        None. `last_activity`: when the connection last saw any event (mitmproxy's watchdog)."""
        t = self.timeouts
        if self.phase == IDLE and last_activity > self.since + ANSWER_WRITE_SLACK_S:
            # The client started its next request: from now on it has readTimeout to finish it.
            self.phase, self.since = READ, last_activity
        if self.phase == READ and t.read_s > 0 and now - self.since > t.read_s:
            return "readTimeout"
        if self.phase == IDLE and t.idle_s > 0 and now - self.since > t.idle_s:
            return "idleTimeout"
        if self.phase == WAIT and t.write_s > 0 and now - self.since > t.write_s:
            return "writeTimeout"
        return None
