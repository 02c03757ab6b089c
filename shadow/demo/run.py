"""`shadow demo`: the whole loop on one machine, in about a minute.

It starts the shop monolith, a second monolith instance (the secondary, for noise cancellation) and
the extracted orders service (the candidate, with the differences listed in seeds.py); writes a
gateway config that serves everything from the monolith and mirrors /api/orders to both others;
runs that config with `shadow gateway` (the command users run); drives shop traffic through it;
stops everything cleanly so the capture is sealed; shows what was captured; and ends with the
analysis (shadow.cli.report.demo_report: the verdict and OUT/report/). The command itself, with its
options, is shadow/cli/demo.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

import click

from shadow.capture.schema import ROLES
from shadow.demo import seeds
from shadow.demo.processes import Child, Supervisor, service_argv, wait_for_port
from shadow.demo.tracing import ENDPOINT_ENV
from shadow.demo.traffic import DriveResult, drive, plan_requests
from shadow.errors import ShadowError

CAPTURE_SUBDIR = "capture"
CONFIG_NAME = "gateway.yaml"
GATEWAY_API_CONFIG_NAME = "gateway-api.yaml"  # `shadow demo --gateway-api`: the same routing as manifests
# Mirrors are sent after the client has its answer; give the last ones this long to land before
# the gateway is asked to stop.
MIRROR_SETTLE_S = 1.0


@dataclass(frozen=True)
class DemoUpstreams:
    monolith: str  # primary: serves every client
    secondary: str  # the same monolith code in another process
    candidate: str  # the extracted orders service


def gateway_yaml(upstreams: DemoUpstreams, *, capture_dir: str = CAPTURE_SUBDIR, gateway_id: str = "demo") -> str:
    """The demo's gateway config: Traefik v3 `http:` routing plus the `shadow:` section."""
    return f"""\
# Written by `shadow demo`. Its upstreams live only as long as the demo (see --keep-running);
# point the URLs at your own services to run it with: shadow gateway FILE --listen 127.0.0.1:8080
http:
  routers:
    everything:                 # catch-all: the monolith serves every client, as before
      rule: "PathPrefix(`/`)"
      service: monolith
    orders:                     # the route being extracted: still served by the monolith...
      rule: "PathPrefix(`/api/orders`)"
      service: orders-shadowed
  services:
    monolith:
      loadBalancer:
        servers:
          - url: "{upstreams.monolith}"
    orders:                     # the new orders service (candidate)
      loadBalancer:
        servers:
          - url: "{upstreams.candidate}"
    monolith-b:                 # the same monolith code in another process (secondary)
      loadBalancer:
        servers:
          - url: "{upstreams.secondary}"
    orders-shadowed:            # ...and mirrored to both: their answers are captured, never returned
      mirroring:
        service: monolith
        mirrors:
          - name: orders
            percent: 100
          - name: monolith-b
            percent: 100

shadow:
  gateway:
    id: {gateway_id}
  capture:
    dir: {capture_dir}          # relative to this file
    segmentSeconds: 10
  redaction:
    mode: hash                  # equal secrets stay equal after redaction, so they do not diff
    headers: [Authorization]
    jsonFields: [card_number]
  mirroring:
    targets:
      orders: {{role: candidate}}      # POSTs are not mirrored (allowUnsafe: false)
      monolith-b: {{role: secondary}}
  endpoints: ["{seeds.ORDERS_DETAIL}"]
"""


