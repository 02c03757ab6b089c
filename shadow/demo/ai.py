"""`shadow demo --ai`: a model switch judged end to end.

Three fake OpenAI-compatible models (shadow/demo/model_server.py, each its own process): the primary
`gpt-4o`, and two candidates — `mini`, which words its answers differently but says the same, and
`turbo`, which breaks some JSON answers and calls the wrong tool at times. The gateway serves every
chat call from the primary and mirrors it to the primary once more (the noise floor) and to both
candidates; traffic mixes plain questions, JSON-mode requests and tool calls. Then the capture is
judged (analyzers/ai_verdict.py) and a Markdown report written with answer pairs side by side.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

from analyzers.ai_verdict import AiPolicy, ModelPair, judge_model_switch, load_pairs
from analyzers.policy import Margins, Policy
from analyzers.verdict import Verdict
from shadow.demo.processes import Supervisor
from shadow.demo.run import start_gateway
from shadow.errors import ShadowError

CANDIDATES = {"mini": ["--style", "alt"], "turbo": ["--broken-json", "0.4", "--wrong-tools", "0.3"]}
PROMPTS = ["What is the capital of France and its population?", "Explain how photosynthesis works in green plants",
           "Compare python and rust for systems programming", "Summarize the history of the roman empire briefly",
           "How do vaccines train the immune system response", "Why is the sky blue during the day"]
TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "send_email", "parameters": {"type": "object"}}}]
MIN_SAMPLES = 20


def gateway_yaml(primary: str, candidates: dict[str, str]) -> str:
    services = "\n".join(f"    cand-{n}: {{loadBalancer: {{servers: [{{url: \"{u}\"}}]}}}}" for n, u in candidates.items())
    mirrors = ", ".join(["{name: gpt-again, percent: 100}", *(f"{{name: cand-{n}, percent: 100}}" for n in candidates)])
    targets = "\n".join(f"      cand-{n}: {{role: candidate, allowUnsafe: true}}" for n in candidates)
    cands = ", ".join(f"cand-{n}: {{model: gpt-4o-{n}}}" for n in candidates)
    return f"""# written by `shadow demo --ai`
http:
  routers:
    chat: {{rule: "PathPrefix(`/v1`) && Model(`gpt-*`)", service: gpt-shadowed, middlewares: [llm]}}
  services:
    gpt: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
    gpt-again: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
{services}
    gpt-shadowed: {{mirroring: {{service: gpt, mirrors: [{mirrors}]}}}}
  middlewares:
    llm:
      chatCompletion:
        allowedModels: ["gpt-4o*"]
        prices: {{"gpt-4o-*": {{input: 0.15, output: 0.6}}, "gpt-4o": {{input: 2.5, output: 10}}}}
        candidates: {{{cands}}}
shadow:
  capture: {{dir: capture}}
  mirroring:
    targets:
      gpt-again: {{role: secondary, allowUnsafe: true}}
{targets}
"""


def drive(url: str, requests: int) -> int:
    """Chat calls through the gateway: plain questions, JSON mode and tool calls in turn."""
    ok = 0
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for i in range(requests):
            body: dict[str, object] = {"model": "gpt-4o", "temperature": 1.0,
                                       "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
            if i % 3 == 1:
                body["response_format"] = {"type": "json_object"}
            elif i % 3 == 2:
                body["tools"] = TOOLS
            if i % 4 == 0:
                body["stream"] = True
            resp = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer demo"})
            ok += resp.status_code == 200
    return ok


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]


def _answer_text(pair_side: object) -> str:
    answer = pair_side.answer  # type: ignore[attr-defined]
    if answer.tool_calls:
        return "; ".join(f"`{c.name}({c.arguments})`" for c in answer.tool_calls)
    return answer.text


def report_markdown(verdict: Verdict, pairs: list[ModelPair]) -> str:
    lines = ["# Model switch: verdict", "", f"**{verdict.overall}** — {verdict.reason}", "",
             "| candidate | metric | class | estimate | margin | n | reason |", "|---|---|---|---|---|---|---|"]
    for r in sorted(verdict.results, key=lambda r: (r.candidate or "", r.metric)):
        est = "" if r.estimate is None else f"{r.estimate:.3g}"
        lines.append(f"| {r.candidate} | {r.metric} | {r.cls} | {est} | {r.margin:.3g} | {r.n_primary} | "
                     f"{_cell(r.reason)} |")
    for candidate in sorted({p.candidate_service for p in pairs}):
        own = [p for p in pairs if p.candidate_service == candidate][:6]
        lines += ["", f"## Answer pairs: primary vs {candidate}", "",
                  "| request | primary (gpt-4o) | candidate | the primary asked again |", "|---|---|---|---|"]
        for p in own:
            again = _answer_text(p.secondary) if p.secondary is not None else ""
            lines.append(f"| {p.request_id[:8]} | {_cell(_answer_text(p.primary))} | "
                         f"{_cell(_answer_text(p.candidate))} | {_cell(again)} |")
    return "\n".join(lines) + "\n"


def run_ai_demo(out: Path, *, requests: int, seed: int) -> tuple[Verdict, Path]:
    """Run it all; return the verdict and the report's path (OUT/report/ai-verdict.md)."""
    out.mkdir(parents=True, exist_ok=True)
    capture = out / "capture"
    if capture.exists() and any(capture.iterdir()):
        raise ShadowError(f"{capture} already holds a capture; pick another --out")
    with Supervisor(out / "logs") as sup:
        model = [sys.executable, "-m", "shadow.demo.model_server", "--seed", str(seed)]
        children = sup.start_services({"model-gpt": model,
                                       **{f"model-{n}": [*model, *extra] for n, extra in CANDIDATES.items()}})
        config = out / "gateway.yaml"
        config.write_text(gateway_yaml(children["model-gpt"].url or "",
                                       {n: children[f"model-{n}"].url or "" for n in CANDIDATES}))
        gateway, url = start_gateway(sup, config)
        started = time.monotonic()
        ok = drive(url, requests)
        print(f"sent {requests} chat calls through the gateway in {time.monotonic() - started:.1f} s "
              f"({ok} answered 200); each mirrored to the primary again and to {', '.join(CANDIDATES)}")
        time.sleep(1.0)  # the last mirror copies answer
        if sup.stop(gateway, 30.0) not in (0, 130, -15):
            raise ShadowError(f"the gateway did not stop cleanly; see {gateway.log_path}")
    policy, ai = Policy(defaults=Margins(min_samples=MIN_SAMPLES)), AiPolicy()
    verdict = judge_model_switch(capture, policy, ai)
    report_dir = out / "report"
    report_dir.mkdir(exist_ok=True)
    report = report_dir / "ai-verdict.md"
    report.write_text(report_markdown(verdict, load_pairs(capture, ai)))
    (report_dir / "ai-verdict.json").write_text(json.dumps(verdict.to_json(), indent=2))
    return verdict, report
