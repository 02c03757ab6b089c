"""CPU per mirror copy: aiohttp vs shadow.gateway.http1, side by side in one run, same copies.

    .venv/bin/python bench/mirror_client.py [--copies 4000] [--rounds 3] [--concurrency 16] [--delay-ms 0]

Each round sends `--copies` copies through `shadow.gateway.mirror.MirrorDispatcher` (the gateway's mirror
path: timeout, result callback) to a fast loopback upstream in its own process, once per client,
interleaved. Prints this process's CPU time per copy (all threads) and copies/s; the gateway pays
that CPU on its one event loop for every mirrored request.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import start_upstream, stop

from shadow.gateway.mirror import MirrorDispatcher, MirrorRequest, MirrorResult

HEADERS = (("Host", "shop.example"), ("Accept", "application/json"), ("User-Agent", "bench"),
           ("X-Forwarded-For", "10.0.0.1"), ("X-Shadow-Request", "1"), ("X-Shadow-Request-Id", "abc"))


async def run(client: str, url: str, copies: int, concurrency: int) -> tuple[float, float, int]:
    results: list[MirrorResult] = []
    dispatcher = MirrorDispatcher(max_in_flight=10 * concurrency, timeout_s=5, on_result=results.append, client=client)
    sem = asyncio.Semaphore(concurrency)
    done = asyncio.Event()

    def finished(_r: MirrorResult) -> None:
        sem.release()
        if len(results) == copies:
            done.set()

    dispatcher._on_result = lambda r: (results.append(r), finished(r))  # type: ignore[assignment, func-returns-value]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(copies):
        await sem.acquire()
        dispatcher.submit(MirrorRequest(target="shadow", role="candidate", request_id=str(i), method="GET",
                                        url=f"{url}/api/items/{i}?q=1", upstream=url, headers=HEADERS, body=None))
    await done.wait()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await dispatcher.aclose()
    ok = sum(1 for r in results if r.status == 200 and r.body)
    return cpu / copies * 1e6, copies / wall, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay-ms", type=int, default=0, help="the upstream answers this late (a slow shadow)")
    args = parser.parse_args()
    proc, url = start_upstream(args.delay_ms)
    cpu: dict[str, list[float]] = {"aiohttp": [], "http1": []}
    rate: dict[str, list[float]] = {"aiohttp": [], "http1": []}
    try:
        for rnd in range(args.rounds):
            for client in cpu:
                us, rps, ok = asyncio.run(run(client, url, args.copies, args.concurrency))
                cpu[client].append(us)
                rate[client].append(rps)
                print(f"round {rnd + 1} {client:8s} {us:6.0f} µs CPU/copy  {rps:6.0f} copies/s  ok {ok}/{args.copies}",
                      flush=True)
    finally:
        stop(proc, signal.SIGTERM)
    print("\n| client | CPU µs per copy (median) | copies/s (median) |\n|---|---|---|")
    for client in cpu:
        print(f"| {client} | {statistics.median(cpu[client]):.0f} | {statistics.median(rate[client]):.0f} |")
    print(f"\nhttp1 / aiohttp CPU per copy: "
          f"{statistics.median(a / b for a, b in zip(cpu['http1'], cpu['aiohttp'], strict=True)):.2f}")


if __name__ == "__main__":
    main()
