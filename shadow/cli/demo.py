"""`shadow demo`: the monolith → orders-service migration end to end (the pieces are in shadow/demo/)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from shadow.cli import COMMANDS
from shadow.demo.run import CONFIG_NAME, GATEWAY_API_CONFIG_NAME, default_out_dir, run_demo, summarize_capture
from shadow.errors import CaptureError


@click.command("demo")
@click.option("--requests", "request_count", type=click.IntRange(1, 100_000), default=3000, show_default=True,
              help="How many client requests to send through the gateway.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the config, capture and logs.  [default: ./out/demo-<timestamp>]")
@click.option("--concurrency", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Requests in flight at once. More saturates the gateway on 2 cores, and its queueing "
                   "then inflates the primary's measured latency (see the secondary's, same code).")
@click.option("--max-seconds", type=click.FloatRange(min=1), default=75.0, show_default=True,
              help="Stop sending after this long even if requests remain.")
@click.option("--seed", type=int, default=2026, show_default=True, help="Seed of the traffic plan.")
@click.option("--keep-running", is_flag=True, help="After the traffic, keep everything up until Ctrl-C.")
@click.option("--no-progress", is_flag=True, help="No progress bar (there is none off a terminal).")
@click.option("--report/--no-report", default=True, show_default=True,
              help="End by analysing the capture: the verdict and an HTML report in OUT/report.")
@click.option("--telemetry", is_flag=True,
              help="Trace it all: the gateway's spans and the services' own (a span per request and per "
                   "database query) land in OUT/capture/spans, and the report shows in which span the "
                   "candidate's extra time sits.")
@click.option("--gateway-api", is_flag=True,
              help="Run the gateway from Kubernetes Gateway API manifests (OUT/gateway-api.yaml: a Gateway and "
                   "an HTTPRoute) instead of the Traefik-style file: same routing, same verdict "
                   "(docs/gateway-api.md).")
@click.option("--ai", "ai_switch", is_flag=True,
              help="The AI gateway instead: a model switch judged end to end (fake models, no download; "
                   "--requests chat calls, 150 by default), with a report of answer pairs side by side.")
@click.option("--mcp", "mcp_server", is_flag=True,
              help="The MCP gateway instead: an MCP server shadow-tested end to end (real MCP servers and "
                   "agents from the official SDK; a candidate with a changed tool schema and an equivalent "
                   "one), judged per tool (docs/mcp-gateway.md).")
def demo(request_count: int, out: Path | None, concurrency: int, max_seconds: float, seed: int,
         keep_running: bool, no_progress: bool, report: bool, telemetry: bool, gateway_api: bool,
         ai_switch: bool, mcp_server: bool) -> None:
    """Run the monolith → orders-service migration demo end to end and leave a capture to analyse.

    Starts a shop monolith, a second instance of it and an extracted orders service that differs in
    seeded ways (a renamed field, rounding, item order, latency, occasional 500s), puts the gateway in
    front (everything served by the monolith; /api/orders mirrored to the other two), drives traffic
    through it, stops everything cleanly, shows what the capture holds, and ends with the verdict
    and an HTML report of the comparison (OUT/report).
    """
    out = out or default_out_dir()
    if ai_switch:
        ai_demo(out, request_count, seed)
        return
    if mcp_server:
        mcp_demo(out)
        return
    progress = not no_progress and sys.stderr.isatty()  # bars on a terminal; CI logs stay readable
    started = time.monotonic()
    capture, interrupted = run_demo(out, requests=request_count, concurrency=concurrency,
                                    max_seconds=max_seconds, keep_running=keep_running, seed=seed,
                                    progress=progress, telemetry=telemetry, gateway_api=gateway_api)
    click.echo(f"\ncapture: {capture}  ({time.monotonic() - started:.0f} s in all; logs in {out / 'logs'})\n")
    try:
        summary = summarize_capture(capture)
    except CaptureError:
        if not interrupted:
            raise
        click.echo("nothing was captured: interrupted before any request went through")
        sys.exit(130)
    click.echo(summary)
    click.echo(next_steps(out / (GATEWAY_API_CONFIG_NAME if gateway_api else CONFIG_NAME), capture))
    if interrupted:
        sys.exit(130)
    if not report:
        return
    from shadow.cli.report import demo_report  # last step: the verdict and the report (shadow report)

    demo_report(capture, out / "report", progress=progress)


def ai_demo(out: Path, request_count: int, seed: int) -> None:
    from shadow.cli.gate import exit_code_for, guardrail_line
    from shadow.demo.ai import run_ai_demo

    requests = 150 if request_count == 3000 else request_count  # --requests' default is the service demo's
    verdict, report = run_ai_demo(out, requests=requests, seed=seed)
    for r in sorted(verdict.results, key=lambda r: (r.candidate or "", r.metric)):
        click.echo(guardrail_line(r))
    for warning in verdict.warnings:
        click.echo(f"warning: {warning}")
    click.echo(f"\nverdict: {verdict.overall}  (report: {report}; capture: {out / 'capture'})")
    click.echo(f"next: shadow gate {shlex.quote(str(out / 'capture'))} --ai   # the same verdict as an exit "
               f"code ({exit_code_for(verdict.overall)} here)")


def mcp_demo(out: Path) -> None:
    from analyzers.report import class_name, overall_name, verdict_results
    from shadow.cli.gate import exit_code_for, guardrail_line
    from shadow.demo.mcp import run_mcp_demo

    verdict, capture = run_mcp_demo(out, sessions=6)
    for r in sorted(verdict_results(verdict), key=lambda r: (r.endpoint, r.metric)):
        if class_name(r.cls) != "PASS":
            click.echo(guardrail_line(r))
    overall = overall_name(verdict)
    click.echo(f"\nverdict: {overall}  (capture: {capture}; config: {out / 'gateway.yaml'})")
    click.echo(f"next: shadow gate {shlex.quote(str(capture))} --policy {shlex.quote(str(out / 'policy.yaml'))}"
               "   # the same verdict as an exit code "
               f"({exit_code_for(overall)} here); per tool: shadow sql {shlex.quote(str(capture))} "
               "\"select endpoint, service, count(*) from exchanges where mcp_method is not null group by all\"")


def next_steps(config: Path, capture: Path) -> str:
    """The commands to try next, only those this installation has."""
    q = shlex.join
    steps = []
    if "sql" in COMMANDS:
        steps.append(q(["shadow", "sql", str(capture), "SELECT role, count(*) FROM exchanges GROUP BY role"]))
    if "report" in COMMANDS:
        steps.append(q(["shadow", "report", str(capture)]))
    if "gate" in COMMANDS:
        steps.append(q(["shadow", "gate", str(capture)]))
    steps.append(q(["shadow", "gateway", str(config), "--listen", "127.0.0.1:8080"])
                 + "   # the same gateway, for your own traffic")
    return "next:\n" + "\n".join("  " + s for s in steps)
