"""The `shadow` command line. Subcommands live in their own modules and load lazily,
so `shadow --help` stays fast and one subcommand's imports never slow another."""

from __future__ import annotations

import importlib
import sys

import click

# name -> "module:attribute" of a click command. Add one line per subcommand.
COMMANDS: dict[str, str] = {
    "gateway": "shadow.gateway_cmd:gateway",
    "replay": "shadow.replay.cli:replay",
    "demo": "shadow.demo.run:demo",
    "config": "shadow.config_cmd:config",
    "sql": "shadow.sql_cmd:sql",
    "report": "shadow.report_cmd:report",
    "gate": "shadow.gate_cmd:gate",
    "serve-verdict": "shadow.verdict_server:serve_verdict",
    "probe": "shadow.probe_cmd:probe",
    "canary": "shadow.canary:canary",
    "otlp-receiver": "shadow.otlp.cli:otlp_receiver",
    "baseline": "shadow.baseline_cmd:baseline",
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


if __name__ == "__main__":
    main()
