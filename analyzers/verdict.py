"""The cutover verdict: per-endpoint guardrails -> classes -> one overall answer.

Pure functions over numpy arrays; no I/O. The pipeline builds one `EndpointSample` per endpoint
(and per candidate service) from the capture and calls `judge`; the report and `shadow gate`
render the returned `Verdict`.

Rules (reference/statistics.md):
- Each guardrail is a non-inferiority question. PASS needs H0 "the candidate is worse than the
  primary by more than the margin" rejected at level alpha (one-sided).
- FAIL needs a significant harm test (H0 "the candidate is no worse") after Holm's correction
  across every harm test of the run, non-inferiority not shown, and (latency) an estimated delta
  of at least the absolute floor: a delta under the floor never fails.
- Otherwise INCONCLUSIVE, with the per-arm sample size still needed; below the policy's minimum
  sample size INSUFFICIENT_DATA. Too little data never passes.
- Overall: PASS only when every guardrail passes (intersection-union), FAIL when any fails,
  otherwise INCONCLUSIVE. No guardrail at all is INCONCLUSIVE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from scipy.stats import norm

from analyzers import stats
from analyzers.policy import QUANTILE_NAMES, Margins, Policy
from analyzers.stats import holm
from shadow.errors import ShadowError

Metric = Literal["latency_p50", "latency_p95", "latency_p99", "latency_bulk", "error_rate",
                 "transport_error_rate", "mismatch_rate"]
# Other gated quantiles produce metrics named the same way ("latency_p90", "latency_p999").
Cls = Literal["PASS", "FAIL", "INCONCLUSIVE", "INSUFFICIENT_DATA"]
Overall = Literal["PASS", "FAIL", "INCONCLUSIVE"]

EXIT_CODES: dict[str, int] = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}


@dataclass
class EndpointSample:
    """Everything the statistics need about one endpoint (for one candidate service).

    paired=True: mirrored traffic, row i of the primary arrays and row i of the candidate arrays
    are the same client request (equal lengths). paired=False: split traffic, independent arms.
    Latencies in milliseconds; a request that got no response (transport error) may carry NaN
    latency: it is excluded from the latency guardrails and counted by the transport one.
    """

    endpoint: str
    paired: bool
    primary_latency_ms: np.ndarray
    candidate_latency_ms: np.ndarray
    primary_5xx: np.ndarray
    candidate_5xx: np.ndarray
    primary_transport_error: np.ndarray
    candidate_transport_error: np.ndarray
    primary_client_key: np.ndarray | None = None
    candidate_client_key: np.ndarray | None = None
    mismatch: np.ndarray | None = None  # paired only: the pair differs beyond noise
    sticky: bool = False  # split traffic assigned per client_key: analyse per client (cluster bootstrap)
    candidate: str | None = None  # candidate service name, when a route has several
    # The primary's answers were replayed from a recording (`shadow replay --primary recorded`): its
    # latencies were measured elsewhere and are not comparable with the candidate's live ones.
    primary_recorded: bool = False
    # paired only: the pairs the mismatch rate is about (both answered, same status); None = all
    mismatch_compared: np.ndarray | None = None
    # paired only: pairs whose only real differences are in unproven fields (volatile-looking, no noise
    # evidence on the endpoint): they can neither fail nor pass the mismatch guardrail
    mismatch_unproven: np.ndarray | None = None
    unproven_fields: tuple[str, ...] = ()  # those fields' pointer templates, for the reason
    unproven_command: str | None = None  # the one command that settles them (e.g. shadow probe CAPTURE)

    @property
    def n_primary(self) -> int:
        return len(self.primary_latency_ms)

    @property
    def n_candidate(self) -> int:
        return len(self.candidate_latency_ms)


@dataclass
class GuardrailResult:
    endpoint: str
    metric: str  # one of Metric
    estimate: float | None  # latency: ratio candidate/primary; rates: difference (candidate - primary) or rate
    interval: tuple[float, float] | None  # two-sided (1 - 2*alpha) interval; its upper end is the NI bound
    margin: float  # the margin in the estimate's units (ratio, or rate difference as a fraction)
    n_primary: int
    n_candidate: int
    test: str  # name of the test(s) used
    paired: bool
    p_value: float | None  # non-inferiority p-value (small = within margin)
    p_harm: float | None  # harm p-value before Holm (small = candidate worse)
    cls: Cls
    reason: str  # one sentence a person understands
    needed_n: int | None = None  # per-arm sample size still needed when INCONCLUSIVE / INSUFFICIENT_DATA
    p_harm_adjusted: float | None = None  # after Holm across all harm tests of the verdict
    unit: str = "ratio"  # "ratio" | "difference" | "rate"
    primary_value: float | None = None  # e.g. primary p95 in ms, primary error rate
    candidate_value: float | None = None
    candidate: str | None = None
    # Sticky split traffic: distinct clients (the unit of analysis) per arm; None otherwise.
    clients_primary: int | None = None
    clients_candidate: int | None = None
    # Internal to judge(): conditions deciding FAIL once Holm has run; not exported.
    ni_shown: bool = field(default=False, repr=False)
    practically_harmful: bool = field(default=True, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "candidate": self.candidate,
            "metric": self.metric,
            "class": self.cls,
            "estimate": _num(self.estimate),
            "interval": None if self.interval is None else [_num(self.interval[0]), _num(self.interval[1])],
            "margin": _num(self.margin),
            "unit": self.unit,
            "primary_value": _num(self.primary_value),
            "candidate_value": _num(self.candidate_value),
            "n_primary": self.n_primary,
            "n_candidate": self.n_candidate,
            "test": self.test,
            "paired": self.paired,
            "p_value": _num(self.p_value),
            "p_harm": _num(self.p_harm),
            "p_harm_adjusted": _num(self.p_harm_adjusted),
            "needed_n": self.needed_n,
            "clients_primary": self.clients_primary,
            "clients_candidate": self.clients_candidate,
            "reason": self.reason,
        }


@dataclass
class EndpointSummary:
    endpoint: str
    candidate: str | None
    paired: bool
    sticky: bool
    n_primary: int
    n_candidate: int
    cls: Cls  # worst class among the endpoint's guardrails (FAIL > INSUFFICIENT_DATA > INCONCLUSIVE > PASS)

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "candidate": self.candidate, "paired": self.paired,
                "sticky": self.sticky, "n_primary": self.n_primary, "n_candidate": self.n_candidate,
                "class": self.cls}


@dataclass
class Verdict:
    overall: Overall
    score: float  # 0-100, display only: share of traffic on endpoints proven non-inferior
    results: list[GuardrailResult]
    endpoints: list[EndpointSummary]
    policy: dict[str, Any]
    generated_at: str  # ISO 8601 UTC
    reason: str = ""  # one sentence for the whole verdict
    sequential: bool = False
    looks: int | None = None  # sequential mode: how many looks the state has seen
    warnings: list[str] = field(default_factory=list)  # what was not judged, and why

    def exit_code(self) -> int:
        return EXIT_CODES[self.overall]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict. Top-level "verdict" is lowercase for Argo Rollouts / Flagger web metrics."""
        return {
            "verdict": self.overall.lower(),
            "overall": self.overall,
            "exit_code": self.exit_code(),
            "score": round(self.score, 1),
            "reason": self.reason,
            "generated_at": self.generated_at,
            "sequential": self.sequential,
            "looks": self.looks,
            "warnings": list(self.warnings),
            "counts": {c: sum(r.cls == c for r in self.results)
                       for c in ("PASS", "FAIL", "INCONCLUSIVE", "INSUFFICIENT_DATA")},
            "endpoints": [e.to_json() for e in self.endpoints],
            "results": [r.to_json() for r in self.results],
            "policy": self.policy,
        }


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


