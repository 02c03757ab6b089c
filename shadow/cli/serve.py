"""`shadow serve CAPTURE`: the live view, a web UI on 127.0.0.1 that follows the capture as it grows
(the app is shadow/web/; docs/live-view.md)."""

from __future__ import annotations

from pathlib import Path

import click

from shadow.cli.serve_verdict import parse_listen


@click.command("serve")
@click.argument("capture", type=click.Path(path_type=Path, file_okay=False))
@click.option("--listen", default="127.0.0.1:8090", show_default=True, help="HOST:PORT to serve the page on.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Analysis policy YAML (margins, alpha, rules); defaults apply without it.")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="The gateway configuration, for the router table (the file the gateway runs).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2),
              help="Seconds between looks at the capture; a new sealed segment triggers a new analysis.")
@click.option("--learn-endpoints", is_flag=True,
              help="Re-template paths learned from the capture (/users/alice, /users/bob → /users/{name}).")
def serve(capture: Path, listen: str, policy_file: Path | None, config_file: Path | None, interval: float,
          learn_endpoints: bool) -> None:
    """Serve a live view of CAPTURE: the verdict, each endpoint's guardrails, differing fields with
    example requests side by side, latency distributions and the router table. It re-analyses
    whenever the gateway seals a new segment (shadow.capture.segmentSeconds)."""
    from shadow.errors import CaptureError
    from shadow.web.server import start_live_view

    if not capture.is_dir():
        raise CaptureError(f"{capture}: no such capture folder (the gateway creates it: shadow.capture.dir; "
                           "or run shadow gateway FILE --live-view HOST:PORT)")
    host, port = parse_listen(listen)
    server = start_live_view(capture, host=host, port=port, policy_file=policy_file, config_file=config_file,
                             interval=interval, learn_endpoints=learn_endpoints)
    click.echo(f"live view of {capture} at {server.url} (Ctrl-C stops)", err=True)
    server.serve_forever()
