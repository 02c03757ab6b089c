"""`shadow replay`: send recorded traffic to primary/candidate/secondary and capture the exchanges."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import click

from shadow.errors import ConfigError, ShadowError
from shadow.replay.engine import ReplayConfig, ReplayEngine, ReplayStats, Target
from shadow.replay.filters import (
    EntryFilter,
    Rewrite,
    check_percent,
    compile_path,
    hostname_of,
    parse_path_rewrites,
    parse_set_headers,
    parse_status,
)
from shadow.replay.resume import (
    ReplayState,
    SourceProgress,
    captured_roles,
    load_state,
    save_state,
    state_path,
    write_state_json,
)
from shadow.replay.sources import Source, SourceError, open_source
from shadow.signals import stop_signals_call

EXIT_INTERRUPTED = 130


def parse_target(role: str, value: str | None) -> Target | None:
    """`URL`, `NAME=URL`, or (primary only) `recorded`."""
    if value is None:
        return None
    name, url = role, value
    head, sep, tail = value.partition("=")
    if sep and "://" not in head:
        name, url = head, tail
    if url == "recorded":
        if role != "primary":
            raise ConfigError("only the primary can be 'recorded'", field=f"--{role}")
        return Target(role, name if sep else "recorded", None)
    if not url.startswith(("http://", "https://")) or "://" not in url or len(url.split("://", 1)[1]) == 0:
        raise ConfigError(f"{value!r} is not an http(s) URL (or NAME=URL)", field=f"--{role}")
    return Target(role, name, url)


def summary_line(stats: ReplayStats, targets: tuple[Target, ...], capture: Path) -> str:
    rate = stats.requests / stats.duration_s
    errs = ", ".join(
        f"{t.role} {stats.targets[t.role].errors}"
        + (f" (+{stats.targets[t.role].server_errors} 5xx)" if stats.targets[t.role].server_errors else "")
        for t in targets)
    parts = [
        f"replay: sent {stats.requests} requests to {len(targets)} targets",
        f"skipped {stats.skipped_unsafe} unsafe, {stats.skipped_filtered} filtered"
        + (f", {stats.already_done} already done" if stats.already_done else ""),
        f"errors {errs}",
    ]
    if stats.shed:
        parts.append(f"shed {stats.shed} rows")
    if stats.cancelled:
        parts.append(f"cancelled {stats.cancelled} in flight")
    parts.append(f"{stats.duration_s:.2f} s, {rate:.1f} req/s")
    parts.append(f"capture {capture}")
    return "; ".join(parts) + (" (interrupted: --resume continues)" if stats.interrupted else "")


@click.command("replay")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--primary", required=True, metavar="URL|recorded",
              help="Primary target URL (or NAME=URL), or 'recorded' to use the recorded response.")
@click.option("--candidate", required=True, metavar="URL", help="Candidate target URL (or NAME=URL).")
@click.option("--secondary", metavar="URL", help="Secondary target (same code as primary) to measure noise.")
@click.option("-o", "--output", "capture", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Capture folder to write (created if missing).")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 10_000),
              help="Source requests in flight at once.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Fixed rate, source requests per second.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True),
              help="Recorded timing scaled: 2 = twice as fast.")
@click.option("--limit", type=click.IntRange(min=0), help="Replay at most N eligible requests.")
@click.option("--loop", "loops", default=1, show_default=True, type=click.IntRange(min=1),
              help="Replay the sources K times.")
@click.option("--sequential", is_flag=True, help="One request at a time, targets in order.")
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds per call before it is captured as an error.")
@click.option("--method", "methods", multiple=True, help="Only these methods (repeatable).")
@click.option("--path", "path_regex", metavar="REGEX", help="Only requests whose path?query matches.")
@click.option("--host", "hosts", multiple=True, help="Only requests recorded with this Host (repeatable).")
@click.option("--status", "statuses", multiple=True, metavar="CODE|Nxx", help="Only recorded status (repeatable).")
@click.option("--sample", type=float, metavar="PERCENT", help="Deterministic sample of the requests.")
@click.option("--hash-header", metavar="NAME", help="Keep --hash-percent of the values of this header.")
@click.option("--hash-percent", type=float, metavar="P", help="Percentage for --hash-header.")
@click.option("--set-header", "set_headers", multiple=True, metavar="K:V", help="Set a request header.")
@click.option("--remove-header", "remove_headers", multiple=True, metavar="K", help="Remove a request header.")
@click.option("--rewrite-host", metavar="HOST", help="Host header to send (default: the target's).")
@click.option("--keep-host", is_flag=True, help="Send the recorded Host header.")
@click.option("--rewrite-path", "rewrite_paths", multiple=True, metavar="OLD:NEW", help="Rewrite a path prefix.")
@click.option("--allow-unsafe", is_flag=True, help="Also replay POST/PUT/PATCH/DELETE.")
@click.option("--resume", is_flag=True, help="Continue an interrupted replay into the same capture.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates of the targets.")
def replay(sources: tuple[str, ...], primary: str, candidate: str, secondary: str | None, capture: Path,
           concurrency: int, rate: float | None, speed: float | None, limit: int | None, loops: int,
           sequential: bool, timeout_s: float, methods: tuple[str, ...], path_regex: str | None,
           hosts: tuple[str, ...], statuses: tuple[str, ...], sample: float | None,
           hash_header: str | None, hash_percent: float | None, set_headers: tuple[str, ...],
           remove_headers: tuple[str, ...], rewrite_host: str | None, keep_host: bool,
           rewrite_paths: tuple[str, ...], allow_unsafe: bool, resume: bool, progress: bool | None,
           insecure: bool) -> None:
    """Replay recorded traffic against --primary, --candidate (and --secondary) and capture every
    exchange (mode=replay) in -o CAPTURE, where `shadow report` and `shadow gate` read it.

    SOURCE is a mitmproxy flow file, a HAR file, or a capture folder (its primary rows).
    Unsafe methods are skipped unless --allow-unsafe. Every request carries X-Shadow-Request: 1 and
    X-Shadow-Replay: 1. Ctrl-C stops cleanly (twice: cancel in-flight calls); --resume continues.
    Exit codes: 0 done, 2 usage or source error (entries before a damaged one are replayed),
    130 interrupted.

    \b
    Examples:
      shadow replay traffic.flows --primary http://monolith:8080 --candidate http://orders:8081 -o cap
      shadow replay session.har --primary recorded --candidate http://orders:8081 -o cap --speed 2
      shadow replay old-capture/ --primary http://mono:8080 --candidate http://orders:8081 \\
          --secondary http://mono-2:8080 -o cap --rate 50 --path '^/api/orders'
      shadow replay traffic.flows --primary ... --candidate ... -o cap --resume   # after Ctrl-C
    """
    if rate is not None and speed is not None:
        raise ConfigError("--rate and --speed exclude each other")
    if (hash_header is None) != (hash_percent is None):
        raise ConfigError("--hash-header and --hash-percent go together")
    if rewrite_host and keep_host:
        raise ConfigError("--rewrite-host and --keep-host exclude each other")
    targets = tuple(t for t in (parse_target("primary", primary), parse_target("candidate", candidate),
                                parse_target("secondary", secondary)) if t is not None)
    entry_filter = EntryFilter(
        methods=frozenset(m.upper() for m in methods),
        path=compile_path(path_regex),
        hosts=frozenset(hostname_of(h) for h in hosts),
        statuses=tuple(parse_status(s) for s in statuses),
        sample_percent=check_percent(sample, "--sample"),
        hash_header=hash_header,
        hash_percent=check_percent(hash_percent, "--hash-percent"),
        allow_unsafe=allow_unsafe,
    )
    rewrite = Rewrite(
        set_headers=parse_set_headers(set_headers),
        remove_headers=frozenset(h.lower() for h in remove_headers),
        host=rewrite_host,
        keep_host=keep_host,
        path_prefixes=parse_path_rewrites(rewrite_paths),
    )
    config = ReplayConfig(targets=targets, entry_filter=entry_filter, rewrite=rewrite,
                          concurrency=concurrency, rate=rate, speed=speed, limit=limit, loops=loops,
                          sequential=sequential, timeout_s=timeout_s, verify_tls=not insecure)
    opened: list[Source] = [open_source(s) for s in sources]  # unknown format: error before sending

    from shadow.capture.settings import CaptureSettings
    from shadow.capture.writer import CaptureWriter, make_gateway_id

    state = _prepare_state(capture, opened, resume)
    writer = CaptureWriter(CaptureSettings(dir=capture), gateway_id=f"replay-{make_gateway_id()}")
    try:
        # After the writer recovered any journal a killed replay left, the capture is the truth.
        captured = captured_roles(capture) if resume else {}
        save_state(capture, state)  # the run id must survive even a kill before the first checkpoint
        show = sys.stderr.isatty() if progress is None else progress
        stats = _run(config, opened, writer, state, captured, show, capture, loops, limit)
    finally:
        writer.close()
    state.finished = not stats.interrupted
    save_state(capture, state)
    click.echo(summary_line(stats, targets, capture))
    if stats.checkpoint_error:
        click.echo(f"warning: {state_path(capture)}: a checkpoint failed ({stats.checkpoint_error}); "
                   "--resume still works from the capture", err=True)
    for err in stats.source_errors:
        err.show()
    if stats.source_errors:
        sys.exit(2)
    if stats.interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _prepare_state(capture: Path, sources: list[Source], resume: bool) -> ReplayState:
    previous = load_state(capture)
    if resume and previous is not None:
        for src in sources:
            if src.identity not in previous.sources:
                raise ShadowError(f"{src.path}: not part of the interrupted replay in {capture}, or changed "
                                  "since (size/mtime differ); run without --resume into a new capture")
        return previous
    if previous is not None and not previous.finished and not resume:
        raise ShadowError(f"{capture}: holds an interrupted replay; pass --resume to continue it, or remove "
                          f"{state_path(capture)} to start a new one")
    state = ReplayState.new()
    for src in sources:  # recorded now: a kill before the first checkpoint must still be resumable
        state.sources.setdefault(src.identity, SourceProgress(path=str(src.path), identity=src.identity))
    return state


def _run(config: ReplayConfig, sources: list[Source], writer: Any, state: ReplayState,
         captured: dict[str, frozenset[str]],
         show_progress: bool, capture: Path, loops: int, limit: int | None) -> ReplayStats:
    from tqdm import tqdm

    # The bar advances per source entry (sent, skipped or already done). Counting a HAR parses it
    # once more: only worth it when the bar is shown.
    counts = [s.count() for s in sources] if show_progress else [None]
    total: int | None = sum(c for c in counts if c is not None) * loops if None not in counts else None
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    bar = tqdm(total=total, unit="req", disable=not show_progress, file=sys.stderr, dynamic_ncols=True,
               mininterval=0.25, smoothing=0.1)

    def checkpoint(snapshot: dict[str, Any]) -> None:
        writer.flush()
        write_state_json(capture, snapshot)

    engine = ReplayEngine(config, sources, writer, state=state, captured=captured, progress=bar,
                          checkpoint=checkpoint, backlog=lambda: writer.stats().queued)

    def on_signal(sig: signal.Signals) -> None:
        first = not engine.stopping
        engine.stop()
        if first:
            click.echo(f"\n{sig.name}: stopping; in-flight requests finish (again to cancel them)", err=True)

    async def main() -> ReplayStats:
        with stop_signals_call(on_signal):
            return await engine.run()

    try:
        return asyncio.run(main())
    finally:
        bar.close()


__all__ = ["SourceError", "replay"]
