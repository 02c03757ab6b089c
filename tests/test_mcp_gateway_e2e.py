"""The MCP gateway end to end: real MCP servers (the official SDK's `MCPServer` over Streamable HTTP on
127.0.0.1), a real `shadow gateway` process, and the official SDK's `Client` through it — a session,
SSE answers streamed, JSON answers, the GET stream and DELETE, the 2026 stateless era, garbage
refused, session affinity over a weighted service (and across a hot reload), policies by claim,
method, tool and argument, filtered tool lists, RFC 9728 metadata, capture columns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2  # the MCP SDK's HTTP client
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.auth_tokens import mint_hs
from tests.conftest import REPO, GatewayProcess, capture_rows, shadow_cli
from tests.upstream import free_port, wait_listening

CONFIG = """
http:
  routers:
    plain: {{rule: "PathPrefix(`/mcp`)", service: inst-a, middlewares: [open]}}
    json: {{rule: "PathPrefix(`/json`)", service: inst-json, middlewares: [strip, open]}}
    pair: {{rule: "PathPrefix(`/pair`)", service: pair, middlewares: [strip, open]}}
    governed: {{rule: "PathPrefix(`/governed`)", service: inst-a, middlewares: [strip, jwt, governed]}}
    legacy: {{rule: "PathPrefix(`/sse`) || PathPrefix(`/messages`)", service: inst-sse, middlewares: [open]}}
  services:
    inst-a: {{loadBalancer: {{servers: [{{url: "{a}"}}]}}}}
    inst-b: {{loadBalancer: {{servers: [{{url: "{b}"}}]}}}}
    inst-json: {{loadBalancer: {{servers: [{{url: "{json}"}}]}}}}
    inst-sse: {{loadBalancer: {{servers: [{{url: "{sse}"}}]}}}}
    pair:
      weighted:
        services: [{pair}]
  middlewares:
    strip: {{stripPrefix: {{prefixes: [/json, /pair, /governed]}}}}
    jwt: {{jwt: {{signingSecret: "{secret}"}}}}
    open: {{mcp: {{}}}}
    governed:
      mcp:
        policies:
          - match: Equals(`mcp.params.name`, `delete_everything`)
            action: deny
          - match: Equals(`mcp.method`, `tools/call`) && Equals(`mcp.params.name`, `transfer_funds`) && LessThan(`mcp.params.arguments.amount`, `1000`)
            action: allow
          - match: Contains(`jwt.groups`, `admin`) && Equals(`mcp.params.name`, `transfer_funds`)
            action: allow
          - match: Equals(`mcp.method`, `tools/call`) && OneOf(`mcp.params.name`, `echo`, `whoami`, `add`)
            action: allow
          - match: Equals(`mcp.method`, `resources/read`) && Prefix(`mcp.params.uri`, `notes://public`)
            action: allow
        defaultAction: deny
        resourceMetadata:
          authorizationServers: [https://auth.example.com]
          scopesSupported: [mcp:tools]
shadow:
  capture: {{dir: capture, segmentSeconds: 0.3}}
"""
SECRET = "a-long-enough-hmac-secret-for-tests-0123456789"


class McpServerProcess:
    """shadow/demo/mcp_server.py in its own process, listening on a free port of 127.0.0.1."""

    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "shadow.demo.mcp_server", "--port", str(self.port),
                                      "--name", name, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until it listens (the SDK's imports take seconds of CPU; several start at once on a busy machine)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"MCP server {self.name} exited with {self.proc.returncode}"
            try:
                wait_listening(self.port, 1.0)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class Env:
    gw: GatewayProcess
    servers: dict[str, McpServerProcess]
    cfg: Path
    write: Callable[[str], None]

    def rows(self, where: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, object]]:
        return capture_rows(self.cfg.parent / "capture", where, count, timeout)


def pair_children(a: str, b: str) -> str:
    return ", ".join(f"{{name: {name}, weight: {weight}}}" for name, weight in ((a, 1), (b, 1)) if name)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, gateway_factory: Callable[..., GatewayProcess]) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("mcp")
    servers = {"a": McpServerProcess("a"), "b": McpServerProcess("b"), "json": McpServerProcess("json", "--json"),
               "sse": McpServerProcess("sse", "--sse")}
    try:
        for server in servers.values():
            server.wait_ready()
        cfg = root / "gw.yaml"

        def write(pair: str) -> None:
            cfg.write_text(CONFIG.format(a=servers["a"].url, b=servers["b"].url, json=servers["json"].url,
                                         sse=servers["sse"].url, pair=pair, secret=SECRET))

        write(pair_children("inst-a", "inst-b"))
        gw = gateway_factory(cfg, extra_args=("--set", "shadow_reload_interval=200ms"), start_timeout=60.0)
        yield Env(gw, servers, cfg, write)
    finally:
        for server in servers.values():
            server.stop()


def run[T](coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


def http_client(token: str | None = None) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0), follow_redirects=True)


async def with_client[T](url: str, body: Callable[[Client], Awaitable[T]], *, mode: str = "legacy",
                      token: str | None = None) -> T:
    async with http_client(token) as http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        return await body(client)


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


# -- proxying -------------------------------------------------------------------------------------------

def test_a_session_end_to_end_with_sse_answers(env: Env) -> None:
    async def body(client: Client) -> tuple[list[str], str, str, str]:
        tools = await client.list_tools()
        added = await client.call_tool("add", {"a": 2, "b": 3})
        note = await client.read_resource("notes://gateways")
        prompt = await client.get_prompt("greet", {"who": "Ada"})
        return ([t.name for t in tools.tools], text_of(added), note.contents[0].text,  # type: ignore[union-attr]
                prompt.messages[0].content.text)  # type: ignore[union-attr]

    names, added, note, prompt = run(with_client(f"{env.gw.url}/mcp", body))
    assert {"whoami", "echo", "add", "transfer_funds", "wait_for_release"} <= set(names)
    assert added == "5"
    assert note == "a note about gateways"
    assert "Ada" in prompt
    rows = env.rows("mcp_method = 'tools/call' and mcp_name = 'add' and router = 'plain'")
    assert rows and rows[0]["mcp_session"] and rows[0]["status"] == 200
    assert rows[0]["endpoint"] == "/mcp tools/call add" and rows[0]["client_key"] == rows[0]["mcp_session"]
    answer = json.loads(rows[0]["resp_body"])  # type: ignore[arg-type]  # the JSON-RPC answer the SSE stream carried
    assert answer["result"]["structuredContent"] == {"result": 5}


def test_json_answers_and_the_stateless_2026_era_pass_through(env: Env) -> None:
    async def body(client: Client) -> str:
        return text_of(await client.call_tool("echo", {"text": "through"}))

    assert run(with_client(f"{env.gw.url}/json/mcp", body)) == "through"
    assert run(with_client(f"{env.gw.url}/mcp", body, mode="auto")) == "through"


def test_the_legacy_http_sse_transport_passes_through(env: Env) -> None:
    async def session() -> str:
        async with Client(sse_client(f"{env.gw.url}/sse"), mode="legacy") as client:
            return text_of(await client.call_tool("echo", {"text": "old transport"}))

    assert run(session()) == "old transport"
    rows = env.rows("router = 'legacy' and mcp_method = 'tools/call'")
    assert rows and rows[0]["status"] == 202 and rows[0]["mcp_name"] == "echo"


def test_sse_answer_is_streamed_first_event_before_the_server_finishes(env: Env, tmp_path: Path) -> None:
    release = tmp_path / "release"

    async def body(client: Client) -> str:
        progressed = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            progressed.set()

        call = asyncio.create_task(client.call_tool("wait_for_release", {"path": str(release)},
                                                    progress_callback=on_progress))
        # The server holds its answer until the file exists; the progress event can only arrive
        # now if the gateway passes the stream on event by event.
        await asyncio.wait_for(progressed.wait(), 25)
        assert not call.done()
        release.write_text("go")
        return text_of(await call)

    assert run(with_client(f"{env.gw.url}/mcp", body)) == "released"


def test_garbage_json_rpc_is_refused_and_never_forwarded(env: Env) -> None:
    for payload, code in ((b"{not json", -32700), (b'{"jsonrpc": "1.0", "method": "x", "id": 1}', -32600),
                          (b'{"jsonrpc": "2.0", "id": 1}', -32600), (b"[]", -32600)):
        resp = httpx.post(f"{env.gw.url}/mcp", content=payload, timeout=10,
                          headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
        assert resp.status_code == 400, payload
        assert resp.json()["error"]["code"] == code, payload
        assert resp.json()["id"] is None
        assert "server" not in resp.headers  # answered by the gateway, not uvicorn
    # A policy is not bypassed by another Content-Type: the body is JSON-RPC whatever the label says.
    denied = httpx.post(f"{env.gw.url}/governed/mcp", timeout=10, headers={
        "Content-Type": "text/plain", "Authorization": f"Bearer {mint_hs(SECRET)}"},
        content=b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "delete_everything"}}')
    assert denied.status_code == 200 and denied.json()["error"]["code"] == -32003 and denied.json()["id"] == 9
    too_big = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "' \
        + b"x" * (1 << 20) + b'"}}}'
    resp = httpx.post(f"{env.gw.url}/mcp", content=too_big, timeout=10, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == -32600


def test_get_stream_and_delete_reach_the_server(env: Env) -> None:
    # The SDK client opens the GET stream after initialize and DELETEs the session on exit.
    seen: list[tuple[str, int, str | None]] = []

    def get_stream_open() -> bool:
        return any(m == "GET" and s == 200 and (ct or "").startswith("text/event-stream") for m, s, ct in seen)

    async def body(client: Client) -> str:
        name = text_of(await client.call_tool("whoami", {}))
        deadline = time.monotonic() + 20
        while not get_stream_open() and time.monotonic() < deadline:  # the GET goes out on its own task
            await asyncio.sleep(0.05)
        return name

    async def hook(response: httpx2.Response) -> None:
        seen.append((response.request.method, response.status_code, response.headers.get("content-type")))

    async def session() -> str:
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=60.0), event_hooks={"response": [hook]}) as http, \
                Client(streamable_http_client(f"{env.gw.url}/mcp", http_client=http), mode="legacy") as client:
            return await body(client)

    assert run(session()) == "a"
    assert get_stream_open()
    assert ("DELETE", 200) in [(m, s) for m, s, _ in seen]


# -- session affinity -------------------------------------------------------------------------------------

async def whoami_session(url: str, calls: int = 3) -> list[str]:
    async def body(client: Client) -> list[str]:
        return [text_of(await client.call_tool("whoami", {})) for _ in range(calls)]

    return await with_client(url, body)


def test_every_request_of_a_session_reaches_the_instance_that_created_it(env: Env) -> None:
    async def many() -> list[list[str]]:
        return list(await asyncio.gather(*(whoami_session(f"{env.gw.url}/pair/mcp") for _ in range(8))))

    # Which instance a new session gets depends on how the concurrent initializes interleave with
    # the weighted round-robin: rounds until both have been seen (bounded), each session checked.
    seen: set[str] = set()
    for _ in range(4):
        sessions = run(many())
        for names in sessions:
            assert len(set(names)) == 1, sessions
        seen |= {names[0] for names in sessions}
        if seen == {"a", "b"}:
            break
    assert seen == {"a", "b"}  # the weighted service spread the sessions


def test_affinity_survives_a_reload_and_a_gone_instance_gets_404(env: Env) -> None:
    url = f"{env.gw.url}/pair/mcp"

    async def scenario() -> tuple[list[str], list[str], str]:
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, Client] = {}
            for _ in range(8):  # sessions until one on each instance (WRR alternates; bounded)
                http = await stack.enter_async_context(http_client())
                client = await stack.enter_async_context(
                    Client(streamable_http_client(url, http_client=http), mode="legacy"))
                clients.setdefault(text_of(await client.call_tool("whoami", {})), client)
                if len(clients) == 2:
                    break
            assert set(clients) == {"a", "b"}, set(clients)
            # Reload: b's weight triples. Sessions stay where they began.
            reloads = env.gw.output().count("reloaded")
            env.write("{name: inst-a, weight: 1}, {name: inst-b, weight: 3}")
            assert await asyncio.to_thread(wait_until, lambda: env.gw.output().count("reloaded") > reloads)
            after = [text_of(await clients[n].call_tool("whoami", {})) for n in ("a", "b", "a", "b")]
            # Reload: b leaves the service. Its session gets 404 (the client is told the session ended).
            reloads = env.gw.output().count("reloaded")
            env.write("{name: inst-a, weight: 1}")
            assert await asyncio.to_thread(wait_until, lambda: env.gw.output().count("reloaded") > reloads)
            still = [text_of(await clients["a"].call_tool("whoami", {})) for _ in range(2)]
            with pytest.raises(MCPError, match="Session"):
                await clients["b"].call_tool("whoami", {})
            fresh = await whoami_session(url, 1)
            return after, still, fresh[0]

    try:
        after, still, fresh = run(scenario())
    finally:
        reloads = env.gw.output().count("reloaded")
        env.write(pair_children("inst-a", "inst-b"))
        wait_until(lambda: env.gw.output().count("reloaded") > reloads)
    assert after == ["a", "b", "a", "b"]
    assert still == ["a", "a"]
    assert fresh == "a"


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_unknown_session_on_a_multi_instance_service_gets_the_spec_404(env: Env) -> None:
    resp = httpx.post(f"{env.gw.url}/pair/mcp", timeout=10, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "Mcp-Session-Id": "never-issued"}, content=b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}')
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == "Session not found"


# -- access control -------------------------------------------------------------------------------------

def test_policies_by_tool_argument_and_claim_and_filtered_lists(env: Env) -> None:
    url = f"{env.gw.url}/governed/mcp"

    async def as_user(client: Client) -> dict[str, Any]:
        listed = sorted(t.name for t in (await client.list_tools()).tools)
        small = text_of(await client.call_tool("transfer_funds", {"amount": 10, "to": "bob"}))
        out: dict[str, Any] = {"listed": listed, "small": small, "denied": []}
        for name, args in (("transfer_funds", {"amount": 5000, "to": "bob"}), ("delete_everything", {}),
                           ("wait_for_release", {"path": "/nonexistent"})):
            try:
                await client.call_tool(name, args)
            except MCPError as exc:
                out["denied"].append((name, exc.error.code, exc.error.message))
        out["public"] = (await client.read_resource("notes://public-roadmap")).contents[0].text  # type: ignore[union-attr]
        try:
            await client.read_resource("notes://secret-plans")
        except MCPError as exc:
            out["secret"] = exc.error.code
        return out

    async def as_admin(client: Client) -> tuple[list[str], str]:
        listed = sorted(t.name for t in (await client.list_tools()).tools)
        return listed, text_of(await client.call_tool("transfer_funds", {"amount": 5000, "to": "bob"}))

    user = run(with_client(url, as_user, token=mint_hs(SECRET, groups=["dev"])))
    assert user["listed"] == ["add", "echo", "transfer_funds", "whoami"]  # delete_everything, wait_for_release hidden
    assert user["small"] == "moved 10.0 to bob"
    assert [(name, code) for name, code, _ in user["denied"]] == [
        ("transfer_funds", -32003), ("delete_everything", -32003), ("wait_for_release", -32003)]
    assert "policy 1" in user["denied"][1][2] and "default" in user["denied"][2][2]
    assert user["public"] == "a note about public-roadmap"
    assert user["secret"] == -32003
    admin_listed, big = run(with_client(url, as_admin, token=mint_hs(SECRET, groups=["admin"])))
    assert admin_listed == user["listed"]
    assert big == "moved 5000.0 to bob"
    rows = env.rows("router = 'governed' and mcp_name = 'delete_everything'")
    assert rows and rows[0]["mcp_error"] == "-32003" and rows[0]["status"] == 200


def test_protected_resource_metadata_and_the_401_challenge(env: Env) -> None:
    from mcp.shared.auth import ProtectedResourceMetadata

    resp = httpx.post(f"{env.gw.url}/governed/mcp", timeout=10, content=b"{}",
                      headers={"Content-Type": "application/json"})
    assert resp.status_code == 401
    challenge = resp.headers["www-authenticate"]
    expected = f"{env.gw.url}/.well-known/oauth-protected-resource/governed/mcp"
    assert challenge.startswith("Bearer ") and f'resource_metadata="{expected}"' in challenge
    doc = httpx.get(expected, timeout=10)
    assert doc.status_code == 200
    meta = ProtectedResourceMetadata.model_validate(doc.json())  # the SDK's own model of RFC 9728
    assert str(meta.resource) == f"{env.gw.url}/governed/mcp"
    assert [str(s).rstrip("/") for s in meta.authorization_servers] == ["https://auth.example.com"]
    assert meta.scopes_supported == ["mcp:tools"]
    assert httpx.get(f"{env.gw.url}/.well-known/oauth-protected-resource/mcp", timeout=10).status_code == 404


# -- shadow-testing an MCP server ----------------------------------------------------------------------------

SHADOW = """
http:
  routers:
    tools: {{rule: "PathPrefix(`/mcp`)", service: shadowed, middlewares: [tools]}}
  services:
    primary: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
    candidate: {{loadBalancer: {{servers: [{{url: "{candidate}"}}]}}}}
    shadowed: {{mirroring: {{service: primary, mirrors: [{{name: candidate, percent: 100}}]}}}}
  middlewares:
    tools:
      mcp:
        mirror: {{safeTools: [add]}}
shadow:
  capture: {{dir: capture, segmentSeconds: 0.3}}
  mirroring:
    targets: {{candidate: {{role: candidate, allowUnsafe: true}}}}
"""
GATE_POLICY = """
defaults:
  min_samples: 20
  min_clients: 5
"""
SESSIONS, CALLS = 5, 4  # 20 pairs per endpoint: the policy's min_samples


def shadow_traffic(url: str) -> None:
    async def body(client: Client) -> None:
        for i in range(CALLS):
            await client.list_tools(cache_mode="refresh")
            assert text_of(await client.call_tool("add", {"a": i, "b": 1})) == str(i + 1)
        await client.call_tool("whoami", {})  # not in safeTools: never repeated on the candidate

    async def sessions() -> None:
        for _ in range(SESSIONS):
            await with_client(url, body)

    run(sessions())


def test_a_candidate_mcp_server_is_shadow_tested_in_its_own_session(env: Env, tmp_path: Path) -> None:
    # b runs the same code as a: an equivalent candidate (tests/test_demo_mcp.py: a changed one FAILs).
    cfg = tmp_path / "shadow.yaml"
    cfg.write_text(SHADOW.format(primary=env.servers["a"].url, candidate=env.servers["b"].url))
    (tmp_path / "policy.yaml").write_text(GATE_POLICY)
    with GatewayProcess(cfg, start_timeout=60.0) as gw:
        shadow_traffic(f"{gw.url}/mcp")
        shadow = Env(gw, env.servers, cfg, env.write)
        expected = SESSIONS * CALLS
        copies = shadow.rows("role = 'candidate'", count=2 * expected, timeout=60)
        gw.stop()
    assert len(copies) == 2 * expected, [r["endpoint"] for r in copies]  # tools/list and add; never whoami
    assert {r["endpoint"] for r in copies} == {"/mcp tools/list", "/mcp tools/call add"}
    # Each copy ran in the candidate's own session, opened by the gateway (the client's never reached it).
    assert all(r["mcp_session"] and r["status"] == 200 for r in copies)
    primaries = shadow.rows("role = 'primary' and endpoint = '/mcp tools/call add'", count=expected)
    assert not {r["mcp_session"] for r in copies} & {r["mcp_session"] for r in primaries}
    assert len({r["mcp_session"] for r in copies}) == SESSIONS  # one candidate session per client session
    gate = shadow_cli("gate", str(tmp_path / "capture"), "--policy", str(tmp_path / "policy.yaml"), "--no-progress",
                      timeout=120)
    assert gate.returncode != 1, gate.stdout + gate.stderr  # equal answers: never FAILed
    assert "mismatch_rate" not in "".join(line for line in gate.stdout.splitlines() if line.startswith("FAIL"))
