"""The MCP path against plain pass-through and a direct call, side by side in one run.

    .venv/bin/python bench/mcp_gateway.py [--calls 200] [--rounds 3]

One MCP server (shadow/demo/mcp_server.py: the official SDK's `MCPServer`, Streamable HTTP answering in SSE,
in its own process) reached three ways, each by the official SDK's `Client` in one session:
`direct`; `pass`, a gateway routing /mcp to it with no middleware (mitmproxy buffers the answer);
`mcp`, a gateway whose route has the `mcp` middleware with three policies (every POST parsed as
JSON-RPC and checked, the answer streamed event by event, the session pinned to its server). Capture
off in both gateways. `--calls` sequential `tools/call add` per mode and round, modes interleaved for
`--rounds` rounds; the latency of each call at the client, median and p90, and the added time over
`direct`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mcp import Client

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import GatewayProcess  # noqa: E402
from tests.upstream import free_port, wait_listening  # noqa: E402

PASS = """
http:
  routers:
    tools: {{rule: "PathPrefix(`/mcp`)", service: tools}}
  services:
    tools: {{loadBalancer: {{servers: [{{url: "{url}"}}]}}}}
shadow:
  capture: {{enabled: false}}
"""

MCP = """
http:
  routers:
    tools: {{rule: "PathPrefix(`/mcp`)", service: tools, middlewares: [governed]}}
  services:
    tools: {{loadBalancer: {{servers: [{{url: "{url}"}}]}}}}
  middlewares:
    governed:
      mcp:
        policies:
          - {{match: "Equals(`mcp.params.name`, `delete_everything`)", action: deny}}
          - {{match: "Equals(`mcp.params.name`, `transfer_funds`) && LessThan(`mcp.params.arguments.amount`, `1000`)", action: allow}}
          - {{match: "Equals(`mcp.method`, `tools/call`) && OneOf(`mcp.params.name`, `add`, `echo`)", action: allow}}
        defaultAction: deny
shadow:
  capture: {{enabled: false}}
"""


async def calls(url: str, count: int) -> list[float]:
    out = []
    async with Client(url, mode="legacy") as client:
        await client.call_tool("add", {"a": 0, "b": 0})  # warm the session
        for i in range(count):
            started = time.perf_counter()
            result = await client.call_tool("add", {"a": i, "b": 1})
            out.append((time.perf_counter() - started) * 1000.0)
            assert not result.is_error
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "shadow.demo.mcp_server", "--port", str(port), "--name", "bench"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateways: list[GatewayProcess] = []
    try:
        wait_listening(port)
        url = f"http://127.0.0.1:{port}"
        targets = {"direct": f"{url}/mcp"}
        with tempfile.TemporaryDirectory() as tmp:
            for name, template in (("pass", PASS), ("mcp", MCP)):
                cfg = Path(tmp) / f"{name}.yaml"
                cfg.write_text(template.format(url=url))
                gw = GatewayProcess(cfg).start()
                gateways.append(gw)
                targets[name] = f"{gw.url}/mcp"
            samples: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    samples[name] += asyncio.run(calls(target, args.calls))
        base = statistics.median(samples["direct"])
        print(f"tools/call latency at the client, {args.calls} calls x {args.rounds} rounds per mode (ms)")
        print(f"{'mode':8} {'median':>8} {'p90':>8} {'added (median)':>15}")
        for name, values in samples.items():
            values.sort()
            median, p90 = statistics.median(values), values[int(len(values) * 0.9)]
            print(f"{name:8} {median:8.2f} {p90:8.2f} {median - base:15.2f}")
        mcp_added = statistics.median(samples["mcp"]) - statistics.median(samples["pass"])
        print(f"mcp path over plain pass-through: {mcp_added:+.2f} ms per call (median)")
    finally:
        for gw in gateways:
            gw.close()
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
