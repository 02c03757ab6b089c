"""The live view in a real headless browser: Debian's chromium driven by Playwright.

`make test` installs chromium with apt-get (Makefile, target `browser`); Playwright's own browser
download is never used (executable_path). Two set-ups, as a user runs them:

- `shadow serve CAPTURE` on a finished capture: the verdict is on the page (DOM and pixels of a
  screenshot), an endpoint's guardrails and latency plot, a field's rule snippet and its pairs.
- `shadow gateway FILE --live-view`: traffic flows through the real gateway while the page is open,
  and the page's counts move without a reload.

Every wait is on a condition with a generous deadline (the machine is shared and loaded).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.synthetic_capture import EndpointTraffic, write_capture
from tests.upstream import Upstream, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FAIL_RGB = (0xCF, 0x22, 0x2E)  # analyzers/report.py CLASS_COLOUR["FAIL"]
WAIT_MS = 60_000

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="chromium is not installed (make test installs it: apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_cli(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "shadow.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def colour_share(png: bytes, rgb: tuple[int, int, int], tolerance: int = 24) -> float:
    """The share of a screenshot's pixels within `tolerance` of `rgb` on every channel."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16).reshape(-1, 3)
    near = np.all(np.abs(pixels - np.array(rgb, dtype=np.int16)) <= tolerance, axis=1)
    return float(near.mean())


