"""analyzers/stats.py against scipy, brute force and published reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analyzers import stats


def tie_heavy(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    """statistics.md's model: 97 % lognormal around 40 ms, 3 % around 300 ms, rounded to 1 ms."""
    slow = rng.random(n) < 0.03
    x = np.where(slow, 300.0, 40.0) * np.exp(0.5 * rng.standard_normal(n)) * scale
    return np.round(x)


def test_quantile7_is_hyndman_fan_type7() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    # h = (n-1)p = 3.6 -> x[3] + 0.6 (x[4] - x[3]) = 4 + 0.6*6
    assert stats.quantile7(x, 0.9) == pytest.approx(7.6)


def test_holm_on_a_known_vector() -> None:
    adjusted = stats.holm(np.array([0.01, 0.04, 0.03, 0.005]))
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert stats.holm(np.array([0.5, 0.9])).max() <= 1.0
    assert stats.holm(np.array([])).size == 0


def test_hodges_lehmann_hand_computed() -> None:
    # Walsh averages of [1, 2, 4]: 1, 1.5, 2, 2.5, 3, 4 -> median 2.25
    est, _, _ = stats.hodges_lehmann_one_sample(np.array([1.0, 2.0, 4.0]))
    assert est == pytest.approx(2.25)
    # differences of [1, 2, 3] over [0, 5]: -4, -3, -2, 1, 2, 3 -> median -0.5
    est2, _, _ = stats.hodges_lehmann_two_sample(np.array([1.0, 2.0, 3.0]), np.array([0.0, 5.0]))
    assert est2 == pytest.approx(-0.5)


def test_hodges_lehmann_and_wilcoxon_on_the_hollander_wolfe_textbook_example() -> None:
    # Hollander & Wolfe, Nonparametric Statistical Methods (2nd ed.), Example 3.1: Hamilton depression
    # scale before (x) and after (y) tranquilizer, 9 patients. T+ = 5, one-sided P = .020, and the
    # Hodges-Lehmann estimate of the median change is -0.46.
    x = np.array([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30])
    y = np.array([0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29])
    est, lo, hi = stats.hodges_lehmann_one_sample(y - x)
    assert est == pytest.approx(-0.46)
    assert lo < est < hi < 0
    assert sps.wilcoxon(y - x, alternative="less").pvalue == pytest.approx(0.0195, abs=5e-4)


def test_hodges_lehmann_matches_brute_force_on_tied_data() -> None:
    rng = np.random.default_rng(3)
    x = np.log(tie_heavy(rng, 300))
    y = np.log(tie_heavy(rng, 250, 1.05))
    est, lo, hi = stats.hodges_lehmann_two_sample(x, y, alpha=0.05)
    diffs = np.sort((x[:, None] - y[None, :]).ravel())
    assert est == pytest.approx(np.median(diffs))
    n_pairs = diffs.size
    k = n_pairs / 2 - sps.norm.ppf(0.95) * math.sqrt(300 * 250 * (300 + 250 + 1) / 12)
    assert lo == pytest.approx(diffs[round(k) - 1])
    assert hi == pytest.approx(diffs[n_pairs - round(k)])
    d = np.log(tie_heavy(rng, 200)) - np.log(tie_heavy(rng, 200))
    i, j = np.triu_indices(d.size)
    est1, _, _ = stats.hodges_lehmann_one_sample(d)
    assert est1 == pytest.approx(np.median((d[i] + d[j]) / 2))


def test_wilcoxon_and_mann_whitney_p_values_equal_scipys() -> None:
    rng = np.random.default_rng(5)
    p, c = tie_heavy(rng, 400), tie_heavy(rng, 400, 1.04)
    t = stats.wilcoxon_log_ratio(p, c, math.log(1.1))
    d = np.log(c) - np.log(p)
    assert t.p_harm == pytest.approx(sps.wilcoxon(d, alternative="greater").pvalue)
    assert t.p_ni == pytest.approx(sps.wilcoxon(d - math.log(1.1), alternative="less").pvalue)
    u = stats.mann_whitney_log_shift(p, c, math.log(1.1))
    assert u.p_harm == pytest.approx(sps.mannwhitneyu(np.log(c), np.log(p), alternative="greater").pvalue)
    assert u.p_ni == pytest.approx(
        sps.mannwhitneyu(np.log(c) - math.log(1.1), np.log(p), alternative="less").pvalue)
    assert u.lo <= u.estimate <= u.hi


