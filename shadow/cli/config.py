"""`shadow config check FILE`: validate a gateway configuration without starting anything."""

from __future__ import annotations

from pathlib import Path

import click

from shadow.errors import ConfigError


@click.group()
def config() -> None:
    """Work with gateway configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("-v", "--verbose", is_flag=True,
              help="Also list the routers in the order they are tried, with where each one sends traffic.")
def check(file: str, verbose: bool) -> None:
    """Validate FILE; print a one-line summary (exit 0) or the one-line error (exit 2).

    FILE may also be a `shadow canary` plan (checked with the gateway file it names).

    FILE may be Gateway API manifests (a file or a directory): each HTTPRoute's status conditions
    (Accepted, ResolvedRefs with reasons) are printed too, as a controller would report them."""
    # imported here so `shadow --help` stays fast
    from shadow.delivery.canary import describe_plan, is_canary_plan, load_plan
    from shadow.gateway.config import load_config
    from shadow.gatewayapi.provider import (
        gateway_status_lines,
        is_gateway_api_source,
        load_gateway_api,
        status_lines,
    )

    if is_canary_plan(Path(file)):  # `shadow canary`'s plan: validated with the gateway file it names
        click.echo(f"ok: {file}: {describe_plan(load_plan(Path(file)))}")
        return
    statuses: list[str] = []
    try:
        if is_gateway_api_source(file):
            loaded = load_gateway_api(file)
            cfg, statuses = loaded.config, gateway_status_lines(loaded) + status_lines(loaded)
        else:
            cfg = load_config(file)
    except ConfigError:
        raise  # ShadowError prints "error: <file>:<line>: <field>: <problem>" and exits 2
    except Exception as exc:  # never a traceback, even for a bug of ours
        raise ConfigError(f"unexpected error while loading: {type(exc).__name__}: {exc}", file=file) from None
    from shadow.gateway.table import router_table, split_warnings

    click.echo(f"ok: {file}: {cfg.summary()}")
    for line in statuses:
        click.echo(f"  {line}")
    for warning in split_warnings(cfg):
        click.echo(f"warning: {warning}")
    if verbose:
        for row in router_table(cfg):
            click.echo(f"  {row.line()}")
