"""The AI path against plain pass-through, side by side in one run.

    .venv/bin/python bench/ai_gateway.py [--seconds 6] [--concurrency 16] [--rounds 2] [--streams 60]

One fake OpenAI-compatible model (shadow/demo/model_server.py, in its own process) behind two gateways
(capture off in both): `pass` routes /v1 to it with no middleware; `ai` adds the `chatCompletion`
middleware (credentials from an env variable, a model allow list, a temperature cap, a price table)
and a `tokenRateLimit` (a limit never reached), so every request is governed and every answer's usage
parsed and counted. `direct` talks to the model without a gateway.

- Buffered Chat Completions: requests per second over `--seconds` per mode (an aiohttp client with
  `--concurrency` keep-alive connections), modes interleaved for `--rounds` rounds.
- Streams: `--streams` sequential streamed Chat Completions per mode (the model sends a chunk every
  5 ms, no usage asked: the AI path asks for it and drops the usage chunk); time to the first content
  chunk at the client, median and p90, and the added time over `direct`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import GatewayProcess  # noqa: E402

PASS = """
http:
  routers:
    llm: {{rule: "PathPrefix(`/v1`)", service: model}}
  services:
    model: {{loadBalancer: {{servers: [{{url: "{url}"}}]}}}}
shadow:
  capture: {{enabled: false}}
"""

AI = """
http:
  routers:
    llm: {{rule: "PathPrefix(`/v1`) && Model(`gpt-*`)", service: model, middlewares: [limit, llm]}}
  services:
    model: {{loadBalancer: {{servers: [{{url: "{url}"}}]}}}}
  middlewares:
    llm:
      chatCompletion:
        token: {{env: BENCH_MODEL_KEY}}
        allowedModels: ["gpt-4o*"]
        maxParams: {{temperature: 1.0}}
        prices: {{"gpt-4o*": {{input: 2.5, output: 10}}}}
    limit:
      tokenRateLimit:
        limits: [{{tokens: 1000000000, period: 1h}}]
        sourceCriterion: {{requestHeaderName: X-Team}}
shadow:
  capture: {{enabled: false}}
"""

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0}


def start_model(chunk_delay: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "shadow.demo.model_server", "--chunk-delay", str(chunk_delay)],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        raise RuntimeError(f"model server did not start: {line!r}")
    return proc, line.split()[1]


async def throughput(url: str, seconds: float, concurrency: int, max_requests: int = 200_000) -> float:
    done = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline and done < max_requests:
                async with session.post(f"{url}/v1/chat/completions", json=BODY,
                                        headers={"X-Team": "bench", "Authorization": "Bearer client"}) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.monotonic() - started)


async def first_token_ms(url: str, streams: int) -> list[float]:
    out = []
    body = {**BODY, "stream": True}
    async with aiohttp.ClientSession() as session:
        for _ in range(streams):
            started = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=body, headers={"X-Team": "bench"}) as resp:
                first = None
                async for line in resp.content:
                    if first is None and line.startswith(b"data: {") and b'"content": "' in line \
                            and b'"content": ""' not in line:
                        first = (time.perf_counter() - started) * 1000.0
                assert first is not None
                out.append(first)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--streams", type=int, default=60)
    args = parser.parse_args()
    os.environ["BENCH_MODEL_KEY"] = "sk-bench"
    model, url = start_model(0.005)
    tmp = Path(tempfile.mkdtemp(prefix="ai-bench-"))
    gateways = {}
    try:
        for name, text in (("pass", PASS), ("ai", AI)):
            cfg = tmp / f"{name}.yaml"
            cfg.write_text(text.format(url=url))
            gateways[name] = GatewayProcess(cfg).start()
        targets = {"direct": url, **{n: g.url for n, g in gateways.items()}}
        rps: dict[str, list[float]] = {n: [] for n in targets}
        ttft: dict[str, list[float]] = {n: [] for n in targets}
        for _ in range(args.rounds):
            for name, target in targets.items():
                rps[name].append(asyncio.run(throughput(target, args.seconds, args.concurrency)))
            for name, target in targets.items():
                ttft[name].extend(asyncio.run(first_token_ms(target, args.streams // args.rounds)))
        load = os.getloadavg()[0]
        print(f"load average {load:.1f}; {args.rounds} rounds, {args.seconds:g}s x {args.concurrency} connections; "
              f"{args.streams} streams per mode")
        print(f"{'mode':<8} {'buffered req/s':>15} {'vs pass':>8} {'TTFT p50 ms':>12} {'p90 ms':>8} {'added p50':>10}")
        base_ttft = statistics.median(ttft["direct"])
        for name in targets:
            mean_rps = statistics.mean(rps[name])
            ratio = mean_rps / statistics.mean(rps["pass"])
            values = sorted(ttft[name])
            p50, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
            print(f"{name:<8} {mean_rps:>15.0f} {ratio:>8.2f} {p50:>12.2f} {p90:>8.2f} {p50 - base_ttft:>+10.2f}")
    finally:
        for g in gateways.values():
            g.close()
        model.terminate()
        model.wait(10)


if __name__ == "__main__":
    main()
