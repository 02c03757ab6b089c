"""shadow.gateway.mirror: the pure mirror decisions, and the dispatcher against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio

from shadow.gateway.mirror import (
    RESEND,
    RESEND_BURST,
    RESEND_CAPPED,
    RESEND_DISABLED,
    RESEND_NOT_DUE,
    RESEND_NOT_MIRRORED,
    RESEND_PRIMARY_FAILED,
    RESEND_SECONDARY_CONFIGURED,
    RESEND_UNSAFE,
    SKIP_BODY_TOO_LARGE,
    SKIP_UNSAFE,
    MirrorDispatcher,
    MirrorRequest,
    MirrorResult,
    MirrorTargetSettings,
    RateLimitedLog,
    ResendBudget,
    ResendSettings,
    mirror_headers,
    mirror_skip_reason,
    percent_due,
    resend_skip_reason,
)
from tests.upstream import Upstream, free_port

SAFE = MirrorTargetSettings()
UNSAFE_OK = MirrorTargetSettings(allow_unsafe=True)


def test_unsafe_methods_need_opt_in() -> None:
    for method in ("POST", "put", "PATCH", "DELETE"):
        assert mirror_skip_reason(method, 0, max_body_size=-1, target=SAFE) == SKIP_UNSAFE
        assert mirror_skip_reason(method, 0, max_body_size=-1, target=UNSAFE_OK) is None
    for method in ("GET", "HEAD", "OPTIONS"):
        assert mirror_skip_reason(method, 0, max_body_size=-1, target=SAFE) is None


def test_max_body_size_like_traefik() -> None:
    assert mirror_skip_reason("POST", 10, max_body_size=10, target=UNSAFE_OK) is None
    assert mirror_skip_reason("POST", 11, max_body_size=10, target=UNSAFE_OK) == SKIP_BODY_TOO_LARGE
    assert mirror_skip_reason("POST", 10**9, max_body_size=-1, target=UNSAFE_OK) is None
    assert mirror_skip_reason("GET", 1, max_body_size=0, target=SAFE) == SKIP_BODY_TOO_LARGE


def test_resend_only_safe_mirrored_requests_without_a_configured_secondary() -> None:
    on = ResendSettings()

    def reason(method: str = "GET", settings: ResendSettings = on, secondary: bool = False, copies: int = 1,
               answered: bool = True) -> str | None:
        return resend_skip_reason(method, settings=settings, secondary_configured=secondary,
                                  candidate_copies=copies, primary_answered=answered)

    assert reason() is None and reason("head") is None
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):  # a second call must never repeat a side effect
        assert reason(method) == RESEND_UNSAFE
    assert reason(secondary=True) == RESEND_SECONDARY_CONFIGURED
    assert reason(copies=0) == RESEND_NOT_MIRRORED  # no candidate answer to weigh it against
    assert reason(answered=False) == RESEND_PRIMARY_FAILED
    assert reason(settings=ResendSettings(enabled=False)) == RESEND_DISABLED
    assert reason(settings=ResendSettings(percent=0)) == RESEND_DISABLED


def test_percent_rule_is_traefiks_evenly_spaced_and_starts_with_the_first() -> None:
    def chosen(percent: int, n: int) -> list[int]:
        sent, out = 0, []
        for seen in range(1, n + 1):
            if percent_due(seen, sent, percent):
                sent += 1
                out.append(seen)
        return out

    assert chosen(5, 60) == [1, 21, 41]
    assert chosen(50, 6) == [1, 3, 5]
    assert chosen(100, 3) == [1, 2, 3] and chosen(0, 50) == []
    assert len(chosen(7, 1000)) == 70


def test_resend_budget_per_endpoint_share_and_cap_per_window() -> None:
    now = [0.0]
    budget = ResendBudget(ResendSettings(percent=50, per_endpoint=2, window_s=60.0), clock=lambda: now[0])
    a = [budget.take("/a") for _ in range(8)]
    assert a == [RESEND, RESEND_NOT_DUE, RESEND, RESEND_NOT_DUE, RESEND_CAPPED, RESEND_NOT_DUE,
                 RESEND_CAPPED, RESEND_NOT_DUE]
    assert budget.take("/b") == RESEND  # each endpoint its own share and cap, from its first request
    now[0] = 60.0  # a new window: the cap resets, the spacing goes on where it was
    assert [budget.take("/a") for _ in range(4)] == [RESEND, RESEND_NOT_DUE, RESEND, RESEND_NOT_DUE]
    assert budget.take("/a") == RESEND_CAPPED
    budget.reconfigure(ResendSettings(percent=50, per_endpoint=10, window_s=60.0))
    assert budget.take("/a") == RESEND_NOT_DUE and budget.take("/a") == RESEND  # a reload keeps the counts


def test_resend_share_holds_overall_when_every_path_is_new() -> None:
    """Untemplated slugs make every request its endpoint's first: still at most 5 % overall (+ burst)."""
    budget = ResendBudget(ResendSettings(percent=5, per_endpoint=50))
    outcomes = [budget.take(f"/u/user-{i}") for i in range(2_000)]
    assert outcomes[:RESEND_BURST] == [RESEND] * RESEND_BURST  # the first endpoints all get evidence
    assert outcomes.count(RESEND) <= RESEND_BURST + 2_000 * 5 // 100
    assert outcomes.count(RESEND) >= 2_000 * 5 // 100  # and the share is used, not starved
    assert set(outcomes) == {RESEND, RESEND_CAPPED}


