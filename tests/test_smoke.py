import subprocess
import sys

import httpx

from shadow.capture.endpoints import template_path
from tests.upstream import Upstream


def test_cli_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "shadow.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "Usage: shadow" in out.stdout


def test_template_path_replaces_ids() -> None:
    assert template_path("/api/orders/123") == "/api/orders/{id}"
    assert template_path("/u/0b8f5e0e-1d2c-4c1a-9a0e-2f1e3d4c5b6a/x") == "/u/{uuid}/x"
    assert template_path("/days/2026-11-26") == "/days/{date}"
    assert template_path("/api/orders") == "/api/orders"


def test_upstream_echoes_and_records() -> None:
    with Upstream("mono") as up:
        r = httpx.post(up.url + "/a?b=1", content=b"hi")
        assert r.json()["upstream"] == "mono"
        assert up.received()[0].body == b"hi"
        assert up.received()[0].path == "/a?b=1"