_SEVERITY: dict[str, int] = {"PASS": 0, "INCONCLUSIVE": 1, "INSUFFICIENT_DATA": 2, "FAIL": 3}


def judge(samples: Sequence[EndpointSample], policy: Policy, *, sequential_state: Any = None,
          rng_seed: int = 0, now: datetime | None = None) -> Verdict:
    """Judge every endpoint's guardrails and combine them into one verdict.

    sequential_state: an `analyzers.sequential.SequentialState` carried from look to look when the
    verdict is recomputed repeatedly on a growing capture (policy.sequential). Samples must then be
    cumulative (everything captured so far), not a sliding window.
    """
    if policy.sequential:
        if sequential_state is None:
            # A single look: the anytime-valid tests still apply; the caller keeps no state.
            from analyzers.sequential import SequentialState

            sequential_state = SequentialState()
        sequential_state.start_look()
    # Intersection-union: PASS needs every guardrail, so each is sized for power 1 - beta/m.
    n_guardrails = sum(guardrail_count(s, policy.margins_for(s.endpoint), policy) for s in samples)
    power = 1.0 - (1.0 - policy.power) / max(n_guardrails, 1)
    results: list[GuardrailResult] = []
    for i, sample in enumerate(samples):
        # One generator per endpoint, so an endpoint's bootstrap does not depend on the others.
        rng = np.random.default_rng([rng_seed, i])
        results.extend(evaluate_endpoint(sample, policy, rng=rng, power=power,
                                         sequential_state=sequential_state))

    # FAIL flags: Holm across every harm test of the run.
    harm_idx = [i for i, r in enumerate(results) if r.p_harm is not None]
    adjusted = holm(np.array([results[i].p_harm for i in harm_idx], dtype=float))
    for i, p_adj in zip(harm_idx, adjusted, strict=True):
        r = results[i]
        r.p_harm_adjusted = float(p_adj)
        if p_adj < policy.alpha and not r.ni_shown and r.practically_harmful:
            r.cls = "FAIL"
            r.needed_n = None
            r.reason = _fail_reason(r, float(p_adj))

    return _combine(samples, results, policy, sequential_state, now)


_METRIC_WORDS = {"latency_bulk": "typical latency", "error_rate": "the 5xx rate",
                 "transport_error_rate": "the transport-error rate", "mismatch_rate": "the body-mismatch rate"}


def metric_words(metric: str) -> str:
    """A metric name as words: latency_p95 -> "p95 latency"."""
    if metric in _METRIC_WORDS:
        return _METRIC_WORDS[metric]
    return f"{metric.removeprefix('latency_')} latency" if metric.startswith("latency_") else metric


def _fail_reason(r: GuardrailResult, p_adj: float) -> str:
    versus = "the budget" if r.unit == "rate" else "the primary"
    return (f"{_cap(metric_words(r.metric))} is significantly worse than {versus}: {describe_estimate(r)} "
            f"(harm p = {p_adj:.2g} after Holm), and it is not shown to be within {_margin_text(r)}.")


