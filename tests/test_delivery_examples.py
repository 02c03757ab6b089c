"""docs/examples/progressive-delivery/ against a real `shadow serve-verdict`, called the way Argo
Rollouts' web metric provider and Flagger's webhooks call it.

The manifests are parsed as YAML and used as the controllers read them: Argo substitutes
`{{args.NAME}}` into the web provider's URL, GETs it (a non-2xx answer is a measurement error),
evaluates `jsonPath` with Kubernetes' JSONPath template syntax and then the `successCondition` /
`failureCondition` expressions on `result`; Flagger POSTs its canary payload to each webhook URL
and treats any non-2xx answer as "do not advance". The only change made to a manifest is the
in-cluster host, replaced by this test's server on 127.0.0.1. /metrics is read with
prometheus_client's own text parser, as a Prometheus scrape would.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from ruamel.yaml import YAML

from tests.conftest import REPO
from tests.synthetic_capture import EndpointTraffic, write_capture
from tests.upstream import free_port

EXAMPLES = REPO / "docs" / "examples" / "progressive-delivery"


START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15)


@pytest.fixture(scope="module")
def verdict_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`shadow serve-verdict` on a capture of the last 15 minutes: from START, /api/items/{id} equal
    (1,200 requests 0.5 s apart: 10 minutes), then /api/orders/{id} clearly worse (500 requests)."""
    root = tmp_path_factory.mktemp("delivery")
    start = START
    write_capture(root / "capture", [EndpointTraffic(endpoint="/api/items/{id}", n=1200),
                                     EndpointTraffic(endpoint="/api/orders/{id}", n=500, latency_factor=1.7,
                                                     candidate_5xx_rate=0.06)], seed=21, start=start)
    (root / "policy.yaml").write_text("n_boot: 200\ndefaults: {error_rate_pp: 1.0, transport_error_pp: 1.0, "
                                      "mismatch_budget: 0.02}\n")
    port = free_port()
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "serve-verdict", "capture", "--listen",
                             f"127.0.0.1:{port}", "--policy", "policy.yaml", "--cache-seconds", "600"],
                            cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (root / "serve.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def in_cluster_to_local(url: str, local: str) -> str:
    """The manifest's URL with its scheme and host replaced by the test server's (path and query kept)."""
    parts, here = urlsplit(url), urlsplit(local)
    return urlunsplit((here.scheme, here.netloc, parts.path, parts.query, parts.fragment))


def k8s_jsonpath(document: Any, template: str) -> Any:
    """Kubernetes JSONPath for a template of one expression, as Argo's web provider evaluates it:
    `{$.a.b}`, `{.a.b}`, `{$.a[0].b}`. Anything else is refused rather than guessed."""
    match = re.fullmatch(r"\{\$?((?:\.[A-Za-z_][\w-]*|\[\d+\])+)\}", template.strip())
    assert match, f"unsupported JSONPath template {template!r}"
    value = document
    for name, index in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", match.group(1)):
        value = value[int(index)] if index else value[name]
    return value


def condition_holds(expression: str, result: Any) -> bool:
    """Argo's success/failure condition (an expr-lang expression over `result`), for the form the
    example uses: `result == "text"`."""
    match = re.fullmatch(r'\s*result\s*==\s*"([^"]*)"\s*', expression)
    assert match, f"unsupported condition {expression!r}"
    return bool(result == match.group(1))


def argo_measure(template: dict[str, Any], server: str, **args: str) -> tuple[str, Any]:
    """One measurement of the template's web metric: ("Successful" | "Failed" | "Inconclusive", result)."""
    values = {a["name"]: str(a.get("value", "")) for a in template["spec"].get("args", [])} | args
    metric = template["spec"]["metrics"][0]
    web = metric["provider"]["web"]
    url = re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: values[m.group(1)], web["url"])
    response = httpx.request(web.get("method", "GET"), in_cluster_to_local(url, server),
                             headers={h["key"]: h["value"] for h in web.get("headers", [])},
                             timeout=float(web.get("timeoutSeconds", 10)))
    assert 200 <= response.status_code < 300, f"Argo records an Error for HTTP {response.status_code}"
    result = k8s_jsonpath(response.json(), web["jsonPath"])
    if condition_holds(metric["failureCondition"], result):
        return "Failed", result
    if condition_holds(metric["successCondition"], result):
        return "Successful", result
    return "Inconclusive", result


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = YAML(typ="safe").load((EXAMPLES / name).read_text())
    return document


def test_argo_analysis_template(verdict_url: str) -> None:
    template = load("argo-analysis-template.yaml")
    assert template["apiVersion"] == "argoproj.io/v1alpha1" and template["kind"] == "AnalysisTemplate"
    # The template's own args: the orders endpoints of the last 30 minutes fail.
    assert argo_measure(template, verdict_url) == ("Failed", "fail")
    # A rollout passing other args: the items endpoints pass; a window holding no traffic is no evidence.
    assert argo_measure(template, verdict_url, endpoint="/api/items*") == ("Successful", "pass")
    assert argo_measure(template, verdict_url, window="1s") == ("Inconclusive", "inconclusive")


