"""`shadow otlp-receiver -o CAPTURE [--listen HOST:PORT]`: receive OTLP/HTTP into a capture folder.

Runs until SIGINT/SIGTERM, then seals what it received (spans under CAPTURE/spans/, metric points
under CAPTURE/metrics/). Exit 0 after a clean stop, 2 for a usage error (bad address, port in use,
capture folder not writable).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from shadow.signals import stop_signals_call
from shadow.telemetry.receiver import DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, OtlpReceiver, parse_listen


async def _serve(receiver: OtlpReceiver, host: str, port: int) -> None:
    stop = asyncio.Event()
    with stop_signals_call(lambda _sig: stop.set()):
        try:
            bound = await receiver.start(host, port)
        except BaseException:
            await asyncio.to_thread(receiver.close_writers)
            raise
        click.echo(f"OTLP receiver on http://{host}:{bound} (POST /v1/traces, /v1/metrics, /v1/logs); "
                   f"writing to {receiver.capture_dir}", err=True)
        try:
            await stop.wait()
        finally:
            await receiver.stop()
            c = receiver.counters
            click.echo(f"OTLP receiver stopped: {c.spans_accepted} spans stored, {c.spans_rejected} rejected, "
                       f"{c.spans_duplicate} duplicates, {c.metric_points} metric points, "
                       f"{c.log_records} log records, {c.busy} requests turned away busy", err=True)


@click.command("otlp-receiver")
@click.option("-o", "--output", "capture", required=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Capture folder: spans go to CAPTURE/spans/, metric points to CAPTURE/metrics/.")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT to listen on.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BODY_BYTES, show_default=True,
              help="Larger requests (after gzip inflation too) are answered 413.")
@click.option("--max-decoding-bytes", type=click.IntRange(min=1), default=None,
              help="Bytes read and decoded at once (default: 4 x --max-body-bytes); a request beyond it is "
                   "answered 503 with Retry-After, unread.")
@click.option("--segment-seconds", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seal received spans into Parquet at least this often (they become queryable then).")
def otlp_receiver(capture: Path, listen: str, max_body_bytes: int, max_decoding_bytes: int | None,
                  segment_seconds: float) -> None:
    """Receive OTLP/HTTP traces, metrics and logs (protobuf or JSON, gzip or plain) into CAPTURE."""
    host, port = parse_listen(listen)
    receiver = OtlpReceiver(capture, max_body_bytes=max_body_bytes, segment_seconds=segment_seconds,
                            max_decoding_bytes=max_decoding_bytes)
    asyncio.run(_serve(receiver, host, port))