def _margin_text(r: GuardrailResult) -> str:
    if r.unit == "ratio":
        return f"×{r.margin:.2f}"
    return f"{r.margin * 100:+.2f} pp" if r.unit == "difference" else f"{r.margin * 100:.2f} %"


def _combine(samples: Sequence[EndpointSample], results: list[GuardrailResult], policy: Policy,
             sequential_state: Any, now: datetime | None) -> Verdict:
    endpoints: list[EndpointSummary] = []
    total_traffic = 0
    proven_traffic = 0
    for s in samples:
        own = [r for r in results if r.endpoint == s.endpoint and r.candidate == s.candidate]
        worst: Cls = max((r.cls for r in own), key=lambda c: _SEVERITY[c], default="INSUFFICIENT_DATA")
        endpoints.append(EndpointSummary(s.endpoint, s.candidate, s.paired, s.sticky, s.n_primary,
                                         s.n_candidate, worst))
        traffic = s.n_primary + (0 if s.paired else s.n_candidate)
        total_traffic += traffic
        if own and worst == "PASS":
            proven_traffic += traffic
    score = 100.0 * proven_traffic / total_traffic if total_traffic else 0.0

    n_fail = sum(r.cls == "FAIL" for r in results)
    overall: Overall
    if n_fail:
        overall = "FAIL"
        reason = f"{n_fail} guardrail(s) failed: the candidate is significantly worse beyond its margin."
    elif results and all(r.cls == "PASS" for r in results):
        overall = "PASS"
        reason = f"All {len(results)} guardrails on {len(samples)} endpoint(s) are proven within their margins."
    else:
        overall = "INCONCLUSIVE"
        if not results:
            reason = "No endpoint had any data to judge, so nothing is proven."
        else:
            open_ = [r for r in results if r.cls != "PASS"]
            needed = [r.needed_n for r in open_ if r.needed_n is not None]
            more = f"; about {max(needed):,} requests per arm are needed" if needed else ""
            reason = (f"{len(open_)} of {len(results)} guardrails are not yet proven within their margins "
                      f"and none failed{more}.")
    warnings = verdict_warnings(samples, results, policy)
    if warnings:
        reason = " ".join([reason, *warnings])
    looks = getattr(sequential_state, "looks", None)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Verdict(overall=overall, score=score, results=results, endpoints=endpoints,
                   policy=policy.to_dict(), generated_at=stamp, reason=reason,
                   sequential=policy.sequential, looks=looks, warnings=warnings)


CLIENT_KEY_HINT = ("if many users share one address (a NAT, a corporate proxy), set shadow.split.clientKey "
                   "to a session cookie or header so that each user is a client")


def latency_comparable(sample: EndpointSample, policy: Policy) -> bool:
    """Whether the latency guardrails judge this sample: not when the primary's answers were replayed
    from a recording, unless the policy opts in (compare_recorded_latency)."""
    return not sample.primary_recorded or policy.compare_recorded_latency


def verdict_warnings(samples: Sequence[EndpointSample], results: Sequence[GuardrailResult],
                     policy: Policy) -> list[str]:
    """Sentences about what the verdict could not judge: latency against recorded answers, sticky
    split traffic from too few distinct clients."""
    out = []
    recorded = [s.endpoint for s in samples if not latency_comparable(s, policy)]
    if recorded:
        out.append(f"Latency was not judged on {len(recorded)} endpoint(s) replayed against recorded answers "
                   "(--primary recorded): recorded latencies were measured elsewhere, at another time, and are "
                   "not comparable with live ones (opt in with the policy key compare_recorded_latency: true "
                   "or shadow gate --compare-recorded-latency).")
    few: dict[tuple[str, str | None], int] = {}
    for r in results:
        if r.clients_primary is not None and r.clients_candidate is not None and r.reason.startswith("Only") \
                and "distinct client" in r.reason:
            few[(r.endpoint, r.candidate)] = min(r.clients_primary, r.clients_candidate)
    if few:
        seen = ", ".join(f"{e}: {k}" for (e, _), k in list(few.items())[:5])
        out.append(f"Sticky split traffic on {len(few)} endpoint(s) came from too few distinct clients to judge "
                   f"per client (clients per arm, fewest: {seen}); {CLIENT_KEY_HINT}.")
    return out


# ------------------------------------------------------------------------------ per-endpoint guardrails


def guardrail_count(sample: EndpointSample, margins: Margins, policy: Policy) -> int:
    """How many guardrails `evaluate_endpoint` produces for this sample (for power 1 - beta/m)."""
    n = int(margins.gate_errors) + int(margins.gate_transport_errors)
    if latency_comparable(sample, policy):
        n += len(margins.gated_quantiles) + int(margins.gate_bulk)
    n += int(margins.gate_mismatch and sample.paired and sample.mismatch is not None)
    return n


