"""mitmproxy's per-flow hook dispatch with the gateway's addons loaded, in-process (no sockets).

    .venv/bin/python bench/addon_dispatch.py [--flows 20000] [--rounds 3]

Builds a real mitmproxy `Master` with mitmdump's default addons, then loads `addons/gateway.py` the
way `-s` does (mitmproxy's script loader), with the pass-through configuration of
bench/gateway.py (catch-all router, capture off). Each flow then goes through the lifecycle events
an HTTP/1 reverse-proxied exchange triggers (requestheaders, request, responseheaders, response,
each followed by mitmproxy's UpdateHook) via `AddonManager.handle_lifecycle`, exactly as the proxy
server calls it. Printed: CPU µs per flow with the gateway loaded, without it (mitmdump's own
addons only, the inert ones pruned by addons/lean.py as the gateway does), and the difference, which is what the gateway's addons cost mitmproxy's dispatch
plus their own hook code. Rounds are interleaved; medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONFIG = """
http:
  routers:
    all: {rule: "PathPrefix(`/`)", service: mono}
  services:
    mono: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
shadow:
  gateway: {id: bench}
  capture: {enabled: false}
"""
# --telemetry: the same with telemetry on, sampling 1.0, to an endpoint nothing listens on (spans are
# encoded and their export fails and is counted: the exporter thread's work is part of the figure).
TELEMETRY = "  telemetry: {endpoint: \"http://127.0.0.1:9\", sampling: 1.0, exportInterval: 5s}\n"


async def build(with_gateway: bool, config: Path) -> object:
    from mitmproxy import options
    from mitmproxy.addons import default_addons
    from mitmproxy.addons.dumper import Dumper
    from mitmproxy.master import Master

    opts = options.Options()
    master = Master(opts, event_loop=asyncio.get_running_loop())
    master.addons.add(*default_addons(), Dumper())
    # Both load a script with addons/lean.py (the bare one only that): mitmproxy's inert built-in
    # addons leave the chain in both, so the difference is the gateway's own cost.
    script = REPO / "addons" / "gateway.py" if with_gateway else REPO / "bench" / "lean_mitmdump.py"
    opts.update(scripts=[str(script)])
    for _ in range(200):  # the script loader loads the script from a task
        if "shadow_prune_addons" in opts:
            break
        await asyncio.sleep(0.05)
    if with_gateway:
        opts.update(shadow_config=str(config), flow_detail=0, shadow_log_connections=False)
    opts.update(mode=["reverse:http://127.0.0.1:9"], connection_strategy="lazy", keep_host_header=True,
                flow_detail=0)
    from mitmproxy import hooks

    master.addons.trigger(hooks.ConfigureHook(set(opts.keys())))  # as mitmdump's startup does
    await master.addons.trigger_event(hooks.RunningHook())
    return master


def make_flow() -> object:
    from mitmproxy import http
    from mitmproxy.test import tflow, tutils

    req = tutils.treq(host="127.0.0.1", port=9, method=b"GET", path=b"/api/items/1-2?q=1", content=b"",
                      headers=http.Headers(((b"Host", b"127.0.0.1:8080"), (b"Accept", b"*/*"),
                                            (b"Accept-Encoding", b"gzip, deflate"),
                                            (b"User-Agent", b"Python/3.13 aiohttp/3"))))
    flow = tflow.tflow(req=req)
    flow.response = None
    return flow


async def run(master: object, flows: int) -> float:
    from mitmproxy import hooks
    from mitmproxy.proxy.layers import http as layers_http
    from mitmproxy.test import tutils

    addons = master.addons  # type: ignore[attr-defined]
    gc.collect()
    started = time.process_time()
    for _ in range(flows):
        flow = make_flow()
        await addons.handle_lifecycle(layers_http.HttpRequestHeadersHook(flow))
        await addons.handle_lifecycle(layers_http.HttpRequestHook(flow))
        flow.response = tutils.tresp()
        await addons.handle_lifecycle(layers_http.HttpResponseHeadersHook(flow))
        await addons.handle_lifecycle(layers_http.HttpResponseHook(flow))
        await asyncio.sleep(0)  # after_hooks callbacks run, as in the proxy
    del hooks
    return (time.process_time() - started) / flows * 1e6


async def baseline_flow_cost(flows: int) -> float:
    """Building the test flows alone (subtracted from both)."""
    started = time.process_time()
    for _ in range(flows):
        make_flow()
        await asyncio.sleep(0)
    return (time.process_time() - started) / flows * 1e6


async def main_async(args: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "pass.yaml"
        cfg.write_text(CONFIG + (TELEMETRY if args.telemetry else ""))
        bare = await build(False, cfg)
        gateway = await build(True, cfg)
        await run(bare, 500)
        await run(gateway, 500)  # warm: first-flow imports, caches
        results: dict[str, list[float]] = {"mitmdump addons only": [], "with the gateway": [], "flow building": []}
        for _ in range(args.rounds):
            results["flow building"].append(await baseline_flow_cost(args.flows))
            results["mitmdump addons only"].append(await run(bare, args.flows))
            results["with the gateway"].append(await run(gateway, args.flows))
    # Other load on a shared machine only ever adds CPU time (cache and core contention): the fastest
    # round is the least disturbed, so minimums are compared, with medians beside them.
    best = {k: min(v) for k, v in results.items()}
    for name, values in results.items():
        print(f"{name:24s} best {best[name]:7.1f} µs/flow  median {statistics.median(values):7.1f}")
    added = best["with the gateway"] - best["mitmdump addons only"]
    print(f"{'gateway adds':24s} best {added:7.1f} µs/flow  ({args.rounds} rounds of {args.flows} flows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--telemetry", action="store_true", help="the gateway's telemetry on (sampling 1.0)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