def test_wilcoxon_all_zero_differences_is_no_evidence() -> None:
    x = np.full(100, 40.0)
    t = stats.wilcoxon_log_ratio(x, x, math.log(1.1))
    assert t.p_harm == 1.0
    assert t.estimate == 0.0


def test_mcnemar_exact_equals_hand_computed_binomial() -> None:
    # b=8 candidate-only, c=2 primary-only: P(X >= 8 | 10, 1/2) = (45 + 10 + 1) / 1024
    greater, two_sided = stats.mcnemar_exact(8, 2)
    assert greater == pytest.approx(56 / 1024)
    assert two_sided == pytest.approx(112 / 1024)
    assert stats.mcnemar_exact(0, 0) == (1.0, 1.0)


def test_newcombe_and_wilson_reproduce_newcombe_1998() -> None:
    # Newcombe (1998), Stat Med 17:873, example 56/70 vs 48/80: method 10 gives 0.0524 to 0.3339.
    lo, hi = stats.newcombe_interval(56, 70, 48, 80, 1.959964)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    # Newcombe (1998) single-proportion example 81/263: Wilson 0.2553 to 0.3662.
    assert stats.wilson_interval(81, 263, 1.959964) == pytest.approx((0.2553, 0.3662), abs=1e-4)


def test_unpaired_rate_test_mid_p_fisher_and_inverted_ni() -> None:
    # Errors spread out in time (every 500th / 166th request): no autocorrelation, classical tests.
    prim = np.zeros(5000, bool)
    prim[::500] = True  # 10
    cand = np.zeros(5000, bool)
    cand[::167] = True  # 30
    assert cand.sum() == 30
    t = stats.unpaired_rate_test(prim, cand, 0.001, 0.05)
    hyper = sps.hypergeom(10000, 40, 5000)
    assert t.p_harm == pytest.approx(hyper.sf(30) + 0.5 * hyper.pmf(30))
    assert t.p_harm < sps.fisher_exact([[30, 4970], [10, 4990]], alternative="greater").pvalue
    assert t.estimate == pytest.approx(0.004)
    assert t.p_ni > 0.5  # 0.4 pp worse cannot be within +0.1 pp
    # The inverted p-value is the level at which the Newcombe upper bound touches the margin.
    # (The same count half a period later: arms failing at the very same moments would be a drift
    # shared by both, which the test rightly treats as cancelling.)
    same = stats.unpaired_rate_test(prim, np.roll(prim, 250), 0.003, 0.05)
    z = sps.norm.isf(same.p_ni)
    assert stats.newcombe_interval(10, 5000, 10, 5000, z)[1] == pytest.approx(0.003, abs=1e-6)


def test_unpaired_rate_test_relative_margin_and_clustered_errors() -> None:
    rng = np.random.default_rng(8)
    prim = rng.random(20000) < 0.01
    cand = rng.permutation(prim)
    # Same 1 % rate: proven within +0.1 pp + 25 % of the primary's rate, not within +0.1 pp alone.
    assert stats.unpaired_rate_test(prim, cand, 0.001, 0.05, relative=0.25).p_ni < 0.05
    assert stats.unpaired_rate_test(prim, cand, 0.001, 0.05).p_ni > 0.05
    # 200 clients of 100 requests whose 2 % errors all come from 4 clients: the same counts carry far
    # less evidence than 400 independent errors (design effect ~ 100).
    clients = np.repeat(np.arange(200), 100)
    bad = np.isin(clients, [3, 7, 50, 120])
    prim = rng.random(20000) < 0.005
    t_clustered = stats.unpaired_rate_test(prim, bad, 0.001, 0.05, primary_clusters=clients,
                                           candidate_clusters=clients + 1000)
    t_plain = stats.unpaired_rate_test(prim, rng.permutation(bad), 0.001, 0.05)
    assert t_plain.p_harm < 1e-6 < t_clustered.p_harm
    assert "clustering by client" in t_clustered.test


