"""`shadow demo --mcp`: an MCP server shadow-tested and judged end to end.

Three real MCP servers (shadow/demo/mcp_server.py: the official SDK's `MCPServer` over Streamable HTTP,
each its own process): `tools-v1` serves the agents; `tools-v2` is the same code (an equivalent
rewrite); `tools-v2-changed` gave its `add` tool a third parameter. The gateway serves every MCP
session from v1 and mirrors the calls that only read (`tools/list`, and `tools/call add`, marked safe
to repeat) to both candidates, each in a session of its own that the gateway opens. Agents (the
official SDK's client) run sessions through it; then the capture is judged like a service cutover,
per tool: the changed candidate FAILs on its tool list, the equivalent one does not.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from shadow.demo.processes import Supervisor
from shadow.demo.run import start_gateway
from shadow.errors import ShadowError

CANDIDATES = {"tools-v2": [], "tools-v2-changed": ["--variant", "changed"]}
# A demo-sized sample: 24 calls per tool in 6 sessions (the defaults ask 50 calls from 20 clients).
POLICY = """# written by `shadow demo --mcp`: margins for a demo-sized sample
defaults:
  min_samples: 20
  min_clients: 5
"""


def gateway_yaml(primary: str, candidates: dict[str, str]) -> str:
    services = "\n".join(f"    {n}: {{loadBalancer: {{servers: [{{url: \"{u}\"}}]}}}}" for n, u in candidates.items())
    mirrors = ", ".join(f"{{name: {n}, percent: 100}}" for n in candidates)
    targets = "\n".join(f"      {n}: {{role: candidate, allowUnsafe: true}}" for n in candidates)
    return f"""# written by `shadow demo --mcp` (docs/mcp-gateway.md)
http:
  routers:
    tools: {{rule: "PathPrefix(`/mcp`)", service: tools-shadowed, middlewares: [tools]}}
  services:
    tools-v1: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
{services}
    tools-shadowed: {{mirroring: {{service: tools-v1, mirrors: [{mirrors}]}}}}
  middlewares:
    tools:
      mcp:
        policies:
          - {{match: "Equals(`mcp.params.name`, `delete_everything`)", action: deny}}
        defaultAction: allow
        mirror: {{safeTools: [add]}}
shadow:
  capture: {{dir: capture}}
  mirroring:
    targets:
{targets}
"""


def drive(url: str, sessions: int, calls: int) -> int:
    """Agent sessions through the gateway (the official SDK's client); the number of tool calls answered."""
    try:
        from mcp import Client
    except ImportError:
        raise ShadowError("shadow demo --mcp needs the official MCP SDK: pip install mcp==2.3.0 "
                          "(make venv installs it)") from None

    async def session() -> int:
        done = 0
        async with Client(f"{url}/mcp", mode="legacy") as client:
            for i in range(calls):
                await client.list_tools(cache_mode="refresh")
                done += not (await client.call_tool("add", {"a": i, "b": 1})).is_error
                done += not (await client.call_tool("echo", {"text": f"hello {i}"})).is_error
        return done

    async def run_all() -> int:
        return sum([await session() for _ in range(sessions)])

    return asyncio.run(run_all())


def run_mcp_demo(out: Path, *, sessions: int) -> tuple[object, Path]:
    """Run it all; return the verdict and the capture folder."""
    from analyzers.pipeline import analyze, load_inputs

    out.mkdir(parents=True, exist_ok=True)
    capture = out / "capture"
    if capture.exists() and any(capture.iterdir()):
        raise ShadowError(f"{capture} already holds a capture; pick another --out")
    with Supervisor(out / "logs") as sup:
        server = [sys.executable, "-m", "shadow.demo.mcp_server"]
        children = sup.start_services({"tools-v1": [*server, "--name", "v1"],
                                       **{n: [*server, "--name", n, *extra] for n, extra in CANDIDATES.items()}},
                                      timeout_s=60.0)
        config = out / "gateway.yaml"
        config.write_text(gateway_yaml(children["tools-v1"].url or "",
                                       {n: children[n].url or "" for n in CANDIDATES}))
        gateway, url = start_gateway(sup, config)
        started = time.monotonic()
        answered = drive(url, sessions, 4)
        print(f"ran {sessions} agent sessions through the gateway in {time.monotonic() - started:.1f} s "
              f"({answered} tool calls answered); tools/list and add mirrored to {', '.join(CANDIDATES)}, "
              "each candidate in its own session")
        time.sleep(1.0)  # the last mirror copies answer
        if sup.stop(gateway, 30.0) not in (0, 130, -15):
            raise ShadowError(f"the gateway did not stop cleanly; see {gateway.log_path}")
    policy_file = out / "policy.yaml"
    policy_file.write_text(POLICY)
    policy, rules = load_inputs(policy_file)
    return analyze(capture, policy, rules=rules, progress=False).verdict, capture
