"""`shadow canary PLAN`: step a weighted service's traffic to a candidate, gated by the verdict
(the controller is shadow/delivery/canary.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shadow.delivery.canary import dry_run_lines, load_plan, run_canary


@click.command("canary")
@click.argument("plan_file", metavar="PLAN", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the plan and print the weights each step would write; change nothing.")
def canary(plan_file: Path, dry_run: bool) -> None:
    """Shift a weighted service's traffic to a candidate step by step, gated by the verdict.

    Exit 0 promoted, 1 rolled back (FAIL), 3 inconclusive (paused), 2 usage error. While a step
    waits for traffic it prints its progress (requests per arm so far, time left).

    \b
    PLAN (YAML; paths relative to it; docs/examples/canary-plan.yaml):
      gateway: gateway.yaml     the gateway's config: its weights are rewritten
                                (formatting and comments kept), and it hot-reloads
      service: orders-split     a `weighted` service of that file
      child: orders-next        the child to shift (listed in shadow.split.candidates)
      steps: [5, 25, 50, 100]   percent of the service's traffic for the child
      minRequests: 200          per arm and step, before a look judges
      maxWait: 10m              per step; undecided by then: back to the last proven step, exit 3
      pollInterval: 5s
      capture: ./capture        default: the gateway's shadow.capture.dir
      policy: policy.yaml       a policy file or the policy inline (sequential mode is forced)
    """
    plan = load_plan(plan_file)  # a bad plan: ShadowError, one line, exit 2
    if dry_run:
        for line in dry_run_lines(plan):
            click.echo(line)
        return
    sys.exit(run_canary(plan))
