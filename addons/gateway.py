"""The shadow gateway: the one script to pass to mitmdump.

    mitmdump -s addons/gateway.py --set shadow_config=gateway.yaml --mode reverse:http://monolith:8080

(or `shadow gateway gateway.yaml`, which adds the listen address and quiet output). The reverse
target is only a default: every request is routed by the configuration's routers. The gateway
sets `connection_strategy=lazy` and `keep_host_header=true`, which it needs.

One concern per module, in hook order: configuration (load, validate, hot reload), auth, routing,
traffic shifting, capture of the primary exchange, mirroring (scheduled after the primary answered;
copies captured when they complete), telemetry. mitmproxy sees one addon (addons/front.py), which
calls the concerns in that order: mitmproxy's per-addon dispatch on every event cost more than the
concerns' own work. For the same reason, mitmproxy's own built-in addons that are inert under the
options in force leave the event chain once the gateway runs (addons/lean.py), and mitmproxy's
debug-only type checks of every message it builds are skipped (addons/debugchecks.py).
"""

from __future__ import annotations

from addons.ai import AiGateway
from addons.auth import Auth
from addons.capture import Capture
from addons.debugchecks import DebugChecksOff
from addons.errorpages import ErrorPages
from addons.framing import Framing
from addons.front import GatewayAddon
from addons.lean import LeanDispatch
from addons.mcp import McpGateway, McpMetadata
from addons.mirror import Mirror
from addons.multicluster import MultiClusterBridge
from addons.reload import GatewayState, ShadowConfig
from addons.retry import Retrying
from addons.router import Router
from addons.streaming import Streaming
from addons.telemetry import Telemetry
from addons.timeouts import ConnectionTimeouts
from addons.tls import Tls
from addons.traffic import Traffic
from addons.worker import Worker

state = GatewayState()
config = ShadowConfig(state)

gateway = GatewayAddon(state, [
    Worker(state),  # lifecycle only, first: the worker's name and config origin before anything loads
    Tls(state),  # the tls: section's certificates and options for mitmproxy's TLS, upstream mTLS (its load first)
    config,
    ConnectionTimeouts(state),  # Traefik's respondingTimeouts: readTimeout, idleTimeout, writeTimeout
    Framing(state),  # first on requests: two Host headers get 400 before auth or routing reads either
    McpMetadata(state),  # before auth: RFC 9728 metadata is public; 401s on MCP routes point at it
    MultiClusterBridge(state, config),  # a child's advertisement (before auth and routing), a parent's polls
    Auth(state),  # before routing: a failed check answers 401 and nothing is forwarded
    Router(state),
    Traffic(state),  # after routing (health, breaker, failover, cookies), before capture
    McpGateway(state),  # MCP traffic: JSON-RPC checks, policies, session affinity (pinned by the router), streaming
    AiGateway(state),  # model traffic: token limits, governance, credentials, streamed usage (before a retry sends)
    Retrying(state),  # Traefik's retry middleware: routes with one are sent (and re-sent) here
    ErrorPages(state),  # Traefik's errors middleware: answers in its ranges replaced by the page
    Streaming(state),  # after AI (which streams its own): long answers go out as they arrive; before capture
    Capture(state),
    Mirror(state),
    Telemetry(state),  # last: its `request` hook sees the routed request (traceparent set upstream)
    LeanDispatch(),  # lifecycle only: mitmproxy's inert built-in addons out of event dispatch
    DebugChecksOff(),  # lifecycle only: mitmproxy's debug-only message type checks skipped
])

addons = [gateway]
