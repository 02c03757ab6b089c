"""Hot reload and the local 404, end to end: a real mitmdump gateway whose config file changes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import GatewayConfig
from shadow.gateway.watch import ConfigFileWatcher
from tests.conftest import GatewayProcess
from tests.test_yamlconfig import alias_bomb
from tests.upstream import Upstream

CONFIG = """
http:
  routers:
    api:
      rule: "PathPrefix(`/api`)"
      service: {api_service}
    mirrored: {{rule: "PathPrefix(`/m`)", service: m50}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
    next: {{loadBalancer: {{servers: [{{url: "{next}"}}]}}}}
    m50: {{mirroring: {{service: mono, mirrors: [{{name: next, percent: 50}}]}}}}
shadow:
  capture: {{enabled: false}}
"""

BROKEN_RULE = "PathPrefix(`/api`"  # unclosed parenthesis, on the line of `rule:` (line 5)


class Env:
    def __init__(self, cfg: Path, gw: GatewayProcess, mono: Upstream, next_: Upstream) -> None:
        self.cfg, self.gw, self.mono, self.next = cfg, gw, mono, next_
        self.http = httpx.Client(timeout=30.0)  # one client: creating one per request costs ~0.5 s (TLS setup)

    def write(self, api_service: str, *, rule: str | None = None) -> None:
        text = CONFIG.format(api_service=api_service, mono=self.mono.url, next=self.next.url)
        if rule is not None:
            text = text.replace("PathPrefix(`/api`)", rule)
        self.cfg.write_text(text)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory,
        gateway_factory: Callable[..., GatewayProcess]) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("reload")
    with Upstream("mono") as mono, Upstream("next") as next_:
        e = Env(root / "gateway.yaml", None, mono, next_)  # type: ignore[arg-type]
        e.write("mono")
        # 200 ms polling keeps the test short; the default is 1 s.
        e.gw = gateway_factory(e.cfg, extra_args=("--set", "shadow_reload_interval=200ms"))
        yield e
        e.http.close()


def _client_port(r: httpx.Response) -> int:
    port: int = r.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


def _wait_until(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_no_matching_router_is_a_local_404(env: Env) -> None:
    r = env.http.get(env.gw.url + "/nothing/here")
    assert r.status_code == 404 and r.text == "404 page not found\n"
    assert not [q for q in env.mono.received() if q.path.startswith("/nothing")]


def test_valid_change_applies_on_the_open_connection(env: Env) -> None:
    with httpx.Client(base_url=env.gw.url, timeout=30.0) as client:
        first = client.get("/api/before")
        assert first.json()["upstream"] == "mono"
        assert client.get("/m/1").status_code == 200  # 50 %: request 1 is mirrored
        env.write("next")
        assert _wait_until(lambda: client.get("/api/probe").json()["upstream"] == "next")
        after = client.get("/api/after")
        assert after.json()["upstream"] == "next"
        # One keep-alive connection served requests before and after the reload.
        assert _client_port(first) == _client_port(after)
        # The mirror counter carried over: request 2 is not mirrored, request 3 is.
        client.get("/m/2")
        client.get("/m/3")
    assert _wait_until(lambda: any(q.path == "/m/3" for q in env.next.received()))
    assert [q.path for q in env.next.received() if q.path.startswith("/m/")] == ["/m/1", "/m/3"]
    assert "reloaded" in env.gw.output()


def test_invalid_change_is_one_line_and_the_running_config_stays(env: Env) -> None:
    env.write("next", rule=BROKEN_RULE)
    assert env.gw.wait_for_output("config reload rejected")
    (line,) = [ln for ln in env.gw.output().splitlines() if "config reload rejected" in ln]
    assert f"{env.cfg}:5: http.routers.api.rule:" in line
    assert "Traceback" not in env.gw.output()
    assert env.http.get(env.gw.url + "/api/still").json()["upstream"] == "next"


def test_config_bombs_on_reload_are_one_line_and_later_valid_configs_apply(env: Env) -> None:
    """Issue #17: an anchors bomb as a hot reload grew the gateway without bound and no later valid
    config was applied; a 3,000-deep rule was a RecursionError; a 50 MB file was read whole. Each is
    now rejected in one line (each wait bounded), the running config serves on."""
    env.write("mono")
    assert _wait_until(lambda: env.http.get(env.gw.url + "/api/x").json()["upstream"] == "mono")
    valid = env.cfg.read_text()
    attacks = {
        "aliases expand to more than 100000 nodes": valid + alias_bomb(),
        "http.routers.api.rule: nested deeper than 64 levels": valid.replace(
            "PathPrefix(`/api`)", "(" * 3000 + "PathPrefix(`/api`)" + ")" * 3000),
        "larger than a config may be": valid + "# padding\n" * 600_000,
    }
    for words, text in attacks.items():
        env.cfg.write_text(text)
        assert env.gw.wait_for_output(words, timeout=15), words
        line = [ln for ln in env.gw.output().splitlines() if "config reload rejected" in ln][-1]
        assert f"{env.cfg}" in line and words in line, line
        assert env.http.get(env.gw.url + "/api/still").json()["upstream"] == "mono"
    assert "Traceback" not in env.gw.output() and "RecursionError" not in env.gw.output()
    env.write("next")  # and the next valid config is applied
    assert _wait_until(lambda: env.http.get(env.gw.url + "/api/after").json()["upstream"] == "next")


def test_identical_content_is_not_reloaded(env: Env) -> None:
    env.write("mono")
    assert _wait_until(lambda: env.http.get(env.gw.url + "/api/x").json()["upstream"] == "mono")
    reloads = env.gw.output().count("reloaded")
    env.write("mono")  # same bytes, new mtime
    env.write("next")  # then a real change: exactly one more reload
    assert _wait_until(lambda: env.http.get(env.gw.url + "/api/y").json()["upstream"] == "next")
    time.sleep(0.5)  # a spurious reload of the identical write would have logged by now
    assert env.gw.output().count("reloaded") == reloads + 1


def test_sighup_reloads_without_polling(tmp_path: Path) -> None:
    with Upstream("mono") as mono, Upstream("next") as next_:
        e = Env(tmp_path / "gateway.yaml", None, mono, next_)  # type: ignore[arg-type]
        e.write("mono")
        with GatewayProcess(e.cfg, extra_args=("--set", "shadow_reload_interval=0")) as gw:
            assert e.http.get(gw.url + "/api/a").json()["upstream"] == "mono"
            e.write("next")
            gw.signal(signal.SIGHUP)
            assert gw.wait_for_output("reloaded")
            assert e.http.get(gw.url + "/api/b").json()["upstream"] == "next"


def test_a_reload_in_progress_does_not_hold_up_shutdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #17: a reload still parsing kept the gateway from stopping (asyncio.run waits for its
    executor's threads). The parse runs on a daemon thread; stopping cancels the wait, not the parse."""
    import addons.reload as reload_addon

    started, release = threading.Event(), threading.Event()

    def stuck_load(path: str, **_settings: object) -> GatewayConfig:  # generated=: the multi-cluster services
        started.set()
        release.wait(60)
        raise ConfigError("released", file=path)

    monkeypatch.setattr(reload_addon, "load_gateway_config", stuck_load)
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("a: 1\n")
    addon = reload_addon.ShadowConfig(reload_addon.GatewayState())
    addon.watcher = ConfigFileWatcher(cfg)
    addon.watcher.prime()
    addon.state.config_path = str(cfg)
    cfg.write_text("a: 22\n")

    async def gateway_life() -> None:
        reload = asyncio.create_task(addon.reload_if_changed(force=True))
        for _ in range(1000):  # until the parse is under way (bounded: 10 s)
            if started.is_set():
                break
            await asyncio.sleep(0.01)
        assert started.is_set()
        reload.cancel()  # what stopping the gateway does to its poll task
        with contextlib.suppress(asyncio.CancelledError):
            await reload

    stopped = threading.Event()
    loop_thread = threading.Thread(target=lambda: (asyncio.run(gateway_life()), stopped.set()), daemon=True)
    loop_thread.start()
    try:
        assert stopped.wait(30), "the event loop did not close while a reload was parsing"
    finally:
        release.set()
        loop_thread.join(60)