def test_paired_rate_test_counts_discordant_pairs() -> None:
    prim = np.zeros(1000, bool)
    cand = np.zeros(1000, bool)
    prim[:500:100] = True
    cand[:500:100] = True  # 5 concordant failures carry no information
    cand[550::60] = True  # 8 candidate-only, spread out in time
    prim[[777, 913]] = True  # 2 primary-only
    assert cand.sum() == 13
    t = stats.paired_rate_test(prim, cand, 0.001, 0.05)
    # mid-p: P(X > 8) + P(X = 8) / 2 for X ~ Bin(10, 1/2) = (11 + 45 / 2) / 1024
    assert t.p_harm == pytest.approx((11 + 22.5) / 1024)
    assert t.estimate == pytest.approx(6 / 1000)
    # A burst: the same counts, all in one stretch of time, are weaker evidence.
    burst_c = np.zeros(1000, bool)
    burst_c[600:608] = True
    burst_p = np.zeros(1000, bool)
    burst_p[[777, 913]] = True
    assert stats.paired_rate_test(burst_p, burst_c, 0.001, 0.05).p_harm > t.p_harm


def test_paired_rate_relative_margin_matches_agresti_min_at_zero() -> None:
    rng = np.random.default_rng(4)
    prim, cand = rng.random(20000) < 0.005, rng.random(20000) < 0.005
    plain = stats.paired_rate_test(prim, cand, 0.002, 0.05)
    b, c = int(np.sum(cand & ~prim)) + 0.5, int(np.sum(prim & ~cand)) + 0.5
    adj, se = (b - c) / 20002, math.sqrt((b + c) - (b - c) ** 2 / 20002) / 20002
    assert plain.p_ni == pytest.approx(sps.norm.cdf((adj - 0.002) / se))
    relative = stats.paired_rate_test(prim, cand, 0.002, 0.05, relative=0.25)
    assert relative.p_ni < plain.p_ni
    assert stats.error_margin(0.01, 0.002, 0.25) == pytest.approx(0.0045)


def test_budget_rate_test_exact_binomial() -> None:
    flags = np.zeros(1000, bool)
    flags[:3] = True
    t = stats.budget_rate_test(flags, 0.01, 0.05)
    assert t.p_ni == pytest.approx(sps.binom.cdf(3, 1000, 0.01))
    assert t.p_harm == pytest.approx(sps.binom.sf(2, 1000, 0.01))


def test_rule_of_three() -> None:
    assert stats.rule_of_three(3000) == pytest.approx(0.001)
    # The exact 95 % bound with zero events, 1 - 0.05**(1/n), is close to 3/n.
    assert stats.rule_of_three(3000) == pytest.approx(1 - 0.05 ** (1 / 3000), rel=0.01)


def test_sample_sizes_match_statistics_md() -> None:
    # Two-sided detection of a 10 % quantile change, 80 % power (reference/statistics.md).
    assert stats.quantile_ratio_sample_size(0.95, 1.0, margin=1.10, two_sided=True) == pytest.approx(7717, rel=0.003)
    assert stats.quantile_ratio_sample_size(0.99, 1.0, margin=1.10, two_sided=True) == pytest.approx(24085, rel=0.003)
    assert stats.quantile_ratio_sample_size(0.50, 0.5, margin=1.10, two_sided=True) == pytest.approx(679, rel=0.003)
    assert stats.quantile_ratio_sample_size(0.95, 0.5, margin=1.10, two_sided=True) == pytest.approx(1930, rel=0.003)
    # One-sided non-inferiority with a 5 % margin.
    assert stats.quantile_ratio_sample_size(0.95, 1.0, margin=1.05) == pytest.approx(23196, rel=0.003)
    assert stats.proportion_sample_size(0.005, 0.010) == pytest.approx(3681, rel=0.003)
    assert stats.proportion_sample_size(0.001, 0.002) == pytest.approx(18519, rel=0.003)
    with pytest.raises(ValueError):
        stats.quantile_ratio_sample_size(0.5, 1.0, margin=1.1, true_ratio=1.1)


