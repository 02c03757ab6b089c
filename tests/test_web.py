"""The live view's pages and its analysis loop, in-process (Starlette's test client); the browser
tests are tests/test_web_browser.py."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from shadow.web.app import create_app
from shadow.web.live import LiveAnalysis, capture_fingerprint, pipeline_analyzer
from tests.conftest import REPO, shadow_cli
from tests.synthetic_capture import EndpointTraffic, write_capture

POLICY_YAML = "n_boot: 200\ndefaults: {error_rate_pp: 1.0, transport_error_pp: 1.0, mismatch_budget: 0.02}\n"

GATEWAY_YAML = """
http:
  routers:
    everything: {rule: "PathPrefix(`/`)", service: monolith}
    items:
      rule: "PathPrefix(`/api/items`)"
      service: items-shadowed
    split: {rule: "PathPrefix(`/api/split`)", service: halves}
  services:
    monolith: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
    items-svc: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
    items-shadowed:
      mirroring: {service: monolith, mirrors: [{name: items-svc, percent: 50}]}
    halves: {weighted: {services: [{name: monolith, weight: 3}, {name: items-svc, weight: 1}]}}
shadow:
  capture: {dir: capture}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("web")
    (root / "policy.yaml").write_text(POLICY_YAML)
    (root / "gateway.yaml").write_text(GATEWAY_YAML)
    # /api/items/{id}: a real "price" change on 30 % of pairs; /api/other: an equal, unhurried twin.
    write_capture(root / "capture", [EndpointTraffic(n=300, changed_field_rate=0.3, latency_factor=1.6),
                                     EndpointTraffic(endpoint="/api/other/{id}", n=200)], seed=5)
    (root / "empty" / "exchanges").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def live(workdir: Path) -> LiveAnalysis:
    policy = workdir / "policy.yaml"
    analysis = LiveAnalysis(workdir / "capture", pipeline_analyzer(policy), policy_file=policy)
    analysis.refresh()  # one look, in this thread (the server's loop is not started)
    return analysis


@pytest.fixture(scope="module")
def client(live: LiveAnalysis, workdir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(live, config_file=workdir / "gateway.yaml")) as c:
        yield c


def test_overview_lists_every_endpoint_with_its_class_and_counts(client: TestClient, live: LiveAnalysis) -> None:
    snap = live.snapshot
    assert snap is not None and snap.result is not None, snap
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert 'id="verdict-badge"' in text and 'data-class="FAIL"' in text
    assert "/api/items/{id} → items-svc" in text and "/api/other/{id} → items-svc" in text
    assert f'data-value="{snap.counts.exchanges}"' in text and snap.counts.exchanges == 1000
    assert snap.counts.pairs == 500
    assert "/static/htmx.min.js" in text and 'hx-trigger="every 2000ms"' in text
    assert "https://" not in text  # nothing from a CDN: the page works offline
    fragment = client.get("/fragment/overview").text
    assert fragment.lstrip().startswith('<div id="overview"') and "<html" not in fragment


def test_state_json_matches_the_verdict(client: TestClient, live: LiveAnalysis) -> None:
    doc = client.get("/api/state").json()
    result = live.snapshot.result if live.snapshot else None
    assert result is not None
    assert doc["verdict"] == result.verdict.overall == "FAIL"
    items = next(e for e in doc["endpoints"] if e["endpoint"] == "/api/items/{id}")
    assert items["class"] == "FAIL" and items["n_primary"] == items["n_candidate"] == 300
    failing = {r.metric for r in result.verdict.results if r.endpoint == "/api/items/{id}" and r.cls != "PASS"}
    assert set(items["held_back"]) == failing and len(failing) >= 2  # every failing guardrail, not the first
    assert doc["exchanges"] == 1000 and doc["analyses"] == 1


