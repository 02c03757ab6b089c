"""analyzers/verdict.py: every verdict class, the floor, Holm, low traffic, JSON shape, exit codes."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from analyzers.policy import Policy
from analyzers.stats import holm
from analyzers.verdict import EndpointSample, Verdict, judge
from shadow.errors import ShadowError


def split_latency(rng: np.random.Generator, n: int, scale: float = 1.0, base: float = 40.0) -> np.ndarray:
    slow = rng.random(n) < 0.03
    x = np.where(slow, base * 7.5, base) * np.exp(0.5 * rng.standard_normal(n)) * scale
    return np.maximum(np.round(x), 1.0)


def paired_latency(rng: np.random.Generator, n: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    slow = rng.random(n) < 0.03
    base = np.where(slow, 300.0, 40.0) * np.exp(0.4 * rng.standard_normal(n))
    p = np.round(base * np.exp(0.3 * rng.standard_normal(n)))
    c = np.round(base * np.exp(0.3 * rng.standard_normal(n)) * scale)
    return np.maximum(p, 1.0), np.maximum(c, 1.0)


def make(rng: np.random.Generator, n: int, *, paired: bool, scale: float = 1.0, err_p: float = 0.0,
         err_c: float = 0.0, endpoint: str = "/api/orders/{id}", mismatch: float | None = None) -> EndpointSample:
    if paired:
        p, c = paired_latency(rng, n, scale)
    else:
        p, c = split_latency(rng, n), split_latency(rng, n, scale)
    no = np.zeros(n, bool)
    return EndpointSample(endpoint, paired, p, c, rng.random(n) < err_p, rng.random(n) < err_c, no, no.copy(),
                          None, None, (rng.random(n) < mismatch) if mismatch is not None else None)


# Fewer bootstrap resamples keep the large-sample tests fast; the statistics are the same.
FAST = Policy.from_mapping({"n_boot": 400})


def classes(v: Verdict) -> dict[str, str]:
    return {r.metric: r.cls for r in v.results}


def test_aa_with_enough_data_passes() -> None:
    rng = np.random.default_rng(1)
    v = judge([make(rng, 4000, paired=True, mismatch=0.0)], FAST)
    assert v.overall == "PASS", [r.reason for r in v.results if r.cls != "PASS"]
    assert v.exit_code() == 0
    assert v.score == 100.0
    assert set(classes(v)) == {"latency_bulk", "latency_p50", "latency_p95", "latency_p99", "error_rate",
                               "transport_error_rate", "mismatch_rate"}
    for r in v.results:
        assert r.interval is not None and r.p_value is not None and r.p_value < 0.05
        assert r.needed_n is None
    zero = next(r for r in v.results if r.metric == "transport_error_rate")
    assert "rule of three" in zero.reason and "0.075 %" in zero.reason  # 3 / 4000


def test_clear_fifty_percent_regression_fails() -> None:
    rng = np.random.default_rng(2)
    v = judge([make(rng, 500, paired=False, scale=1.5)], Policy())
    assert v.overall == "FAIL" and v.exit_code() == 1
    bulk = next(r for r in v.results if r.metric == "latency_bulk")
    assert bulk.cls == "FAIL"
    assert bulk.estimate == pytest.approx(1.5, rel=0.1)
    assert bulk.p_harm_adjusted is not None and bulk.p_harm_adjusted < 0.05
    assert bulk.reason.startswith("Typical latency is significantly worse than the primary") and "×1.10" in bulk.reason
    assert v.to_json()["verdict"] == "fail"


def test_moderate_data_is_inconclusive_with_needed_n() -> None:
    rng = np.random.default_rng(3)
    v = judge([make(rng, 300, paired=False, err_p=0.01, err_c=0.01)], Policy())
    assert v.overall == "INCONCLUSIVE" and v.exit_code() == 3
    open_ = [r for r in v.results if r.cls == "INCONCLUSIVE"]
    assert open_, classes(v)
    assert all(r.needed_n is None or r.needed_n > 300 for r in open_)
    assert any(r.needed_n for r in open_)
    assert "requests per arm would settle it" in next(r.reason for r in open_ if r.needed_n)
    assert classes(v)["latency_p99"] == "INSUFFICIENT_DATA"  # 300 < 5 / (1 - 0.99)
    assert v.to_json()["verdict"] == "inconclusive"


def test_little_data_is_insufficient_and_never_passes() -> None:
    rng = np.random.default_rng(4)
    for paired in (True, False):
        v = judge([make(rng, 20, paired=paired)], Policy())
        assert v.overall == "INCONCLUSIVE"
        assert set(classes(v).values()) == {"INSUFFICIENT_DATA"}
        assert all("too little data" in r.reason for r in v.results)
        assert v.score == 0.0


def test_no_data_at_all_is_inconclusive() -> None:
    v = judge([], Policy())
    assert v.overall == "INCONCLUSIVE" and v.results == [] and v.exit_code() == 3
    e = np.zeros(0)
    b = np.zeros(0, bool)
    v2 = judge([EndpointSample("/x", False, e, e, b, b, b, b)], Policy())
    assert v2.overall == "INCONCLUSIVE"
    assert {r.cls for r in v2.results} == {"INSUFFICIENT_DATA"}


def test_low_traffic_endpoint_keeps_the_verdict_inconclusive() -> None:
    rng = np.random.default_rng(5)
    good = make(rng, 4000, paired=True, endpoint="/busy")
    quiet = make(rng, 10, paired=True, endpoint="/quiet")
    v = judge([good, quiet], FAST)
    assert v.overall == "INCONCLUSIVE"
    summary = {e.endpoint: e.cls for e in v.endpoints}
    assert summary == {"/busy": "PASS", "/quiet": "INSUFFICIENT_DATA"}
    assert v.score == pytest.approx(100 * 4000 / 4010)


def test_absolute_floor_a_small_delta_never_fails() -> None:
    rng = np.random.default_rng(6)
    n = 3000
    # A 3 ms endpoint becoming 4 ms: +33 %, but 1 ms is under the 2 ms floor.
    p = np.maximum(np.round(3.0 * np.exp(0.1 * rng.standard_normal(n))), 1.0)
    c = np.maximum(np.round(4.0 * np.exp(0.1 * rng.standard_normal(n))), 1.0)
    no = np.zeros(n, bool)
    v = judge([EndpointSample("/fast", False, p, c, no, no, no, no)], FAST)
    assert v.overall != "FAIL"
    bulk = next(r for r in v.results if r.metric == "latency_bulk")
    assert bulk.margin == pytest.approx(1 + 2 / 3)  # the floor widens the ratio margin
    assert bulk.cls == "PASS"
    # The same +33 % on a 30 ms endpoint is 10 ms: it fails.
    p2, c2 = p * 10, c * 10
    v2 = judge([EndpointSample("/slow", False, p2, c2, no, no, no, no)], FAST)
    assert next(r for r in v2.results if r.metric == "latency_bulk").cls == "FAIL"


def test_holm_adjusts_harm_tests_across_the_whole_run() -> None:
    rng = np.random.default_rng(7)
    samples = [make(rng, 400, paired=False, endpoint=f"/e{k}", err_p=0.01, err_c=0.01) for k in range(5)]
    samples.append(make(rng, 400, paired=False, scale=1.3, endpoint="/slow"))
    v = judge(samples, Policy())
    raw = np.array([r.p_harm for r in v.results if r.p_harm is not None])
    adj = np.array([r.p_harm_adjusted for r in v.results if r.p_harm is not None])
    np.testing.assert_allclose(adj, holm(raw))
    assert v.overall == "FAIL"
    assert {r.endpoint for r in v.results if r.cls == "FAIL"} == {"/slow"}


def test_error_rate_regression_and_mismatch_budget_fail_paired() -> None:
    rng = np.random.default_rng(8)
    s = make(rng, 3000, paired=True, err_p=0.001, err_c=0.03, mismatch=0.05)
    v = judge([s], FAST)
    c = classes(v)
    assert c["error_rate"] == "FAIL" and c["mismatch_rate"] == "FAIL"
    err = next(r for r in v.results if r.metric == "error_rate")
    assert err.test.startswith("mid-p McNemar") and err.paired
    assert err.estimate == pytest.approx(0.029, abs=0.01)


def test_transport_errors_are_judged_apart_and_drop_out_of_latency() -> None:
    rng = np.random.default_rng(9)
    n = 3000
    p, c = paired_latency(rng, n)
    tc = rng.random(n) < 0.05
    c = np.where(tc, np.nan, c)
    no = np.zeros(n, bool)
    v = judge([EndpointSample("/t", True, p, c, no, no, no, tc)], FAST)
    res = {r.metric: r for r in v.results}
    assert res["transport_error_rate"].cls == "FAIL"
    assert res["error_rate"].cls != "FAIL"
    assert res["latency_bulk"].n_primary == n - int(tc.sum())


def test_sticky_split_needs_client_keys_and_uses_clusters() -> None:
    rng = np.random.default_rng(10)
    users = np.repeat(np.arange(60), 20)
    n = users.size
    p, c = split_latency(rng, n), split_latency(rng, n)
    no = np.zeros(n, bool)
    with pytest.raises(ShadowError, match="client_key"):
        judge([EndpointSample("/s", False, p, c, no, no, no, no, sticky=True)], Policy())
    v = judge([EndpointSample("/s", False, p, c, no, no, no, no, users, users + 100, sticky=True)], Policy())
    tests = {r.metric: r.test for r in v.results}
    assert "per-client" in tests["latency_bulk"]
    assert "cluster bootstrap" in tests["latency_p50"]


def test_bad_sample_shapes_are_clear_errors() -> None:
    a, b = np.ones(10), np.zeros(10, bool)
    with pytest.raises(ShadowError, match="paired sample with 10 primary and 9 candidate"):
        judge([EndpointSample("/x", True, a, a[:9], b, b[:9], b, b[:9])], Policy())
    with pytest.raises(ShadowError, match="candidate_5xx has 3 rows"):
        judge([EndpointSample("/x", False, a, a, b, b[:3], b, b)], Policy())


def test_json_shape_and_exit_codes() -> None:
    rng = np.random.default_rng(11)
    when = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    v = judge([make(rng, 400, paired=True, mismatch=0.0)], Policy(), now=when)
    d = v.to_json()
    text = json.dumps(d, allow_nan=False)  # strict JSON: no NaN / Infinity anywhere
    assert json.loads(text)["verdict"] in {"pass", "fail", "inconclusive"}
    assert d["overall"] == v.overall and d["exit_code"] == v.exit_code()
    assert d["generated_at"] == "2026-11-26T08:00:00Z"
    assert set(d) >= {"verdict", "score", "results", "endpoints", "policy", "counts", "reason"}
    r0 = d["results"][0]
    assert set(r0) >= {"endpoint", "metric", "class", "estimate", "interval", "margin", "n_primary",
                       "n_candidate", "test", "paired", "p_value", "p_harm", "needed_n", "reason"}
    assert d["policy"]["alpha"] == 0.05
    assert sum(d["counts"].values()) == len(d["results"])
    assert {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[v.overall] == v.exit_code()


def test_same_seed_same_verdict() -> None:
    s = make(np.random.default_rng(12), 1500, paired=False)
    a = judge([s], Policy(), rng_seed=5).to_json()
    b = judge([s], Policy(), rng_seed=5).to_json()
    a.pop("generated_at")
    b.pop("generated_at")
    assert a == b


def test_client_keys_of_any_type_and_missing_keys() -> None:
    rng = np.random.default_rng(13)
    n = 600
    p, c = split_latency(rng, n), split_latency(rng, n)
    keys = np.array([f"user-{i % 40}" if i % 7 else None for i in range(n)], dtype=object)
    no = np.zeros(n, bool)
    v = judge([EndpointSample("/k", False, p, c, no, no, no, no, keys, keys.copy(), sticky=True)], Policy())
    assert v.overall in {"PASS", "INCONCLUSIVE"}
    assert "cluster bootstrap" in next(r.test for r in v.results if r.metric == "latency_p95")


def test_one_cluster_sticky_sample_is_not_pass_and_says_why() -> None:
    # 300 users behind one NAT address: every request carries the same client key.
    rng = np.random.default_rng(12)
    n = 600
    p, c = split_latency(rng, n), split_latency(rng, n)
    no = np.zeros(n, bool)
    one = np.full(n, "10.0.0.1", dtype=object)
    v = judge([EndpointSample("/s", False, p, c, no, no, no, no, one, one.copy(), sticky=True)], FAST)
    assert v.overall == "INCONCLUSIVE" and v.exit_code() == 3
    for r in v.results:
        assert r.cls == "INSUFFICIENT_DATA", r
        assert r.interval is None  # no zero-width interval from one client
        assert r.p_harm is None and r.p_value is None
        assert (r.clients_primary, r.clients_candidate) == (1, 1)
        assert "Only 1 distinct client" in r.reason and "shadow.split.clientKey" in r.reason
    assert "too few distinct clients" in v.reason and "shadow.split.clientKey" in v.reason
    assert v.to_json()["results"][0]["clients_primary"] == 1


def test_sticky_errors_clustered_by_client_do_not_fail_an_equivalent_candidate() -> None:
    # 100 clients per arm; each arm has 3 clients whose every request fails (same rate on both sides,
    # but a different number of errors by chance of which clients landed where).
    rng = np.random.default_rng(13)
    users = np.repeat(np.arange(100), 20)
    n = users.size
    p, c = split_latency(rng, n), split_latency(rng, n)
    no = np.zeros(n, bool)
    err_p = np.isin(users, [1, 2, 3])
    err_c = np.isin(users, [4, 5, 6, 7, 8, 9])  # 6 % vs 3 %: per request, Fisher p ~ 1e-6
    s = EndpointSample("/s", False, p, c, err_p, err_c, no, no, users, users + 1000, sticky=True)
    v = judge([s], FAST)
    err = next(r for r in v.results if r.metric == "error_rate")
    assert err.cls != "FAIL" and "clustering by client" in err.test
    assert err.clients_primary == 100


def test_replay_against_recorded_answers_does_not_judge_latency() -> None:
    rng = np.random.default_rng(14)
    s = make(rng, 3000, paired=True, scale=1.8, mismatch=0.0)
    s.primary_recorded = True
    v = judge([s], FAST)
    assert not any(r.metric.startswith("latency_") for r in v.results)
    assert v.warnings and "--primary recorded" in v.warnings[0] and "compare_recorded_latency" in v.reason
    opted = judge([s], Policy.from_mapping({"n_boot": 400, "compare_recorded_latency": True}))
    assert classes(opted)["latency_bulk"] == "FAIL" and not opted.warnings


def test_autocorrelated_latency_widens_the_intervals() -> None:
    # AR(1) phi = 0.9 noise on both sides of mirrored pairs: the tests say so and widen.
    rng = np.random.default_rng(15)
    n = 3000
    from scipy.signal import lfilter

    def ar() -> np.ndarray:
        return np.asarray(lfilter([1.0], [1.0, -0.9], 0.3 * math.sqrt(1 - 0.81) * rng.standard_normal(n)))

    base = 40.0 * np.exp(0.3 * rng.standard_normal(n))
    p, c = np.round(base * np.exp(ar())), np.round(base * np.exp(ar()))
    no = np.zeros(n, bool)
    v = judge([EndpointSample("/ar", True, p, c, no, no, no, no)], FAST)
    by = {r.metric: r for r in v.results}
    assert "autocorrelation in time" in by["latency_bulk"].test
    assert "autocorrelation in time" in by["latency_p50"].test
    shuffled = rng.permutation(n)
    plain = judge([EndpointSample("/ar", True, p[shuffled], c[shuffled], no, no, no, no)], FAST)
    pb = next(r for r in plain.results if r.metric == "latency_bulk")
    assert pb.interval is not None and by["latency_bulk"].interval is not None
    width = by["latency_bulk"].interval[1] / by["latency_bulk"].interval[0]
    assert width > (pb.interval[1] / pb.interval[0]) ** 2  # log-width > 2x: variance inflated > 4x


def test_mismatch_rate_counts_only_pairs_with_the_same_status() -> None:
    # A/A with transient, independent 0.9 % 5xx per side: the pairs whose statuses differ are the
    # 5xx guardrail's to judge. Counted as body mismatches too they would FAIL mismatch_rate.
    rng = np.random.default_rng(15)
    n = 20_000
    s = make(rng, n, paired=True, err_p=0.009, err_c=0.009)
    status_differs = s.primary_5xx != s.candidate_5xx
    s.mismatch = status_differs.copy()  # what a status row counted as a real difference gave
    counted_twice = classes(judge([s], FAST))["mismatch_rate"]
    s.mismatch_compared = ~status_differs
    v = judge([s], FAST)
    r = next(r for r in v.results if r.metric == "mismatch_rate")
    assert counted_twice == "FAIL"
    assert r.cls == "PASS" and r.n_candidate == int((~status_differs).sum())
    assert classes(v)["error_rate"] != "FAIL"
