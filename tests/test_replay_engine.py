"""The replay engine against real HTTP servers on 127.0.0.1: fan-out, recorded primary, filters,
rewrites, scheduling accuracy, errors, stop and resume."""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadow.replay.engine import ListSink, RecordedClock, ReplayConfig, ReplayEngine, ReplayStats, Target
from shadow.replay.filters import EntryFilter, Rewrite, fnv1a_32, hostname_of
from shadow.replay.resume import RangeSet, ReplayState, from_ranges, request_id, to_ranges
from shadow.replay.sources import RecordedResponse, SourceEntry, SourceError
from tests.upstream import ReceivedRequest, Response, Upstream, echo, free_port

T0 = 1_790_000_000_000_000_000


class ListSource:
    """An in-memory source; `fail_at` raises a SourceError at that index, like a damaged file."""

    kind = "test"

    def __init__(self, entries: list[SourceEntry], name: str = "mem", fail_at: int | None = None) -> None:
        self.entries_list = entries
        self.path = Path(name)
        self.fail_at = fail_at

    @property
    def identity(self) -> str:
        return f"id-{self.path}"

    def count(self) -> int | None:
        return len(self.entries_list)

    def entries(self) -> Iterator[SourceEntry]:
        for e in self.entries_list:
            if e.index == self.fail_at:
                raise SourceError(self.path, "broken here", entry=e.index + 1)
            yield e


def entry(i: int, method: str = "GET", path: str | None = None, *, ts_ms: float | None = None,
          headers: list[tuple[str, str]] | None = None, body: bytes = b"", host: str = "shop.example",
          status: int = 200, query: str = "") -> SourceEntry:
    return SourceEntry(
        index=i, method=method, scheme="http", host=host, path=path or f"/api/items/{i}", query=query,
        headers=[("Host", host), ("Accept", "application/json"), *(headers or [])], body=body,
        ts_ns=T0 + int((ts_ms if ts_ms is not None else i) * 1_000_000),
        recorded=RecordedResponse(status=status, headers=[("Content-Type", "application/json")],
                                  body=b'{"recorded": %d}' % i, latency_ms=7.5),
        client_key=f"user{i % 3}",
    )


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Upstream, Upstream]]:
    with Upstream("p") as p, Upstream("c") as c:
        yield p, c


@pytest.fixture
def pc(shared: tuple[Upstream, Upstream]) -> tuple[Upstream, Upstream]:
    """Two echoing upstreams (primary, candidate), module-scoped, emptied for each test."""
    for up in shared:
        with up._lock:
            up.requests.clear()
    return shared


def run(config: ReplayConfig, sources: list[Any], **kw: Any) -> tuple[ReplayStats, ListSink]:
    sink = ListSink()
    engine = ReplayEngine(config, sources, sink, **kw)
    return asyncio.run(engine.run()), sink


def by_role(rows: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["role"] == role]


def test_each_request_goes_to_every_target_with_one_request_id() -> None:
    entries = [entry(i, query="q=1" if i == 0 else "") for i in range(6)]
    with Upstream("p") as p, Upstream("c") as c, Upstream("s") as s:
        c_url = c.url
        targets = (Target("primary", "monolith", p.url), Target("candidate", "orders", c.url + "/v2"),
                   Target("secondary", "monolith-2", s.url))
        stats, sink = run(ReplayConfig(targets=targets), [ListSource(entries)])
        assert stats.requests == 6 and stats.errors == 0
        assert len(p.received()) == len(c.received()) == len(s.received()) == 6
        got = sorted(r.path for r in c.received())
        assert got[0] == "/v2/api/items/0?q=1"  # the target URL's path is a prefix
        for r in p.received():
            assert r.headers["x-shadow-request"] == "1" and r.headers["x-shadow-replay"] == "1"
            assert r.headers["host"] == f"127.0.0.1:{p.port}"  # GoReplay's default: the target's Host
    assert len(sink.rows) == 18
    ids = {r["request_id"] for r in sink.rows}
    assert len(ids) == 6
    for rid in ids:
        rows = [r for r in sink.rows if r["request_id"] == rid]
        assert sorted(r["role"] for r in rows) == ["candidate", "primary", "secondary"]
        assert len({r["exchange_id"] for r in rows}) == 3
    row = next(r for r in by_role(sink.rows, "candidate") if r["query"] == "q=1")
    assert row["mode"] == "replay" and row["service"] == "orders"
    assert row["upstream"] == c_url + "/v2" and row["url"] == c_url + "/v2/api/items/0?q=1"
    assert row["status"] == 200 and row["error"] is None and row["latency_ms"] > 0
    assert row["host"] == "shop.example" and row["endpoint"] == "/api/items/{id}"
    assert row["client_key"] == "user0" and row["method"] == "GET"
    assert ("X-Shadow-Replay", "1") in row["req_headers"]
    assert b'"upstream": "c"' in row["resp_body"]
    assert ("Content-Type", "application/json") in row["resp_headers"]
    assert isinstance(row["ts"], int) and row["ts"] > T0


