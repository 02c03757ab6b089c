"""The front addon (addons/front.py): one object for mitmproxy, the concerns called in order with
mitmproxy's per-addon semantics, flow hooks bound to what the configuration needs. No sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow, tutils

from addons.auth import Auth
from addons.capture import Capture
from addons.front import GatewayAddon, chain
from addons.mirror import Mirror
from addons.reload import GatewayState, ShadowConfig
from addons.router import Router
from addons.telemetry import Telemetry
from addons.traffic import Traffic

PASS = """
http:
  routers:
    all: {rule: "PathPrefix(`/`)", service: mono}
  services:
    mono: {loadBalancer: {servers: [{url: "http://10.0.0.1:8080"}]}}
shadow:
  capture: {enabled: false}
"""

MIRROR = """
http:
  routers:
    all: {rule: "PathPrefix(`/`)", service: mirrored, middlewares: [tag]}
  middlewares:
    tag: {headers: {customResponseHeaders: {X-Served-By: shadow}}}
  services:
    mono: {loadBalancer: {servers: [{url: "http://10.0.0.1:8080"}]}}
    next: {loadBalancer: {servers: [{url: "http://10.0.0.2:8080"}]}}
    mirrored: {mirroring: {service: mono, mirrors: [{name: next, percent: 100}]}}
shadow:
  capture: {enabled: false}
"""

SPLIT = """
http:
  routers:
    all: {rule: "PathPrefix(`/`)", service: split}
  services:
    split: {weighted: {services: [{name: mono, weight: 1}, {name: next, weight: 1}]}}
    mono: {loadBalancer: {servers: [{url: "http://10.0.0.1:8080"}]}}
    next: {loadBalancer: {servers: [{url: "http://10.0.0.2:8080"}]}}
shadow:
  capture: {enabled: false}
"""


class Gateway:
    def __init__(self, tctx: Any, front: GatewayAddon, config: ShadowConfig, cfg: Path) -> None:
        self.tctx, self.front, self.config, self.cfg = tctx, front, config, cfg

    def load(self, text: str) -> None:
        self.cfg.write_text(text)
        self.config.configure({"shadow_config"})  # what a changed file or SIGHUP leads to


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(PASS)
    state = GatewayState()
    config = ShadowConfig(state)
    front = GatewayAddon(state, [config, Auth(state), Router(state), Traffic(state), Capture(state), Mirror(state),
                                 Telemetry(state)])
    with taddons.context(front) as tctx:
        tctx.configure(front, shadow_config=str(cfg))
        yield Gateway(tctx, front, config, cfg)


def make_flow(path: str = "/a") -> http.HTTPFlow:
    req = tutils.treq(host="127.0.0.1", port=1, path=path.encode(), content=b"",
                      headers=http.Headers(((b"Host", b"gw.example"),)))
    return tflow.tflow(req=req)


def test_pass_through_binds_only_the_router_request(gateway: Gateway) -> None:
    assert gateway.front.bound_hooks() == {"request": ["Router"]}
    # mitmproxy finds no `response` / `error` hook at all: nothing is called for them.
    assert getattr(gateway.front, "response", None) is None
    assert getattr(gateway.front, "error", None) is None
    flow = make_flow()
    gateway.front.request(flow)  # type: ignore[attr-defined]
    assert (flow.request.host, flow.request.port) == ("10.0.0.1", 8080)
    assert flow.request.headers["Host"] == "gw.example"


def test_a_reload_binds_what_the_new_configuration_needs_and_keeps_the_old(gateway: Gateway) -> None:
    gateway.load(MIRROR)
    assert gateway.front.bound_hooks() == {"request": ["Router"], "response": ["Router", "Mirror"],
                                           "error": ["Mirror"]}
    gateway.load(SPLIT)
    # Kept: flows routed under the mirroring configuration may still be answered after the reload.
    assert gateway.front.bound_hooks() == {"request": ["Router", "Traffic"],
                                           "response": ["Router", "Traffic", "Mirror"],
                                           "error": ["Traffic", "Mirror"]}


def test_response_middlewares_run_through_the_front(gateway: Gateway) -> None:
    gateway.load(MIRROR)
    flow = make_flow()
    gateway.front.request(flow)  # type: ignore[attr-defined]
    flow.response = tutils.tresp()
    gateway.front.response(flow)  # type: ignore[attr-defined]
    assert flow.response.headers["X-Served-By"] == "shadow"


def test_a_rejected_runtime_change_reaches_mitmproxy(gateway: Gateway, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("http: [")
    with pytest.raises(exceptions.OptionsError):
        gateway.tctx.options.update(shadow_config=str(bad))
    assert gateway.tctx.options.shadow_config == str(gateway.cfg)  # rolled back


class Recorder:
    def __init__(self, name: str, calls: list[str], *, fail: bool = False, asynchronous: bool = False) -> None:
        self.name, self.calls, self.fail, self.asynchronous = name, calls, fail, asynchronous

    def hook(self, arg: object) -> Any:
        if self.asynchronous:
            return self._later(arg)
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} broke")
        return None

    async def _later(self, _arg: object) -> None:
        await asyncio.sleep(0)
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} broke")


def test_chain_runs_in_order_and_an_error_does_not_stop_the_next(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    run = chain([Recorder("a", calls).hook, Recorder("b", calls, fail=True).hook, Recorder("c", calls).hook])
    with caplog.at_level(logging.ERROR):
        assert run(object()) is None  # all synchronous: no coroutine for mitmproxy to await
    assert calls == ["a", "b", "c"]
    assert "Recorder.hook: b broke" in caplog.text


def test_chain_awaits_an_asynchronous_hook_before_the_next(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    run = chain([Recorder("a", calls).hook, Recorder("b", calls, asynchronous=True, fail=True).hook,
                 Recorder("c", calls).hook, Recorder("d", calls, asynchronous=True).hook])
    pending = run(object())
    assert calls == ["a"]  # b went asynchronous: c and d wait for it, as mitmproxy would make them
    assert pending is not None
    with caplog.at_level(logging.ERROR):
        asyncio.run(pending)  # type: ignore[arg-type]
    assert calls == ["a", "b", "c", "d"]
    assert "b broke" in caplog.text


def test_a_single_hook_is_bound_as_it_is() -> None:
    calls: list[str] = []
    hook = Recorder("a", calls).hook
    assert chain([hook]) == hook


def test_running_freezes_the_startup_objects(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))  # the test process stays unfrozen
    asyncio.run(gateway.front.running())
    assert frozen == [True]
    asyncio.run(gateway.front.done())
