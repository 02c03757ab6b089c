"""Shared fixtures: a real mitmdump gateway on a free 127.0.0.1 port.

    def test_x(gateway_factory, tmp_path):
        cfg = tmp_path / "gw.yaml"; cfg.write_text(YAML)
        gw = gateway_factory(cfg)                 # started, listening, stopped at module end
        httpx.get(gw.url + "/api/orders")
        gw.stop()                                 # SIGINT, waits for a clean exit (capture sealed)
        assert "reloaded" in gw.output()

Or without pytest: `with GatewayProcess(cfg) as gw: ...`. `GatewayProcess` runs exactly the command
`shadow gateway` runs (shadow.cli.gateway.mitmdump_command), so the tests exercise what users run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.upstream import free_port

REPO = Path(__file__).resolve().parent.parent

# Captures made by the tests (and the gateways they start, which inherit the environment) take their
# redaction key from a key file of this run, not from the user's ~/.config/shadow/redaction.key.
os.environ.setdefault("SHADOW_REDACTION_KEY_FILE", os.path.join(tempfile.mkdtemp(prefix="shadow-test-key-"),
                                                                "redaction.key"))

# A gateway that passes everything to one upstream, capture off (format with mono=URL).
PASS_THROUGH_CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: mono}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
shadow:
  capture: {{enabled: false}}
"""


class GatewayProcess:
    """One mitmdump running addons/gateway.py on `config_path`, output collected in a file.

    `reverse_target`: mitmdump's reverse-mode URL; None derives it from the config as
    `shadow gateway` does. `extra_args` are appended to the mitmdump command line.
    """

    def __init__(self, config_path: str | Path, *, reverse_target: str | None = None,
                 port: int | None = None, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, start_timeout: float = 20.0) -> None:
        self.config_path = Path(config_path)
        self.reverse_target = reverse_target
        self.port = port or free_port()
        self.extra_args = extra_args
        self.env = env
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="gateway-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        from shadow.cli.gateway import entry_point_listeners, mitmdump_command, reverse_target_for
        from shadow.errors import ConfigError
        from shadow.gatewayapi.provider import load_gateway_config

        target = self.reverse_target
        if target is None:
            target = reverse_target_for(load_gateway_config(self.config_path))
        try:  # the entry points' addresses are listeners too, as `shadow gateway` starts them
            listeners = entry_point_listeners(load_gateway_config(self.config_path), "127.0.0.1", self.port)
        except ConfigError:  # a test of a bad file: the gateway itself reports it
            listeners = ()
        return mitmdump_command(self.config_path, reverse_target=target, listen_host="127.0.0.1",
                                listen_port=self.port, extra=self.extra_args, listeners=listeners)

    def start(self) -> GatewayProcess:
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=REPO)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"gateway not listening after {self.start_timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self._log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            time.sleep(0.05)
        return text in self.output()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Ctrl-C and wait for a clean exit (the gateway seals its capture); SIGKILL past `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, nothing gets to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        """Stop, and delete the output file unless the gateway failed (then it stays, for reading)."""
        rc = self.stop()
        if rc in (0, None) or (self.proc is not None and rc == -signal.SIGKILL):
            self._log.unlink(missing_ok=True)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@pytest.fixture(scope="module")
def gateway_factory() -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateways (same arguments as GatewayProcess); all are stopped at the end of the module."""
    started: list[GatewayProcess] = []

    def start(config_path: str | Path, **kwargs: object) -> GatewayProcess:
        gw = GatewayProcess(config_path, **kwargs)  # type: ignore[arg-type]
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.close()


def capture_rows(capture: Path, where: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, object]]:
    """Rows of the capture folder's `exchanges` matching `where`, waiting until `count` are sealed."""
    import duckdb

    glob = str(capture / "exchanges" / "**" / "*.parquet")
    deadline = time.monotonic() + timeout
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            rel = duckdb.sql(f"select * from read_parquet('{glob}', union_by_name=true, hive_partitioning=true) "
                             f"where {where} order by ts")
            rows = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
        except duckdb.Error:
            rows = []
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    return rows


def shadow_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the `shadow` CLI as a user would (python -m shadow.cli ...)."""
    return subprocess.run([sys.executable, "-m", "shadow.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