def test_resend_budget_forgets_the_least_recent_endpoints_beyond_its_bound() -> None:
    budget = ResendBudget(ResendSettings(percent=100, per_endpoint=1), max_endpoints=3)
    for path in ("/u/alice", "/u/bob", "/u/carol", "/u/alice", "/u/dave"):
        budget.take(path)
    assert len(budget) == 3
    assert budget.take("/u/alice") == RESEND_CAPPED  # still remembered: seen more recently than bob
    assert budget.take("/u/bob") == RESEND  # forgotten, so it starts afresh


def test_mirror_headers_drop_hop_by_hop_and_mark() -> None:
    headers = [("Host", "shop.example"), ("Connection", "keep-alive"), ("Content-Length", "3"),
               ("X-Shadow-Request", "0"), ("Accept", "a/b"), ("Accept", "c/d")]
    out = mirror_headers(headers, "rid-1")
    assert out == [("Host", "shop.example"), ("Accept", "a/b"), ("Accept", "c/d"),
                   ("X-Shadow-Request", "1"), ("X-Shadow-Request-Id", "rid-1")]
    replaced = mirror_headers(headers, "rid-1", host="127.0.0.1:9")
    assert replaced[0] == ("Host", "127.0.0.1:9")
    assert [v for k, v in replaced if k == "Host"] == ["127.0.0.1:9"]


def test_mirror_headers_replace_the_trace_context() -> None:
    """The copy's own client span replaces the primary's traceparent (any case, every line of it);
    tracestate and the rest pass as the client sent them. Without one, the header passes as is."""
    primary = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    copy = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    headers = [("TraceParent", primary), ("tracestate", "k=v"), ("traceparent", primary), ("Accept", "a/b")]
    out = mirror_headers(headers, "rid-1", traceparent=copy)
    assert [(k, v) for k, v in out if k.lower() == "traceparent"] == [("traceparent", copy)]
    assert ("tracestate", "k=v") in out and ("Accept", "a/b") in out
    assert out[-2:] == [("X-Shadow-Request", "1"), ("X-Shadow-Request-Id", "rid-1")]
    untouched = mirror_headers(headers, "rid-1")
    assert [v for k, v in untouched if k.lower() == "traceparent"] == [primary, primary]


def test_rate_limited_log_counts_suppressed_lines() -> None:
    lines: list[str] = []
    now = [0.0]
    log = RateLimitedLog(lines.append, interval_s=5.0, clock=lambda: now[0])
    assert log("a", kind="x") and not log("b", kind="x") and not log("c", kind="x")
    now[0] = 6.0
    assert log("d", kind="x")
    assert lines == ["a", "d (2 more lines of this kind suppressed)"]


def test_rate_limited_log_limits_each_kind_on_its_own() -> None:
    """A flood of mirror failures never hides a shed line (issue 17, item 13): each kind has its
    own limiter and its own count of suppressed lines."""
    lines: list[str] = []
    now = [0.0]
    log = RateLimitedLog(lines.append, interval_s=5.0, clock=lambda: now[0])
    for i in range(1000):
        log(f"mirror to v2 (http://x) failed: refused {i}", kind="mirror-failed")
    assert log("mirror shed: 256 copies already in flight", kind="mirror-shed")
    assert not log("mirror shed: again", kind="mirror-shed")
    # Without a kind, the text before the first ':' is the kind.
    assert log("capture failed: disk") and not log("capture failed: disk again") and log("telemetry: x")
    assert lines == ["mirror to v2 (http://x) failed: refused 0", "mirror shed: 256 copies already in flight",
                     "capture failed: disk", "telemetry: x"]
    assert log.suppressed == {"mirror-failed": 999, "mirror-shed": 1, "capture failed": 1}
    assert log.counters() == {"warnings_suppressed_mirror_failed": 999, "warnings_suppressed_mirror_shed": 1,
                              "warnings_suppressed_capture_failed": 1}
    now[0] = 6.0
    assert log("mirror shed: later", kind="mirror-shed")
    assert lines[-1] == "mirror shed: later (1 more lines of this kind suppressed)"