def test_flagger_canary_webhooks(verdict_url: str) -> None:
    canary = load("flagger-canary.yaml")
    assert canary["apiVersion"] == "flagger.app/v1beta1" and canary["kind"] == "Canary"
    hooks = {h["type"]: h for h in canary["spec"]["analysis"]["webhooks"]}
    assert set(hooks) == {"pre-rollout", "rollout"}
    payload = {"name": "orders", "namespace": "shop", "phase": "Progressing", "checksum": "0", "metadata": {}}
    for hook in hooks.values():
        response = httpx.post(in_cluster_to_local(hook["url"], verdict_url), json=payload, timeout=30)
        assert response.status_code == 412 and response.json()["verdict"] == "fail"  # non-2xx: Flagger halts
    items = in_cluster_to_local(hooks["rollout"]["url"].replace("/api/orders*", "/api/items*"), verdict_url)
    assert httpx.post(items, json=payload, timeout=30).status_code == 200  # 2xx: the step is taken
    empty = in_cluster_to_local(hooks["rollout"]["url"].replace("window=30m", "window=1s"), verdict_url)
    assert httpx.post(empty, json=payload, timeout=30).status_code == 503  # no evidence: not yet


def test_since_window_and_endpoint_select_requests(verdict_url: str) -> None:
    whole = httpx.get(verdict_url + "/verdict", timeout=60).json()
    assert whole["verdict"] == "fail" and "subset" not in whole
    # (the queries repeat the examples' ones: the server's cache answers them without a new analysis)
    items = httpx.get(verdict_url + "/verdict", params={"window": "30m", "endpoint": "/api/items*"}, timeout=60).json()
    assert items["verdict"] == "pass" and {r["endpoint"] for r in items["results"]} == {"/api/items/{id}"}
    assert items["subset"]["endpoint"] == "/api/items*" and items["subset"]["exchanges"] == 2400
    # The items requests end 600 s after START; from 610 s on, only orders requests remain: 1,220th to 1,700th.
    since = (START + timedelta(seconds=610)).isoformat()
    recent = httpx.get(verdict_url + "/verdict", params={"since": since}, timeout=60).json()
    assert {r["endpoint"] for r in recent["results"]} == {"/api/orders/{id}"}
    assert recent["subset"]["exchanges"] == 2 * 481 and recent["verdict"] == "fail"
    none = httpx.get(verdict_url + "/verdict", params={"window": "1s"}, timeout=60).json()
    assert none["verdict"] == "inconclusive" and "no exchanges (since " in none["error"]
    bad = httpx.get(verdict_url + "/verdict", params={"window": "banana"}, timeout=10)
    assert bad.status_code == 400 and "window='banana'" in bad.json()["error"]
    bad_since = httpx.get(verdict_url + "/gate", params={"since": "yesterday"}, timeout=10)
    assert bad_since.status_code == 400 and "ISO 8601" in bad_since.json()["error"]


def test_head_answers_like_get_without_a_body(verdict_url: str) -> None:
    for path, status in (("/verdict", 200), ("/gate", 412), ("/healthz", 200), ("/metrics", 200)):
        get = httpx.get(verdict_url + path, timeout=60)
        head = httpx.head(verdict_url + path, timeout=60)
        assert get.status_code == head.status_code == status
        assert head.content == b"" and head.headers["content-length"] == get.headers["content-length"]


def test_metrics_parse_as_prometheus_text(verdict_url: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(verdict_url + "/metrics", timeout=60)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    verdict = {s.labels["state"]: s.value for s in families["shadow_verdict"].samples}
    assert verdict == {"pass": 0.0, "fail": 1.0, "inconclusive": 0.0}
    doc = httpx.get(verdict_url + "/verdict", timeout=60).json()
    classes = {(s.labels["endpoint"], s.labels["metric"]): s.labels["class"]
               for s in families["shadow_guardrail_class"].samples if s.value == 1.0}
    assert classes == {(r["endpoint"], r["metric"]): r["class"] for r in doc["results"]}
    samples = {(s.labels["endpoint"], s.labels["metric"], s.labels["arm"]): s.value
               for s in families["shadow_guardrail_samples"].samples}
    assert samples[("/api/orders/{id}", "latency_p95", "candidate")] == 500
    assert families["shadow_verdict_score"].samples[0].value == doc["score"]
    items = httpx.get(verdict_url + "/metrics", params={"window": "30m", "endpoint": "/api/items*"}, timeout=60).text
    assert 'shadow_verdict{state="pass"} 1' in items
