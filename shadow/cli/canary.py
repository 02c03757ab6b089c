"""`shadow canary PLAN`: step a weighted service's traffic to a candidate, gated by the verdict
(the controller is shadow/delivery/canary.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shadow.delivery.canary import load_plan, run_canary


@click.command("canary")
@click.argument("plan_file", metavar="PLAN", type=click.Path(path_type=Path, dir_okay=False))
def canary(plan_file: Path) -> None:
    """Shift a weighted service's traffic to a candidate step by step, gated by the verdict.

    Exit 0 promoted, 1 rolled back (FAIL), 3 inconclusive (paused), 2 usage error."""
    sys.exit(run_canary(load_plan(plan_file)))  # a bad plan: ShadowError, one line, exit 2