def test_weighted_type7_equals_numpy_on_the_expanded_resample() -> None:
    rng = np.random.default_rng(9)
    values = np.sort(rng.choice(np.arange(1.0, 60.0), 25, replace=False))
    counts = rng.integers(0, 4, size=(30, values.size))
    counts[:, 0] += 1
    ps = np.array([0.5, 0.95, 0.99])
    got = stats._weighted_type7(values, np.cumsum(counts, axis=1), ps)
    for row in range(counts.shape[0]):
        np.testing.assert_allclose(got[row], np.quantile(np.repeat(values, counts[row]), ps))


@pytest.mark.parametrize("paired", [True, False])
def test_bootstrap_replicates_are_quantile_ratios_of_resamples(paired: bool) -> None:
    rng = np.random.default_rng(11)
    p, c = tie_heavy(rng, 600), tie_heavy(rng, 600, 1.2)
    ps = np.array([0.5, 0.95])
    point, reps = stats.bootstrap_quantile_log_ratios(p, c, ps, paired=paired, n_boot=400,
                                                      rng=np.random.default_rng(0))
    np.testing.assert_allclose(point, np.log(np.quantile(c, ps)) - np.log(np.quantile(p, ps)))
    assert reps.shape == (400, 2)
    # A 20 % slowdown: the replicates centre near log 1.2 and their spread is plausible.
    assert abs(np.median(reps[:, 0]) - math.log(1.2)) < 0.1
    assert 0.005 < reps[:, 0].std() < 0.2


def test_cluster_bootstrap_is_wider_than_request_bootstrap_with_a_client_effect() -> None:
    rng = np.random.default_rng(13)
    users = np.repeat(np.arange(50), 20)

    def arm() -> np.ndarray:
        effect = np.exp(0.4 * rng.standard_normal(50))[users]
        return np.round(tie_heavy(rng, users.size) * effect)

    p, c = arm(), arm()
    ps = np.array([0.5])
    _, plain = stats.bootstrap_quantile_log_ratios(p, c, ps, paired=False, n_boot=300, rng=np.random.default_rng(1))
    _, clustered = stats.bootstrap_quantile_log_ratios(p, c, ps, paired=False, n_boot=300, rng=np.random.default_rng(1),
                                                       primary_keys=users, candidate_keys=users)
    assert clustered.std() > 1.5 * plain.std()


def test_bootstrap_shift_test_degenerate_spread_proves_nothing() -> None:
    t = stats.bootstrap_shift_test(0.0, np.zeros(100), math.log(1.1), 0.05, "x")
    assert t.p_ni == 1.0 and t.p_harm == 1.0


def test_needed_n_from_se_scales_as_inverse_square() -> None:
    # se 0.05 at n=100, margin log 1.1, no difference: n * ((z_a + z_b) se / margin)^2
    z = sps.norm.ppf(0.95) + sps.norm.ppf(0.8)
    expected = math.ceil(100 * (z * 0.05 / math.log(1.1)) ** 2)
    assert stats.needed_n_from_se(100, 0.05, 0.0, math.log(1.1), 0.05, 0.8) == expected
    assert stats.needed_n_from_se(100, 0.05, math.log(1.2), math.log(1.1), 0.05, 0.8) is None


@pytest.mark.parametrize("tied", [False, True])
def test_order_statistic_bootstrap_has_the_resampling_bootstraps_distribution(tied: bool) -> None:
    # _boot_quantiles draws each resample's order statistics from uniform order statistics instead
    # of resampling; its replicates must be distributed as numpy's quantiles of real resamples.
    x = np.random.default_rng(21).lognormal(3.7, 0.5, 300)
    x = np.round(x) if tied else x
    ps = np.array([0.5, 0.95, 0.99])
    got = stats._boot_quantiles(x, ps, 4000, np.random.default_rng(4))
    idx = np.random.default_rng(5).integers(0, x.size, size=(4000, x.size))
    want = np.quantile(x[idx], ps, axis=1).T
    for j in range(ps.size):
        assert sps.ks_2samp(got[:, j], want[:, j]).pvalue > 0.001
        assert got[:, j].std() == pytest.approx(want[:, j].std(), rel=0.08)
    assert np.all(got >= x.min()) and np.all(got <= x.max())