# ---------------------------------------------------------------------------------------------------
# shadow serve CAPTURE


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("web-browser")
    (root / "policy.yaml").write_text("n_boot: 200\ndefaults: {mismatch_budget: 0.02}\n")
    write_capture(root / "capture", [EndpointTraffic(n=300, changed_field_rate=0.3, latency_factor=1.6)], seed=5)
    port = free_port()
    log = root / "serve.log"
    proc = start_cli(["serve", "capture", "--listen", f"127.0.0.1:{port}", "--policy", "policy.yaml"], log, root)
    try:
        wait_listening(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_the_page_shows_the_verdict(browser: Any, served: str, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(served + "/")
        badge = page.wait_for_selector("#verdict-badge", timeout=WAIT_MS)  # htmx swaps it in once analysed
        assert badge is not None
        assert badge.inner_text().strip() == "FAIL"
        colour = page.eval_on_selector("#verdict-badge", "e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb({}, {}, {})".format(*FAIL_RGB)
        # The pixels, as a person sees them: the badge is mostly the FAIL red.
        assert colour_share(badge.screenshot(), FAIL_RGB) > 0.5
        shot = page.screenshot(full_page=True)
        (tmp_path / "live-view.png").write_bytes(shot)
        assert 0.001 < colour_share(shot, FAIL_RGB) < 0.5  # the verdict is there, among everything else
        row = page.locator("#endpoints tr[data-endpoint]")
        assert row.count() == 1
        assert row.locator(".n-primary").inner_text() == "300"
    finally:
        page.close()


def test_endpoint_then_field_then_copy_the_rule(browser: Any, served: str) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served)
    page = context.new_page()
    try:
        page.goto(served + "/")
        page.wait_for_selector("#endpoints a", timeout=WAIT_MS).click()
        page.wait_for_selector("table.guardrails", timeout=WAIT_MS)
        assert "mismatch_rate" in page.inner_text("table.guardrails")
        page.wait_for_function("() => { const i = document.querySelector('img.latency');"
                               " return i && i.complete && i.naturalWidth > 300; }", timeout=WAIT_MS)
        page.click("table.fields.real a >> text=/price")
        snippet = page.wait_for_selector("#rule-snippet", timeout=WAIT_MS)
        assert snippet is not None
        rule = snippet.inner_text()
        assert rule.startswith("- {") and '"/price"' in rule and 'endpoint: "/api/items/{id}"' in rule
        example = page.locator(".example").first
        assert example.locator(".sd-real").count() >= 2  # the price highlighted on both sides
        assert "GET http://monolith.local/api/items/" in example.inner_text()
        page.click("button[data-copy=rule-snippet]")
        page.wait_for_function("() => document.querySelector('button[data-copy]').textContent === 'copied'",
                               timeout=WAIT_MS)
        assert page.evaluate("navigator.clipboard.readText()") == rule
    finally:
        context.close()


# ---------------------------------------------------------------------------------------------------
# shadow gateway FILE --live-view: the page follows live traffic

GATEWAY_YAML = """
http:
  routers:
    items: {{rule: "PathPrefix(`/api/items`)", service: items-shadowed}}
  services:
    monolith: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
    items-next: {{loadBalancer: {{servers: [{{url: "{cand}"}}]}}}}
    items-shadowed:
      mirroring: {{service: monolith, mirrors: [{{name: items-next, percent: 100}}]}}
shadow:
  capture: {{dir: capture, segmentSeconds: 1}}
  mirroring: {{targets: {{items-next: {{role: candidate}}}}}}
  analysis: {{n_boot: 200}}
"""


def pairs_on_page(page: Any) -> int:
    value = page.evaluate("() => { const e = document.querySelector('#count-pairs');"
                          " return e ? Number(e.dataset.value) : -1; }")
    return int(value)


def test_counts_move_while_traffic_flows_through_the_gateway(browser: Any, tmp_path: Path) -> None:
    with Upstream("monolith") as mono, Upstream("items-next") as cand:
        (tmp_path / "gateway.yaml").write_text(GATEWAY_YAML.format(mono=mono.url, cand=cand.url))
        gw_port, view_port = free_port(), free_port()
        log = tmp_path / "gateway.log"
        # One worker: the log lines counted below are one process's (N workers log each once).
        proc = start_cli(["gateway", "gateway.yaml", "--listen", f"127.0.0.1:{gw_port}", "--workers", "1",
                          "--live-view", f"127.0.0.1:{view_port}"], log, tmp_path)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            wait_listening(view_port, proc, log)
            wait_listening(gw_port, proc, log)
            page.goto(f"http://127.0.0.1:{view_port}/")
            page.evaluate("() => { window.stillTheSamePage = true; }")  # gone if the page reloads
            with httpx.Client(base_url=f"http://127.0.0.1:{gw_port}", timeout=30) as client:
                for i in range(10):
                    assert client.get(f"/api/items/{i}", params={"q": i}).status_code == 200
                page.wait_for_function("() => { const e = document.querySelector('#count-pairs');"
                                       " return e && Number(e.dataset.value) >= 10; }", timeout=WAIT_MS)
                first = pairs_on_page(page)
                page.wait_for_selector("#endpoints tr[data-endpoint]", timeout=WAIT_MS)
                for i in range(10, 25):
                    assert client.get(f"/api/items/{i}", params={"q": i}).status_code == 200
                page.wait_for_function("() => { const e = document.querySelector('#count-pairs');"
                                       " return e && Number(e.dataset.value) >= 25; }", timeout=WAIT_MS)
            assert pairs_on_page(page) > first
            assert page.evaluate("() => window.stillTheSamePage === true")  # htmx swapped, no reload
            page.wait_for_function("() => { const c = document.querySelector("
                                   "'#endpoints tr[data-endpoint] .n-primary'); return c && Number(c.textContent) >= 25; }",
                                   timeout=WAIT_MS)
            assert "/api/items/{id} → items-next" in page.inner_text("#endpoints")
            page.goto(f"http://127.0.0.1:{view_port}/routers")
            table = page.wait_for_selector("#router-table", timeout=WAIT_MS)
            assert table is not None
            text = table.inner_text()
            assert "items" in text and "PathPrefix(`/api/items`)" in text and "items-next 100%" in text
        finally:
            page.close()
            stop(proc)
        output = log.read_text(errors="replace")
        assert proc.returncode == 0, output
        assert f"live view of {tmp_path / 'capture'} at http://127.0.0.1:{view_port}/" in output
        # Said once: the routers decide, not the reverse target `shadow gateway` hands mitmdump.
        assert output.count("the --mode reverse target (http://127.0.0.1:") == 1 and "is not used" in output
