"""`shadow gateway FILE`: validate the config, then run mitmdump with the gateway addon.

It is the same process a user gets with
`mitmdump -s addons/gateway.py --set shadow_config=FILE --mode reverse:URL`, with the flags the
gateway needs (lazy upstream connections, the client's Host kept) and quiet per-flow output.
Ctrl-C / SIGTERM are forwarded to mitmdump, and this command waits for its clean exit so the
capture is sealed.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from shadow.errors import ConfigError, ShadowError

if TYPE_CHECKING:
    from shadow.gateway.config import GatewayConfig

ADDON_SCRIPT = Path(__file__).resolve().parents[2] / "addons" / "gateway.py"
DEFAULT_LISTEN = "127.0.0.1:8080"


def mitmdump_executable() -> str:
    """The mitmdump next to this interpreter (the venv's), else the one on PATH."""
    sibling = Path(sys.executable).with_name("mitmdump")
    return str(sibling) if sibling.exists() else "mitmdump"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or :PORT, or PORT) → (host, port). Raises ValueError with a one-line reason."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--listen {text!r}: port must be 0–65535")
    return host, port


def _set_names(args: tuple[str, ...]) -> set[str]:
    return {args[i + 1].partition("=")[0] for i, a in enumerate(args[:-1]) if a == "--set"}


def mitmdump_command(config_path: str | Path, *, reverse_target: str, listen_host: str,
                     listen_port: int, extra: tuple[str, ...] = (),
                     listeners: tuple[tuple[str, int], ...] = ()) -> list[str]:
    """The full mitmdump command line for a gateway on `config_path`. An option that `extra`
    sets with `--set` replaces the default here: mitmproxy rejects an option given twice.
    `listeners`: more (host, port) to listen on, the entry points' addresses (see entry_point_listeners)."""
    defaults = {
        # Eager connections would dial the reverse target before any hook runs: a down monolith
        # would drop every client before routing, failover or a local 404 could happen.
        "connection_strategy": "lazy",
        # Routing by Host and passHostHeader need the client's Host, which reverse mode replaces.
        "keep_host_header": "true",
        "flow_detail": "0",  # no line per request: the capture is the record
        "termlog_verbosity": "info",  # the gateway's own lines: loaded, reloaded, rejected...
        "shadow_log_connections": "false",  # ...without a line per connection
    }
    overridden = _set_names(extra)
    sets = [arg for name, value in defaults.items() if name not in overridden
            for arg in ("--set", f"{name}={value}")]
    return [
        mitmdump_executable(),
        "-s", str(ADDON_SCRIPT),
        "--set", f"shadow_config={Path(config_path).resolve()}",
        "--mode", f"reverse:{reverse_target}",
        *(arg for host, port in listeners for arg in ("--mode", f"reverse:{reverse_target}@{host}:{port}")),
        "--listen-host", listen_host,
        "--listen-port", str(listen_port),
        *sets,
        *extra,
    ]


def entry_point_listeners(config: GatewayConfig, listen_host: str, listen_port: int) -> tuple[tuple[str, int], ...]:
    """The entry points' addresses other than the main listener's port (an address without a host
    listens on `listen_host`): Traefik's entry points are listeners. They apply at start."""
    out: list[tuple[str, int]] = []
    for ep in config.entry_points.values():
        if ep.port is not None and ep.port != listen_port and (ep.host or listen_host, ep.port) not in out:
            out.append((ep.host or listen_host, ep.port))
    return tuple(out)


def _first_server_url(config: GatewayConfig, service_name: str, seen: frozenset[str] = frozenset()) -> str | None:
    from shadow.gateway.config import LoadBalancerService, MirroringService

    service = config.services.get(service_name)
    if isinstance(service, LoadBalancerService):
        return service.servers[0].url if service.servers else None
    if isinstance(service, MirroringService) and service.service not in seen:
        return _first_server_url(config, service.service, seen | {service_name})
    return None