def test_rowwise_rank_index_is_the_count_below() -> None:
    rng = np.random.default_rng(6)
    cum = np.cumsum(rng.integers(0, 3, size=(40, 30)), axis=1)
    ranks = rng.integers(1, cum[:, -1] + 1).astype(float)
    np.testing.assert_array_equal(stats._rowwise_rank_index(cum, ranks), (cum < ranks[:, None]).sum(axis=1))


def test_dequantize_only_touches_tied_grid_data() -> None:
    rng = np.random.default_rng(22)
    rounded = np.round(rng.lognormal(3.7, 0.5, 1000))
    assert stats.latency_resolution(rounded) == 1.0
    smooth = rng.lognormal(3.7, 0.5, 1000)
    assert stats.latency_resolution(smooth) is None
    np.testing.assert_array_equal(stats.dequantize(smooth, rng), smooth)
    j = stats.dequantize(rounded, rng)
    assert np.all(np.abs(j - rounded) <= 0.5) and np.unique(j).size == j.size


def test_density_se_matches_the_lognormal_formula() -> None:
    # Lognormal(σ = 0.5) arms of 4000: var(log q̂_p) = p(1-p)σ² / (n φ(z_p)²) per arm, unpaired sum.
    rng = np.random.default_rng(31)
    n, sigma = 4000, 0.5
    p, c = rng.lognormal(3.7, sigma, n), rng.lognormal(3.7, sigma, n)
    ps = np.array([0.5, 0.95])
    got = stats.density_log_quantile_se(p, c, ps, paired=False)
    z = sps.norm.ppf(ps)
    expected = np.sqrt(2 * ps * (1 - ps) * sigma**2 / (n * sps.norm.pdf(z) ** 2))
    np.testing.assert_allclose(got, expected, rtol=0.12)


def test_density_se_paired_uses_the_correlation_of_the_arms() -> None:
    # Strongly correlated arms: the paired SE of the ratio is far below the unpaired one.
    rng = np.random.default_rng(32)
    base = rng.lognormal(3.7, 0.5, 3000)
    p, c = base * np.exp(0.1 * rng.standard_normal(3000)), base * np.exp(0.1 * rng.standard_normal(3000))
    ps = np.array([0.95])
    paired = stats.density_log_quantile_se(p, c, ps, paired=True)
    unpaired = stats.density_log_quantile_se(p, c, ps, paired=False)
    assert paired[0] < 0.6 * unpaired[0]


def test_quantile_se_blends_only_well_observed_tails() -> None:
    rng = np.random.default_rng(33)
    p, c = tie_heavy(rng, 200) + rng.uniform(-0.5, 0.5, 200), tie_heavy(rng, 200) + rng.uniform(-0.5, 0.5, 200)
    ps = np.array([0.5, 0.95, 0.99])
    _, reps = stats.bootstrap_quantile_log_ratios(p, c, ps, paired=False, n_boot=300, rng=np.random.default_rng(2))
    boot = reps.std(axis=0, ddof=1)
    got = stats.quantile_log_ratio_se(reps, p, c, ps, paired=False)
    dens = stats.density_log_quantile_se(p, c, ps[1:2], paired=False)
    # Median: bootstrap SD; p95 (10 requests beyond it): geometric mean; p99 (2 beyond): bootstrap SD.
    np.testing.assert_allclose(got, [boot[0], math.sqrt(boot[1] * dens[0]), boot[2]])
    clustered = stats.quantile_log_ratio_se(reps, p, c, ps, paired=False, clustered=True)
    np.testing.assert_allclose(clustered, boot)


