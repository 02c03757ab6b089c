"""MCP gateway addon: the `mcp` middleware on Streamable HTTP traffic (and the legacy HTTP+SSE transport
passed through).

Adapts flows to `shadow.mcp` (pure):
- `McpMetadata` (before auth): answers `GET /.well-known/oauth-protected-resource/<path>` (RFC 9728) for
  a route with `resourceMetadata`, and adds `resource_metadata="…"` to the `WWW-Authenticate` of a 401 on
  such a route, so a standard MCP client finds the authorization server.
- `McpGateway` (after routing): a POST body is read whole and parsed as JSON-RPC (garbage → a JSON-RPC
  error, nothing forwarded; over `maxRequestBodySize` → 413); each request is checked against the
  policies (a denial is a JSON-RPC error for that id); every answer is streamed to the client as it
  arrives (SSE event by event, JSON as it comes), except a list answer in JSON that the policies must
  filter; list answers lose the tools, prompts and resources the caller may not use. The session table
  keeps each `Mcp-Session-Id` on the server that issued it (`pin`, asked by the router). The capture
  row gets `mcp_method`, `mcp_name`, `mcp_session`, `mcp_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import orjson
from mitmproxy import http

from addons.auth import AUTH_METADATA
from addons.reload import ActiveConfig, CopyRewrite, GatewayState, SkipCopy
from shadow.gateway.config import LoadBalancerService, Server
from shadow.gateway.exchange import ANSWER_COMPLETE_METADATA, EXTRA_COLUMNS_METADATA
from shadow.gateway.mirror import MirrorRequest, MirrorResult
from shadow.gateway.routing import RoutePlan, leaf_services, resolve_router, with_inherited
from shadow.gateway.rules import RequestView
from shadow.gateway.sse import SseEventFilter
from shadow.mcp.config import McpSettings
from shadow.mcp.jsonrpc import (
    FORBIDDEN,
    INVALID_REQUEST,
    LISTINGS,
    InvalidBody,
    McpBody,
    McpMessage,
    answer_for,
    answers_in,
    endpoint_for,
    error_body,
    error_object,
    filter_listing,
    parse_body,
)
from shadow.mcp.policy import decide, safe_to_repeat, visible
from shadow.mcp.sessions import SESSION_HEADER, SessionTable

logger = logging.getLogger(__name__)

JSON = {"Content-Type": "application/json"}
WELL_KNOWN = "/.well-known/oauth-protected-resource"
MCP_METADATA = "shadow.mcp"  # flow.metadata: the McpFlow (read again when the flow is mirrored)
CANDIDATE_SESSIONS = 10_000  # candidate sessions kept (least recently opened go first)


def _settings(plan: RoutePlan | None) -> McpSettings | None:
    if plan is None:
        return None
    return next((m for m in plan.middlewares if isinstance(m, McpSettings)), None)


def _uses_mcp(active: ActiveConfig) -> bool:
    return any(isinstance(m, McpSettings) for m in active.config.middlewares.values())


def _jsonrpc_answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> http.Response:
    return http.Response.make(status, body, {**JSON, **(headers or {})})


def _client_base(flow: http.HTTPFlow) -> str:
    req = flow.request
    scheme = "https" if flow.client_conn.tls_established else "http"
    host = req.authority if (req.is_http2 or req.is_http3) and req.authority else (req.host_header or "")
    return f"{scheme}://{host}"


def _plan_for(active: ActiveConfig, flow: http.HTTPFlow, path: str) -> RoutePlan | None:
    """The route a request for `path` (this flow's host and headers) would take."""
    req = flow.request
    peer = flow.client_conn.peername
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers.fields)
    view = RequestView(method="POST", host=req.host_header or "", path=path, query="", headers=headers,
                       client_ip=str(peer[0]) if peer else "", body=b"")
    router, inherited = resolve_router(active.config, view)
    if router is None or router.name not in active.plans:
        return None
    return with_inherited(active.plans[router.name], inherited)


