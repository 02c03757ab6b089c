"""Many gateways, one capture in an object store: real gateways upload to a real S3-compatible
server (moto's server mode, `moto_server`, installed by `make venv` from the dev extra) on
127.0.0.1, and `shadow sql s3://…` reads the union."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shadow.capture.remote import is_remote, sync_to_cache, upload_sealed
from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from tests.conftest import REPO, shadow_cli
from tests.upstream import Upstream, free_port

WAIT_S = 60.0
CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: mono}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
shadow:
  gateway: {{id: {gateway}}}
  capture: {{dir: "{capture}", upload: "{upload}"}}
"""


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, "exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port}")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bucket on a real moto server; yields the capture URI (with the endpoint in its query)."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.skip("moto_server is not installed (make venv installs moto[server] from the dev extra)")
    port = free_port()
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "test")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("SHADOW_CAPTURE_CACHE", str(tmp_path_factory.mktemp("cache")))
        try:
            _wait_port(port, proc)
            import pyarrow.fs as pafs

            fs, _ = pafs.FileSystem.from_uri(
                f"s3://captures?endpoint_override=127.0.0.1:{port}&scheme=http&allow_bucket_creation=true")
            fs.create_dir("captures")
            yield f"s3://captures/shop?endpoint_override=127.0.0.1:{port}&scheme=http"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_two_gateways_upload_into_one_prefix_and_sql_reads_the_union(s3: str, tmp_path: Path) -> None:
    gateways: list[tuple[subprocess.Popen[str], str, Path]] = []
    with Upstream("mono") as mono:
        try:
            for name in ("gw-a", "gw-b"):
                cfg = tmp_path / f"{name}.yaml"
                local = tmp_path / f"{name}-local"
                cfg.write_text(CONFIG.format(mono=mono.url, gateway=name, capture=local, upload=s3))
                port = free_port()
                proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "gateway", str(cfg), "--listen",
                                         f"127.0.0.1:{port}", "--workers", "1"], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, cwd=REPO)
                gateways.append((proc, f"http://127.0.0.1:{port}", local))
            for proc, url, _ in gateways:
                _wait_port(int(url.rsplit(":", 1)[1]), proc)  # type: ignore[arg-type]
                with httpx.Client(base_url=url, timeout=30.0) as client:
                    for i in range(10):
                        assert client.get(f"/orders/{i}").status_code == 200
        finally:
            outputs = []
            for proc, _, _ in gateways:
                proc.send_signal(signal.SIGTERM)
                out, _ = proc.communicate(timeout=WAIT_S)
                outputs.append(out)
                assert proc.returncode == 0, out
    for out in outputs:
        assert "uploaded 1 segments (0 failed rounds" in out, out
    for _, _, local in gateways:  # uploaded segments leave the gateway's disk
        assert not list((local / "exchanges").rglob("*.parquet"))

    out = shadow_cli("sql", s3, "SELECT gateway, count(*) AS n, count(DISTINCT path) AS paths FROM exchanges "
                     "GROUP BY 1 ORDER BY 1", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"gateway": "gw-a", "n": 10, "paths": 10},
                                      {"gateway": "gw-b", "n": 10, "paths": 10}]
    stats = shadow_cli("sql", s3, "SELECT count(*) AS writers FROM capture_stats", "--format", "json")
    assert json.loads(stats.stdout) == [{"writers": 2}], stats.stderr


def test_fetch_is_incremental_and_only_owned_segments_upload(s3: str, tmp_path: Path) -> None:
    """A second gateway's file in the same local folder is not uploaded by the first; a second
    fetch downloads only what is new."""
    uri = s3.replace("/shop?", "/incremental?")
    local = tmp_path / "local"
    part_dir = local / "exchanges" / "dt=2026-12-07" / "hour=17"
    part_dir.mkdir(parents=True)
    mine = part_dir / f"part-gw-x-{'a' * 32}.parquet"
    theirs = part_dir / f"part-gw-x-w1-{'b' * 32}.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["/a"]}), mine)
    pq.write_table(pa.table({"path": ["/b"]}), theirs)
    assert upload_sealed(local, uri, owner="gw-x") == 1
    assert not mine.exists() and theirs.exists()
    cache = tmp_path / "cache"
    assert sync_to_cache(uri, cache)[1] == 1
    assert sync_to_cache(uri, cache)[1] == 0  # nothing new
    assert upload_sealed(local, uri, owner="gw-x-w1") == 1
    assert sync_to_cache(uri, cache)[1] == 1


def test_bad_locations_are_one_line_errors(tmp_path: Path) -> None:
    assert is_remote("s3://b/p") and not is_remote("/tmp/capture") and not is_remote("file:///tmp/x")
    with pytest.raises(ConfigError, match=r"shadow\.capture\.upload: expected an object store URI"):
        parse_config('http: {services: {a: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}}}\n'
                     'shadow: {capture: {upload: ./elsewhere}}\n')
    out = shadow_cli("sql", "nosuchscheme://bucket/x", "SELECT 1")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "nosuchscheme://bucket/x" in out.stderr, out.stderr