def test_recorded_primary_is_not_sent_and_keeps_the_recorded_answer() -> None:
    entries = [entry(i) for i in range(4)]
    with Upstream("c") as c:
        targets = (Target("primary", "recorded", None), Target("candidate", "candidate", c.url))
        stats, sink = run(ReplayConfig(targets=targets), [ListSource(entries)])
        assert len(c.received()) == 4
    primaries = by_role(sink.rows, "primary")
    assert len(primaries) == 4 and stats.targets["primary"].errors == 0
    first = min(primaries, key=lambda r: r["path"])
    assert first["resp_body"] == b'{"recorded": 0}' and first["status"] == 200
    assert first["latency_ms"] == 7.5 and first["upstream"] == "recorded"
    assert first["recorded"] is True  # the analyzers do not compare this latency with live ones
    assert all("recorded" not in r for r in by_role(sink.rows, "candidate"))
    assert first["url"] == "http://shop.example/api/items/0"
    cand = {r["request_id"] for r in by_role(sink.rows, "candidate")}
    assert cand == {r["request_id"] for r in primaries}


def test_filter_rules() -> None:
    e = entry(1, headers=[("X-User", "alice")], status=503)
    assert EntryFilter().reject(e) is None
    assert EntryFilter(methods=frozenset({"POST"})).reject(e) == "filtered"
    assert EntryFilter(path=re.compile(r"^/api/items/\d+$")).reject(e) is None
    assert EntryFilter(path=re.compile(r"^/other")).reject(e) == "filtered"
    assert EntryFilter(hosts=frozenset({"shop.example"})).reject(entry(1, host="shop.example:8443")) is None
    assert EntryFilter(hosts=frozenset({"other"})).reject(e) == "filtered"
    assert hostname_of("Shop.Example:8443") == "shop.example" and hostname_of("[::1]:80") == "[::1]"
    assert EntryFilter(statuses=((500, 599),)).reject(e) is None
    assert EntryFilter(statuses=((200, 200),)).reject(e) == "filtered"
    assert EntryFilter().reject(entry(1, "DELETE")) == "unsafe"
    assert EntryFilter(allow_unsafe=True).reject(entry(1, "DELETE")) is None
    # Consistent header hashing: the decision depends on the value only.
    bucket = fnv1a_32(b"alice") % 100
    assert EntryFilter(hash_header="x-user", hash_percent=bucket + 1).reject(e) is None
    assert EntryFilter(hash_header="X-User", hash_percent=bucket).reject(e) == "filtered"
    assert EntryFilter(hash_header="X-Missing", hash_percent=0).reject(e) is None
    # Deterministic sampling: the same entries every time, about the requested share.
    many = [entry(i) for i in range(2000)]
    kept = [x.index for x in many if EntryFilter(sample_percent=25).reject(x) is None]
    assert kept == [x.index for x in many if EntryFilter(sample_percent=25).reject(x) is None]
    assert 400 < len(kept) < 600


def test_hash_header_keeps_whole_users() -> None:
    users = [f"user-{n}" for n in range(200)]
    entries = [entry(i, headers=[("X-User", users[i % 200])]) for i in range(1000)]
    f = EntryFilter(hash_header="X-User", hash_percent=30)
    kept_users: dict[str, set[bool]] = {}
    for x in entries:
        kept_users.setdefault(x.header("x-user") or "", set()).add(f.reject(x) is None)
    assert all(len(v) == 1 for v in kept_users.values())  # a user is all in or all out
    share = sum(True in v for v in kept_users.values()) / len(kept_users)
    assert 0.2 < share < 0.4