class McpMetadata:
    """RFC 9728 protected-resource metadata for routes with an `mcp` middleware's `resourceMetadata`."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.served = 0
        state.extra_counters.append(lambda: {"mcp_metadata_served": self.served})

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        wanted = any(isinstance(m, McpSettings) and m.resource_metadata is not None
                     for m in active.config.middlewares.values())
        return frozenset({"request", "response"} if wanted else ())

    def request(self, flow: http.HTTPFlow) -> None:
        active = self.state.active
        req = flow.request
        if active is None or flow.response or not req.path.startswith(WELL_KNOWN) or req.method not in ("GET", "HEAD"):
            return
        resource_path = req.path.partition("?")[0][len(WELL_KNOWN):] or "/"
        mcp = _settings(_plan_for(active, flow, resource_path))
        if mcp is None or mcp.resource_metadata is None:
            return
        meta = mcp.resource_metadata
        doc: dict[str, Any] = {
            "resource": meta.resource or _client_base(flow) + resource_path,
            "authorization_servers": list(meta.authorization_servers),
            "bearer_methods_supported": ["header"],
        }
        if meta.scopes_supported:
            doc["scopes_supported"] = list(meta.scopes_supported)
        if meta.resource_name:
            doc["resource_name"] = meta.resource_name
        self.served += 1
        flow.response = _jsonrpc_answer(200, orjson.dumps(doc), {"Cache-Control": "max-age=3600"})

    def response(self, flow: http.HTTPFlow) -> None:
        resp, active = flow.response, self.state.active
        if resp is None or resp.status_code != 401 or active is None:
            return
        challenge = resp.headers.get("WWW-Authenticate", "")
        if "resource_metadata=" in challenge:
            return
        path = flow.request.path.partition("?")[0]
        mcp = _settings(_plan_for(active, flow, path))
        if mcp is None or mcp.resource_metadata is None:
            return
        url = f'{_client_base(flow)}{WELL_KNOWN}{path}'
        param = f'resource_metadata="{url}"'
        resp.headers["WWW-Authenticate"] = f"{challenge}, {param}" if challenge.startswith("Bearer ") else \
            f"Bearer {param}"


@dataclass
class McpFlow:
    """What the MCP concern keeps for one flow between its hooks."""

    settings: McpSettings
    claims: dict[str, Any]
    body: McpBody | None  # a POST's messages
    session: str | None  # the request's Mcp-Session-Id
    path: str = ""  # the path the server is called on (the capture's endpoint starts with it)
    raw: bytes = b""  # the request body (an initialize is replayed to a mirror's candidate)
    listing: str | None = None  # a list method whose answer is filtered
    listing_id: Any = None
    error: str | None = None  # the JSON-RPC error code the answer carried, as text
    hidden: int = 0  # list items removed
    streamed: bytearray = field(default_factory=bytearray)  # what the capture keeps of a streamed answer
    cap: int = 0
    is_sse: bool = False
    answered: bool = False  # the stream carried the response to the POST's request

    @property
    def single(self) -> McpMessage | None:
        """The one request of a POST (None: a batch, a notification, an answer, a GET or DELETE)."""
        if self.body is None or self.body.batch or self.body.messages[0].kind != "request":
            return None
        return self.body.messages[0]

    def columns(self, answer: dict[str, Any] | None = None, *, session: str | None = None) -> dict[str, object]:
        first = self.body.messages[0] if self.body is not None and self.body.messages else None
        out: dict[str, object] = {
            "mcp_method": first.method if first is not None else None,
            "mcp_name": first.target if first is not None else None,
            "mcp_session": session or self.session, "mcp_error": self.error}
        if self.session:
            out["client_key"] = self.session  # the analyses cluster by session (the unit a client is)
        single = self.single
        if single is not None and single.method is not None:
            out["endpoint"] = endpoint_for(self.path, single)
        if answer is not None:
            # The JSON-RPC answer itself, SSE framing and the server's notifications left out: what
            # the diff engine compares between a primary and a candidate server.
            out["resp_body"] = orjson.dumps(answer)
            out["resp_content_type"] = "application/json"
            error = answer.get("error")
            out["mcp_error"] = str(error.get("code")) if isinstance(error, dict) else None
        return out


class CandidateSessions:
    """A mirror's candidate MCP server gets its own session: opened by the gateway on the first copy of a
    client session (the client's own initialize request replayed, then notifications/initialized),
    reused by that session's later copies (their Mcp-Session-Id swapped for the candidate's)."""

    def __init__(self) -> None:
        self._opened: OrderedDict[tuple[str, str], asyncio.Task[str | None]] = OrderedDict()
        self._http: Any = None

    async def with_session(self, primary: str, init_body: bytes | None, request: MirrorRequest) -> MirrorRequest:
        key = (primary, request.target)
        task = self._opened.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._opened[key] = asyncio.get_running_loop().create_task(self._open(request, init_body))
            while len(self._opened) > CANDIDATE_SESSIONS:
                self._opened.popitem(last=False)
        candidate = await asyncio.shield(task)
        headers = [(k, v) for k, v in request.headers if k.lower() != SESSION_HEADER]
        if candidate:
            headers.append(("Mcp-Session-Id", candidate))
        return replace(request, headers=tuple(headers))

    async def _open(self, request: MirrorRequest, init_body: bytes | None) -> str | None:
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        base = [(k, v) for k, v in request.headers if k.lower() not in (SESSION_HEADER, "content-length")]
        init = init_body or orjson.dumps({"jsonrpc": "2.0", "id": "shadow-initialize", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "shadow-gateway", "version": "1"}}})
        async with self._http.post(request.url, data=init, headers=base) as resp:
            await resp.read()
            if resp.status >= 400:
                raise ValueError(f"the candidate answered {resp.status} to initialize")
            session: str | None = resp.headers.get(SESSION_HEADER)
        headers = base + ([("Mcp-Session-Id", session)] if session else [])
        async with self._http.post(request.url, headers=headers,
                                   data=b'{"jsonrpc": "2.0", "method": "notifications/initialized"}') as resp:
            await resp.read()
        return session

    async def close(self) -> None:
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.close()
            self._http = None


class McpGateway:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.sessions = SessionTable()
        self.flows: weakref.WeakKeyDictionary[http.HTTPFlow, McpFlow] = weakref.WeakKeyDictionary()
        self.counts: Counter[str] = Counter()
        self._leaves: dict[tuple[int, str], tuple[LoadBalancerService, ...]] = {}
        self.candidates = CandidateSessions()
        state.on_activate.append(self._on_activate)
        state.extra_counters.append(lambda: {f"mcp_{k}": v for k, v in self.counts.items()}
                                    | {"mcp_sessions": len(self.sessions)})

    def _on_activate(self, active: ActiveConfig, _previous: ActiveConfig | None) -> None:
        self._leaves = {}
        if _uses_mcp(active):
            self.state.affinity = self
            if self not in self.state.mirror_rewriters:
                self.state.mirror_rewriters.append(self)
        elif self.state.affinity is self:
            self.state.affinity = None

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        return frozenset({"request", "responseheaders", "response", "error"} if _uses_mcp(active) else ())

    # -- affinity (asked by the router) -----------------------------------------------------------------
    def pin(self, flow: http.HTTPFlow, plan: RoutePlan) -> tuple[LoadBalancerService, Server] | http.Response | None:
        if _settings(plan) is None:
            return None
        session = flow.request.headers.get(SESSION_HEADER)
        if not session:
            return None
        active = self.state.active
        assert active is not None
        key = (active.generation, plan.router.service)
        leaves = self._leaves.get(key)
        if leaves is None:
            leaves = self._leaves[key] = leaf_services(active.config, plan.router.service)
        entry = self.sessions.lookup(session)
        if entry is not None:
            for leaf in leaves:
                for server in leaf.servers:
                    if server.url == entry.server:
                        self.counts["pinned"] += 1
                        return leaf, server
            self.sessions.end(session)  # its server left the configuration
        elif sum(len(leaf.servers) for leaf in leaves) <= 1:
            return None  # one server: it knows its sessions (and answers 404 for those it does not)
        # The spec's answer for a session the server does not know: 404, and the client re-initialises.
        self.counts["session_not_found"] += 1
        return _jsonrpc_answer(404, error_body(None, INVALID_REQUEST, "Session not found"))

    # -- request ----------------------------------------------------------------------------------------
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        route = self.state.routes.get(flow)
        mcp = _settings(route.plan if route is not None else None)
        if mcp is None:
            return
        req = flow.request
        passed = flow.metadata.get(AUTH_METADATA)
        claims = passed.claims if passed is not None else {}
        session = req.headers.get(SESSION_HEADER) or None
        body: McpBody | None = None
        if req.method == "POST":  # whatever its Content-Type says: a policy is never bypassed by a label
            raw = req.raw_content or b""
            if len(raw) > mcp.max_request_body_bytes:
                self.counts["refused_too_large"] += 1
                flow.response = _jsonrpc_answer(413, error_body(
                    None, INVALID_REQUEST, f"request body over {mcp.max_request_body_bytes} bytes"))
                return
            try:
                body = parse_body(raw)
            except InvalidBody as exc:
                self.counts["refused_invalid"] += 1
                flow.response = _jsonrpc_answer(400, error_body(None, exc.code, f"invalid JSON-RPC: {exc.message}"))
                flow.metadata[EXTRA_COLUMNS_METADATA] = {"mcp_session": session, "mcp_error": str(exc.code)}
                return
        assert route is not None
        state = McpFlow(mcp, claims, body, session, path=route.path.partition("?")[0],
                        raw=req.raw_content or b"" if body is not None and body.messages[0].method == "initialize" else b"")
        if body is not None:
            denied = [(m, d) for m in body.requests
                      if not (d := decide(mcp.policies, mcp.default_action, claims, m)).allowed]
            if denied:
                self.counts["denied"] += 1
                errors = [error_object(m.id, FORBIDDEN, f"forbidden by the gateway's policy ({d.reason}): {m.method}"
                                       + (f" {m.target}" if m.target else "")) for m, d in denied]
                state.error = str(FORBIDDEN)
                flow.response = _jsonrpc_answer(200, orjson.dumps(errors if body.batch else errors[0]))
                flow.metadata[EXTRA_COLUMNS_METADATA] = state.columns()
                return
            first = body.messages[0]
            if not body.batch and first.kind == "request" and first.method in LISTINGS and mcp.policies:
                state.listing, state.listing_id = first.method, first.id
        self.counts["requests"] += 1
        self.flows[flow] = state
        flow.metadata[MCP_METADATA] = state

    # -- answer -----------------------------------------------------------------------------------------
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self.flows.get(flow)
        resp = flow.response
        if state is None or resp is None:
            return
        route = self.state.routes.get(flow)
        issued = resp.headers.get(SESSION_HEADER)
        if issued and state.session is None and route is not None and route.upstream:
            self.sessions.begin(issued, route.upstream, route.service or "", state.raw or None)  # the initialize answer
        if state.session and (resp.status_code == 404 or (flow.request.method == "DELETE" and resp.status_code < 300)):
            self.sessions.end(state.session)
        state.is_sse = "text/event-stream" in resp.headers.get("content-type", "")
        if state.listing is not None and not state.is_sse:
            return  # a JSON list answer is filtered whole in `response`
        active = self.state.active
        state.cap = (active.config.shadow.capture.max_body_bytes + 1) if active and self.state.capture else 0
        resp.stream = self._streamer(state)
        if state.is_sse:
            self.counts["streams"] += 1

    def _streamer(self, state: McpFlow) -> Callable[[bytes], list[bytes]]:
        events = SseEventFilter(lambda event: self._event(state, event)) if state.is_sse else None

        def stream(chunk: bytes) -> list[bytes]:
            # Runs inline per chunk, which then goes to the client at once. Never an empty chunk out:
            # on a chunked HTTP/1.1 answer that would end the body.
            out = events.feed(chunk) if events is not None else chunk
            room = state.cap - len(state.streamed)
            if out and room > 0:
                state.streamed += out[:room]
            return [out] if out else []

        return stream

    def _event(self, state: McpFlow, event: bytes) -> bytes:
        answers = answers_in(event, sse=True)
        if not answers:
            return event
        answer = answers[0]
        self._note_error(state, answer)
        single = state.single
        if single is not None and answer.get("id") == single.id and ("result" in answer or "error" in answer):
            state.answered = True
        if state.listing is not None and answer.get("id") == state.listing_id:
            filtered = self._filtered(state, answer)
            if filtered is not None:
                return b"event: message\r\ndata: " + orjson.dumps(filtered) + b"\r\n\r\n"
        return event

    @staticmethod
    def _note_error(state: McpFlow, answer: dict[str, Any]) -> None:
        error = answer.get("error")
        if isinstance(error, dict) and state.error is None:
            state.error = str(error.get("code"))

    def _filtered(self, state: McpFlow, answer: dict[str, Any], *, count: bool = True) -> dict[str, Any] | None:
        assert state.listing is not None
        mcp, claims, method = state.settings, state.claims, state.listing
        out, removed = filter_listing(answer, method,
                                      lambda name: visible(mcp.policies, mcp.default_action, claims, method, name))
        if not removed:
            return None
        if count:
            state.hidden += removed
            self.counts["hidden"] += removed
        return out

    def response(self, flow: http.HTTPFlow) -> None:
        state = self.flows.pop(flow, None)
        if state is not None and flow.response is not None:
            self._finish(flow, state, flow.response)

    def _finish(self, flow: http.HTTPFlow, state: McpFlow, resp: http.Response) -> None:
        if resp.stream:
            content = bytes(state.streamed)
            if state.cap:
                resp.data.content = content  # for the capture (already with the client)
            if not state.is_sse and state.error is None:
                for answer in answers_in(content, sse=False):
                    self._note_error(state, answer)
        else:
            try:
                content = resp.content or b""
            except ValueError:  # an unknown content-encoding: passed on untouched
                content = b""
            answers = answers_in(content, sse=False)
            for answer in answers:
                self._note_error(state, answer)
            if state.listing is not None and len(answers) == 1 and answers[0].get("id") == state.listing_id:
                filtered = self._filtered(state, answers[0])
                if filtered is not None:
                    resp.content = content = orjson.dumps(filtered)
        single = state.single
        final = answer_for(content, single.id, sse=state.is_sse) if single is not None and content else None
        flow.metadata[EXTRA_COLUMNS_METADATA] = state.columns(final)

    def error(self, flow: http.HTTPFlow) -> None:
        state = self.flows.pop(flow, None)
        if state is None:
            return
        if state.answered and flow.response is not None:
            # The client hung up once it had its answer (MCP clients close a POST's SSE stream at the
            # response event, racing the server's end of stream): an answered exchange all the same.
            self.counts["answered_then_closed"] += 1
            flow.metadata[ANSWER_COMPLETE_METADATA] = True
            self._finish(flow, state, flow.response)
            return
        flow.metadata[EXTRA_COLUMNS_METADATA] = state.columns()

    # -- mirror copies (shadow-testing a candidate MCP server) -------------------------------------------
    def rewrite_copy(self, flow: http.HTTPFlow, target: str, headers: tuple[tuple[str, str], ...],
                     body: bytes | None) -> CopyRewrite | None:
        state: McpFlow | None = flow.metadata.get(MCP_METADATA)
        if state is None:
            return None
        single = state.single
        if single is None or not safe_to_repeat(single, state.settings.safe_tools):
            raise SkipCopy("mcp_not_repeatable")  # only calls that read may run twice
        prepare = None
        if state.session:
            entry = self.sessions.lookup(state.session)
            prepare = partial(self.candidates.with_session, state.session, entry.init_body if entry else None)

        def columns(result: MirrorResult) -> dict[str, object]:
            sse = any(k.lower() == "content-type" and "text/event-stream" in v for k, v in result.headers)
            answer = answer_for(result.body, single.id, sse=sse) if result.error is None and result.body else None
            if answer is not None and state.listing is not None:
                # What the agent would have seen from the candidate: the same policies filter its list.
                answer = self._filtered(state, answer, count=False) or answer
            session = next((v for k, v in result.request.headers if k.lower() == SESSION_HEADER), None)
            return state.columns(answer, session=session)

        return CopyRewrite(headers, body, columns, prepare)

    async def done(self) -> None:
        await self.candidates.close()


__all__ = ["McpGateway", "McpMetadata"]
