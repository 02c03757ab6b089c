"""analyzers/policy.py: defaults, per-endpoint overrides, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzers.policy import Margins, Policy, load_policy
from shadow.errors import ConfigError


def test_defaults_follow_statistics_md() -> None:
    m = Policy().margins_for("/anything")
    assert m.latency_ratio == {"p50": 1.10, "p95": 1.10, "p99": 1.20}
    assert m.floor_ms == 2.0
    assert (m.error_rate_pp, m.error_rate_relative) == (0.2, 0.25)  # docs/policy.md: why not +0.1 pp alone
    assert (m.transport_error_pp, m.transport_error_relative) == (0.2, 0.25)
    assert m.min_clients == 20
    assert m.gated_quantiles == ("p50", "p95", "p99")
    assert Policy().alpha == 0.05
    assert Policy().compare_recorded_latency is False


def test_error_margins_new_keys_and_the_older_absolute_key() -> None:
    p = Policy.from_mapping({"compare_recorded_latency": True, "defaults": {
        "error_rate": {"relative": 0.5}, "transport_error": {"pp": 0.05, "relative": 0}, "min_clients": 5}})
    m = p.defaults
    assert (m.error_rate_pp, m.error_rate_relative) == (0.2, 0.5)  # pp inherited
    assert (m.transport_error_pp, m.transport_error_relative) == (0.05, 0.0)
    assert m.min_clients == 5 and p.compare_recorded_latency
    old = Policy.from_mapping({"defaults": {"error_rate_pp": 1.0}}).defaults
    assert (old.error_rate_pp, old.error_rate_relative) == (1.0, 0.0)  # the older key keeps its meaning
    assert old.transport_error_relative == 0.25


def test_overrides_match_globs_in_order_and_inherit_defaults() -> None:
    p = Policy.from_mapping({
        "alpha": 0.01,
        "defaults": {"latency": {"p99": 1.3, "floor_ms": 5}, "min_samples": 100},
        "endpoints": {
            "/api/search*": {"latency": {"p99": 1.5, "p50": None}, "mismatch_budget": 0.05},
            "/api/*": {"error_rate_pp": 0.5},
        },
    })
    assert p.alpha == 0.01
    search = p.margins_for("/api/search/{id}")
    assert search.latency_ratio == {"p95": 1.10, "p99": 1.5}  # p50 switched off, p95 inherited
    assert search.floor_ms == 5 and search.min_samples == 100 and search.mismatch_budget == 0.05
    assert p.margins_for("/api/orders").error_rate_pp == 0.5  # first match wins: not the search glob
    assert p.margins_for("/health") == p.defaults
    assert p.margins_for("/health").latency_ratio["p99"] == 1.3


def test_policy_echo_is_json_ready() -> None:
    d = Policy.from_mapping({"endpoints": {"/a": {"gate": {"mismatch": False}}}}, source="x.yaml").to_dict()
    assert d["source"] == "x.yaml"
    assert d["endpoints"]["/a"]["gate_mismatch"] is False
    assert d["defaults"]["gated_quantiles"] == ["p50", "p95", "p99"]


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"alpah": 0.05}, "alpah", "unknown field"),
    ({"alpha": 0.7}, "alpha", "must be in"),
    ({"alpha": "high"}, "alpha", "must be a number"),
    ({"sequential": "yes"}, "sequential", "true or false"),
    ({"defaults": {"latency": {"p95": 0.9}}}, "defaults.latency.p95", "must be in"),
    ({"defaults": {"latency": {"p42": 1.1}}}, "defaults.latency.p42", "unknown latency field"),
    ({"defaults": {"min_samples": 1}}, "defaults.min_samples", "integer >= 2"),
    ({"defaults": {"mismatch_budget": 2}}, "defaults.mismatch_budget", "must be in"),
    ({"endpoints": {"/a": {"latency": 3}}}, "endpoints./a.latency", "must be a mapping"),
    ({"endpoints": {"/a": {"gate": {"bulk": 1}}}}, "endpoints./a.gate.bulk", "true or false"),
    ({"endpoints": {"/a": {"gate": {"p99": True}}}}, "endpoints./a.gate.p99", "unknown field"),
    ({"n_boot": 10}, "n_boot", "integer >= 200"),
    ({"defaults": {"error_rate": {"pp": 0.1}, "error_rate_pp": 0.1}}, "defaults.error_rate_pp", "not both"),
    ({"defaults": {"error_rate": {"absolute": 0.1}}}, "defaults.error_rate.absolute", "unknown field"),
    ({"defaults": {"error_rate": {"pp": 0, "relative": 0}}}, "defaults.error_rate", "never be proven"),
    ({"defaults": {"transport_error": {"relative": -1}}}, "defaults.transport_error.relative", "must be in"),
    ({"defaults": {"min_clients": 1}}, "defaults.min_clients", "integer >= 2"),
    ({"compare_recorded_latency": 1}, "compare_recorded_latency", "true or false"),
])
def test_bad_fields_name_the_field(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        Policy.from_mapping(data, source="policy.yaml")
    assert err.value.field == field
    assert words in str(err.value)
    assert str(err.value).startswith(f"policy.yaml: {field}: ")


def test_load_policy_reports_file_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "gate.yaml"
    f.write_text("shadow:\n  analysis:\n    alpha: 0.05\n    defaults:\n      latency:\n        p95: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_policy(f)
    assert err.value.line == 6
    assert err.value.field == "defaults.latency.p95"
    assert f"{f}:6: defaults.latency.p95: must be in" in str(err.value)


def test_load_policy_reads_top_level_and_analysis_sections(tmp_path: Path) -> None:
    top = tmp_path / "p.yaml"
    top.write_text("alpha: 0.02\nendpoints:\n  '/x/*':\n    latency: {p99: 2.0}\n")
    p = load_policy(top)
    assert p.alpha == 0.02 and p.margins_for("/x/1").latency_ratio["p99"] == 2.0
    assert p.source == str(top)
    section = tmp_path / "q.yaml"
    section.write_text("analysis:\n  sequential: true\n")
    assert load_policy(section).sequential is True
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    assert load_policy(empty).defaults == Margins()


def test_load_policy_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("alpha: [0.05\nbeta: 1\n")
    with pytest.raises(ConfigError) as err:
        load_policy(bad)
    assert err.value.file == str(bad) and err.value.line is not None
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_policy(listy)


def test_yaml_null_or_false_switches_a_quantile_off(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("defaults:\n  latency:\n    p50: null\n    p99: false\n    p90: 1.15\n")
    assert load_policy(f).defaults.gated_quantiles == ("p90", "p95")