def test_endpoint_page_shows_guardrails_fields_and_latency(client: TestClient, live: LiveAnalysis) -> None:
    page = client.get("/endpoint", params={"e": "/api/items/{id}", "c": "items-svc"})
    assert page.status_code == 200
    text = page.text
    result = live.snapshot.result if live.snapshot else None
    assert result is not None
    for r in result.verdict.results:
        if r.endpoint == "/api/items/{id}":
            assert f"<td>{r.metric}</td>" in text
    price = next(f for f in result.real_fields if f.endpoint == "/api/items/{id}" and f.pointer_template == "/price")
    assert f"/field?id={price.anchor}" in text and "real" in text
    assert "/latency.png?e=/api/items/%7Bid%7D&amp;c=items-svc&amp;t=" in text
    png = client.get("/latency.png", params={"e": "/api/items/{id}", "c": "items-svc"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get("/latency.png", params={"e": "/nope"}).status_code == 404
    missing = client.get("/endpoint", params={"e": "/nope"})
    assert missing.status_code == 200 and "is not in the current analysis" in missing.text


def test_field_page_shows_the_rule_and_the_pairs_side_by_side(client: TestClient, live: LiveAnalysis) -> None:
    result = live.snapshot.result if live.snapshot else None
    assert result is not None
    price = next(f for f in result.real_fields if f.pointer_template == "/price")
    page = client.get("/field", params={"id": price.anchor})
    assert page.status_code == 200
    text = page.text
    assert 'id="rule-snippet"' in text and 'data-copy="rule-snippet"' in text
    rule = price.accept_with[0]
    assert rule.startswith("- {") and "/price" in rule
    assert rule.replace('"', "&#34;") in text  # the YAML as the policy file takes it (escaped in HTML)
    example = price.examples[0]
    assert example.request_id in text
    assert text.count('class="example"') == min(3, len({e.request_id for e in price.examples}))
    assert "GET http://monolith.local/api/items/" in text and "request: " in text  # method, URL, the request
    assert 'class="sd-real"' in text  # the differing value highlighted, as the notebook shows it
    assert "No field" in client.get("/field", params={"id": "ex-000000000000"}).text


def test_router_table(client: TestClient) -> None:
    page = client.get("/routers")
    assert page.status_code == 200
    text = page.text
    assert text.index(">items<") < text.index(">split<") < text.index(">everything<")  # the order tried
    assert "items-svc 50%" in text and "candidate" in text
    assert "weight 3" in text and "weight 1" in text
    assert "3 routers, 4 services" in text


def test_router_table_without_a_config(live: LiveAnalysis) -> None:
    with TestClient(create_app(live)) as c:
        assert "no gateway configuration given" in c.get("/routers").text
        assert 'href="/routers"' not in c.get("/").text


def test_waiting_page_before_there_is_anything_to_judge(workdir: Path) -> None:
    analysis = LiveAnalysis(workdir / "empty", pipeline_analyzer(None))
    snap = analysis.refresh()
    assert snap is not None and snap.result is None and snap.error
    with TestClient(create_app(analysis)) as c:
        text = c.get("/").text
        assert 'id="waiting"' in text and "No verdict yet" in text
        assert c.get("/api/state").json()["verdict"] is None


def test_analysis_reruns_only_when_a_segment_is_sealed(workdir: Path, tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    shutil.copytree(workdir / "capture", capture)
    calls: list[Path] = []
    analyze = pipeline_analyzer(workdir / "policy.yaml")
    analysis = LiveAnalysis(capture, lambda p: (calls.append(p), analyze(p))[1])
    first = analysis.refresh()
    assert analysis.refresh() is first and len(calls) == 1  # nothing sealed since: no new analysis
    before = capture_fingerprint(capture)
    extra = write_capture(tmp_path / "more", [EndpointTraffic(n=50)], seed=9)
    for segment in (extra / "exchanges").rglob("*.parquet"):
        target = capture / "exchanges" / segment.relative_to(extra / "exchanges")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(segment, target.with_name("part-more.parquet"))
    assert capture_fingerprint(capture) != before
    second = analysis.refresh()
    assert second is not None and second is not first and len(calls) == 2
    assert first is not None and second.counts.exchanges == first.counts.exchanges + 100


def test_cli_errors_are_one_line(workdir: Path, tmp_path: Path) -> None:
    missing = shadow_cli("serve", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("alpha: 7\n")
    wrong = shadow_cli("serve", str(workdir / "capture"), "--policy", str(bad))
    assert wrong.returncode == 2 and "bad.yaml" in wrong.stderr and "alpha" in wrong.stderr
    assert "Traceback" not in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        taken = shadow_cli("serve", str(workdir / "capture"), "--listen", f"127.0.0.1:{port}")
    assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    assert "Traceback" not in taken.stderr
    listen = shadow_cli("serve", str(workdir / "capture"), "--listen", "nowhere")
    assert listen.returncode == 2 and "--listen" in listen.stderr


def test_gateway_live_view_needs_the_capture(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(GATEWAY_YAML.replace("capture: {dir: capture}", "capture: {enabled: false}"))
    out = shadow_cli("gateway", str(cfg), "--listen", "127.0.0.1:0", "--live-view", "127.0.0.1:0")
    assert out.returncode == 2 and "shadow.capture.enabled" in out.stderr and "Traceback" not in out.stderr


def test_static_files_are_vendored() -> None:
    static = REPO / "shadow" / "web" / "static"
    assert (static / "htmx.min.js").stat().st_size > 40_000  # htmx itself, not a loader fetching it
    assert "https://" not in (REPO / "shadow" / "web" / "templates" / "base.html").read_text()