def _request(url: str, *, method: str = "GET", body: bytes | None = None, rid: str = "r1") -> MirrorRequest:
    return MirrorRequest(target="orders-v2", role="candidate", request_id=rid, method=method,
                         url=url, upstream=url, headers=tuple(mirror_headers([("Accept", "x/y")], rid)),
                         body=body)


async def _run_until_done(dispatcher: MirrorDispatcher, results: list[MirrorResult], count: int) -> None:
    for _ in range(500):
        if len(results) >= count:
            break
        await asyncio.sleep(0.01)
    await dispatcher.aclose(grace_s=0.5)


def test_dispatcher_sends_marked_copies_with_body_and_captures_response() -> None:
    results: list[MirrorResult] = []

    async def main(url: str) -> MirrorDispatcher:
        d = MirrorDispatcher(max_in_flight=8, timeout_s=2.0, on_result=results.append)
        assert d.submit(_request(url + "/api/orders?x=%2F1", method="POST", body=b'{"a":1}', rid="r1"))
        assert d.submit(_request(url + "/api/orders", rid="r2"))
        await _run_until_done(d, results, 2)
        return d

    with Upstream("shadow") as up:
        d = asyncio.run(main(up.url))
        got = sorted(up.received(), key=lambda r: r.headers["x-shadow-request-id"])
    assert [r.path for r in got] == ["/api/orders?x=%2F1", "/api/orders"]  # encoded path kept as is
    assert got[0].method == "POST" and got[0].body == b'{"a":1}'
    assert got[1].body == b""
    assert all(r.headers["x-shadow-request"] == "1" for r in got)
    assert "accept-encoding" not in got[1].headers and "user-agent" not in got[1].headers
    assert {r.status for r in results} == {200}
    assert all(r.error is None and r.latency_ms > 0 and b'"upstream": "shadow"' in r.body for r in results)
    assert d.counters.as_dict()["mirror_completed"] == 2


def test_dispatcher_refused_and_timeout_become_errors() -> None:
    results: list[MirrorResult] = []
    dead = f"http://127.0.0.1:{free_port()}"

    async def main(slow_url: str) -> MirrorDispatcher:
        d = MirrorDispatcher(max_in_flight=8, timeout_s=0.3, on_result=results.append)
        d.submit(_request(dead + "/x", rid="refused"))
        d.submit(_request(slow_url + "/x", rid="slow"))
        await _run_until_done(d, results, 2)
        return d

    with Upstream("hanging", delay=1.5) as slow:
        d = asyncio.run(main(slow.url))
    by_id = {r.request.request_id: r for r in results}
    assert by_id["refused"].status is None and by_id["refused"].error
    assert "connect" in by_id["refused"].error.lower()
    assert by_id["slow"].status is None and by_id["slow"].error == "timeout after 0.3s"
    assert d.counters.errors == 1 and d.counters.timeouts == 1


def test_dispatcher_sheds_beyond_max_in_flight() -> None:
    results: list[MirrorResult] = []
    warnings: list[str] = []

    async def main(url: str) -> MirrorDispatcher:
        d = MirrorDispatcher(max_in_flight=2, timeout_s=2.0, on_result=results.append,
                             log_warning=warnings.append)
        accepted = [d.submit(_request(url + f"/{i}", rid=str(i))) for i in range(5)]
        assert accepted == [True, True, False, False, False]
        await _run_until_done(d, results, 2)
        return d

    with Upstream("slow", delay=0.2) as up:
        d = asyncio.run(main(up.url))
    assert d.counters.shed == 3 and d.counters.sent == 2 and len(results) == 2
    assert len(warnings) == 1 and "mirror shed" in warnings[0]  # rate-limited: one line for three


def test_callback_failure_is_counted_not_raised() -> None:
    def broken(_r: MirrorResult) -> None:
        raise RuntimeError("capture down")

    async def main(url: str) -> MirrorDispatcher:
        d = MirrorDispatcher(max_in_flight=2, timeout_s=2.0, on_result=broken)
        d.submit(_request(url + "/"))
        for _ in range(200):
            if d.counters.callback_errors:
                break
            await asyncio.sleep(0.01)
        await d.aclose()
        return d

    with Upstream("ok") as up:
        d = asyncio.run(main(up.url))
    assert d.counters.callback_errors == 1 and d.counters.completed == 1


def test_aclose_cancels_copies_still_out() -> None:
    results: list[MirrorResult] = []

    async def main(url: str) -> MirrorDispatcher:
        d = MirrorDispatcher(max_in_flight=2, timeout_s=10.0, on_result=results.append)
        d.submit(_request(url + "/"))
        await asyncio.sleep(0.1)
        await d.aclose(grace_s=0.1)
        assert not d.submit(_request(url + "/"))  # closed: shed
        return d

    with Upstream("hanging", delay=1.0) as up:
        asyncio.run(main(up.url))
    assert len(results) == 1 and results[0].error == "cancelled: gateway shutting down"
