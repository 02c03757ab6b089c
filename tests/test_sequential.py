"""analyzers/sequential.py: mixture likelihood ratios against numerical integration, anytime validity
in a small simulation, state updates look by look, and judge() in sequential mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from analyzers import sequential as seq
from analyzers.policy import Policy
from analyzers.verdict import EndpointSample, judge
from shadow.errors import ShadowError


def test_one_sided_msprt_equals_numerical_mixture() -> None:
    est, var, tau = 0.03, 0.0004, 0.1
    # Λ = ∫ N(est; θ, var) / N(est; 0, var) * half-normal(θ; τ) dθ over θ > 0
    def integrand(theta: float) -> float:
        lr = math.exp((theta * est - theta**2 / 2) / var)
        return lr * 2 * sps.norm.pdf(theta, 0, tau)

    expected, _ = integrate.quad(integrand, 0, 2)
    assert seq.log_msprt_one_sided(est, var, 0.0, tau, upper=True) == pytest.approx(math.log(expected), rel=1e-6)
    # The lower-sided version against θ0 mirrors it.
    lower = seq.log_msprt_one_sided(0.1 - est, var, 0.1, tau, upper=False)
    assert lower == pytest.approx(math.log(expected), rel=1e-6)


def test_discordant_beta_mixture_equals_numerical_integral() -> None:
    b, c = 9, 3
    num, _ = integrate.quad(lambda p: p**b * (1 - p) ** c * 2.0, 0.5, 1.0)  # uniform on (1/2, 1)
    expected = num / 0.5 ** (b + c)
    assert seq.log_beta_mixture_discordant(b, c) == pytest.approx(math.log(expected), rel=1e-9)
    assert seq.log_beta_mixture_discordant(0, 0) == 0.0


def test_budget_beta_mixture_equals_numerical_integral() -> None:
    x, n, budget = 7, 300, 0.01
    num, _ = integrate.quad(lambda p: p**x * (1 - p) ** (n - x) / (1 - budget), budget, 1.0, points=[0.02, 0.05])
    expected = num / (budget**x * (1 - budget) ** (n - x))
    assert seq.log_beta_mixture_budget(x, n, budget) == pytest.approx(math.log(expected), rel=1e-4)


def test_running_minimum_and_alpha_spending() -> None:
    st = seq.SequentialState()
    st.start_look()
    p1 = st.gaussian_harm("k", 0.08, 0.0004)
    p2 = st.gaussian_harm("k", 0.0, 0.0002)  # evidence gone: the anytime p-value stays at its minimum
    assert p2 == p1 < 0.05
    assert st.ni_alpha(0.05) == pytest.approx(0.025)
    st.start_look()
    assert st.ni_alpha(0.05) == pytest.approx(0.05 / 6)
    assert st.threshold("t", 100.0) == 100.0
    assert st.threshold("t", 120.0) == 100.0  # pre-registered at the first look


def test_split_counts_use_increments_and_refuse_shrinking_data() -> None:
    st = seq.SequentialState()
    p = st.split_count_harm("e", 6, 1000, 2, 1000)
    # One look: 8 errors, each the candidate's with r = 1/2 under H0.
    lrs = [6 * math.log((psi / (1 + psi)) / 0.5) + 2 * math.log((1 / (1 + psi)) / 0.5) for psi in seq.ODDS_RATIO_GRID]
    expected = min(1.0, 1.0 / float(np.mean(np.exp(lrs))))
    assert p == pytest.approx(expected)
    st.split_count_harm("e", 6, 1500, 2, 1500)  # no new errors: nothing changes
    assert st.counts["e"].log_lr == pytest.approx(lrs)
    with pytest.raises(ShadowError, match="cumulative"):
        st.split_count_harm("e", 5, 1400, 2, 1500)


def test_state_round_trips_through_a_dict() -> None:
    st = seq.SequentialState()
    st.start_look()
    st.split_count_harm("e", 3, 100, 1, 100)
    st.discordant_harm("d", 4, 1)
    st.threshold("t", 55.0)
    again = seq.SequentialState.from_dict(st.to_dict())
    assert again == st
    with pytest.raises(ShadowError, match="malformed"):
        seq.SequentialState.from_dict({"looks": "many"})


def test_msprt_stays_valid_over_many_looks_under_aa() -> None:
    rng = np.random.default_rng(0)
    reps, looks, per_look = 200, 30, 25
    rejected = 0
    for _ in range(reps):
        st = seq.SequentialState()
        d = rng.standard_normal(looks * per_look) * 0.5
        for k in range(1, looks + 1):
            x = d[: k * per_look]
            if st.gaussian_harm("k", float(x.mean()), float(x.var(ddof=1) / x.size)) <= 0.05:
                rejected += 1
                break
    # Ville: <= alpha; with 300 reps, 0.05 + 3 standard errors.
    assert rejected / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)


def _split(rng: np.random.Generator, n: int, scale: float) -> EndpointSample:
    def lat(s: float) -> np.ndarray:
        return np.maximum(np.round(40 * np.exp(0.5 * rng.standard_normal(n)) * s), 1.0)

    no = np.zeros(n, bool)
    return EndpointSample("/canary", False, lat(1.0), lat(scale), no, no.copy(), no.copy(), no.copy())


def _prefix(s: EndpointSample, m: int) -> EndpointSample:
    return EndpointSample(s.endpoint, s.paired, s.primary_latency_ms[:m], s.candidate_latency_ms[:m],
                          s.primary_5xx[:m], s.candidate_5xx[:m], s.primary_transport_error[:m],
                          s.candidate_transport_error[:m])


def test_judge_in_sequential_mode_catches_a_regression_and_counts_looks() -> None:
    pol = Policy.from_mapping({"sequential": True, "n_boot": 200})
    full = _split(np.random.default_rng(1), 1500, 1.3)
    st = seq.SequentialState()
    verdicts = [judge([_prefix(full, m)], pol, sequential_state=st) for m in range(100, 1501, 200)]
    assert st.looks == len(verdicts)
    assert verdicts[-1].overall == "FAIL" and verdicts[-1].looks == len(verdicts)
    bulk = next(r for r in verdicts[-1].results if r.metric == "latency_bulk")
    assert "mSPRT" in bulk.test
    assert verdicts[-1].to_json()["sequential"] is True


def test_judge_in_sequential_mode_aa_does_not_fail() -> None:
    pol = Policy.from_mapping({"sequential": True, "n_boot": 200})
    full = _split(np.random.default_rng(2), 1500, 1.0)
    st = seq.SequentialState()
    for m in range(100, 1501, 200):
        v = judge([_prefix(full, m)], pol, sequential_state=st)
        assert v.overall != "FAIL"


def test_sequential_policy_without_state_is_a_single_look() -> None:
    pol = Policy.from_mapping({"sequential": True, "n_boot": 200})
    v = judge([_split(np.random.default_rng(3), 400, 1.0)], pol)
    assert v.looks == 1 and v.sequential
    assert "mSPRT" in next(r.test for r in v.results if r.metric == "latency_bulk")


def test_dependence_shrinks_sequential_evidence() -> None:
    from analyzers.sequential import SequentialState, count_design_effect, log_mean_effect

    rng = np.random.default_rng(31)
    independent = rng.random(5000) < 0.02
    assert count_design_effect(independent, None) == 1.0
    bursty = np.zeros(5000, bool)
    bursty[1000:1100] = True  # one outage: 100 errors in a row
    assert count_design_effect(bursty, None) > 10
    clients = np.repeat(np.arange(50), 100)
    assert count_design_effect(bursty, clients) > 10
    # The same discordant counts are weaker evidence when they come in bursts.
    plain, burst = SequentialState(), SequentialState()
    assert burst.discordant_harm("k", 40, 10, design=5.0) > plain.discordant_harm("k", 40, 10)
    # Autocorrelated log latency: the mSPRT's variance grows.
    lp = 40 * np.exp(0.3 * rng.standard_normal(4000))
    walk = np.exp(np.cumsum(0.02 * rng.standard_normal(4000)))
    _, var_dep = log_mean_effect(lp, lp * walk, paired=True)
    _, var_ind = log_mean_effect(lp, lp * rng.permutation(walk), paired=True)
    assert var_dep > 5 * var_ind


def test_inflation_never_shrinks_and_no_harm_before_it_is_estimable() -> None:
    from analyzers.sequential import MIN_N_DEPENDENCE, SequentialState

    # Before MIN_N_DEPENDENCE requests per arm a dependence-adjusted look counts no evidence.
    early = SequentialState()
    assert early.gaussian_harm("k", 0.3, 0.0004, inflation=1.0, n=MIN_N_DEPENDENCE - 1) == 1.0
    assert early.discordant_harm("d", 40, 2, design=1.0, n=MIN_N_DEPENDENCE - 1) == 1.0
    assert early.gaussian_harm("k", 0.3, 0.0004, inflation=1.0, n=MIN_N_DEPENDENCE) < 0.05
    # A later look estimating less dependence keeps the largest inflation seen so far.
    kept, fresh = SequentialState(), SequentialState()
    kept.gaussian_harm("k", 0.0, 0.0004, inflation=20.0, n=MIN_N_DEPENDENCE)
    assert kept.gaussian_harm("k", 0.05, 0.0002, inflation=1.0, n=400) > \
        fresh.gaussian_harm("k", 0.05, 0.0002, inflation=1.0, n=400)
    assert SequentialState.from_dict(kept.to_dict()).inflation == kept.inflation
    # Split counts: the summed evidence is divided by the running maximum design effect.
    a, b = SequentialState(), SequentialState()
    a.split_count_harm("e", 2, 500, 1, 500, design=8.0, n=500)
    b.split_count_harm("e", 2, 500, 1, 500, design=1.0, n=500)
    assert a.split_count_harm("e", 30, 1000, 5, 1000, design=1.0, n=1000) > \
        b.split_count_harm("e", 30, 1000, 5, 1000, design=1.0, n=1000)
