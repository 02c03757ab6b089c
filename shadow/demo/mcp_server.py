"""A real MCP server for `shadow demo --mcp` and the MCP gateway's tests: the official SDK's `MCPServer`
over Streamable HTTP (or the legacy HTTP+SSE transport) on 127.0.0.1, in its own process. It prints
`LISTENING <url>` once it accepts connections (`--port 0`: a free port).

    python -m shadow.demo.mcp_server --port 8931 --name a [--json] [--variant changed] [--sse]

Tools: `whoami` (this instance's name: the affinity tests), `echo`, `add`, `transfer_funds`
(an `amount` argument for the argument policies), `delete_everything` (never allowed), and
`wait_for_release` (reports progress, then waits until a file exists: proves the gateway streams
the SSE answer). `--variant changed` changes `add`'s input schema (a candidate server that must FAIL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from mcp.server import MCPServer
from mcp.server.mcpserver import Context


def build(name: str, variant: str) -> MCPServer:
    mcp = MCPServer(f"shadow-test-{name}")

    @mcp.tool()
    def whoami() -> str:
        """The name of the server instance that answers."""
        return name

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    if variant == "changed":
        @mcp.tool(name="add")
        def add_three(a: int, b: int, c: int = 0) -> int:
            """Add numbers."""
            return a + b + c
    else:
        @mcp.tool()
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            return a + b

    @mcp.tool()
    def transfer_funds(amount: float, to: str) -> str:
        """Move money to an account."""
        return f"moved {amount} to {to}"

    @mcp.tool()
    def delete_everything() -> str:
        """A tool no policy should let through."""
        return "deleted"

    @mcp.tool()
    async def wait_for_release(path: str, ctx: Context) -> str:
        """Report progress, then wait (up to 30 s) until `path` exists."""
        await ctx.report_progress(1, total=2, message="started")
        deadline = time.monotonic() + 30.0
        while not os.path.exists(path) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return "released" if Path(path).exists() else "timed out"

    @mcp.resource("notes://{topic}")
    def note(topic: str) -> str:
        """A note about a topic."""
        return f"a note about {topic}"

    @mcp.prompt()
    def greet(who: str) -> str:
        """A greeting prompt."""
        return f"Say hello to {who}."

    return mcp


def serve(mcp: MCPServer, port: int, *, sse: bool, json_response: bool) -> None:
    import uvicorn

    app = mcp.sse_app() if sse else mcp.streamable_http_app(json_response=json_response)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            print(f"LISTENING http://127.0.0.1:{bound}", flush=True)
        await task

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="a")
    parser.add_argument("--variant", default="base")
    parser.add_argument("--json", action="store_true", help="answer POSTs with JSON instead of SSE")
    parser.add_argument("--sse", action="store_true", help="the legacy HTTP+SSE transport")
    args = parser.parse_args()
    serve(build(args.name, args.variant), args.port, sse=args.sse, json_response=args.json)


if __name__ == "__main__":
    main()
