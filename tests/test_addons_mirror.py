"""The mirror addon on mitmproxy's test flows: settings follow a reload; copies go out through a
real dispatcher to a real upstream, after the primary answered; the zero-config re-send of a safe
request to the primary goes to the server that answered, as role=secondary, bounded."""

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
  mirroring: {{maxInFlight: {max_in_flight}, timeout: {timeout}, resend: {{enabled: false}}}}
"""

# Both sides real; the re-send on (its defaults), optionally beside a configured secondary.
RESEND_CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: m}}
    both: {{rule: "PathPrefix(`/both`)", service: m-both}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "http://127.0.0.1:9"}}, {{url: "{mono}"}}]}}}}
    next: {{loadBalancer: {{servers: [{{url: "{next}"}}]}}}}
    sec: {{loadBalancer: {{servers: [{{url: "{next}"}}]}}}}
    m: {{mirroring: {{service: mono, mirrors: [{{name: next, percent: 100}}]}}}}
    m-both: {{mirroring: {{service: mono, mirrors: [{{name: next, percent: 100}}, {{name: sec, percent: 100}}]}}}}
shadow:
  capture: {{enabled: false}}
  mirroring:
    maxInFlight: {max_in_flight}
    targets: {{sec: {{role: secondary}}}}
    resend: {{percent: 50, perEndpoint: 2}}
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



def _serve(router: Router, mirror: Mirror, state: GatewayState, flows: list[tuple[str, str]],
           *, serving_port: int) -> list[http.HTTPFlow]:
    """Route each (method, path), answer it as if the server on `serving_port` did, let the mirror
    addon dispatch, and wait for every copy."""
    done = []

    async def run() -> None:
        for method, path in flows:
            req = tutils.treq(host="127.0.0.1", port=1, method=method.encode(), path=path.encode(), content=b"",
                              headers=http.Headers(((b"Host", b"shop.example"),)))
            flow = tflow.tflow(req=req)
            flow.client_conn.timestamp_end = None
            router.request(flow)
            while flow.request.port != serving_port:  # round-robin: until the real server is picked
                router.request(flow)
            flow.response = tutils.tresp()
            mirror.response(flow)
            await asyncio.sleep(0)
            done.append(flow)
        assert state.dispatcher is not None
        await state.dispatcher.aclose(grace_s=5.0)

    asyncio.run(run())
    return done


def test_a_safe_mirrored_request_is_resent_to_the_server_that_answered_as_secondary(tmp_path: Path) -> None:
    with Upstream("mono") as mono, Upstream("next") as next_:
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(RESEND_CONFIG.format(mono=mono.url, next=next_.url, max_in_flight=16))
        state = GatewayState()
        config_addon, router, mirror = ShadowConfig(state), Router(state), Mirror(state)
        with taddons.context(config_addon, router, mirror) as tctx:
            tctx.configure(config_addon, shadow_config=str(cfg))
            flows = _serve(router, mirror, state, [("GET", "/a/1"), ("GET", "/a/2"), ("POST", "/a/3"),
                                                   ("GET", "/a/4"), ("GET", "/a/5"), ("GET", "/a/6"),
                                                   ("GET", "/a/7"), ("GET", "/both/1")],
                           serving_port=mono.port)
            counters = state.counters()
    # 50 %: the 1st and 3rd eligible GET of /a/{id} (POST is never re-sent), then the cap of 2 per
    # window; /both has a configured secondary: that one is the evidence, nothing is re-sent there.
    assert (counters["mirror_resent"], counters["mirror_resend_capped"], counters["mirror_resend_shed"]) == (2, 1, 0)
    # The two re-sends travel on their own tasks and connections: either may land first.
    received = sorted(mono.received(), key=lambda q: q.path)
    assert [(q.method, q.path) for q in received] == [("GET", "/a/1"), ("GET", "/a/4")]
    for copy, flow in zip(received, (flows[0], flows[3]), strict=True):
        assert copy.headers["x-shadow-request"] == "1" and copy.headers["x-shadow-request-id"] == flow.id
        assert copy.headers["host"] == "shop.example"  # mono passes the client's Host, as for the primary
    assert len(next_.received()) == 8  # candidate copies: 6 GETs + /both's candidate and secondary


def test_a_resend_beyond_max_in_flight_is_shed_and_counted(tmp_path: Path) -> None:
    with Upstream("mono", delay=0.3) as mono, Upstream("next", delay=0.3) as next_:
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(RESEND_CONFIG.format(mono=mono.url, next=next_.url, max_in_flight=1))
        state = GatewayState()
        config_addon, router, mirror = ShadowConfig(state), Router(state), Mirror(state)
        with taddons.context(config_addon, router, mirror) as tctx:
            tctx.configure(config_addon, shadow_config=str(cfg))
            _serve(router, mirror, state, [("GET", "/a/1")], serving_port=mono.port)
            counters = state.counters()
    # The candidate copy took the one slot; the re-send was shed, never queued.
    assert (counters["mirror_resent"], counters["mirror_resend_shed"]) == (0, 1)
    assert mono.received() == [] and len(next_.received()) == 1