def reverse_target_for(config: GatewayConfig) -> str:
    """The URL given to mitmdump's reverse mode. Every request is routed by the addon, so this is
    only the default: the first server behind the catch-all router (the lowest priority one that
    matches `GET /`), else the first server of any service."""
    from shadow.gateway.rules import RequestView

    root = RequestView(method="GET", host="", path="/")
    for router in reversed(config.routers):  # routers are sorted by priority, highest first
        if router.rule.matches(root):
            url = _first_server_url(config, router.service)
            if url:
                return url
    for name in config.services:
        url = _first_server_url(config, name)
        if url:
            return url
    if config.hub.multi_cluster is not None:  # a parent whose servers are all discovered later
        return config.hub.multi_cluster.children[0].address
    raise ConfigError("no service has a server: the gateway has nowhere to send traffic",
                      file=config.source, field="http.services")


def run_mitmdump(command: list[str]) -> int:
    """Run mitmdump in the foreground; forward SIGINT/SIGTERM/SIGHUP and wait for its exit."""
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # pragma: no cover - the handler above takes SIGINT
                forward(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("gateway")
@click.argument("config_file", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              help="Address the gateway accepts clients on.")
@click.option("--workers", type=click.IntRange(1, 256), default=None, metavar="N",
              help="Gateway processes sharing the address (SO_REUSEPORT) under one supervisor. "
                   "Default: shadow.gateway.workers from the file, else one per core. See docs/scale-out.md.")
@click.option("--dry-run", is_flag=True, help="Validate the file and print the mitmdump command, don't run it.")
@click.option("--live-view", "live_view", metavar="HOST:PORT",
              help="Also serve the live view of the capture (verdict, fields, examples, routers) here, "
                   "e.g. 127.0.0.1:8090; see docs/live-view.md.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False),
              help="With --live-view: the analysis policy YAML (default: the file's shadow.analysis).")
def gateway(config_file: Path, listen: str, workers: int | None, dry_run: bool, live_view: str | None,
            policy_file: Path | None) -> None:
    """Run the gateway (mitmdump + addons/gateway.py) on CONFIG_FILE.

    CONFIG_FILE is a Traefik-style file, or Kubernetes Gateway API manifests (a file with
    gateway.networking.k8s.io documents, or a directory of them; docs/gateway-api.md).
    The file is validated first; a bad file is one line naming file, line and field (exit 2).
    Edits to the file while running are validated and applied without a restart (checked every
    second; SIGHUP checks at once). Ctrl-C / SIGTERM stop it cleanly, sealing the capture.
    With more than one worker, a supervisor runs N such processes on the address, restarts one that
    dies, applies a reload to all of them or none, and seals every capture on exit.
    See docs/gateway.md and docs/scale-out.md.
    """
    from shadow.gatewayapi.provider import is_gateway_api_source, load_gateway_config

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ShadowError(str(exc)) from None
    if not config_file.exists():
        raise ConfigError("no such file", file=str(config_file))
    config = load_gateway_config(config_file)  # ConfigError → one line, exit 2
    try:
        target = reverse_target_for(config)
    except ConfigError:
        if not is_gateway_api_source(config_file):
            raise
        # Manifests whose every backend is unresolved still serve (500s, as the spec says); the
        # reverse target is only mitmdump's default and the router answers every request.
        target = "http://127.0.0.1:9"
    from shadow.workers.supervisor import default_worker_count

    listeners = entry_point_listeners(config, host, port)
    count = workers or config.shadow.workers or default_worker_count()
    if count > 1:
        server = (start_live_view_for(config, config_file, live_view, policy_file)
                  if live_view and not dry_run else None)
        try:
            sys.exit(run_workers(config_file, count, target=target, host=host, port=port, listeners=listeners,
                                 dry_run=dry_run))
        finally:
            if server is not None:
                server.close()
    command = mitmdump_command(config_file, reverse_target=target, listen_host=host, listen_port=port,
                               listeners=listeners)
    if dry_run:
        click.echo(subprocess.list2cmdline(command))
        return
    server = start_live_view_for(config, config_file, live_view, policy_file) if live_view else None
    try:
        sys.exit(run_mitmdump(command))
    finally:
        if server is not None:
            server.close()


def start_live_view_for(config: GatewayConfig, config_file: Path, listen: str, policy_file: Path | None) -> Any:
    """The live view of the gateway's capture, served from this process (which only waits on
    mitmdump) so the analysis never runs on the proxy's event loop."""
    from shadow.cli.serve_verdict import parse_listen
    from shadow.web.server import start_live_view

    if not config.shadow.capture.enabled:
        raise ConfigError("--live-view needs the capture, and shadow.capture.enabled is false",
                          file=str(config_file), field="shadow.capture.enabled")
    host, port = parse_listen(listen, "--live-view")
    if policy_file is None and config.shadow.analysis:
        policy_file = config_file  # its shadow.analysis section (margins, rules)
    server = start_live_view(config.shadow.capture.dir, host=host, port=port, policy_file=policy_file,
                             config_file=config_file, title=str(config_file)).start()
    click.echo(f"live view of {config.shadow.capture.dir} at {server.url}", err=True)
    return server


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to host:port with SO_REUSEPORT: it checks the address is free
    for the workers (a clear error now rather than N workers failing), picks the port when `port` is
    0, and keeps it while the workers start. Raises ShadowError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ShadowError(f"--listen {host}:{port}: cannot listen there: {exc.strerror or exc}") from None
    return sock


def run_workers(config_file: Path, count: int, *, target: str, host: str, port: int,
                listeners: tuple[tuple[str, int], ...], dry_run: bool) -> int:
    """`count` gateway processes on host:port under one supervisor (shadow/workers/supervisor.py)."""
    from shadow.workers.snapshot import read_validated, snapshots_supported, write_snapshot
    from shadow.workers.supervisor import Supervisor, per_worker_limits

    origin = config_file.resolve()
    reservation = reserve_port(host, port) if not dry_run else None
    try:
        if reservation is not None:
            port = reservation.getsockname()[1]
        with tempfile.TemporaryDirectory(prefix="shadow-workers-") as run_dir:
            snapshot = Path(run_dir) / origin.name if snapshots_supported(origin) else None

            def command_for(name: str) -> list[str]:
                extra = ["--set", f"shadow_worker={name}",
                         "--set", "shadow_reload_interval=0"]  # the supervisor watches the file
                if snapshot is not None:
                    extra += ["--set", f"shadow_config_origin={origin}"]
                command = mitmdump_command(snapshot or origin, reverse_target=target, listen_host=host,
                                           listen_port=port, listeners=listeners, extra=tuple(extra))
                # mitmdump with SO_REUSEPORT listeners (addons/worker.py), same arguments.
                return [sys.executable, "-m", "addons.worker", *command[1:]]

            if dry_run:
                for name in (f"w{i}" for i in range(count)):
                    click.echo(subprocess.list2cmdline(command_for(name)))
                return 0
            supervisor = Supervisor(command_for, count, origin, snapshot)
            supervisor.prime()
            _config, text = read_validated(origin)  # the bytes validated now are the ones the workers load
            if snapshot is not None and text is not None:
                write_snapshot(snapshot, text)
            supervisor.install_signal_handlers()
            if not supervisor.start():
                if supervisor.stopping:  # Ctrl-C / SIGTERM while starting: a clean stop
                    return supervisor.stop_all()
                supervisor.say("shadow gateway: a worker failed to start; stopping")
                supervisor.stop_all()
                return 1
            if reservation is not None:
                reservation.close()
                reservation = None
            pids = ", ".join(f"{name} pid {pid}" for name, pid in supervisor.pids().items())
            supervisor.say(f"shadow gateway: {count} workers listening at {host}:{port} ({pids})")
            limits = per_worker_limits(_config)
            if limits:
                supervisor.say(f"shadow gateway: note: {', '.join(limits)} count per worker: a client spread over "
                               f"{count} workers may get up to {count}x the limit (docs/scale-out.md)")
            return supervisor.run()
    finally:
        if reservation is not None:
            reservation.close()