def test_harm_se_pools_the_arms_for_split_traffic_only() -> None:
    rng = np.random.default_rng(34)
    p, c = rng.lognormal(3.7, 0.5, 2000), rng.lognormal(3.9, 0.5, 2000)
    ps = np.array([0.95])
    pooled = stats.density_log_quantile_se(p, c, ps, paired=False, pooled=True)
    both = np.log(np.concatenate([p, c]))
    # One density from both arms: the same per-arm SE on each side, scaled by sqrt(1/n_p + 1/n_c).
    one_arm = stats._density_se(both, np.quantile(both, ps), ps) * math.sqrt(both.size / 2000)
    np.testing.assert_allclose(pooled, one_arm * math.sqrt(2))
    # Paired arms are never pooled (their correlation is what the paired SE uses).
    np.testing.assert_allclose(stats.density_log_quantile_se(p, c, ps, paired=True, pooled=True),
                               stats.density_log_quantile_se(p, c, ps, paired=True))
    # The harm test uses the SE it is given; the interval keeps the other.
    t = stats.bootstrap_shift_test(0.1, np.array([0.0, 0.1, 0.2]), math.log(1.1), 0.05, "x", 0.05, 0.1)
    assert t.p_harm == pytest.approx(sps.norm.sf(1.0)) and t.hi - t.lo == pytest.approx(2 * 1.6448536 * 0.05)


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    from scipy.signal import lfilter

    return np.asarray(lfilter([1.0], [1.0, -phi], rng.standard_normal(n)))


@pytest.mark.parametrize(("phi", "tolerance"), [(0.5, 0.1), (0.9, 0.2)])
def test_variance_inflation_of_an_ar1_series_is_near_theory(phi: float, tolerance: float) -> None:
    rng = np.random.default_rng(20)
    got = np.mean([stats.variance_inflation(ar1(rng, 20000, phi)) for _ in range(5)])
    assert got == pytest.approx((1 + phi) / (1 - phi), rel=tolerance)


def test_variance_inflation_keeps_a_weak_slowly_decaying_autocorrelation() -> None:
    # Latency whose AR(0.5) instance noise is 30 % of its variance: rho_k = 0.15 * 0.5^(k-1), under the
    # lag rule's 0.08 threshold from lag 2 on, yet the lags add up: 1 + 2 * 0.30 = 1.6. The window
    # that stopped at the rule's 2m kept 1.36 on average (split A/A harm tests rejected 7-9 %).
    rng = np.random.default_rng(25)
    got = [stats.variance_inflation(math.sqrt(0.3) * ar1(rng, 2000, 0.5) * math.sqrt(0.75)
                                    + math.sqrt(0.7) * rng.standard_normal(2000)) for _ in range(30)]
    assert float(np.mean(got)) == pytest.approx(1.6, rel=0.06)
    assert stats.min_dependent_window(2000) == 13


def test_two_arm_inflation_gives_back_what_a_shared_drift_cancels() -> None:
    # Both arms drift together (20 % of each arm's variance): each arm alone looks dependent, but
    # their difference is less variable than independent arms: the factor is ~0.8, not held at 1.
    rng = np.random.default_rng(26)
    n = 4000
    got = []
    for _ in range(20):
        drift = math.sqrt(0.2) * math.sqrt(2) * np.sin(2 * np.pi * (np.arange(n) / n + rng.random()))
        p, c = drift + math.sqrt(0.8) * rng.standard_normal(n), drift + math.sqrt(0.8) * rng.standard_normal(n)
        got.append(stats.two_arm_inflation_df(-p / n, c / n))
    vifs = np.array([g[0] for g in got])
    assert float(vifs.mean()) == pytest.approx(0.8, abs=0.06)
    assert all(10 < df < math.inf for _, df in got)  # a short window: many degrees of freedom
    # No drift, no autocorrelation: exactly the independent variance.
    assert stats.two_arm_inflation_df(-rng.standard_normal(n) / n, rng.standard_normal(n) / n) == (1.0, math.inf)


def test_variance_inflation_is_exactly_one_on_independent_data() -> None:
    rng = np.random.default_rng(21)
    for n in (100, 2000, 20000):
        assert stats.variance_inflation(rng.standard_normal(n)) == 1.0
        assert stats.variance_inflation(rng.random(n) < 0.01) == 1.0
    assert stats.variance_inflation(np.ones(500)) == 1.0
    assert stats.variance_inflation(np.arange(10.0)) == 1.0  # too short to say


def test_cluster_design_effect_known_answers() -> None:
    x = np.tile([0.0, 1.0], 50)
    assert stats.cluster_design_effect(x, np.arange(100)) == 1.0  # every row its own cluster
    # 10 clusters of 10 identical values: the design effect is the cluster size (times G/(G-1)).
    y = np.repeat(np.tile([0.0, 1.0], 5), 10)
    assert stats.cluster_design_effect(y, np.repeat(np.arange(10), 10)) == pytest.approx(10 * 10 / 9)
    assert math.isnan(stats.cluster_design_effect(y, np.zeros(100)))  # one cluster: no spread to estimate


