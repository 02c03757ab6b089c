"""`shadow probe CAPTURE [--primary URL] [--sample N]`: learn the primary's own noise.

Re-sends a few safe (GET/HEAD) captured requests to the primary twice each and records which
pointer templates differ between two of its own answers, in CAPTURE/noise/probe.parquet. The next
analysis (`compute_diffs`, `shadow report`, `shadow gate`) marks candidate differences at those
templates as noise, with the probe's count as the reason. Exit 0 when the probe ran; 2 for a usage
error, an unreadable capture, or when no request could be re-sent.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("probe")
@click.argument("capture", type=click.Path(path_type=Path, file_okay=False))
@click.option("--primary", "base_url", metavar="URL",
              help="Base URL of the primary (default: the upstream each request was captured with).")
@click.option("--sample", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="Requests to re-send (each twice).")
@click.option("--per-endpoint", default=5, show_default=True, type=click.IntRange(1, 10_000),
              help="At most this many requests per endpoint.")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 600), help="Seconds per request.")
def probe(capture: Path, base_url: str | None, sample: int, per_endpoint: int, timeout: float) -> None:
    """Learn which response fields differ between two answers of the primary itself."""
    from analyzers.noise import PROBE_FILE, probe_noise
    from shadow.errors import ShadowError

    result = probe_noise(capture, base_url=base_url, sample=sample, per_endpoint=per_endpoint, timeout=timeout)
    if result.probed == 0:
        raise ShadowError(f"{capture}: no request could be re-sent ({result.failed} failed; are there captured "
                          "GET/HEAD requests, and is the primary reachable? try --primary URL)")
    click.echo(f"probed {result.probed} requests ({result.failed} failed); "
               f"{len(result.differing)} volatile field(s) → {capture / PROBE_FILE}")
    for (endpoint, kind, template), (n, of) in sorted(result.differing.items()):
        click.echo(f"  {endpoint}  {kind} {template or '(whole)'}  differs {n}/{of}")