def test_engine_counts_skips_and_sends_unsafe_only_when_allowed(pc: tuple[Upstream, Upstream]) -> None:
    entries = [entry(0), entry(1, "POST", "/api/orders", body=b'{"n": 1}'), entry(2, "DELETE"),
               entry(3, path="/health"), entry(4)]
    p, c = pc
    targets = (Target("primary", "p", p.url), Target("candidate", "c", c.url))
    cfg = ReplayConfig(targets=targets, entry_filter=EntryFilter(path=re.compile("^/api")))
    stats, _ = run(cfg, [ListSource(entries)])
    assert (stats.requests, stats.skipped_unsafe, stats.skipped_filtered) == (2, 2, 1)
    assert all(r.method == "GET" for r in p.received())
    cfg = ReplayConfig(targets=targets, entry_filter=EntryFilter(allow_unsafe=True, methods=frozenset({"POST"})))
    stats, _ = run(cfg, [ListSource(entries)])
    assert (stats.requests, stats.skipped_unsafe, stats.skipped_filtered) == (1, 0, 4)
    posted = [r for r in c.received() if r.method == "POST"]
    assert len(posted) == 1 and posted[0].body == b'{"n": 1}'
    assert posted[0].headers["content-length"] == "8"


def test_rewrites(pc: tuple[Upstream, Upstream]) -> None:
    entries = [entry(0, path="/old/items/1", headers=[("X-Drop", "x"), ("X-Keep", "k"), ("Accept", "text/a")]),
               entry(1, path="/other/2")]
    p, c = pc
    targets = (Target("primary", "p", p.url), Target("candidate", "c", c.url))
    rw = Rewrite(set_headers=[("Accept", "application/xml"), ("X-Env", "staging")],
                 remove_headers=frozenset({"x-drop"}), host="svc.internal",
                 path_prefixes=(("/old/", "/new/"),))
    stats, sink = run(ReplayConfig(targets=targets, rewrite=rw), [ListSource(entries)])
    assert stats.requests == 2
    got = {r.path: r for r in c.received()}
    assert set(got) == {"/new/items/1", "/other/2"}
    first = got["/new/items/1"]
    assert first.headers["host"] == "svc.internal"
    assert "x-drop" not in first.headers and first.headers["x-keep"] == "k"
    assert [v for k, v in first.header_list if k.lower() == "accept"] == ["application/xml"]
    assert first.headers["x-env"] == "staging"
    # Rows: the sent path, the endpoint of the recorded path, the recorded Host.
    row = next(r for r in by_role(sink.rows, "candidate") if r["path"] == "/new/items/1")
    assert row["endpoint"] == "/old/items/{id}" and row["host"] == "shop.example"
    stats, _ = run(ReplayConfig(targets=targets, rewrite=Rewrite(keep_host=True)), [ListSource(entries[:1])])
    assert c.received()[-1].headers["host"] == "shop.example"


def test_rewrite_headers_rules() -> None:
    e = entry(1, headers=[("X-Shadow-Replay", "0"), ("x-a", "1")])
    sent = Rewrite().headers(e, "svc:8080")
    assert sent == [("Host", "svc:8080"), ("Accept", "application/json"), ("x-a", "1"),
                    ("X-Shadow-Request", "1"), ("X-Shadow-Replay", "1")]
    sent = Rewrite(set_headers=[("host", "forced")], host="ignored").headers(e, "svc:8080")
    assert [v for k, v in sent if k.lower() == "host"] == ["forced"]
    assert Rewrite(keep_host=True).headers(e, "svc")[0] == ("Host", "shop.example")
    assert Rewrite(path_prefixes=(("/a/", "/b/"), ("/", "/root/"))).path("/a/x") == "/b/x"
    assert Rewrite(path_prefixes=(("/a/", "/b/"), ("/", "/root/"))).path("/c") == "/root/c"


