"""The mirror addon on mitmproxy's test flows: settings follow a reload; copies go out through a
real dispatcher to a real upstream, after the primary answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from addons.mirror import Mirror
from addons.reload import GatewayState, ShadowConfig
from addons.router import Router
from tests.upstream import Upstream

CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: m}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "http://127.0.0.1:9"}}]}}}}
    next: {{loadBalancer: {{servers: [{{url: "{next}"}}], passHostHeader: false}}}}
    m: {{mirroring: {{service: mono, mirrors: [{{name: next, percent: 100}}]}}}}
shadow:
  capture: {{enabled: false}}
  mirroring: {{maxInFlight: {max_in_flight}, timeout: {timeout}}}
"""


def test_mirroring_settings_follow_a_reload(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(CONFIG.format(next="http://127.0.0.1:9", max_in_flight=4, timeout="1s"))
    state = GatewayState()
    config_addon, mirror = ShadowConfig(state), Mirror(state)
    with taddons.context(config_addon, mirror) as tctx:
        tctx.configure(config_addon, shadow_config=str(cfg))
        assert state.dispatcher is not None
        assert (state.dispatcher.max_in_flight, state.dispatcher.timeout_s) == (4, 1.0)
        cfg.write_text(CONFIG.format(next="http://127.0.0.1:9", max_in_flight=32, timeout="250ms"))
        assert asyncio.run(config_addon.reload_if_changed(force=True))
        assert (state.dispatcher.max_in_flight, state.dispatcher.timeout_s) == (32, 0.25)
        assert state.counters()["config_reloads"] == 1


def test_copy_leaves_after_the_answer_with_the_mirror_services_host(tmp_path: Path) -> None:
    with Upstream("next") as next_:
        port = next_.port
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(CONFIG.format(next=next_.url, max_in_flight=4, timeout="2s"))
        state = GatewayState()
        config_addon, router, mirror = ShadowConfig(state), Router(state), Mirror(state)
        with taddons.context(config_addon, router, mirror) as tctx:
            tctx.configure(config_addon, shadow_config=str(cfg))
            req = tutils.treq(host="127.0.0.1", port=1, path=b"/x?y=1", content=b"",
                              headers=http.Headers(((b"Host", b"shop.example"), (b"Accept", b"a/b"))))
            flow = tflow.tflow(req=req)
            flow.client_conn.timestamp_end = None  # the test client is still connected
            router.request(flow)
            assert next_.received() == []  # nothing before the primary answered

            async def answer_and_wait() -> None:
                flow.response = tutils.tresp()
                mirror.response(flow)
                assert state.dispatcher is not None
                assert state.dispatcher.in_flight == 0  # the hook only schedules: the answer leaves first
                await asyncio.sleep(0)
                assert state.dispatcher.in_flight == 1
                for _ in range(200):
                    if next_.received():
                        break
                    await asyncio.sleep(0.01)
                await state.dispatcher.aclose()

            asyncio.run(answer_and_wait())
    (copy,) = next_.received()
    assert copy.path == "/x?y=1" and copy.headers["accept"] == "a/b"
    assert copy.headers["host"] == f"127.0.0.1:{port}"  # the mirror service's passHostHeader: false
    assert copy.headers["x-forwarded-host"] == "shop.example"
    assert copy.headers["x-shadow-request-id"] == flow.id
