"""`shadow baseline CAPTURE [-o DIR]`: what the monolith's traffic looks like before any extraction.

Writes baseline.html (self-contained, figures inline) and baseline.md, prints their paths and the top
extraction candidates. Exit 0 when written; 2 for a usage error or an empty or malformed capture.
"""

from __future__ import annotations

from pathlib import Path

import click

from shadow.cli.capture_location import CAPTURE_LOCATION

TOP_CANDIDATES_PRINTED = 5


@click.command("baseline")
@click.argument("capture", type=CAPTURE_LOCATION)
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder for baseline.html and baseline.md (default: CAPTURE/baseline).")
def baseline(capture: Path, out_dir: Path | None) -> None:
    """Traffic, latency, error clusters and extraction candidates per endpoint of CAPTURE."""
    from analyzers.baseline import build_baseline, write_baseline
    from shadow.errors import ShadowError

    result = build_baseline(capture)
    target = out_dir if out_dir is not None else capture / "baseline"
    try:
        files = write_baseline(result, target)
    except OSError as exc:
        raise ShadowError(f"{target}: cannot write the baseline: {exc.strerror or exc}") from None
    click.echo(f"baseline: {files.html}")
    click.echo(f"summary:  {files.markdown}")
    click.echo(f"{result.total:,} primary exchanges, {len(result.endpoints)} endpoints"
               + ("" if result.has_spans else " (no spans: coupling unknown)"))
    for i, c in enumerate(result.candidates[:TOP_CANDIDATES_PRINTED], start=1):
        click.echo(f"  {i}. {c.endpoint}  score {c.score:.0f}: {c.reason}")
