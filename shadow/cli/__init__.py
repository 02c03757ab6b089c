"""The `shadow` command line: this package is the `shadow` group, each module one subcommand.

Subcommands load lazily (COMMANDS), so `shadow --help` stays fast and one subcommand's imports never
slow another. Commands parse options and print; the work is in the library packages (gateway,
capture, replay, telemetry, delivery, demo, analyzers), which never import this package's commands."""

from __future__ import annotations

import importlib
import sys

import click

# name -> "module:attribute" of a click command. Add one line per subcommand.
COMMANDS: dict[str, str] = {
    "gateway": "shadow.cli.gateway:gateway",
    "replay": "shadow.cli.replay:replay",
    "demo": "shadow.cli.demo:demo",
    "config": "shadow.cli.config:config",
    "sql": "shadow.cli.sql:sql",
    "report": "shadow.cli.report:report",
    "gate": "shadow.cli.gate:gate",
    "serve-verdict": "shadow.cli.serve_verdict:serve_verdict",
    "serve": "shadow.cli.serve:serve",
    "probe": "shadow.cli.probe:probe",
    "canary": "shadow.cli.canary:canary",
    "otlp-receiver": "shadow.cli.otlp_receiver:otlp_receiver",
    "baseline": "shadow.cli.baseline:baseline",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shadow")
def cli() -> None:
    """Route, mirror and capture live traffic; diff, compare and judge a cutover."""


def main() -> None:
    # Exit codes: 0 ok/PASS, 1 FAIL, 2 usage error (click's own), 3 INCONCLUSIVE.
    try:
        cli.main(prog_name="shadow", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