def test_rate_is_kept(pc: tuple[Upstream, Upstream]) -> None:
    """--rate 50 over 100 requests: sends follow the schedule n/50 s (checked from the send
    timestamps in the rows, and against each send's own scheduled instant)."""
    entries = [entry(i) for i in range(100)]
    p, c = pc
    targets = (Target("primary", "p", p.url), Target("candidate", "c", c.url))
    stats, sink = run(ReplayConfig(targets=targets, rate=50, record_schedule=True), [ListSource(entries)])
    assert stats.requests == 100
    sends = sorted(r["ts"] for r in by_role(sink.rows, "primary"))
    span = (sends[-1] - sends[0]) / 1e9
    assert abs(span / (99 / 50) - 1) < 0.05, span
    lags = [actual - scheduled for scheduled, actual in stats.schedule]
    assert [s for s, _ in stats.schedule] == pytest.approx([i / 50 for i in range(100)])
    assert statistics.median(lags) < 0.02 and min(lags) > -0.002  # never (noticeably) early


def test_speed_scales_recorded_timing(pc: tuple[Upstream, Upstream]) -> None:
    """Entries recorded over 2 s with uneven gaps, replayed at --speed 2: every send at half its
    recorded offset."""
    offsets_ms = [0, 10, 20, 300, 310, 700, 720, 1000, 1500, 1510, 1900, 2000]
    entries = [entry(i, ts_ms=ms) for i, ms in enumerate(offsets_ms)]
    p, c = pc
    targets = (Target("primary", "p", p.url), Target("candidate", "c", c.url))
    stats, sink = run(ReplayConfig(targets=targets, speed=2.0, record_schedule=True), [ListSource(entries)])
    assert [s for s, _ in stats.schedule] == pytest.approx([ms / 1000 / 2 for ms in offsets_ms])
    sends = sorted(r["ts"] for r in by_role(sink.rows, "primary"))
    span = (sends[-1] - sends[0]) / 1e9
    assert abs(span / 1.0 - 1) < 0.05, span
    assert max(a - s for s, a in stats.schedule) < 0.05


def test_recorded_clock_follows_the_recording_without_going_back() -> None:
    clock = RecordedClock(2.0)
    s = 1_000_000_000
    got = [clock.offset(("a", 0), t) for t in (10 * s, 11 * s, 13 * s, 12 * s, 14 * s, None)]
    assert got == [0.0, 0.5, 1.5, 1.5, 2.0, 2.0]  # the out-of-order start is sent at once
    # The next loop (or source) starts where the previous one ended, on its own time base.
    assert [clock.offset(("a", 1), t) for t in (10 * s, 12 * s)] == [2.0, 3.0]


def test_sequential_keeps_source_order_and_target_order() -> None:
    arrivals: list[tuple[str, str]] = []
    lock = threading.Lock()

    def recorder(name: str) -> Any:
        def handle(req: ReceivedRequest) -> Response:
            with lock:
                arrivals.append((name, req.path))
            return echo(name)(req)
        return handle

    entries = [entry(i) for i in range(8)]
    with Upstream("p", handler=recorder("p")) as p, Upstream("c", handler=recorder("c")) as c:
        targets = (Target("primary", "p", p.url), Target("candidate", "c", c.url))
        run(ReplayConfig(targets=targets, sequential=True, concurrency=50), [ListSource(entries)])
    assert arrivals == [(t, f"/api/items/{i}") for i in range(8) for t in ("p", "c")]


def test_transport_errors_and_timeouts_are_captured() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    entries = [entry(i) for i in range(3)]
    with Upstream("p") as p, Upstream("slow", delay=1.0) as slow:
        targets = (Target("primary", "p", p.url), Target("candidate", "c", dead),
                   Target("secondary", "s", slow.url))
        stats, sink = run(ReplayConfig(targets=targets, timeout_s=0.3), [ListSource(entries)])
    assert stats.requests == 3
    assert (stats.targets["primary"].errors, stats.targets["candidate"].errors,
            stats.targets["secondary"].errors) == (0, 3, 3)
    c = by_role(sink.rows, "candidate")[0]
    assert c["status"] is None and c["resp_body"] is None and "Connect" in c["error"]
    s = by_role(sink.rows, "secondary")[0]
    assert s["error"] == "timeout after 0.3 s" and 250 < s["latency_ms"] < 1000


def test_limit_loop_and_deterministic_ids(pc: tuple[Upstream, Upstream]) -> None:
    entries = [entry(i) for i in range(5)]
    p, c = pc
    targets = (Target("primary", "p", p.url), Target("candidate", "c", c.url))
    state = ReplayState.new()
    stats, sink = run(ReplayConfig(targets=targets, loops=3, limit=12), [ListSource(entries)], state=state)
    assert stats.requests == 12
    ids = {r["request_id"] for r in sink.rows}
    assert len(ids) == 12
    expected = {request_id(state.run_id, "id-mem", i, loop) for loop in range(3) for i in range(5)}
    assert ids < expected
    assert {request_id(state.run_id, "id-mem", i, 2) for i in range(2)} <= ids


