"""The MCP gateway's pure core: JSON-RPC parsing, policies (decisions and three-valued list filtering),
the session table, the `mcp` middleware's configuration and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shadow.auth.claims import parse_claims
from shadow.errors import ConfigError
from shadow.gateway.config import load_config
from shadow.gateway.routing import leaf_services
from shadow.gateway.sse import SseEventFilter, event_data
from shadow.mcp.config import McpSettings
from shadow.mcp.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    InvalidBody,
    answers_in,
    error_body,
    filter_listing,
    parse_body,
)
from shadow.mcp.policy import Policy, decide, visible
from shadow.mcp.sessions import SessionTable

# -- JSON-RPC -------------------------------------------------------------------------------------------


def test_parse_request_notification_response_and_batch() -> None:
    body = parse_body(b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1}}}')
    (msg,) = body.messages
    assert (msg.kind, msg.method, msg.id, msg.target, body.batch) == ("request", "tools/call", 7, "add", False)
    assert parse_body(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}').messages[0].kind == "notification"
    assert parse_body(b'{"jsonrpc": "2.0", "id": "s1", "result": {}}').messages[0].kind == "response"
    read = parse_body(b'{"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "notes://x"}}')
    assert read.messages[0].target == "notes://x"
    batch = parse_body(b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "method": "notifications/x"}]')
    assert batch.batch and [m.kind for m in batch.messages] == ["request", "notification"]
    assert [m.id for m in batch.requests] == [1]


@pytest.mark.parametrize(("body", "code"), [
    (b"", PARSE_ERROR), (b"{nope", PARSE_ERROR), (b"[]", INVALID_REQUEST), (b"42", INVALID_REQUEST),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "x"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": true, "method": "x"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1.5, "method": "x"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": ""}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": 3}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}', INVALID_REQUEST),
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}, 5]', INVALID_REQUEST),
])
def test_garbage_is_refused_with_the_json_rpc_code(body: bytes, code: int) -> None:
    with pytest.raises(InvalidBody) as info:
        parse_body(body)
    assert info.value.code == code


def test_error_body_and_answers_in_json_and_sse() -> None:
    assert orjson.loads(error_body(None, -32600, "bad")) == {"jsonrpc": "2.0", "id": None,
                                                             "error": {"code": -32600, "message": "bad"}}
    assert answers_in(b'{"jsonrpc": "2.0", "id": 1, "result": {}}', sse=False)[0]["id"] == 1
    event = b'event: message\r\ndata: {"jsonrpc": "2.0", "id": 2, "result": {}}\r\n\r\n'
    assert answers_in(event, sse=True)[0]["id"] == 2
    assert answers_in(b": ping\n\n", sse=True) == []
    assert answers_in(b"not json", sse=False) == []


def test_sse_filter_rewrites_whole_events_however_the_stream_is_cut() -> None:
    stream = b"event: message\r\ndata: one\r\n\r\nevent: message\ndata: two\n\n: ping\n\ndata: tail"
    for cut in range(1, len(stream)):
        seen: list[bytes] = []

        def upper(event: bytes, seen: list[bytes] = seen) -> bytes:
            seen.append(event)
            return event.upper()

        flt = SseEventFilter(upper)
        out = flt.feed(stream[:cut]) + flt.feed(stream[cut:]) + flt.feed(b"")
        assert out == stream[:-10].upper() + b"data: tail", cut
        assert [event_data(e) for e in seen] == [b"one", b"two", None]


def test_filter_listing_drops_what_is_not_visible() -> None:
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "a"}, {"name": "b"}], "nextCursor": "c"}}
    out, removed = filter_listing(answer, "tools/list", lambda name: name == "a")
    assert removed == 1 and out["result"] == {"tools": [{"name": "a"}], "nextCursor": "c"}
    assert filter_listing(answer, "tools/list", lambda _n: True) == (answer, 0)
    resources = {"id": 2, "result": {"resources": [{"uri": "notes://a"}, {"uri": "notes://b"}]}}
    assert filter_listing(resources, "resources/list", lambda u: u.endswith("b"))[0]["result"]["resources"] == [
        {"uri": "notes://b"}]
    assert filter_listing({"id": 3, "error": {"code": 1}}, "tools/list", lambda _n: False)[1] == 0


# -- policies -------------------------------------------------------------------------------------------

def pol(match: str, action: str = "allow") -> Policy:
    return Policy(parse_claims(match), "allow" if action == "allow" else "deny", match)


POLICIES = (
    pol("Equals(`mcp.params.name`, `delete_everything`)", "deny"),
    pol("Equals(`mcp.method`, `tools/call`) && Equals(`mcp.params.name`, `transfer_funds`) "
        "&& LessThan(`mcp.params.arguments.amount`, `1000`)"),
    pol("Contains(`jwt.groups`, `admin`) && Equals(`mcp.params.name`, `transfer_funds`)"),
    pol("Equals(`mcp.method`, `tools/call`) && OneOf(`mcp.params.name`, `echo`, `add`)"),
    pol("Equals(`mcp.method`, `tools/call`) && GreaterThan(`mcp.params.arguments.risk`, `5`)", "deny"),
    pol("Equals(`mcp.method`, `tools/call`) && Equals(`mcp.params.name`, `risky`)"),
)


def call(name: str, **arguments: object) -> object:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": name, "arguments": arguments}})
    return parse_body(body).messages[0]


@pytest.mark.parametrize(("claims", "name", "arguments", "allowed", "reason"), [
    ({}, "transfer_funds", {"amount": 10}, True, "policy 2"),
    ({}, "transfer_funds", {"amount": "999.5"}, True, "policy 2"),
    ({}, "transfer_funds", {"amount": 5000}, False, "default"),
    ({}, "transfer_funds", {}, False, "default"),
    ({}, "transfer_funds", {"amount": True}, False, "default"),  # a boolean is not a number
    ({"groups": ["admin"]}, "transfer_funds", {"amount": 5000}, True, "policy 3"),
    ({"groups": ["admin"]}, "delete_everything", {}, False, "policy 1"),
    ({}, "echo", {}, True, "policy 4"),
    ({}, "risky", {"risk": 9}, False, "policy 5"),
    ({}, "risky", {"risk": 1}, True, "policy 6"),
    ({}, "unknown", {}, False, "default"),
])
def test_decide(claims: dict[str, object], name: str, arguments: dict[str, object], allowed: bool, reason: str) -> None:
    decision = decide(POLICIES, "deny", claims, call(name, **arguments))  # type: ignore[arg-type]
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_session_plumbing_and_lists_are_never_refused() -> None:
    for body in (b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}',
                 b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
                 b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
                 b'{"jsonrpc": "2.0", "id": 1, "result": {}}',
                 b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'):
        assert decide(POLICIES, "deny", {}, parse_body(body).messages[0]).allowed, body
    other = parse_body(b'{"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "x"}}')
    assert not decide(POLICIES, "deny", {}, other.messages[0]).allowed


def test_visible_uses_three_valued_logic_over_unknown_arguments() -> None:
    def shown(name: str, claims: dict[str, object] | None = None) -> bool:
        return visible(POLICIES, "deny", claims or {}, "tools/list", name)

    assert shown("transfer_funds")  # some amounts are allowed
    assert not shown("delete_everything")
    assert shown("echo")
    assert shown("risky")  # a deny on some arguments does not hide the tool
    assert not shown("unknown")
    only_admins = (pol("Contains(`jwt.groups`, `admin`) && LessThan(`mcp.params.arguments.n`, `3`)"),)
    assert not visible(only_admins, "deny", {"groups": ["dev"]}, "tools/list", "x")  # false && unknown = false
    assert visible(only_admins, "deny", {"groups": ["admin"]}, "tools/list", "x")
    negated = (pol("!LessThan(`mcp.params.arguments.n`, `3`)", "deny"),)
    assert visible(negated, "allow", {}, "tools/list", "x")
    resources = (pol("Equals(`mcp.method`, `resources/read`) && Prefix(`mcp.params.uri`, `notes://public`)"),)
    assert visible(resources, "deny", {}, "resources/list", "notes://public-x")
    assert not visible(resources, "deny", {}, "resources/list", "notes://secret")


# -- session table -----------------------------------------------------------------------------------------

def test_session_table_expires_idle_entries_and_bounds_its_size() -> None:
    now = [0.0]
    table = SessionTable(idle_s=10.0, max_entries=2, clock=lambda: now[0])
    table.begin("s1", "http://a", "inst-a")
    table.begin("s2", "http://b", "inst-b")
    assert table.lookup("s1") is not None  # s1 is now the most recently used
    table.begin("s3", "http://a", "inst-a")
    assert table.lookup("s2") is None and len(table) == 2
    now[0] = 5.0
    assert table.lookup("s1") is not None
    now[0] = 14.0
    assert table.lookup("s3") is None  # idle 14 s
    entry = table.lookup("s1")
    assert entry is not None and entry.server == "http://a"
    table.end("s1")
    assert table.lookup("s1") is None and len(table) == 0


# -- configuration -------------------------------------------------------------------------------------------

BASE = """http:
  routers:
    r: {rule: "PathPrefix(`/`)", service: w, middlewares: [m]}
  services:
    a: {loadBalancer: {servers: [{url: "http://127.0.0.1:1"}]}}
    b: {loadBalancer: {servers: [{url: "http://127.0.0.1:2"}, {url: "http://127.0.0.1:3"}]}}
    w: {weighted: {services: [{name: a, weight: 1}, {name: f, weight: 1}]}}
    f: {failover: {service: b, fallback: a}}
  middlewares:
    m:
