"""The pipeline on small synthetic captures: samples, diff fields, and PASS / FAIL / INCONCLUSIVE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzers.pipeline import analyze, learn_templater, load_inputs, paired_samples, split_samples
from analyzers.policy import Policy
from analyzers.rules import load_rules
from shadow.capture.store import open_store
from shadow.errors import CaptureError, ConfigError
from tests.synthetic_capture import EndpointTraffic, write_capture

# Looser error margins than the defaults (+0.1 pp needs ~3,000 clean requests per arm to prove):
# the tests stay small and still need real evidence to pass.
TEST_POLICY = Policy.from_mapping({"n_boot": 200, "defaults": {"error_rate_pp": 1.0, "transport_error_pp": 1.0,
                                                "mismatch_budget": 0.02}})


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("captures")
    return {
        "aa": write_capture(root / "aa", [EndpointTraffic(n=1200)], seed=1),
        "regression": write_capture(root / "regression", [
            EndpointTraffic(n=600, latency_factor=1.6, candidate_5xx_rate=0.05, changed_field_rate=0.2)], seed=2),
        "little": write_capture(root / "little", [EndpointTraffic(n=30)], seed=3),
        "mixed": write_capture(root / "mixed", [
            EndpointTraffic(endpoint="/api/items/{id}", n=200, candidate_transport_error_rate=0.05,
                            changed_field_rate=0.25, volatile_field=True),
            EndpointTraffic(endpoint="/api/cart", n=300, mode="split", candidate_service="cart-svc", clients=40),
        ], seed=4),
    }


def test_paired_samples_align_requests_and_mark_transport_errors(captures: dict[str, Path]) -> None:
    with open_store(captures["mixed"]) as store:
        samples = paired_samples(store, use_diffs=False)
    assert len(samples) == 1
    s = samples[0]
    assert s.endpoint == "/api/items/{id}" and s.candidate == "items-svc" and s.paired
    assert s.n_primary == s.n_candidate == 200
    # A transport error has no latency (NaN) and is counted apart from 5xx.
    assert s.candidate_transport_error.sum() > 0
    assert np.isnan(s.candidate_latency_ms[s.candidate_transport_error]).all()
    assert not s.candidate_5xx[s.candidate_transport_error].any()
    assert s.mismatch is None


def test_split_samples_are_unpaired_and_sticky_by_client(captures: dict[str, Path]) -> None:
    with open_store(captures["mixed"]) as store:
        samples = split_samples(store)
    assert len(samples) == 1
    s = samples[0]
    assert s.endpoint == "/api/cart" and s.candidate == "cart-svc"
    assert not s.paired and s.sticky
    assert s.n_primary + s.n_candidate == 300
    assert s.primary_client_key is not None and len(s.primary_client_key) == s.n_primary


def test_diff_fields_separate_real_differences_from_noise(captures: dict[str, Path]) -> None:
    rules = load_rules([{"ignore": "**/request_ts", "reason": "timestamp set per call"}])
    result = analyze(captures["mixed"], TEST_POLICY, rules=rules, progress=False)
    real = {f.pointer_template: f for f in result.real_fields}
    noise = {f.pointer_template: f for f in result.noise_fields}
    assert "/price" in real and "/request_ts" not in real
    assert "/request_ts" in noise and noise["/request_ts"].noise_reason
    price = real["/price"]
    assert price.pairs_total == 200
    assert 0.15 < price.rate < 0.35  # 25 % seeded, minus pairs whose candidate failed
    assert price.examples and all(e.old is not None and e.new is not None for e in price.examples)
    # The pair-level mismatch flag the verdict judges is the same set of requests.
    sample = next(s for s in result.samples if s.paired)
    assert sample.mismatch is not None
    assert int(sample.mismatch.sum()) >= price.pairs_affected


def test_aa_with_enough_data_passes(captures: dict[str, Path]) -> None:
    result = analyze(captures["aa"], TEST_POLICY, progress=False)
    failing = [(r.metric, r.cls, r.reason) for r in result.verdict.results if r.cls != "PASS"]
    assert result.verdict.overall == "PASS", failing
    assert result.verdict.exit_code() == 0
    assert result.real_fields == []


def test_clear_regression_fails(captures: dict[str, Path]) -> None:
    result = analyze(captures["regression"], TEST_POLICY, progress=False)
    assert result.verdict.overall == "FAIL"
    failed = {r.metric for r in result.verdict.results if r.cls == "FAIL"}
    assert {"latency_p50", "error_rate", "mismatch_rate"} <= failed
    assert result.verdict.exit_code() == 1


def test_little_data_is_inconclusive_never_pass(captures: dict[str, Path]) -> None:
    result = analyze(captures["little"], TEST_POLICY, progress=False)
    assert result.verdict.overall == "INCONCLUSIVE"
    assert all(r.cls != "PASS" for r in result.verdict.results)
    assert result.verdict.exit_code() == 3


def test_empty_and_malformed_captures_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="capture folder not found"):
        analyze(tmp_path / "missing", TEST_POLICY, progress=False)
    (tmp_path / "empty" / "exchanges").mkdir(parents=True)
    with pytest.raises(CaptureError, match="no sealed Parquet"):
        analyze(tmp_path / "empty", TEST_POLICY, progress=False)
    bad = tmp_path / "bad" / "exchanges" / "dt=2026-11-26" / "hour=06"
    bad.mkdir(parents=True)
    (bad / "part-0.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(CaptureError) as info:
        analyze(tmp_path / "bad", TEST_POLICY, progress=False)
    assert "\n" not in info.value.format_message()


def test_serve_only_capture_has_nothing_to_judge(tmp_path: Path, captures: dict[str, Path]) -> None:
    # Rewrite a capture with every row as plain passthrough (mode serve): no pairs, no split.
    src = next((captures["little"] / "exchanges").rglob("*.parquet"))
    table = pq.read_table(src)
    table = table.set_column(table.schema.get_field_index("mode"), "mode",
                             pa.array(["serve"] * table.num_rows))
    out = tmp_path / "serve" / "exchanges" / "dt=2026-11-26" / "hour=06"
    out.mkdir(parents=True)
    pq.write_table(table, out / "part-0.parquet")
    with pytest.raises(CaptureError, match="nothing to judge"):
        analyze(tmp_path / "serve", TEST_POLICY, progress=False)


def test_policy_file_may_carry_rules(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("alpha: 0.01\nrules:\n  - ignore: '**/request_ts'\n")
    policy, rules = load_inputs(policy_file)
    assert policy.alpha == 0.01
    assert rules.for_endpoint("/x").node("/request_ts") is not None
    policy_file.write_text("alpha: 0.01\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_inputs(policy_file)


def test_learned_endpoints_merge_high_cardinality_paths(tmp_path: Path) -> None:
    # The gateway captured one "endpoint" per user name; learning re-templates them as one endpoint,
    # for the samples and the diff table alike.
    capture = write_capture(tmp_path / "names", [
        EndpointTraffic(endpoint="/api/users/{name}/items/{id}", n=300, names=40, changed_field_rate=0.2),
        EndpointTraffic(endpoint="/api/users/{name}/cart", n=200, names=40, mode="split", candidate_service="cart")],
        seed=9)
    raw = analyze(capture, TEST_POLICY, progress=False)
    # static templating takes user10…user39 for slugs (two digits), not user0…user9
    assert len(raw.samples) > 20
    learned = analyze(capture, TEST_POLICY, progress=False, templater=learn_templater(capture))
    assert {(s.endpoint, s.paired) for s in learned.samples} == {
        ("/api/users/{name}/items/{id}", True), ("/api/users/{name}/cart", False)}
    paired = next(s for s in learned.samples if s.paired)
    assert paired.n_primary == 300
    price = next(f for f in learned.real_fields if f.pointer_template == "/price")
    assert price.endpoint == "/api/users/{name}/items/{id}" and price.pairs_total == 300


def test_client_keys_make_split_samples_sticky_but_leave_pairs_paired(tmp_path: Path) -> None:
    # paired_samples and split_samples share one sample builder: a client key is kept on both sides
    # when any row has one, and only split traffic turns it into sticky (clustered) analysis.
    capture = write_capture(tmp_path / "keys", [
        EndpointTraffic(endpoint="/api/items/{id}", n=40, clients=5),
        EndpointTraffic(endpoint="/api/cart", n=40, mode="split", candidate_service="cart-svc"),
    ], seed=5)
    with open_store(capture) as store:
        (paired,), (split,) = paired_samples(store, use_diffs=False), split_samples(store)
    assert paired.paired and not paired.sticky
    assert paired.primary_client_key is not None and paired.candidate_client_key is not None
    assert list(paired.primary_client_key) == list(paired.candidate_client_key)  # one client per pair
    assert not split.paired and not split.sticky
    assert split.primary_client_key is None and split.candidate_client_key is None


def test_a_capture_templated_before_slug_rules_is_analysed_with_them(tmp_path: Path) -> None:
    from tests.test_diffs_table import exchange_row
    from tests.test_diffs_table import write_capture as write_rows

    rows = []
    for i in range(30):
        path = f"/etag/abc{10 + i}"  # the gateway of an older version captured one endpoint per tag
        rows += [exchange_row(f"r{i}", "primary", body={"tag": i}, path=path, endpoint=path),
                 exchange_row(f"r{i}", "candidate", body={"tag": i}, path=path, endpoint=path)]
    result = analyze(write_rows(tmp_path / "old", rows), TEST_POLICY, progress=False)
    assert [(s.endpoint, s.n_primary) for s in result.samples] == [("/etag/{slug}", 30)]


def test_volatile_fields_without_evidence_make_mismatch_inconclusive_not_fail(tmp_path: Path) -> None:
    from tests.test_diffs_table import _volatile_rows
    from tests.test_diffs_table import write_capture as write_rows

    capture = write_rows(tmp_path / "volatile", _volatile_rows(120, repeats=False))
    result = analyze(capture, TEST_POLICY, progress=False)
    r = next(r for r in result.verdict.results if r.metric == "mismatch_rate")
    assert r.cls == "INCONCLUSIVE", r.reason
    assert "/generated_at, /request_id" in r.reason and f"`shadow probe {capture}`" in r.reason
    unproven = {f.pointer_template for f in result.fields if f.unproven}
    assert unproven == {"/generated_at", "/request_id"}
    # a renamed field beside them is structural: FAIL, no evidence needed
    renamed = write_rows(tmp_path / "renamed", _volatile_rows(120, repeats=False, rename=True))
    r = next(r for r in analyze(renamed, TEST_POLICY, progress=False).verdict.results if r.metric == "mismatch_rate")
    assert r.cls == "FAIL", r.reason


def test_with_repeated_requests_as_evidence_a_stable_field_change_fails(tmp_path: Path) -> None:
    from tests.test_diffs_table import _volatile_rows
    from tests.test_diffs_table import write_capture as write_rows

    capture = write_rows(tmp_path / "repeats", _volatile_rows(120, repeats=True, candidate_change={"price": 0}))
    r = next(r for r in analyze(capture, TEST_POLICY, progress=False).verdict.results if r.metric == "mismatch_rate")
    assert r.cls == "FAIL", r.reason
    same = write_rows(tmp_path / "same", _volatile_rows(120, repeats=True))
    result = analyze(same, TEST_POLICY, progress=False)
    r = next(r for r in result.verdict.results if r.metric == "mismatch_rate")
    assert r.cls != "FAIL" and r.estimate == 0.0, r.reason  # the volatile fields are noise: evidence, not assumption
    assert "look volatile" not in r.reason
    assert all(f.noise for f in result.fields if f.kind == "body")