def test_a_broken_source_keeps_what_came_before_and_the_next_source(pc: tuple[Upstream, Upstream]) -> None:
    p, c = pc
    targets = (Target("primary", "p", p.url), Target("candidate", "c", c.url))
    broken = ListSource([entry(i) for i in range(6)], name="a.har", fail_at=3)
    fine = ListSource([entry(i, path=f"/b/{i}") for i in range(2)], name="b.har")
    stats, _ = run(ReplayConfig(targets=targets, loops=2), [broken, fine])
    assert stats.requests == (3 + 2) * 2
    assert [e.message for e in stats.source_errors] == ["a.har: entry 4: broken here"]  # once, not per loop


def test_stop_leaves_no_half_pairs_and_resume_finishes_exactly() -> None:
    entries = [entry(i) for i in range(60)]
    source = ListSource(entries)
    with Upstream("p", delay=0.02) as p, Upstream("c", delay=0.05) as c:
        targets = (Target("primary", "p", p.url), Target("candidate", "c", c.url))
        cfg = ReplayConfig(targets=targets, concurrency=4)
        state = ReplayState.new()
        sink = ListSink()
        engine = ReplayEngine(cfg, [source], sink, state=state)

        async def interrupted() -> ReplayStats:
            task = asyncio.create_task(engine.run())
            while len(sink.rows) < 20:
                await asyncio.sleep(0.01)
            engine.stop()
            return await task

        first = asyncio.run(interrupted())
        assert first.interrupted and 10 <= first.requests < 60
        ids = [r["request_id"] for r in sink.rows]
        assert all(ids.count(i) == 2 for i in set(ids))  # both roles, or neither
        captured = {i: frozenset({"primary", "candidate"}) for i in ids}
        # As if a kill had split one request's rows: only its primary row reached the capture.
        half = sorted(captured)[0]
        captured[half] = frozenset({"primary"})
        # Resume: a new engine with the same run id and what the capture holds.
        resumed = ReplayState(run_id=state.run_id)
        stats, sink2 = run(cfg, [source], state=resumed, captured=captured)
        assert stats.already_done == first.requests - 1 and stats.requests == 60 - first.requests + 1
        assert [r["role"] for r in sink2.rows if r["request_id"] == half] == ["candidate"]
        rows = [(r["request_id"], r["role"]) for r in sink.rows if r["request_id"] != half]
        rows += [(half, "primary")] + [(r["request_id"], r["role"]) for r in sink2.rows]
        assert len(rows) == 120 and len(set(rows)) == 120 and len({i for i, _ in rows}) == 60


def test_second_stop_cancels_in_flight_calls() -> None:
    entries = [entry(i) for i in range(10)]
    with Upstream("p", delay=2.0) as p:
        sink = ListSink()
        engine = ReplayEngine(ReplayConfig(targets=(Target("primary", "p", p.url),
                                                    Target("candidate", "recorded?", p.url)),
                                           concurrency=4, timeout_s=5), [ListSource(entries)], sink)

        async def main() -> ReplayStats:
            task = asyncio.create_task(engine.run())
            while len(p.received()) < 4:
                await asyncio.sleep(0.01)
            engine.stop()
            engine.stop()
            return await task

        stats = asyncio.run(main())
    assert stats.cancelled == 4 and stats.requests == 0 and sink.rows == []


def test_range_set_matches_a_plain_set() -> None:
    rng = random.Random(7)
    for _ in range(200):
        xs = rng.sample(range(120), rng.randint(0, 100))
        ranges = RangeSet()
        for x in xs:
            ranges.add(x)
        assert ranges.ranges() == to_ranges(xs)
        assert [i in ranges for i in range(-1, 122)] == [i in set(xs) for i in range(-1, 122)]
        assert RangeSet(ranges.ranges()).ranges() == ranges.ranges() and len(ranges) == len(set(xs))
    assert RangeSet([[5, 9], [0, 3], [4, 4], [8, 12]]).ranges() == [[0, 12]]


