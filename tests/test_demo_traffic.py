"""The demo's load driver: a deterministic plan, sent to a real monolith, bounded in count and time."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadow.demo import seeds
from shadow.demo.processes import Child, Supervisor, service_argv
from shadow.demo.traffic import MIX, drive, plan_requests
from shadow.errors import ShadowError
from tests.upstream import ReceivedRequest, Response, Upstream, free_port


@pytest.fixture(scope="module")
def monolith(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    with Supervisor(tmp_path_factory.mktemp("logs")) as sup:
        yield sup.start_service("monolith", service_argv("monolith"))


def test_plan_is_deterministic_and_follows_the_mix() -> None:
    plan = plan_requests(2000, seed=5)
    assert plan == plan_requests(2000, seed=5)
    assert plan != plan_requests(2000, seed=6)
    kinds = Counter(r.kind for r in plan)
    for kind, share in MIX:
        assert abs(kinds[kind] / len(plan) - share) < 0.04, kind
    assert plan_requests(0) == []


def test_plan_covers_what_the_demo_needs_to_show() -> None:
    plan = plan_requests(3000)
    detail_ids = {int(r.path.rsplit("/", 1)[1]) for r in plan if r.kind == "order_detail"}
    assert len(detail_ids) > 200  # many ids, so the data is not one cached answer
    assert any(i > seeds.ORDER_COUNT for i in detail_ids)  # a few 404s
    posts = [r for r in plan if r.method == "POST"]
    assert posts and all(r.path == "/api/orders" and r.json_body for r in posts)
    assert all("card_number" in r.json_body["payment"] for r in posts if r.json_body)
    authorized = sum(any(k == "Authorization" for k, _ in r.headers) for r in plan)
    assert 0.3 < authorized / len(plan) < 0.5
    assert {r.path for r in plan if r.kind == "home"} == {"/"}


def test_drive_sends_the_whole_plan(monolith: Child) -> None:
    plan = plan_requests(150, seed=1)
    result = drive(monolith.url, plan, concurrency=4, max_seconds=60, progress=False)
    assert result.sent == 150 and result.transport_errors == 0 and not result.stopped_by_deadline
    assert sum(result.statuses.values()) == 150
    assert set(result.statuses) <= {200, 201, 404}
    assert result.statuses[201] == sum(r.method == "POST" for r in plan)


def test_drive_stops_at_the_time_limit() -> None:
    with Upstream("slow", delay=0.2) as slow:
        result = drive(slow.url, plan_requests(500), concurrency=2, max_seconds=1.0, progress=False)
    assert result.stopped_by_deadline
    assert 0 < result.sent < 50


def test_drive_against_nothing_is_one_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ShadowError, match=f"nothing answers at {url}"):
        drive(url, plan_requests(100), concurrency=2, max_seconds=20, timeout_s=2, progress=False)


def test_drive_gives_up_when_the_target_dies_midway() -> None:
    answered = 0
    up: Upstream

    def handler(req: ReceivedRequest) -> Response:
        nonlocal answered
        answered += 1
        if answered == 10:  # the target goes away after ten answers
            threading.Thread(target=up.stop, daemon=True).start()
        return 200, {"Content-Type": "application/json", "Connection": "close"}, b"{}"

    with Upstream("dying", handler=handler) as up:
        result = drive(up.url, plan_requests(2000), concurrency=2, max_seconds=60, timeout_s=2, progress=False)
    assert result.stopped_by_failures and not result.stopped_by_deadline
    assert 10 <= sum(result.statuses.values()) < 100
    assert result.transport_errors >= 25 and result.sent < 500
    assert result.first_error is not None
