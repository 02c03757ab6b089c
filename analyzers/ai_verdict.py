"""A model switch judged like a service cutover: `judge_model_switch(CAPTURE, policy)` → a `Verdict`.

The gateway mirrors model calls to a candidate model (role `candidate`) and, to learn the noise floor,
to the primary model once more (a mirror target with role `secondary`): the same model asked twice
disagrees too, so the candidate is compared with how much the primary disagrees with itself.

Guardrails per (candidate service, operation), all paired on `request_id` and all from the existing
machinery (analyzers/stats.py tests, analyzers/verdict.py results, Holm across the harm tests, PASS only
with evidence and `needed_n` otherwise):

- latency (whole distribution, optional quantiles) and the 5xx / transport-error rates:
  `analyzers.verdict.evaluate_endpoint` on an `EndpointSample`, as for a service; an answer carrying an
  `error` object counts as a 5xx;
- `ttft`: time to first token ratio (Wilcoxon signed-rank on log ratios), when both sides streamed and
  measured it;
- `semantic_distance`: per request, the candidate's distance from the primary's answer (1 − cosine of
  their embeddings) against the secondary's distance from it, +ε, as a ratio (Wilcoxon on log ratios);
  not judged without a secondary (a warning says how to add one);
- `json_invalid_rate` (requests that asked for JSON output; schema held when one was given),
  `tool_call_disagreement_rate` (requests offering tools; same functions, same arguments; against the
  secondary's disagreement when there is one, else against a budget), `refusal_rate`: paired rate tests;
- `cost` per request: ratio (Wilcoxon on log ratios) of `ai_cost_usd`, or of the cost from the policy's
  price table, or of the tokens when no price is known.

The policy file's `ai:` section (beside the service margins) holds the margins, prices and embedder.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from analyzers import stats
from analyzers.policy import Policy
from analyzers.verdict import EndpointSample, EndpointSummary, GuardrailResult, Verdict, evaluate_endpoint
from shadow.ai.config import ModelPrice
from shadow.ai.embed import Embedder, cosine, embedder_from_spec
from shadow.ai.measures import json_request, json_valid, looks_refused, tools_agree, wants_tools
from shadow.ai.protocol import Answer, parse_answer
from shadow.ai.usage import cost_usd
from shadow.errors import ConfigError

__all__ = ["AiPolicy", "ModelPair", "judge_model_switch", "load_ai_policy", "load_pairs"]

_SEVERITY = {"PASS": 0, "INCONCLUSIVE": 1, "INSUFFICIENT_DATA": 2, "FAIL": 3}


@dataclass(frozen=True)
class RateMargin:
    pp: float  # percentage points
    relative: float = 0.25


@dataclass(frozen=True)
class AiPolicy:
    latency_ratio: float = 1.25  # whole-distribution latency, candidate/primary
    latency_quantiles: Mapping[str, float] = field(default_factory=dict)  # e.g. {p95: 1.3}; none by default
    ttft_ratio: float = 1.25
    # candidate's distance from the primary ≤ this × the primary's own (hashing embedder: a paraphrase
    # of the same content ≈ ×2, another content ≈ ×6 on the demo's model server)
    semantic_ratio: float = 3.0
    semantic_epsilon: float = 0.05  # added to both distances (identical answers at temperature 0)
    cost_ratio: float = 1.25
    json_invalid: RateMargin = RateMargin(1.0)
    tool_disagreement: RateMargin = RateMargin(2.0)
    tool_budget: float = 0.02  # without a secondary: share of requests whose tool calls may differ
    refusal: RateMargin = RateMargin(1.0)
    prices: tuple[ModelPrice, ...] = ()
    embedder: Mapping[str, Any] = field(default_factory=dict)

    def price(self, model: str | None) -> ModelPrice | None:
        return next((p for p in self.prices if model and p.matches(model)), None)


def _number(node: Mapping[str, Any], key: str, default: float, where: str, source: str | None) -> float:
    value = node.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"must be a non-negative number, got {value!r}", file=source, field=f"{where}.{key}")
    return float(value)


def ai_policy_from_mapping(node: Mapping[str, Any] | None, source: str | None = None) -> AiPolicy:
    node = node or {}
    known = {"latency_ratio", "latency_quantiles", "ttft_ratio", "semantic_ratio", "semantic_epsilon", "cost_ratio",
             "json_invalid", "tool_disagreement", "tool_budget", "refusal", "prices", "embedder"}
    for key in node:
        if key not in known:
            raise ConfigError(f"unknown key (known: {', '.join(sorted(known))})", file=source, field=f"ai.{key}")
    d = AiPolicy()

    def rate(key: str, default: RateMargin) -> RateMargin:
        sub = node.get(key) or {}
        if not isinstance(sub, Mapping):
            raise ConfigError("expected {pp: N, relative: R}", file=source, field=f"ai.{key}")
        return RateMargin(_number(sub, "pp", default.pp, f"ai.{key}", source),
                          _number(sub, "relative", default.relative, f"ai.{key}", source))

    prices = []
    for pattern, item in dict(node.get("prices") or {}).items():
        if not isinstance(item, Mapping):
            raise ConfigError("expected {input: USD, output: USD} per million tokens", file=source,
                              field=f"ai.prices.{pattern}")
        prices.append(ModelPrice(str(pattern), _number(item, "input", 0.0, f"ai.prices.{pattern}", source),
                                 _number(item, "output", 0.0, f"ai.prices.{pattern}", source)))
    quantiles = {str(k): float(v) for k, v in dict(node.get("latency_quantiles") or {}).items()}
    return AiPolicy(
        latency_ratio=_number(node, "latency_ratio", d.latency_ratio, "ai", source), latency_quantiles=quantiles,
        ttft_ratio=_number(node, "ttft_ratio", d.ttft_ratio, "ai", source),
        semantic_ratio=_number(node, "semantic_ratio", d.semantic_ratio, "ai", source),
        semantic_epsilon=_number(node, "semantic_epsilon", d.semantic_epsilon, "ai", source),
        cost_ratio=_number(node, "cost_ratio", d.cost_ratio, "ai", source),
        json_invalid=rate("json_invalid", d.json_invalid), tool_disagreement=rate("tool_disagreement", d.tool_disagreement),
        tool_budget=_number(node, "tool_budget", d.tool_budget, "ai", source), refusal=rate("refusal", d.refusal),
        prices=tuple(prices), embedder=dict(node.get("embedder") or {}))


def load_ai_policy(policy_file: Path | None) -> AiPolicy:
    """The `ai:` section of a policy file (top level, under `analysis:`, or `shadow: analysis:`)."""
    if policy_file is None:
        return AiPolicy()
    from shadow.yamlconfig import load_yaml, read_yaml_file

    root = load_yaml(read_yaml_file(policy_file), str(policy_file))
    for path in ((), ("analysis",), ("shadow", "analysis")):
        node: Any = root
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and "ai" in node:
            return ai_policy_from_mapping(node["ai"], str(policy_file))
    return AiPolicy()


# -------------------------------------------------------------------------------------------------------
# Pairs from the capture


@dataclass
class Side:
    answer: Answer
    status: int | None
    error: str | None
    latency_ms: float
    ttft_ms: float | None
    cost: float | None  # USD, or tokens when no price is known (see `cost_unit`)
    model: str | None


@dataclass
class ModelPair:
    request_id: str
    operation: str
    candidate_service: str
    primary: Side
    candidate: Side
    secondary: Side | None
    json_asked: bool
    json_schema: dict[str, Any] | None
    tools_offered: bool


def _side(row: Mapping[str, Any], ai: AiPolicy) -> Side:
    answer = parse_answer(row["resp_body"]) if row["error"] is None else Answer()
    cost = row["ai_cost_usd"]
    model = row["ai_model"]
    if cost is None:
        cost = cost_usd(ai.price(model), row["ai_input_tokens"], row["ai_output_tokens"])
    return Side(answer, row["status"], row["error"], float(row["latency_ms"] or math.nan), row["ai_ttft_ms"],
                cost, model)


def load_pairs(capture_dir: Path, ai: AiPolicy) -> list[ModelPair]:
    """Mirrored model calls: each primary with its candidate copies (and secondary, when there is one)."""
    from shadow.capture.store import open_store

    with open_store(capture_dir) as store:
        columns = [c[0] for c in store.sql("DESCRIBE exchanges").fetchall()]
        if "ai_operation" not in columns:
            return []
        rel = store.sql(
            "SELECT request_id, role, service, ai_operation, status, error, latency_ms, ai_ttft_ms, ai_cost_usd, "
            "ai_model, ai_input_tokens, ai_output_tokens, req_body, resp_body, ts FROM exchanges "
            "WHERE mode = 'mirror' AND ai_operation IS NOT NULL ORDER BY ts")
        names = rel.columns
        rows = [dict(zip(names, r, strict=True)) for r in rel.fetchall()]
    by_request: dict[str, dict[str, list[dict[str, Any]]]] = {}
    order: list[str] = []
    for row in rows:
        group = by_request.setdefault(row["request_id"], {})
        if not group:
            order.append(row["request_id"])
        group.setdefault(row["role"], []).append(row)
    pairs: list[ModelPair] = []
    for request_id in order:
        group = by_request[request_id]
        if "primary" not in group:
            continue
        primary_row = group["primary"][0]
        primary = _side(primary_row, ai)
        secondary = _side(group["secondary"][0], ai) if "secondary" in group else None
        asked, schema = json_request(primary_row["req_body"])
        tools = wants_tools(primary_row["req_body"])
        for cand_row in group.get("candidate", ()):
            pairs.append(ModelPair(request_id, primary_row["ai_operation"], cand_row["service"], primary,
                                   _side(cand_row, ai), secondary, asked, schema, tools))
    return pairs


# -------------------------------------------------------------------------------------------------------
# Guardrails


def _failed(side: Side) -> bool:
    return side.error is None and ((side.status or 0) >= 500 or side.answer.error is not None)


def _classify(r: GuardrailResult, *, n: int, minimum: int, p_ni: float, p_harm: float, se: float | None,
              estimate: float, margin: float, policy: Policy, power: float, what: str) -> GuardrailResult:
    r.p_value, r.p_harm = p_ni, p_harm
    # Worse than the primary is expected of another model (another wording is a distance); a FAIL needs
    # the point estimate beyond the margin too, as latency needs a delta beyond floor_ms.
    r.practically_harmful = r.estimate is not None and r.estimate > r.margin
    if n < minimum:
        r.cls, r.needed_n = "INSUFFICIENT_DATA", minimum
        r.reason = f"Only {n:,} requests (minimum {minimum:,} for {what}): too little data to judge, so this cannot pass."
    elif p_ni < policy.alpha:
        r.cls, r.ni_shown = "PASS", True
        r.reason = f"{what[0].upper()}{what[1:]} is shown to be within the margin ({_estimate_text(r)})."
    else:
        r.cls = "INCONCLUSIVE"
        r.needed_n = stats.needed_n_from_se(n, se, estimate, margin, policy.alpha, power) if se else None
        more = f"; about {r.needed_n:,} requests would settle it" if r.needed_n else ""
        r.reason = f"{what[0].upper()}{what[1:]} is not yet shown to be within the margin ({_estimate_text(r)}){more}."
    return r


def _estimate_text(r: GuardrailResult) -> str:
    if r.estimate is None:
        return "no estimate"
    if r.unit == "ratio":
        return f"×{r.estimate:.2f} vs margin ×{r.margin:.2f}"
    return f"{r.estimate * 100:+.2f} pp vs margin {r.margin * 100:+.2f} pp" if r.unit == "difference" else \
        f"{r.estimate * 100:.2f} % vs budget {r.margin * 100:.2f} %"


class _Judge:
    def __init__(self, label: str, candidate: str, policy: Policy, power: float, rng: np.random.Generator) -> None:
        self.label, self.candidate, self.policy, self.power, self.rng = label, candidate, policy, power, rng
        self.minimum = policy.margins_for(label).min_samples

    def base(self, metric: str, n: int, test: str, margin: float, unit: str) -> GuardrailResult:
        return GuardrailResult(endpoint=self.label, metric=metric, estimate=None, interval=None, margin=margin,
                               n_primary=n, n_candidate=n, test=test, paired=True, p_value=None, p_harm=None,
                               cls="INSUFFICIENT_DATA", reason="", unit="ratio" if unit == "ratio" else unit,
                               candidate=self.candidate)

    def ratio(self, metric: str, what: str, primary: np.ndarray, candidate: np.ndarray, margin: float) -> GuardrailResult:
        """Per-request ratio candidate/primary: Wilcoxon signed-rank on log ratios, Hodges-Lehmann."""
        ok = np.isfinite(primary) & np.isfinite(candidate) & (primary > 0) & (candidate > 0)
        p, c = primary[ok], candidate[ok]
        r = self.base(metric, int(p.size), "", margin, "ratio")
        if p.size < 3:
            r.test = "none (no data)"
            return _classify(r, n=int(p.size), minimum=self.minimum, p_ni=1.0, p_harm=1.0, se=None, estimate=0.0,
                             margin=0.0, policy=self.policy, power=self.power, what=what)
        # The test works on latencies (clamped below LOG_CLAMP_MS): a ratio does not depend on the unit, so
        # distances and dollars are rescaled to put the smallest value well above the clamp.
        scale = 1000.0 * stats.LOG_CLAMP_MS / float(min(p.min(), c.min()))
        t = stats.wilcoxon_log_ratio(p * scale, c * scale, math.log(margin), self.policy.alpha, self.rng)
        r.test, r.estimate, r.interval = t.test, math.exp(t.estimate), (math.exp(t.lo), math.exp(t.hi))
        r.primary_value, r.candidate_value = float(np.median(p)), float(np.median(c))
        se = (t.hi - t.lo) / (2 * norm.ppf(1 - self.policy.alpha)) if t.hi > t.lo else None
        return _classify(r, n=int(p.size), minimum=self.minimum, p_ni=t.p_ni, p_harm=t.p_harm, se=se,
                         estimate=t.estimate, margin=math.log(margin), policy=self.policy, power=self.power, what=what)

    def rate(self, metric: str, what: str, primary: np.ndarray, candidate: np.ndarray,
             margin: RateMargin) -> GuardrailResult:
        r = self.base(metric, int(primary.size), "", margin.pp / 100, "difference")
        if primary.size == 0:
            r.test = "none (no data)"
            return _classify(r, n=0, minimum=self.minimum, p_ni=1.0, p_harm=1.0, se=None, estimate=0.0, margin=0.0,
                             policy=self.policy, power=self.power, what=what)
        t = stats.paired_rate_test(primary.astype(bool), candidate.astype(bool), margin.pp / 100, self.policy.alpha,
                                   margin.relative)
        allowed = stats.error_margin(t.primary_rate or 0.0, margin.pp / 100, margin.relative)
        r.test, r.margin, r.estimate, r.interval = t.test, allowed, t.estimate, (t.lo, t.hi)
        r.primary_value, r.candidate_value = t.primary_rate, t.candidate_rate
        return _classify(r, n=int(primary.size), minimum=self.minimum, p_ni=t.p_ni, p_harm=t.p_harm, se=t.se,
                         estimate=t.estimate, margin=allowed, policy=self.policy, power=self.power, what=what)

    def budget(self, metric: str, what: str, flags: np.ndarray, budget: float) -> GuardrailResult:
        r = self.base(metric, int(flags.size), "", budget, "rate")
        if flags.size == 0:
            r.test = "none (no data)"
            return _classify(r, n=0, minimum=self.minimum, p_ni=1.0, p_harm=1.0, se=None, estimate=0.0, margin=0.0,
                             policy=self.policy, power=self.power, what=what)
        t = stats.budget_rate_test(flags.astype(bool), budget, self.policy.alpha)
        r.test, r.estimate, r.interval, r.candidate_value = t.test, t.estimate, (t.lo, t.hi), t.candidate_rate
        se = math.sqrt(max(budget * (1 - budget), 1e-9) / flags.size)
        return _classify(r, n=int(flags.size), minimum=self.minimum, p_ni=t.p_ni, p_harm=t.p_harm, se=se,
                         estimate=t.estimate, margin=budget, policy=self.policy, power=self.power, what=what)


def _group_results(label: str, candidate: str, pairs: Sequence[ModelPair], policy: Policy, ai: AiPolicy,
                   embedder: Embedder, power: float, rng: np.random.Generator,
                   warnings: list[str]) -> tuple[EndpointSample, list[GuardrailResult]]:
    p = [x.primary for x in pairs]
    c = [x.candidate for x in pairs]
    margins = dataclasses.replace(policy.margins_for(label), bulk_ratio=ai.latency_ratio,
                                  latency_ratio=dict(ai.latency_quantiles), gate_mismatch=False)
    local = dataclasses.replace(policy, defaults=margins, overrides=())
    sample = EndpointSample(
        endpoint=label, paired=True, candidate=candidate,
        primary_latency_ms=np.array([s.latency_ms for s in p]), candidate_latency_ms=np.array([s.latency_ms for s in c]),
        primary_5xx=np.array([_failed(s) for s in p]), candidate_5xx=np.array([_failed(s) for s in c]),
        primary_transport_error=np.array([s.error is not None for s in p]),
        candidate_transport_error=np.array([s.error is not None for s in c]))
    results = evaluate_endpoint(sample, local, rng=rng, power=power)
    j = _Judge(label, candidate, policy, power, rng)

    answered = [x for x in pairs if x.primary.error is None and x.candidate.error is None
                and not _failed(x.primary) and not _failed(x.candidate)]
    ttft = [(x.primary.ttft_ms, x.candidate.ttft_ms) for x in answered
            if x.primary.ttft_ms is not None and x.candidate.ttft_ms is not None]
    if ttft:
        results.append(j.ratio("ttft", "the time to first token", np.array([a for a, _ in ttft]),
                               np.array([b for _, b in ttft]), ai.ttft_ratio))
    elif any(x.primary.ttft_ms is not None for x in answered):
        warnings.append(f"{label} → {candidate}: time to first token not judged (the mirrored copies are read whole, "
                        "so the candidate's is not measured; total latency is judged).")

    texts = [x for x in answered if x.secondary is not None and x.secondary.error is None
             and not x.primary.answer.tool_calls and x.primary.answer.text and x.candidate.answer.text
             and x.secondary.answer.text]
    if texts:
        vectors = embedder.embed([t for x in texts for t in (x.primary.answer.text, x.candidate.answer.text,
                                                             x.secondary.answer.text if x.secondary else "")])
        vp, vc, vs = vectors[0::3], vectors[1::3], vectors[2::3]
        eps = ai.semantic_epsilon
        floor, cand = 1.0 - cosine(vp, vs) + eps, 1.0 - cosine(vp, vc) + eps
        r = j.ratio("semantic_distance", f"the answers' distance from the primary's (vs its own noise, {embedder.name})",
                    np.maximum(floor, eps), np.maximum(cand, eps), ai.semantic_ratio)
        r.primary_value, r.candidate_value = float(np.mean(1 - (floor - eps))), float(np.mean(1 - (cand - eps)))
        results.append(r)
    elif answered:
        warnings.append(f"{label} → {candidate}: semantic similarity not judged: no secondary copies to learn the "
                        "primary model's own noise floor (mirror the primary model once more, as a target with "
                        "role: secondary).")

    json_pairs = [x for x in answered if x.json_asked and not x.primary.answer.tool_calls]
    if json_pairs:
        results.append(j.rate("json_invalid_rate", "the invalid-JSON rate",
                              np.array([not json_valid(x.primary.answer, x.json_schema) for x in json_pairs]),
                              np.array([not json_valid(x.candidate.answer, x.json_schema) for x in json_pairs]),
                              ai.json_invalid))
    tool_pairs = [x for x in answered if x.tools_offered]
    if tool_pairs:
        cand_flags = np.array([not tools_agree(x.primary.answer, x.candidate.answer) for x in tool_pairs])
        with_floor = [x for x in tool_pairs if x.secondary is not None and x.secondary.error is None]
        if len(with_floor) == len(tool_pairs):
            floor_flags = np.array([not tools_agree(x.primary.answer, x.secondary.answer)  # type: ignore[union-attr]
                                    for x in tool_pairs])
            results.append(j.rate("tool_call_disagreement_rate", "the tool-call disagreement rate", floor_flags,
                                  cand_flags, ai.tool_disagreement))
        else:
            results.append(j.budget("tool_call_disagreement_rate", "the tool-call disagreement rate", cand_flags,
                                    ai.tool_budget))
    if answered:
        results.append(j.rate("refusal_rate", "the refusal rate",
                              np.array([looks_refused(x.primary.answer) for x in answered]),
                              np.array([looks_refused(x.candidate.answer) for x in answered]), ai.refusal))
        costs = [(x.primary.cost, x.candidate.cost) for x in answered]
        if all(a is not None and b is not None for a, b in costs):
            results.append(j.ratio("cost", "the cost per request", np.array([a for a, _ in costs], dtype=float),
                                   np.array([b for _, b in costs], dtype=float), ai.cost_ratio))
        else:
            tokens = [((x.primary.answer.input_tokens or 0) + (x.primary.answer.output_tokens or 0),
                       (x.candidate.answer.input_tokens or 0) + (x.candidate.answer.output_tokens or 0))
                      for x in answered]
            results.append(j.ratio("tokens", "the tokens per request (no price known)",
                                   np.array([a for a, _ in tokens], dtype=float),
                                   np.array([b for _, b in tokens], dtype=float), ai.cost_ratio))
    return sample, results


def judge_model_switch(capture_dir: Path, policy: Policy | None = None, ai: AiPolicy | None = None, *,
                       embedder: Embedder | None = None, rng_seed: int = 0, now: datetime | None = None) -> Verdict:
    policy = policy or Policy()
    ai = ai or AiPolicy()
    embedder = embedder or embedder_from_spec(ai.embedder)
    pairs = load_pairs(capture_dir, ai)
    groups: dict[tuple[str, str], list[ModelPair]] = {}
    for pair in pairs:
        groups.setdefault((pair.operation, pair.candidate_service), []).append(pair)
    n_guardrails = 9 * max(len(groups), 1)  # intersection-union: each guardrail sized for power 1 - beta/m
    power = 1.0 - (1.0 - policy.power) / n_guardrails
    results: list[GuardrailResult] = []
    samples: list[EndpointSample] = []
    warnings: list[str] = []
    for i, ((operation, candidate), group) in enumerate(sorted(groups.items())):
        sample, own = _group_results(f"model:{operation}", candidate, group, policy, ai, embedder, power,
                                     np.random.default_rng([rng_seed, i]), warnings)
        samples.append(sample)
        results.extend(own)
    # FAIL: Holm across every harm test, as analyzers.verdict.judge does.
    harm = [r for r in results if r.p_harm is not None]
    adjusted = stats.holm(np.array([r.p_harm for r in harm], dtype=float))
    for r, p_adj in zip(harm, adjusted, strict=True):
        r.p_harm_adjusted = float(p_adj)
        if p_adj < policy.alpha and not r.ni_shown and r.practically_harmful and r.cls != "INSUFFICIENT_DATA":
            r.cls, r.needed_n = "FAIL", None
            r.reason = (f"{r.metric.replace('_', ' ')} is significantly worse than the primary's "
                        f"({_estimate_text(r)}; harm p = {p_adj:.2g} after Holm) and not shown within its margin.")
    endpoints = []
    for s in samples:
        own = [r for r in results if r.endpoint == s.endpoint and r.candidate == s.candidate]
        worst = max((r.cls for r in own), key=lambda c: _SEVERITY[c], default="INSUFFICIENT_DATA")
        endpoints.append(EndpointSummary(s.endpoint, s.candidate, True, False, s.n_primary, s.n_candidate, worst))  # type: ignore[arg-type]
    n_fail = sum(r.cls == "FAIL" for r in results)
    if n_fail:
        overall, reason = "FAIL", f"{n_fail} guardrail(s) failed: the candidate model is significantly worse beyond its margin."
    elif results and all(r.cls == "PASS" for r in results):
        overall, reason = "PASS", f"All {len(results)} guardrails of the model switch are proven within their margins."
    else:
        open_ = [r for r in results if r.cls != "PASS"]
        needed = [r.needed_n for r in open_ if r.needed_n]
        more = f"; about {max(needed):,} requests are needed" if needed else ""
        reason = ("No mirrored model calls in the capture." if not results else
                  f"{len(open_)} of {len(results)} guardrails are not yet proven and none failed{more}.")
        overall = "INCONCLUSIVE"
    passed = sum(s.n_primary for s, e in zip(samples, endpoints, strict=True) if e.cls == "PASS")
    total = sum(s.n_primary for s in samples)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Verdict(overall=overall, score=100.0 * passed / total if total else 0.0, results=results,  # type: ignore[arg-type]
                   endpoints=endpoints, policy={**policy.to_dict(), "ai": dataclasses.asdict(ai)},
                   generated_at=stamp, reason=" ".join([reason, *warnings]), warnings=warnings)