def test_checkpoint_ranges_round_trip() -> None:
    done = {0, 1, 2, 5, 7, 8, 100}
    assert to_ranges(done) == [[0, 2], [5, 5], [7, 8], [100, 100]]
    assert from_ranges(to_ranges(done)) == done
    state = ReplayState.new()
    from shadow.replay.resume import SourceProgress
    state.sources["x"] = SourceProgress(path="a.har", identity="x")
    for i in done:
        state.mark("x", 1, i)
    again = ReplayState.from_json(state.to_json())
    assert again.run_id == state.run_id and again.is_done("x", 1, 7) and not again.is_done("x", 0, 7)


def test_checkpoints_are_taken_during_the_run_and_a_failing_one_does_not_stop_it() -> None:
    entries = [entry(i) for i in range(30)]
    snapshots: list[dict[str, Any]] = []

    def checkpoint(doc: dict[str, Any]) -> None:
        snapshots.append(doc)
        if len(snapshots) == 2:
            raise OSError("disk full")

    with Upstream("p", delay=0.05) as p:
        cfg = ReplayConfig(targets=(Target("primary", "recorded", None), Target("candidate", "c", p.url)),
                           concurrency=1, checkpoint_s=0.3)
        stats, _ = run(cfg, [ListSource(entries)], checkpoint=checkpoint)
    assert stats.requests == 30 and stats.checkpoint_error == "disk full"
    assert len(snapshots) >= 2
    done = [len(from_ranges(s["sources"][0]["done"].get("0", []))) for s in snapshots]
    assert done == sorted(done) and 0 < done[0] < 30


def test_plain_http_targets_get_exactly_the_recorded_request_and_raw_responses() -> None:
    """Plain-http targets go through Http1Pool: the wire request is the recorded one (Host rewritten,
    Content-Length as aiohttp sent it, no client-added headers) and the response body is captured
    as sent, never decompressed."""
    gz = bytes.fromhex("1f8b08000000000000ffcb48cdc9c9070086a6103605000000")  # gzip of b"hello"

    def gzip_answer(req: ReceivedRequest) -> Response:
        return 200, {"Content-Encoding": "gzip", "X-Seen": req.method}, gz

    entries = [entry(0), entry(1, "DELETE"), entry(2, "POST", body=b"abc"), entry(3, "PUT"),
               entry(4, "GET", query="a=1&b=%20")]
    with Upstream("g", handler=gzip_answer) as up:
        cfg = ReplayConfig(targets=(Target("primary", "g", up.url),), sequential=True,
                           entry_filter=EntryFilter(allow_unsafe=True))
        stats, sink = run(cfg, [ListSource(entries)])
        got, port = up.received(), up.port
    assert stats.requests == 5 and stats.errors == 0
    markers = [("X-Shadow-Request", "1"), ("X-Shadow-Replay", "1")]
    base = [("Host", f"127.0.0.1:{port}"), ("Accept", "application/json")]
    assert [(r.method, r.path) for r in got] == [
        ("GET", "/api/items/0"), ("DELETE", "/api/items/1"), ("POST", "/api/items/2"),
        ("PUT", "/api/items/3"), ("GET", "/api/items/4?a=1&b=%20")]
    assert got[0].header_list == [*base, *markers]
    assert got[1].header_list == [*base, *markers, ("Content-Length", "0")]
    assert got[2].header_list == [*base, *markers, ("Content-Length", "3")] and got[2].body == b"abc"
    assert got[3].header_list == [*base, *markers, ("Content-Length", "0")]
    for row in sink.rows:
        assert row["status"] == 200 and row["resp_body"] == gz and row["error"] is None
        assert ("Content-Encoding", "gzip") in row["resp_headers"]
        assert row["req_headers"] == [*base, *markers]  # what the rewrite produced, as before


def test_plain_http_protocol_errors_are_captured_as_error_rows() -> None:
    """A target that answers with something that is not HTTP yields an error row, not a crash."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _addr = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        cfg = ReplayConfig(targets=(Target("primary", "bad", f"http://127.0.0.1:{port}"),),
                           sequential=True, timeout_s=5)
        stats, sink = run(cfg, [ListSource([entry(0), entry(1)])])
    finally:
        thread.join(5)
        listener.close()
    assert stats.requests == 2 and stats.targets["primary"].errors == 2
    for row in sink.rows:
        assert row["status"] is None and row["error"].startswith("ProtocolError: bad status line")