def _check_sample(s: EndpointSample) -> None:
    def fail(msg: str) -> ShadowError:
        return ShadowError(f"endpoint {s.endpoint!r}: {msg}")

    np_, nc = s.n_primary, s.n_candidate
    for name, arr, n in (("primary_5xx", s.primary_5xx, np_), ("primary_transport_error",
                         s.primary_transport_error, np_), ("candidate_5xx", s.candidate_5xx, nc),
                         ("candidate_transport_error", s.candidate_transport_error, nc)):
        if len(arr) != n:
            raise fail(f"{name} has {len(arr)} rows but the latency array has {n}")
    if s.paired and np_ != nc:
        raise fail(f"paired sample with {np_} primary and {nc} candidate rows (must be equal)")
    if s.mismatch is not None and len(s.mismatch) != nc:
        raise fail(f"mismatch has {len(s.mismatch)} rows, expected {nc}")
    if s.mismatch_compared is not None and len(s.mismatch_compared) != nc:
        raise fail(f"mismatch_compared has {len(s.mismatch_compared)} rows, expected {nc}")
    if s.sticky and not s.paired and (s.primary_client_key is None or s.candidate_client_key is None):
        raise fail("sticky split traffic needs primary_client_key and candidate_client_key")
    for name, keys, n in (("primary_client_key", s.primary_client_key, np_),
                          ("candidate_client_key", s.candidate_client_key, nc)):
        if keys is not None and len(keys) != n:
            raise fail(f"{name} has {len(keys)} rows, expected {n}")


def _latency_arrays(s: EndpointSample) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Latencies usable for the latency guardrails: finite, and not a transport error. Paired samples
    keep only pairs where both sides are usable."""
    lp = np.asarray(s.primary_latency_ms, dtype=float)
    lc = np.asarray(s.candidate_latency_ms, dtype=float)
    ok_p = np.isfinite(lp) & ~np.asarray(s.primary_transport_error, dtype=bool)
    ok_c = np.isfinite(lc) & ~np.asarray(s.candidate_transport_error, dtype=bool)
    kp, kc = s.primary_client_key, s.candidate_client_key
    if s.paired:
        ok = ok_p & ok_c
        return lp[ok], lc[ok], None, None
    if not (s.sticky and kp is not None and kc is not None):
        return lp[ok_p], lc[ok_c], None, None
    codes_p, codes_c = client_codes(kp, kc)
    return lp[ok_p], lc[ok_c], codes_p[ok_p], codes_c[ok_c]


def client_codes(primary_keys: np.ndarray, candidate_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer cluster ids for client keys of any type. A missing key (None/NaN) makes the request its
    own cluster: with no assignment unit known, it is treated as independent."""
    codes: dict[Any, int] = {}
    out = []
    for keys in (primary_keys, candidate_keys):
        arr = np.empty(len(keys), dtype=np.int64)
        for i, k in enumerate(keys.tolist() if isinstance(keys, np.ndarray) else list(keys)):
            if k is None or (isinstance(k, float) and math.isnan(k)):
                arr[i] = len(codes)
                codes[("__row__", len(codes))] = arr[i]
            else:
                arr[i] = codes.setdefault(k, len(codes))
        out.append(arr)
    return out[0], out[1]


def evaluate_endpoint(s: EndpointSample, policy: Policy, *, rng: np.random.Generator, power: float,
                      sequential_state: Any = None) -> list[GuardrailResult]:
    """All guardrails of one endpoint, classified PASS / INCONCLUSIVE / INSUFFICIENT_DATA.
    FAIL is decided later by judge(), after Holm across every harm test."""
    _check_sample(s)
    m = policy.margins_for(s.endpoint)
    ctx = _Ctx(s, m, policy, power, sequential_state)
    out: list[GuardrailResult] = []
    lp, lc, keys_p, keys_c = _latency_arrays(s)
    if latency_comparable(s, policy):
        if m.gate_bulk:
            out.append(ctx.bulk(lp, lc, keys_p, keys_c, rng))
        if m.gated_quantiles:
            out.extend(ctx.quantiles(lp, lc, keys_p, keys_c, rng))
    clients = (client_codes(s.primary_client_key, s.candidate_client_key)
               if s.sticky and not s.paired and s.primary_client_key is not None
               and s.candidate_client_key is not None else None)
    if m.gate_errors:
        out.append(ctx.rate("error_rate", "the 5xx rate", s.primary_5xx, s.candidate_5xx, m.error_rate_pp / 100,
                            m.error_rate_relative, clients))
    if m.gate_transport_errors:
        out.append(ctx.rate("transport_error_rate", "the transport-error rate", s.primary_transport_error,
                            s.candidate_transport_error, m.transport_error_pp / 100, m.transport_error_relative,
                            clients))
    if m.gate_mismatch and s.paired and s.mismatch is not None:
        out.append(ctx.mismatch(np.asarray(s.mismatch, dtype=bool)))
    return out