def gateway_api_yaml(upstreams: DemoUpstreams, *, capture_dir: str = CAPTURE_SUBDIR, gateway_id: str = "demo") -> str:
    """gateway_yaml's configuration as Kubernetes Gateway API manifests (`shadow demo --gateway-api`,
    docs/gateway-api.md): a Gateway, an HTTPRoute mirroring /api/orders to both others, and shadow's
    settings document (where the Services live, the same shadow: section)."""
    return f"""\
# Written by `shadow demo --gateway-api`: gateway.yaml's routing as Gateway API manifests
# (docs/gateway-api.md). Run it with: shadow gateway FILE --listen 127.0.0.1:8080
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: demo, namespace: shop}}
spec:
  gatewayClassName: shadow
  listeners:
    - {{name: http, port: 80, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: shop}}
spec:
  parentRefs: [{{name: demo}}]
  rules:
    - matches:                  # the route being extracted: still served by the monolith...
        - path: {{type: PathPrefix, value: /api/orders}}
      filters:                  # ...and mirrored to both: their answers are captured, never returned
        - type: RequestMirror
          requestMirror: {{backendRef: {{name: orders, port: 80}}}}
        - type: RequestMirror
          requestMirror: {{backendRef: {{name: monolith-b, port: 80}}}}
      backendRefs: [{{name: monolith, port: 80}}]
    - backendRefs: [{{name: monolith, port: 80}}]   # catch-all: the monolith serves every client
---
backends:                       # where each Service lives
  shop/monolith:80: "{upstreams.monolith}"
  shop/orders:80: "{upstreams.candidate}"
  shop/monolith-b:80: "{upstreams.secondary}"
shadow:
  gateway:
    id: {gateway_id}
  capture:
    dir: {capture_dir}          # relative to this file
    segmentSeconds: 10
  redaction:
    mode: hash
    headers: [Authorization]
    jsonFields: [card_number]
  mirroring:
    targets:
      shop/orders:80: {{role: candidate}}      # POSTs are not mirrored (allowUnsafe: false)
      shop/monolith-b:80: {{role: secondary}}
  endpoints: ["{seeds.ORDERS_DETAIL}"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def default_out_dir() -> Path:
    return Path("out") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT both raise KeyboardInterrupt here, so the demo stops its children in order
    whichever it gets (SIGINT explicitly too: a shell starting us in the background ignores it)."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _prepare_out_dir(out: Path) -> Path:
    capture = out / CAPTURE_SUBDIR
    if capture.exists() and any(capture.iterdir()):
        raise ShadowError(f"{capture} already holds a capture; choose another --out or remove it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ShadowError(f"cannot create {out}: {e.strerror or e}") from None
    return capture


def telemetry_yaml(port: int) -> str:
    """The `shadow.telemetry` section that makes the demo's gateway trace every request and receive
    spans (its own and the services') on 127.0.0.1:`port` (docs/observability.md), appended to
    the demo's config."""
    return (f"  telemetry:                    # --telemetry: spans into the capture\n"
            f"    endpoint: http://127.0.0.1:{port}\n"
            f"    receiver: {{listen: 127.0.0.1:{port}}}\n")


def start_upstreams(sup: Supervisor, *, otlp_endpoint: str | None = None) -> DemoUpstreams:
    """The three demo services; with `otlp_endpoint` each exports its own spans there."""
    env = {**os.environ, ENDPOINT_ENV: otlp_endpoint} if otlp_endpoint else None
    started = sup.start_services({
        "monolith": service_argv("monolith", "--name", "monolith"),
        "monolith-b": service_argv("monolith", "--name", "monolith-b"),
        "orders": service_argv("orders"),
    }, env=env)
    return DemoUpstreams(started["monolith"].url, started["monolith-b"].url, started["orders"].url)


def gateway_argv(config: Path, port: int) -> list[str]:
    """`shadow gateway CONFIG --listen 127.0.0.1:PORT --workers 1`, with this interpreter. One worker:
    the demo's breaker and health checks then see all of its traffic, so its story is the same on
    every machine (workers: docs/scale-out.md)."""
    return [sys.executable, "-m", "shadow.cli", "gateway", str(config), "--listen", f"127.0.0.1:{port}",
            "--workers", "1"]


def start_gateway(sup: Supervisor, config: Path, *, timeout_s: float = 30.0) -> tuple[Child, str]:
    """Run `shadow gateway CONFIG` (the users' command) on a free port; return it and its URL."""
    from shadow.gatewayapi.provider import load_gateway_config

    load_gateway_config(config)  # a bad file is one clear line here, before any process starts
    for attempt in range(3):
        port = free_port()
        child = sup.spawn("gateway", gateway_argv(config, port))
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_port(child, "127.0.0.1", port, timeout_s=timeout_s)
            return child, url
        except ShadowError:
            sup.stop(child)
            # Another process may have taken the free port between our probe and mitmdump's bind.
            if attempt == 2 or "address already in use" not in child.log_path.read_text(errors="replace").lower():
                raise
    raise AssertionError("unreachable")


def format_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], *, left: int = 2) -> list[str]:
    """Plain-text columns: the first `left` columns left-aligned, the rest right-aligned."""
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  " + "  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                              for i, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in table]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines


def _slash(*values: int | float | None) -> str:
    """'1249/1249', '0/13', '10.4/30.5/7.1'; '-' when nothing was measured."""
    if all(v is None for v in values):
        return "-"
    return "/".join("-" if v is None else str(v) if isinstance(v, int) else f"{v:.1f}" for v in values)


def summarize_capture(capture: str | Path) -> str:
    """A small text report of what the capture holds: rows, server errors and median latency by
    endpoint and role; pairs; and the seeded differences an analysis should find."""
    from shadow.capture.store import open_store

    capture = Path(capture)
    with open_store(capture) as store:
        rows = store.sql(
            "SELECT endpoint, method, "
            + ", ".join(f"count(*) FILTER (WHERE role = '{r}')" for r in ROLES)
            + ", " + ", ".join(f"count(*) FILTER (WHERE role = '{r}' AND (status >= 500 OR error IS NOT NULL))"
                               for r in ("primary", "candidate"))
            + ", " + ", ".join(f"median(latency_ms) FILTER (WHERE role = '{r}')" for r in ROLES)
            + " FROM exchanges GROUP BY ALL ORDER BY 3 DESC, endpoint, method").fetchall()
        total = store.sql("SELECT count(*), count(DISTINCT request_id) FROM exchanges").fetchall()[0]
        pairs = store.sql("SELECT count(*), count(s_exchange_id), "
                          "count(*) FILTER (WHERE p_body_hash IS DISTINCT FROM c_body_hash) FROM pairs").fetchall()[0]
    header = ("endpoint", "method", "requests", "mirrored c/s", "5xx p/c", "p50 ms p/c/s")
    body = [(str(ep), str(m), str(n_p), _slash(n_c, n_s) if n_c or n_s else "-", _slash(e_p, e_c if n_c else None),
             _slash(l_p, l_c, l_s)) for ep, m, n_p, n_c, n_s, e_p, e_c, l_p, l_c, l_s in rows]
    lines = ["  p = primary (the monolith, answers the client), c = candidate (orders service), "
             "s = secondary (monolith-b)", *format_table(header, body)]
    lines.append("")
    lines.append(f"  {total[0]} rows for {total[1]} client requests; {pairs[0]} primary/candidate pairs "
                 f"({pairs[1]} with a secondary), {pairs[2]} with different bodies before noise cancellation")
    lines.append(f"  {capture_health(capture)}")
    lines.append("")
    lines.append("  seeded in the orders service (shadow/demo/seeds.py), for the analysis to find:")
    lines.extend(f"    {d.method} {d.endpoint}: {d.description}" for d in seeds.SEEDED_DIFFERENCES)
    lines.append(f"  volatile on every instance (noise, not differences): body {', '.join(seeds.VOLATILE_BODY_FIELDS)}; "
                 f"headers {', '.join(seeds.VOLATILE_HEADERS)}")
    return "\n".join(lines)


# Counters of the capture writer and the mirror dispatcher (CAPTURE/_stats/*.json) that mean
# something was lost or failed; all zero in a healthy run.
_LOSS_COUNTERS = ("shed", "write_errors", "capture_errors", "mirror_shed", "mirror_errors", "mirror_timeouts")