def test_rank_tests_widen_with_autocorrelation_and_not_without() -> None:
    rng = np.random.default_rng(22)
    p = 40 * np.exp(0.3 * rng.standard_normal(3000))
    c = p * np.exp(0.3 * np.sqrt(1 - 0.81) * ar1(rng, 3000, 0.9))
    dep = stats.wilcoxon_log_ratio(p, c, math.log(1.1))
    order = rng.permutation(3000)
    ind = stats.wilcoxon_log_ratio(p[order], c[order], math.log(1.1))
    assert "autocorrelation" in dep.test and "autocorrelation" not in ind.test
    assert dep.hi - dep.lo > 2 * (ind.hi - ind.lo)
    assert dep.p_ni > ind.p_ni
    split_dep = stats.mann_whitney_log_shift(p, c, math.log(1.1))
    assert "autocorrelation" in split_dep.test


def test_quantile_variance_inflation_follows_the_indicators() -> None:
    rng = np.random.default_rng(23)
    p = 40 * np.exp(0.5 * rng.standard_normal(5000))
    c = 40 * np.exp(0.5 * np.sqrt(1 - 0.25) * ar1(rng, 5000, 0.5))
    ps = np.array([0.5, 0.95])
    unpaired = stats.quantile_variance_inflation(p, c, ps, paired=False)
    assert np.all(unpaired > 1.1) and np.all(unpaired < 3.0)  # only the candidate arm is autocorrelated
    np.testing.assert_array_equal(stats.quantile_variance_inflation(p, rng.permutation(c), ps, paired=False),
                                  np.ones(2))


def test_bootstrap_size_caps_large_samples() -> None:
    assert stats.bootstrap_size(1000, 2000) == 1000
    assert stats.bootstrap_size(1000, 20000) == 200
    assert stats.bootstrap_size(300, 10**7) == 200
    assert stats.bootstrap_size(150, 10) == 150


def test_two_arm_inflation_cancels_a_shared_drift_and_keeps_an_arms_own() -> None:
    rng = np.random.default_rng(24)
    n = 4000
    drift = np.sin(np.linspace(0, 4 * np.pi, n))
    p, c = drift + rng.standard_normal(n), drift + rng.standard_normal(n)
    # Each arm alone looks strongly autocorrelated; their difference of means does not.
    assert stats.variance_inflation(p) > 5
    assert stats.two_arm_inflation(-p / n, c / n) < 1.5
    own = ar1(rng, n, 0.8)
    vif, df = stats.two_arm_inflation_df(-rng.standard_normal(n) / n, own / n)
    assert 3 < vif < 7 and 10 < df < math.inf  # (1 + 0.8) / (1 - 0.8) = 9 on one arm of two: ~5
    assert stats.two_arm_inflation_df(-rng.standard_normal(n) / n, rng.standard_normal(n) / n) == (1.0, math.inf)


def test_quantile_se_df_and_t_reference() -> None:
    assert stats.quantile_se_df(10_000, 0.5) == pytest.approx(50.0)  # sqrt(n p (1 - p))
    assert stats.quantile_se_df(2000, 0.99) == pytest.approx(20.0)  # requests beyond p99
    assert stats.quantile_se_df(100, 0.99) == 3.0
    assert stats.quantile_se_df(10_000, 0.5, 50.0) == pytest.approx(25.0)
    normal = stats.bootstrap_shift_test(0.1, np.zeros(2), 0.2, 0.05, "x", se=0.03)
    student = stats.bootstrap_shift_test(0.1, np.zeros(2), 0.2, 0.05, "x", se=0.03, df=5)
    assert student.p_harm > normal.p_harm and student.p_harm == pytest.approx(sps.t.sf(0.1 / 0.03, 5))
    assert student.hi - student.lo > normal.hi - normal.lo
    assert stats.inflation_df(3000, 0) == math.inf and stats.inflation_df(3000, 30) == 150.0