class _Ctx:
    """Per-endpoint evaluation: shared inputs and the classification rule."""

    def __init__(self, s: EndpointSample, m: Margins, policy: Policy, power: float, seq: Any) -> None:
        self.s, self.m, self.policy, self.power, self.seq = s, m, policy, power, seq
        self.alpha = policy.alpha
        # Sequential looks: fixed-sample non-inferiority tests spend alpha/(k(k+1)) at look k, which
        # sums to alpha over any number of looks (a false PASS stays <= alpha under peeking).
        self.alpha_ni = seq.ni_alpha(policy.alpha) if (policy.sequential and seq is not None) else policy.alpha

    def key(self, metric: str) -> str:
        return f"{self.s.candidate or ''}|{self.s.endpoint}|{metric}"

    def base(self, metric: str, n_p: int, n_c: int, test: str, margin: float, unit: str) -> GuardrailResult:
        return GuardrailResult(endpoint=self.s.endpoint, metric=metric, estimate=None, interval=None,
                               margin=margin, n_primary=n_p, n_candidate=n_c, test=test, paired=self.s.paired,
                               p_value=None, p_harm=None, cls="INSUFFICIENT_DATA", reason="", unit=unit,
                               candidate=self.s.candidate)

    def too_few(self, r: GuardrailResult, what: str, minimum: int) -> GuardrailResult:
        r.cls = "INSUFFICIENT_DATA"
        r.needed_n = minimum
        r.reason = (f"Only {min(r.n_primary, r.n_candidate):,} requests per arm (minimum {minimum:,} for "
                    f"{what}): too little data to judge, so this cannot pass.")
        return r

    def few_clients(self, r: GuardrailResult, units_p: int, units_c: int) -> bool:
        """Sticky split traffic: record the clients seen per arm; with fewer than min_clients the
        guardrail is INSUFFICIENT_DATA, with no interval and no tests (one client's requests are not
        independent evidence: an interval from them would show certainty that is not there)."""
        r.clients_primary, r.clients_candidate = units_p, units_c
        fewest = min(units_p, units_c)
        if fewest >= self.m.min_clients:
            return False
        r.cls, r.interval, r.needed_n = "INSUFFICIENT_DATA", None, None
        r.p_value = r.p_harm = None
        r.reason = (f"Only {fewest:,} distinct client{'' if fewest == 1 else 's'} seen in an arm ({units_p:,} primary, "
                    f"{units_c:,} candidate; minimum {self.m.min_clients:,}): sticky split traffic is judged per "
                    f"client, since one client's requests are not independent evidence, so this cannot pass; "
                    f"{CLIENT_KEY_HINT}.")
        return True

    # ---- latency: whole distribution
    def bulk(self, lp: np.ndarray, lc: np.ndarray, keys_p: np.ndarray | None, keys_c: np.ndarray | None,
             rng: np.random.Generator) -> GuardrailResult:
        s, m = self.s, self.m
        sticky = keys_p is not None and keys_c is not None
        units_p = len(np.unique(keys_p)) if keys_p is not None else lp.size
        units_c = len(np.unique(keys_c)) if keys_c is not None else lc.size
        r = self.base("latency_bulk", lp.size, lc.size, "", m.bulk_ratio, "ratio")
        minimum = m.min_samples
        if min(units_p, units_c) < 3:
            r.test = "none (no data)" if min(lp.size, lc.size) == 0 else "none"
            if sticky and min(lp.size, lc.size) > 0 and self.few_clients(r, units_p, units_c):
                return r
            return self.too_few(r, "the latency distribution", minimum)
        med_p = float(np.median(lp))
        margin = max(m.bulk_ratio, 1.0 + m.floor_ms / med_p) if med_p > 0 else m.bulk_ratio
        log_margin = math.log(margin)
        if sticky and self.few_clients(r, units_p, units_c):
            r.margin, r.primary_value, r.candidate_value = margin, med_p, float(np.median(lc))
            r.estimate = r.candidate_value / med_p if med_p > 0 else None
            r.test = "Mann-Whitney on per-client median log latency (sticky): not run"
            return r
        if s.paired:
            t = stats.wilcoxon_log_ratio(lp, lc, log_margin, self.alpha, rng)
        elif sticky:
            assert keys_p is not None and keys_c is not None
            t = stats.cluster_mann_whitney_log_shift(lp, lc, keys_p, keys_c, log_margin, self.alpha)
        else:
            t = stats.mann_whitney_log_shift(lp, lc, log_margin, self.alpha, rng)
        r.test, r.margin = t.test, margin
        r.estimate, r.interval = math.exp(t.estimate), (math.exp(t.lo), math.exp(t.hi))
        r.primary_value = med_p
        r.candidate_value = float(np.median(lc))
        r.p_value, r.p_harm = t.p_ni, t.p_harm
        r.practically_harmful = med_p * (r.estimate - 1.0) >= m.floor_ms
        if self.policy.sequential and self.seq is not None:
            self._sequential_bulk(r, lp, lc, keys_p, keys_c, log_margin)
        se = (t.hi - t.lo) / (2 * norm.ppf(1 - self.alpha)) if t.hi > t.lo else None
        enough = min(lp.size, lc.size) >= minimum
        # Sequential bulk: the mSPRT p-value is anytime-valid, so it is compared with alpha itself.
        level = self.alpha if (self.policy.sequential and self.seq is not None) else self.alpha_ni
        return self._classify(r, "typical latency (whole distribution)", enough, minimum,
                              t.estimate, log_margin, se, level)

    def _sequential_bulk(self, r: GuardrailResult, lp: np.ndarray, lc: np.ndarray, keys_p: np.ndarray | None,
                         keys_c: np.ndarray | None, log_margin: float) -> None:
        from analyzers.sequential import log_mean_effect_parts

        est, var, inflation = log_mean_effect_parts(lp, lc, paired=self.s.paired, keys_p=keys_p, keys_c=keys_c)
        key = self.key("latency_bulk")
        # Sticky split traffic is analysed per client (no time inflation): no burn-in needed.
        n = None if keys_p is not None and keys_c is not None else min(lp.size, lc.size)
        r.p_harm = self.seq.gaussian_harm(key, est, var, inflation, n)
        r.p_value = self.seq.gaussian_ni(key, est, var, log_margin, inflation)
        r.test = "mSPRT on mean log latency (anytime-valid)"

    # ---- latency: quantiles
    def quantiles(self, lp: np.ndarray, lc: np.ndarray, keys_p: np.ndarray | None, keys_c: np.ndarray | None,
                  rng: np.random.Generator) -> list[GuardrailResult]:
        s, m = self.s, self.m
        names = m.gated_quantiles
        results: list[GuardrailResult] = []
        eligible: list[tuple[str, float, GuardrailResult]] = []
        sticky = keys_p is not None and keys_c is not None
        design = "paired bootstrap" if s.paired else ("cluster bootstrap over client_key" if sticky
                                                      else "bootstrap")
        design = f"{design} (de-rounded)" if stats.latency_resolution(lp) else design
        for q in names:
            p = QUANTILE_NAMES[q]
            r = self.base(f"latency_{q}", lp.size, lc.size, f"{design} of the type-7 {q} ratio",
                          m.latency_ratio[q], "ratio")
            results.append(r)
            minimum = max(m.min_samples, math.ceil(m.min_tail_obs / (1.0 - p)))
            if min(lp.size, lc.size) < minimum:
                self.too_few(r, f"the {q}", minimum)
                continue
            eligible.append((q, p, r))
        if not eligible:
            return results
        ps = np.array([p for _, p, _ in eligible])
        # Ties at the capture's resolution (1 ms) are broken by uniform jitter within it (see dequantize).
        step = stats.latency_resolution(np.concatenate([lp, lc]))
        jp, jc = stats.dequantize(lp, rng, step), stats.dequantize(lc, rng, step)
        point, reps = stats.bootstrap_quantile_log_ratios(jp, jc, ps, paired=s.paired,
                                                          n_boot=stats.bootstrap_size(self.policy.n_boot, lp.size),
                                                          rng=rng, primary_keys=keys_p, candidate_keys=keys_c)
        ses = stats.quantile_log_ratio_se(reps, jp, jc, ps, paired=s.paired, clustered=sticky)
        harm_ses = stats.quantile_log_ratio_se(reps, jp, jc, ps, paired=s.paired, clustered=sticky, null=True)
        if not sticky:  # the cluster bootstrap already resamples whole clients
            inflation, inflation_dfs = stats.quantile_variance_inflation_df(jp, jc, ps, paired=s.paired)
            ses, harm_ses = ses * np.sqrt(inflation), harm_ses * np.sqrt(inflation)
        else:
            # The cluster bootstrap's SE rests on the clients: G - 1 degrees of freedom at most.
            clients = min(len(np.unique(keys_p)), len(np.unique(keys_c))) if keys_p is not None \
                and keys_c is not None else 2
            inflation, inflation_dfs = np.ones(ps.size), np.full(ps.size, float(max(clients - 1, 1)))
        n_units = min(lp.size, lc.size)
        units_p = len(np.unique(keys_p)) if keys_p is not None else 0
        units_c = len(np.unique(keys_c)) if keys_c is not None else 0
        qp = np.quantile(lp, ps)
        qc = np.quantile(lc, ps)
        for j, (q, _, r) in enumerate(eligible):
            r.test = stats.with_dependence(r.test, float(inflation[j]))
            if sticky and self.few_clients(r, units_p, units_c):
                r.primary_value, r.candidate_value = float(qp[j]), float(qc[j])
                r.estimate = r.candidate_value / r.primary_value if r.primary_value > 0 else None
                continue
            qpj = float(qp[j])
            margin = max(m.latency_ratio[q], 1.0 + m.floor_ms / qpj) if qpj > 0 else m.latency_ratio[q]
            log_margin = math.log(margin)
            df = stats.quantile_se_df(n_units, float(ps[j]), float(inflation_dfs[j]))
            t = stats.bootstrap_shift_test(float(point[j]), reps[:, j], log_margin, self.alpha, r.test,
                                           float(ses[j]), float(harm_ses[j]), df)
            r.margin = margin
            r.estimate, r.interval = math.exp(t.estimate), (math.exp(t.lo), math.exp(t.hi))
            r.primary_value, r.candidate_value = qpj, float(qc[j])
            r.p_value, r.p_harm = t.p_ni, t.p_harm
            r.practically_harmful = float(qc[j]) - qpj >= m.floor_ms
            if self.policy.sequential and self.seq is not None:
                self._sequential_tail(r, q, lp, lc, keys_p, keys_c)
            self._classify(r, f"{q} latency", True, 0, t.estimate, log_margin, t.se, self.alpha_ni)
        return results

    def _sequential_tail(self, r: GuardrailResult, q: str, lp: np.ndarray, lc: np.ndarray,
                         keys_p: np.ndarray | None, keys_c: np.ndarray | None) -> None:
        key = self.key(f"latency_{q}")
        # The threshold is pre-registered at the first look that can judge this quantile.
        threshold = self.seq.threshold(key, float(np.quantile(lp, QUANTILE_NAMES[q])))
        over_p, over_c = lp > threshold, lc > threshold
        if self.s.paired:
            b, c = int(np.sum(over_c & ~over_p)), int(np.sum(over_p & ~over_c))
            design = stats.variance_inflation(over_c.astype(float) - over_p.astype(float))
            r.p_harm = self.seq.discordant_harm(key, b, c, design, over_p.size)
        elif keys_p is not None and keys_c is not None:
            from analyzers.sequential import cluster_share_effect

            est, var = cluster_share_effect(over_p, over_c, keys_p, keys_c)
            r.p_harm = self.seq.gaussian_harm(key, est, var)
        else:
            design = max(stats.variance_inflation(over_p.astype(float)), stats.variance_inflation(over_c.astype(float)))
            r.p_harm = self.seq.split_count_harm(key, int(over_c.sum()), over_c.size, int(over_p.sum()),
                                                 over_p.size, design, min(over_p.size, over_c.size))
        r.test += f"; sequential harm: share over {threshold:.0f} ms (anytime-valid mixture)"

    # ---- error rates
    def rate(self, metric: str, what: str, prim: np.ndarray, cand: np.ndarray, absolute: float, relative: float,
             clients: tuple[np.ndarray, np.ndarray] | None = None) -> GuardrailResult:
        """An error-rate guardrail: candidate rate ≤ primary rate × (1 + relative) + absolute.
        clients: sticky split traffic's client codes per arm (errors analysed per client)."""
        s, m = self.s, self.m
        prim = np.asarray(prim, dtype=bool)
        cand = np.asarray(cand, dtype=bool)
        r = self.base(metric, prim.size, cand.size, "", absolute, "difference")
        if min(prim.size, cand.size) == 0:
            r.test = "none (no data)"
            return self.too_few(r, what, m.min_samples)
        margin = stats.error_margin(float(prim.mean()), absolute, relative)
        r.margin = margin
        if clients is not None:
            units_p, units_c = len(np.unique(clients[0])), len(np.unique(clients[1]))
            if self.few_clients(r, units_p, units_c):
                r.test = "per-client error rates (sticky): not run"
                r.primary_value, r.candidate_value = float(prim.mean()), float(cand.mean())
                r.estimate = r.candidate_value - r.primary_value
                return r
        t = (stats.paired_rate_test(prim, cand, absolute, self.alpha, relative) if s.paired
             else stats.unpaired_rate_test(prim, cand, absolute, self.alpha, relative,
                                           *(clients if clients is not None else (None, None))))
        r.test = t.test
        r.estimate, r.interval = t.estimate, (t.lo, t.hi)
        r.primary_value, r.candidate_value = t.primary_rate, t.candidate_rate
        r.p_value, r.p_harm = t.p_ni, t.p_harm
        r.practically_harmful = t.estimate > 0
        if self.policy.sequential and self.seq is not None:
            from analyzers.sequential import count_design_effect

            key = self.key(metric)
            if s.paired:
                d = stats.variance_inflation(cand.astype(float) - prim.astype(float))
                r.p_harm = self.seq.discordant_harm(key, int(np.sum(cand & ~prim)), int(np.sum(prim & ~cand)), d,
                                                    prim.size)
            else:
                d = max(count_design_effect(prim, None if clients is None else clients[0]),
                        count_design_effect(cand, None if clients is None else clients[1]))
                r.p_harm = self.seq.split_count_harm(key, int(cand.sum()), cand.size, int(prim.sum()), prim.size, d,
                                                     None if clients is not None else min(prim.size, cand.size))
            r.test += "; sequential harm: anytime-valid mixture"
        enough = min(prim.size, cand.size) >= m.min_samples
        needed = None
        if t.estimate < margin and t.se:
            needed = stats.needed_n_from_se(min(prim.size, cand.size), t.se, t.estimate, margin, self.alpha_ni,
                                            self.power)
            if needed is not None:
                needed = max(needed, math.ceil(3.0 / margin) if margin > 0 else needed)
        return self._classify_rate(r, what, enough, needed)

    def mismatch(self, flags: np.ndarray) -> GuardrailResult:
        """The body-mismatch rate among the pairs that answered with the same status (a status change
        or a transport error is the error guardrails' to judge, once)."""
        unproven = (np.zeros(flags.size, bool) if self.s.mismatch_unproven is None
                    else np.asarray(self.s.mismatch_unproven, dtype=bool))
        if self.s.mismatch_compared is not None:
            compared = np.asarray(self.s.mismatch_compared, dtype=bool)
            flags, unproven = flags[compared], unproven[compared]
        if unproven.any():
            r = self._mismatch_rate(flags & ~unproven)
            return self._unproven(r, int(unproven.sum()), flags.size)
        return self._mismatch_rate(flags)

    def _unproven(self, r: GuardrailResult, n_unproven: int, n: int) -> GuardrailResult:
        """Pairs that differ only in volatile-looking fields, with no noise evidence: judged as if equal
        for FAIL (the other differences alone may still fail it), never PASS."""
        fields = ", ".join(self.s.unproven_fields[:5]) or "volatile-looking fields"
        if len(self.s.unproven_fields) > 5:
            fields += f" and {len(self.s.unproven_fields) - 5} more"
        command = self.s.unproven_command or "shadow probe CAPTURE"
        if r.cls != "INSUFFICIENT_DATA":
            r.cls, r.needed_n = "INCONCLUSIVE", None
        r.ni_shown = False
        r.test += "; unproven fields set aside"
        r.reason = (f"{n_unproven:,} of {n:,} pairs ({n_unproven / n * 100:.1f} %) differ only in fields that "
                    f"look volatile ({fields}), and this endpoint has no noise evidence (no secondary, probe or "
                    f"repeated request): they can neither fail nor pass it. `{command}` (or the gateway "
                    f"re-sending a share of requests to the primary) settles it. Without them, "
                    f"{r.reason[:1].lower()}{r.reason[1:]}")
        return r

    def _mismatch_rate(self, flags: np.ndarray) -> GuardrailResult:
        m = self.m
        budget = m.mismatch_budget
        r = self.base("mismatch_rate", flags.size, flags.size, "", budget, "rate")
        if flags.size == 0:
            r.test = "none (no data)"
            return self.too_few(r, "the body-mismatch rate", m.min_samples)
        t = stats.budget_rate_test(flags, budget, self.alpha)
        r.test = t.test
        r.estimate, r.interval = t.estimate, (t.lo, t.hi)
        r.candidate_value = t.candidate_rate
        r.p_value, r.p_harm = t.p_ni, t.p_harm
        r.practically_harmful = t.estimate > budget
        if self.policy.sequential and self.seq is not None:
            r.p_harm = self.seq.budget_harm(self.key("mismatch_rate"), int(flags.sum()), flags.size, budget)
            r.test += "; sequential harm: anytime-valid Beta mixture"
        needed = None
        if t.estimate < budget:
            z = norm.ppf(1 - self.alpha_ni) + norm.ppf(self.power)
            needed = max(math.ceil(z**2 * budget * (1 - budget) / (budget - t.estimate) ** 2),
                         math.ceil(3.0 / budget), flags.size + 1)
        return self._classify_rate(r, "the body-mismatch rate", flags.size >= m.min_samples, needed)

    # ---- classification
    def _classify(self, r: GuardrailResult, what: str, enough: bool, minimum: int, log_est: float,
                  log_margin: float, se: float | None, level: float) -> GuardrailResult:
        assert r.estimate is not None and r.interval is not None
        ratio_text = describe_estimate(r)
        if not enough:
            self.too_few(r, what, minimum)
            return r
        if r.p_value is not None and r.p_value < level:
            r.cls, r.ni_shown = "PASS", True
            r.reason = (f"{_cap(what)} is proven within ×{r.margin:.2f}: {ratio_text} "
                        f"(non-inferiority p = {r.p_value:.2g}).")
            return r
        r.cls = "INCONCLUSIVE"
        r.needed_n = (stats.needed_n_from_se(min(r.n_primary, r.n_candidate), se, log_est, log_margin,
                                             self.alpha_ni, self.power) if se else None)
        if r.needed_n is None and log_est < log_margin:
            lat = np.asarray(self.s.primary_latency_ms, dtype=float)
            sigma = float(np.std(stats.log_latency(lat[np.isfinite(lat)]))) or 1.0
            p = QUANTILE_NAMES.get(r.metric.removeprefix("latency_"), 0.5)
            r.needed_n = max(r.n_primary + 1, stats.quantile_ratio_sample_size(
                p, sigma, margin=math.exp(log_margin), true_ratio=math.exp(max(log_est, 0.0)),
                alpha=self.alpha_ni, power=self.power))
        more = (f"; about {r.needed_n:,} requests per arm would settle it" if r.needed_n
                else "; at this estimate more data would not prove it")
        r.reason = f"{_cap(what)} is not proven within ×{r.margin:.2f}: {ratio_text}{more}."
        return r

    def _classify_rate(self, r: GuardrailResult, what: str, enough: bool, needed: int | None) -> GuardrailResult:
        text = describe_estimate(r)
        if not enough:
            self.too_few(r, what, self.m.min_samples)
            r.reason = r.reason[:-1] + f" ({text})."
            return r
        if r.p_value is not None and r.p_value < self.alpha_ni:
            r.cls, r.ni_shown = "PASS", True
            r.reason = f"{_cap(what)} is proven within {_margin_text(r)}: {text} (p = {r.p_value:.2g})."
            return r
        r.cls = "INCONCLUSIVE"
        r.needed_n = needed
        more = (f"; about {needed:,} requests per arm would settle it" if needed
                else "; at this estimate more data would not prove it")
        r.reason = f"{_cap(what)} is not proven within {_margin_text(r)}: {text}{more}."
        return r


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe_estimate(r: GuardrailResult) -> str:
    """The estimate, its interval and the raw values, in words."""
    if r.estimate is None or r.interval is None:
        return "no estimate"
    lo, hi = r.interval
    if r.unit == "ratio":
        raw = ""
        if r.primary_value is not None and r.candidate_value is not None:
            raw = f" ({r.candidate_value:.1f} ms vs {r.primary_value:.1f} ms)"
        return f"candidate/primary ×{r.estimate:.3f}{raw}, interval ×{lo:.3f}–×{hi:.3f}"
    if r.unit == "difference":
        pc = r.candidate_value or 0.0
        pp = r.primary_value or 0.0
        zero = ""
        if pc == 0.0:
            zero = (f"; no candidate errors in {r.n_candidate:,} requests bounds its rate at "
                    f"≈{stats.rule_of_three(r.n_candidate) * 100:.2g} % (rule of three)")
        return (f"{pc * 100:.2f} % vs {pp * 100:.2f} % ({r.estimate * 100:+.2f} pp, interval "
                f"{lo * 100:+.2f} to {hi * 100:+.2f} pp){zero}")
    zero = ""
    if r.estimate == 0.0:
        zero = (f"; none in {r.n_candidate:,} pairs bounds it at ≈{stats.rule_of_three(r.n_candidate) * 100:.2g} %"
                " (rule of three)")
    return f"{r.estimate * 100:.2f} % of pairs differ (interval {lo * 100:.2f}–{hi * 100:.2f} %){zero}"