%s
"""


def load(tmp_path: Path, middleware: str) -> object:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE % middleware)
    return load_config(path)


def test_config_parses_into_settings_and_leaf_services(tmp_path: Path) -> None:
    config = load(tmp_path, """      mcp:
        policies:
          - {match: "Equals(`mcp.method`, `tools/call`)", action: allow}
        maxRequestBodySize: 2048
        resourceMetadata:
          authorizationServers: [https://auth.example.com]
          scopesSupported: [a, b]
        mirror: {safeTools: [search]}""")
    mw = config.middlewares["m"]  # type: ignore[attr-defined]
    assert isinstance(mw, McpSettings)
    assert (mw.default_action, mw.max_request_body_bytes, mw.safe_tools) == ("deny", 2048, ("search",))
    assert mw.resource_metadata is not None and mw.resource_metadata.scopes_supported == ("a", "b")
    assert [s.name for s in leaf_services(config, "w")] == ["a", "b"]  # type: ignore[arg-type]
    assert isinstance(load(tmp_path, "      mcp: {}").middlewares["m"], McpSettings)  # type: ignore[attr-defined]
    assert load(tmp_path, "      mcp: {}").middlewares["m"].default_action == "allow"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("middleware", "line", "field", "message"), [
    ("      mcp: {policies: [{match: 'Equals(`a`)', action: allow}]}", 11, "policies[0].match",
     "Equals takes 2 arguments"),
    ("      mcp: {policies: [{match: 'LessThan(`a`, `x`)', action: allow}]}", 11, "policies[0].match",
     "'x' is not a number"),
    ("      mcp: {policies: [{match: 'Equals(`a`, `b`)', action: permit}]}", 11, "policies[0].action",
     "must be allow or deny"),
    ("      mcp: {policies: [{match: 'Equals(`a`, `b`)'}]}", 11, "policies[0].action", "required"),
    ("      mcp: {defaultAction: maybe}", 11, "defaultAction", "must be allow or deny"),
    ("      mcp: {maxRequestBodySize: 0}", 11, "maxRequestBodySize", "at least 1"),
    ("      mcp: {resourceMetadata: {authorizationServers: []}}", 11, "authorizationServers", "at least one"),
    ("      mcp: {resourceMetadata: {authorizationServers: [ftp://x]}}", 11, "authorizationServers[0]", "http(s) URL"),
    ("      mcp: {polices: []}", 11, "polices", "unknown key"),
])
def test_bad_config_is_one_line_naming_file_line_and_field(tmp_path: Path, middleware: str, line: int, field: str,
                                                            message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, middleware)
    text = str(info.value)
    assert f"gw.yaml:{line}" in text and field in text and message in text, text
    assert "\n" not in text
