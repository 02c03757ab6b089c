"""`shadow gateway`: the command line, its validation, and the mitmdump it runs."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shadow.cli.gateway import ADDON_SCRIPT, mitmdump_command, parse_listen, reverse_target_for
from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from tests.conftest import REPO, shadow_cli
from tests.upstream import Upstream, free_port

GOOD = """
http:
  routers:
    api: {{rule: "PathPrefix(`/api`)", service: api-mirror}}
    all: {{rule: "PathPrefix(`/`)", service: mono}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
    next: {{loadBalancer: {{servers: [{{url: "http://127.0.0.1:9"}}]}}}}
    api-mirror: {{mirroring: {{service: next, mirrors: [{{name: mono, percent: 10}}]}}}}
shadow:
  capture: {{dir: "{capture}"}}
"""

BAD_RULE = """http:
  routers:
    api:
      rule: "PathPrefix(`/api`"
      service: mono
  services:
    mono: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
"""


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen(":9000") == ("0.0.0.0", 9000)
    assert parse_listen("9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen("localhost:http")
    with pytest.raises(ValueError, match="port must be"):
        parse_listen("127.0.0.1:70000")


def test_mitmdump_command_has_the_flags_the_gateway_needs(tmp_path: Path) -> None:
    cmd = mitmdump_command(tmp_path / "gw.yaml", reverse_target="http://127.0.0.1:9", listen_host="127.0.0.1",
                           listen_port=8080)
    assert Path(cmd[0]).name == "mitmdump" and Path(cmd[0]).parent == Path(sys.executable).parent
    assert cmd[1:3] == ["-s", str(ADDON_SCRIPT)] and ADDON_SCRIPT.is_file()
    joined = " ".join(cmd)
    assert f"shadow_config={tmp_path / 'gw.yaml'}" in joined
    assert "--mode reverse:http://127.0.0.1:9" in joined
    assert "connection_strategy=lazy" in joined and "keep_host_header=true" in joined
    assert "--listen-host 127.0.0.1 --listen-port 8080" in joined
    # An option given in `extra` replaces the default (mitmproxy rejects one given twice).
    cmd2 = mitmdump_command("gw.yaml", reverse_target="http://x", listen_host="h", listen_port=1,
                            extra=("--set", "termlog_verbosity=debug"))
    assert [a for a in cmd2 if a.startswith("termlog_verbosity=")] == ["termlog_verbosity=debug"]


def test_reverse_target_is_the_catch_all_server() -> None:
    config = parse_config(GOOD.format(mono="http://127.0.0.1:7001", capture="c"))
    assert reverse_target_for(config) == "http://127.0.0.1:7001"
    # The catch-all's service is a mirroring service: its main service's server.
    mirrored = parse_config(GOOD.format(mono="http://127.0.0.1:7001", capture="c").replace(
        "service: mono}", "service: api-mirror}"))
    assert reverse_target_for(mirrored) == "http://127.0.0.1:9"
    # No catch-all: the first service of the file with a server.
    only_api = parse_config(GOOD.format(mono="http://127.0.0.1:7001", capture="c").replace(
        '    all: {rule: "PathPrefix(`/`)", service: mono}\n', ""))
    assert reverse_target_for(only_api) == "http://127.0.0.1:7001"


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_RULE)
    out = shadow_cli("gateway", str(bad))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"error: {bad}:4: http.routers.api.rule:")
    missing = shadow_cli("gateway", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and missing.stderr == f"error: {tmp_path / 'nope.yaml'}: no such file\n"
    listen = shadow_cli("gateway", str(bad), "--listen", "x:y")
    assert listen.returncode == 2 and listen.stderr.count("\n") == 1 and "--listen" in listen.stderr


def test_bad_config_at_mitmdump_startup_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_RULE)
    cmd = mitmdump_command(bad, reverse_target="http://127.0.0.1:9", listen_host="127.0.0.1",
                           listen_port=free_port())
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text
    (line,) = [ln for ln in text.splitlines() if "http.routers.api.rule" in ln]
    assert f"shadow gateway: {bad}:4: http.routers.api.rule:" in line


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("gateway not listening")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shadow_gateway_serves_and_stops_cleanly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    capture = tmp_path / "capture"
    cfg = tmp_path / "gw.yaml"
    port = free_port()
    with Upstream("mono") as mono:
        cfg.write_text(GOOD.format(mono=mono.url, capture=capture))
        proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "gateway", str(cfg), "--listen",
                                 f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=REPO)
        try:
            _wait_listening(port, proc)
            # The first request may wait for a freshly started gateway on a loaded machine.
            with httpx.Client(timeout=30.0) as client:
                assert client.get(f"http://127.0.0.1:{port}/hello").json()["upstream"] == "mono"
            proc.send_signal(stop_signal)  # to `shadow`, which forwards it to mitmdump
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, out
    assert "capture sealed: 1 rows" in out and "Traceback" not in out
    assert len(list((capture / "exchanges").rglob("*.parquet"))) == 1
    assert "client connect" not in out  # quiet: no line per connection


def test_reverse_target_without_servers_is_a_config_error() -> None:
    config = parse_config("http: {}\n")
    with pytest.raises(ConfigError, match="nowhere to send traffic"):
        reverse_target_for(config)


def test_unusable_capture_folder_stops_mitmdump_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(GOOD.format(mono="http://127.0.0.1:9", capture=blocker / "capture"))
    cmd = mitmdump_command(cfg, reverse_target="http://127.0.0.1:9", listen_host="127.0.0.1",
                           listen_port=free_port())
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text
    (line,) = [ln for ln in text.splitlines() if "cannot create the capture folder" in ln]
    assert line.count(str(blocker)) >= 1


def test_bad_gateway_option_at_startup_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(GOOD.format(mono="http://127.0.0.1:9", capture=tmp_path / "capture"))
    cmd = mitmdump_command(cfg, reverse_target="http://127.0.0.1:9", listen_host="127.0.0.1",
                           listen_port=free_port(), extra=("--set", "shadow_reload_interval=soon"))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text
    assert "shadow gateway: shadow_reload_interval: 'soon' is not a duration" in text


def test_a_down_reverse_target_does_not_drop_routed_clients(tmp_path: Path) -> None:
    """connection_strategy=lazy: with eager connections mitmproxy would dial the (down) reverse
    target when the client connects and drop the client before any routing hook runs."""
    from tests.conftest import GatewayProcess

    dead = f"http://127.0.0.1:{free_port()}"
    with Upstream("orders") as orders:
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(GOOD.format(mono=dead, capture=tmp_path / "capture").replace(
            'service: api-mirror}', 'service: orders-svc}').replace(
            "  services:\n", f'  services:\n    orders-svc: {{loadBalancer: {{servers: [{{url: "{orders.url}"}}]}}}}\n'))
        with GatewayProcess(cfg) as gw, httpx.Client(base_url=gw.url, timeout=30.0) as client:
            assert gw.reverse_target is None and dead in " ".join(gw.command())  # the catch-all's server
            assert client.get("/api/x").json()["upstream"] == "orders"
            assert client.get("/elsewhere").status_code == 502  # the catch-all's server is down