def capture_health(capture: str | Path) -> str:
    """One line from the gateway's published counters: rows sealed, and anything shed or failed."""
    capture = Path(capture)
    totals: dict[str, int] = {}
    for path in sorted((capture / "_stats").glob("*.json")):
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key, value in stats.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    if not totals:
        return "no gateway counters found"
    losses = [f"{key} {totals[key]}" for key in _LOSS_COUNTERS if totals.get(key)]
    sealed = f"{totals.get('sealed_rows', 0)} rows sealed, {totals.get('mirror_completed', 0)} mirror calls completed"
    return f"gateway counters: {sealed}; " + ("LOST: " + ", ".join(losses) if losses else "nothing shed or failed")


def _print_drive(result: DriveResult) -> None:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(result.statuses.items()))
    click.echo(f"sent {result.sent} of {result.planned} requests in {result.elapsed_s:.1f} s "
               f"({result.rate:.0f} req/s); client saw {statuses or 'no answers'}"
               + (f"; {result.transport_errors} transport errors" if result.transport_errors else ""))
    if result.stopped_by_deadline:
        click.echo("note: stopped at the time limit before the plan was done (--max-seconds)")
    if result.stopped_by_failures:
        click.echo(f"warning: stopped sending after {result.transport_errors} transport errors; first: "
                   f"{result.first_error} (see the gateway log)", err=True)


def _wait_for_interrupt(gateway_url: str, upstreams: DemoUpstreams) -> None:
    click.echo(f"\nStill running (--keep-running). Try:\n  curl {gateway_url}/api/orders/7\n"
               f"  monolith {upstreams.monolith}  monolith-b {upstreams.secondary}  orders {upstreams.candidate}\n"
               "Press Ctrl-C to stop and seal the capture.")
    while True:
        time.sleep(3600)  # until Ctrl-C or SIGTERM raises KeyboardInterrupt


def run_demo(out: Path, *, requests: int, concurrency: int, max_seconds: float, keep_running: bool,
             seed: int, progress: bool, telemetry: bool = False, gateway_api: bool = False) -> tuple[Path, bool]:
    """Run the demo into `out`; return the capture folder and whether the run was interrupted.
    Every child is stopped on any exit. With `telemetry` the gateway traces every request, the
    services export their own spans, and all of them land in CAPTURE/spans/ through the OTLP
    receiver embedded in the gateway. With `gateway_api` the gateway runs from Gateway API manifests
    (gateway_api_yaml) instead of the Traefik-style file: same routing, same capture."""
    interrupted = False
    capture = _prepare_out_dir(out)
    config = out / (GATEWAY_API_CONFIG_NAME if gateway_api else CONFIG_NAME)
    with _stop_signals_interrupt(), Supervisor(out / "logs") as sup:
        click.echo("starting the monolith, a second monolith instance and the orders service…")
        otlp_port = free_port() if telemetry else None
        upstreams = start_upstreams(sup, otlp_endpoint=f"http://127.0.0.1:{otlp_port}" if otlp_port else None)
        text = gateway_api_yaml(upstreams) if gateway_api else gateway_yaml(upstreams)
        config.write_text(text + (telemetry_yaml(otlp_port) if otlp_port else ""))
        click.echo(f"wrote {config}")
        gateway, gateway_url = start_gateway(sup, config)
        click.echo(f"gateway (shadow gateway {config}) listening on {gateway_url}")
        try:
            plan = plan_requests(requests, seed)
            click.echo(f"sending {len(plan)} requests, {concurrency} at a time, for at most {max_seconds:.0f} s…")
            result = drive(gateway_url, plan, concurrency=concurrency, max_seconds=max_seconds,
                           progress=progress)
            _print_drive(result)
            time.sleep(MIRROR_SETTLE_S)
            if keep_running:
                _wait_for_interrupt(gateway_url, upstreams)
        except KeyboardInterrupt:
            interrupted = not keep_running  # Ctrl-C is how --keep-running is meant to end
            # A first Ctrl-C ends the traffic, not the demo: what was captured is still sealed and shown.
            click.echo("\nstopping; sealing what was captured (Ctrl-C again to abort)")
        click.echo("stopping the gateway and the services…")
        code = sup.stop(gateway, timeout_s=20)
        if code != 0:
            raise gateway.failure(f"exited with code {code} when stopped; the capture may be incomplete")
    return capture, interrupted
