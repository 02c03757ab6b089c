"""Anytime-valid monitoring: a verdict recomputed at every look of a live canary without inflating
false FAILs (reference/statistics.md: peeking a 5 % test at 50 looks gave 36 % false positives).

Each harm test is a nonnegative martingale under "the candidate is no worse" (a mixture likelihood
ratio Λ), so by Ville's inequality P(Λ ever ≥ 1/α) ≤ α. The anytime p-value min(1, 1/Λ) is kept as a
running minimum across looks in `SequentialState`, so it is valid at whatever look the gate stops.
Holm across these p-values keeps the family-wise false-FAIL rate ≤ α at any stopping time.

- Log latency (bulk): mSPRT with a normal mixture on the mean log ratio (Johari et al.), one-sided
  (half-normal mixing), plug-in variance.
- Tail quantiles: the share of requests over a threshold pre-registered at the first look
  (primary's quantile then): paired -> Beta mixture on discordant pairs, split -> odds-ratio mixture.
- Error rates: paired -> Beta mixture on discordant pairs (sequential McNemar); split -> odds-ratio
  mixture over the errors of each look's new traffic; mismatch rate -> Beta mixture vs the budget.
- Dependence: variances are multiplied, and counts divided, by the data's variance inflation (its
  autocorrelation in time, or clustering by client on sticky split traffic), as the fixed-sample
  tests do (analyzers/stats.py). The martingale is only valid on a variance scale that does not
  shrink between looks, and a lag-window estimate on a short series is biased low (AR(0.9) log
  latency, true factor ≈ 12: median 2 at 40 requests, 9 at 200), so the state keeps the running
  maximum of each test's inflation and a harm test counts no evidence before `MIN_N_DEPENDENCE`
  requests per arm (skipping looks keeps Ville's bound: it is a subset of the stopping times).
  Split counts keep their raw log likelihood ratios and divide the sum by that running maximum.
- Non-inferiority (PASS) at look k uses the fixed-sample tests at alpha/(k(k+1)) (sums to alpha
  over any number of looks), except the bulk, whose mSPRT is itself anytime-valid.

Samples handed to judge() at each look must be cumulative (everything so far), not a window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special
from scipy.stats import norm

from analyzers.stats import cluster_design_effect, log_latency, two_arm_inflation, variance_inflation
from shadow.errors import ShadowError

# Mixing sd of the normal mSPRT on the log scale: tuned to effects around ±10 %.
DEFAULT_TAU = 0.10
# Odds ratios mixed (equal weights) for split-traffic counts: errors or tail exceedances.
ODDS_RATIO_GRID = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# Requests per arm before a dependence-adjusted harm test may count evidence: below it the variance
# inflation of strongly autocorrelated traffic is not estimable (bench target 10 false-FAILed 20 %
# of A/A canaries at the first look of 40 requests, AR(0.9) latency estimated independent).
MIN_N_DEPENDENCE = 200


def log_mean_effect(lp: np.ndarray, lc: np.ndarray, *, paired: bool, keys_p: np.ndarray | None = None,
                    keys_c: np.ndarray | None = None) -> tuple[float, float]:
    """Mean log ratio estimate and its variance: per request (paired), per arm, or per client (sticky)."""
    estimate, var, inflation = log_mean_effect_parts(lp, lc, paired=paired, keys_p=keys_p, keys_c=keys_c)
    return estimate, var * inflation


def log_mean_effect_parts(lp: np.ndarray, lc: np.ndarray, *, paired: bool, keys_p: np.ndarray | None = None,
                          keys_c: np.ndarray | None = None) -> tuple[float, float, float]:
    """`log_mean_effect` as (estimate, variance under independence in time, its variance inflation),
    so that a sequential test can hold the inflation non-decreasing across looks."""
    llp, llc = log_latency(lp), log_latency(lc)
    if paired:
        d = llc - llp
        if d.size < 2:
            return float(d.mean()) if d.size else 0.0, math.inf, 1.0
        return float(d.mean()), float(d.var(ddof=1) / d.size), variance_inflation(d)
    inflation = 1.0
    if keys_p is not None and keys_c is not None:
        llp, llc = _cluster_means(llp, keys_p), _cluster_means(llc, keys_c)
    elif llp.size >= 2 and llc.size >= 2:
        inflation = two_arm_inflation(-llp / llp.size, llc / llc.size)
    if llp.size < 2 or llc.size < 2:
        return 0.0, math.inf, 1.0
    return float(llc.mean() - llp.mean()), float(llc.var(ddof=1) / llc.size + llp.var(ddof=1) / llp.size), inflation


def count_design_effect(flags: np.ndarray, clients: np.ndarray | None) -> float:
    """How many requests make one independent event: the cluster design effect with client codes
    (sticky split traffic), else the variance inflation of the flags in time order."""
    if clients is not None:
        d = cluster_design_effect(np.asarray(flags, dtype=float), clients)
        return 1.0 if math.isnan(d) else d
    return variance_inflation(np.asarray(flags, dtype=float))


def cluster_share_effect(over_p: np.ndarray, over_c: np.ndarray, keys_p: np.ndarray,
                         keys_c: np.ndarray) -> tuple[float, float]:
    """Difference of per-client exceedance shares (candidate - primary) and its variance."""
    sp = _cluster_means(over_p.astype(float), keys_p)
    sc = _cluster_means(over_c.astype(float), keys_c)
    if sp.size < 2 or sc.size < 2:
        return 0.0, math.inf
    return float(sc.mean() - sp.mean()), float(sc.var(ddof=1) / sc.size + sp.var(ddof=1) / sp.size)


def _cluster_means(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(np.asarray(keys), return_inverse=True)
    return np.bincount(inverse, weights=values) / np.bincount(inverse)


def log_msprt_one_sided(estimate: float, var: float, theta0: float, tau: float, upper: bool) -> float:
    """log Λ of the normal-mixture SPRT of H0 θ = θ0 against θ > θ0 (upper) or θ < θ0, mixing with a
    half-normal(τ) on the alternative side. Uses the Gaussian information I = 1/var."""
    if not math.isfinite(var) or var <= 0:
        return 0.0
    info = 1.0 / var
    shifted = info * (estimate - theta0)  # the score
    a = info + 1.0 / tau**2
    log_two_sided = -0.5 * math.log1p(info * tau**2) + shifted**2 / (2 * a)
    side = shifted / math.sqrt(a) if upper else -shifted / math.sqrt(a)
    return math.log(2.0) + float(norm.logcdf(side)) + log_two_sided


def log_beta_mixture_discordant(b: float, c: float) -> float:
    """log Λ for discordant pairs: H0 P(candidate-only | discordant) = 1/2 against > 1/2, uniform mixing
    on (1/2, 1). Λ = 2^(m+1) B(b+1, c+1) P(Beta(b+1, c+1) > 1/2)."""
    m = b + c
    if m <= 0:
        return 0.0
    tail = special.betainc(b + 1, c + 1, 0.5)  # P(Beta <= 1/2)
    upper = 1.0 - tail
    if upper <= 0:
        return -math.inf
    return (m + 1) * math.log(2.0) + float(special.betaln(b + 1, c + 1)) + math.log(upper)


def log_beta_mixture_budget(x: int, n: int, budget: float) -> float:
    """log Λ for x events in n against H0 rate = budget vs rate > budget, uniform mixing on (budget, 1)."""
    if n == 0:
        return 0.0
    upper = float(special.betaincc(x + 1, n - x + 1, budget))  # P(Beta(x+1, n-x+1) > budget)
    if upper <= 0:
        return -math.inf
    log_null = x * math.log(budget) + (n - x) * math.log1p(-budget)
    return float(special.betaln(x + 1, n - x + 1)) + math.log(upper) - math.log1p(-budget) - log_null


@dataclass
class _Counts:
    x_c: int = 0
    n_c: int = 0
    x_p: int = 0
    n_p: int = 0
    log_lr: list[float] = field(default_factory=lambda: [0.0] * len(ODDS_RATIO_GRID))


@dataclass
class SequentialState:
    """What repeated looks must remember: look count, running-minimum anytime p-values, pre-registered
    thresholds and per-look count increments. Serialisable with to_dict()/from_dict()."""

    tau: float = DEFAULT_TAU
    looks: int = 0
    min_p: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, _Counts] = field(default_factory=dict)
    inflation: dict[str, float] = field(default_factory=dict)  # running maximum per test

    def start_look(self) -> None:
        self.looks += 1

    def ni_alpha(self, alpha: float) -> float:
        k = max(self.looks, 1)
        return alpha / (k * (k + 1))

    def threshold(self, key: str, value: float) -> float:
        return self.thresholds.setdefault(key, value)

    def _running_min(self, key: str, log_lr: float) -> float:
        p = 1.0 if log_lr <= 0 else math.exp(-log_lr)
        p = min(p, self.min_p.get(key, 1.0))
        self.min_p[key] = p
        return p

    def _inflation(self, key: str, value: float) -> float:
        """The running maximum of a test's variance inflation: the martingale's scale never shrinks."""
        top = max(value, self.inflation.get(key, 1.0))
        self.inflation[key] = top
        return top

    def _harm(self, key: str, log_lr: float, n: int | None) -> float:
        """A harm test's anytime p-value; before `MIN_N_DEPENDENCE` requests per arm (n, when the test
        is dependence-adjusted) the look counts no evidence."""
        if n is not None and n < MIN_N_DEPENDENCE:
            return self.min_p.get(key + "#harm", 1.0)
        return self._running_min(key + "#harm", log_lr)

    def gaussian_harm(self, key: str, estimate: float, var: float, inflation: float = 1.0,
                      n: int | None = None) -> float:
        """var: the estimate's variance under independence, multiplied by the running maximum of
        inflation. n: requests per arm (smaller arm) when inflation was estimated from the data."""
        scale = self._inflation(key + "#harm", inflation)
        return self._harm(key, log_msprt_one_sided(estimate, var * scale, 0.0, self.tau, upper=True), n)

    def gaussian_ni(self, key: str, estimate: float, var: float, log_margin: float,
                    inflation: float = 1.0) -> float:
        scale = self._inflation(key + "#harm", inflation)
        return self._running_min(key + "#ni", log_msprt_one_sided(estimate, var * scale, log_margin, self.tau,
                                                                  upper=False))

    def discordant_harm(self, key: str, b: int, c: int, design: float = 1.0, n: int | None = None) -> float:
        """design: counts are divided by its running maximum (a burst of correlated discordant pairs
        is fewer events). n: pairs so far when design was estimated from the data."""
        d = self._inflation(key + "#harm", design)
        return self._harm(key, log_beta_mixture_discordant(b / d, c / d), n)

    def budget_harm(self, key: str, x: int, n: int, budget: float) -> float:
        return self._running_min(key + "#harm", log_beta_mixture_budget(x, n, budget))

    def split_count_harm(self, key: str, x_c: int, n_c: int, x_p: int, n_p: int, design: float = 1.0,
                         n: int | None = None) -> float:
        """Odds-ratio mixture over each look's new traffic: given that e events happened in the new
        requests, under H0 each is the candidate's with probability r = new candidate share.
        design: the summed log likelihood ratio is divided by its running maximum (Rao-Scott: events
        that come in bursts or from one client count as fewer independent events). n: requests per
        arm (smaller arm) when design was estimated from the data."""
        st = self.counts.setdefault(key, _Counts())
        dxc, dnc, dxp, dnp = x_c - st.x_c, n_c - st.n_c, x_p - st.x_p, n_p - st.n_p
        if min(dxc, dnc, dxp, dnp) < 0:
            raise ShadowError(f"{key}: sequential samples must be cumulative, but counts went down "
                              f"between looks")
        if dnc > 0 and dnp > 0 and dxc + dxp > 0:
            r = dnc / (dnc + dnp)
            for i, psi in enumerate(ODDS_RATIO_GRID):
                pi = r * psi / (1.0 - r + r * psi)
                st.log_lr[i] += dxc * math.log(pi / r) + dxp * math.log((1.0 - pi) / (1.0 - r))
        st.x_c, st.n_c, st.x_p, st.n_p = x_c, n_c, x_p, n_p
        lr = np.array(st.log_lr) / self._inflation(key + "#harm", design)
        top = float(lr.max())
        log_mix = top + math.log(float(np.mean(np.exp(lr - top))))
        return self._harm(key, log_mix, n)

    def to_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "looks": self.looks, "min_p": dict(self.min_p),
                "thresholds": dict(self.thresholds), "inflation": dict(self.inflation),
                "counts": {k: {"x_c": v.x_c, "n_c": v.n_c, "x_p": v.x_p, "n_p": v.n_p, "log_lr": list(v.log_lr)}
                           for k, v in self.counts.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SequentialState:
        try:
            counts = {k: _Counts(int(v["x_c"]), int(v["n_c"]), int(v["x_p"]), int(v["n_p"]),
                                 [float(x) for x in v["log_lr"]]) for k, v in d.get("counts", {}).items()}
            return cls(tau=float(d.get("tau", DEFAULT_TAU)), looks=int(d.get("looks", 0)),
                       min_p={k: float(v) for k, v in d.get("min_p", {}).items()},
                       thresholds={k: float(v) for k, v in d.get("thresholds", {}).items()}, counts=counts,
                       inflation={k: float(v) for k, v in d.get("inflation", {}).items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise ShadowError(f"sequential state is malformed: {exc}") from None
