"""What each page of the live view shows, as plain data built from an AnalysisResult.

Pure functions, no web framework: the templates only lay these out. Every number comes from the
pipeline's verdict (analyzers/verdict.py) and diff-field table (analyzers/pipeline.py); nothing is
recomputed here, only grouped per endpoint and put in reading order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analyzers.report import class_name, endpoint_rollup, held_back, label

if TYPE_CHECKING:
    from analyzers.pipeline import AnalysisResult, FieldDiff

__all__ = ["EndpointView", "endpoint_view", "endpoint_views", "field_by_anchor", "verdict_state"]


@dataclass
class EndpointView:
    """One endpoint × candidate service: its class, the numbers behind it and what holds it back."""

    name: str  # "endpoint → candidate", as the report names it
    endpoint: str
    candidate: str | None
    cls: str  # the worst guardrail's class
    reason: str  # the worst guardrail's reason
    paired: bool
    n_primary: int
    n_candidate: int
    needed: int | None  # per-arm sample size the unsettled guardrails ask for (the largest)
    guardrails: list[Any] = field(default_factory=list)  # analyzers.verdict.GuardrailResult, by metric
    real_fields: list[FieldDiff] = field(default_factory=list)
    noise_fields: list[FieldDiff] = field(default_factory=list)

    @property
    def still_needed(self) -> int | None:
        """How many more requests per arm the largest `needed` asks for (None: nothing asked)."""
        if self.needed is None:
            return None
        return max(0, self.needed - min(self.n_primary, self.n_candidate))

    @property
    def held_back(self) -> list[Any]:
        """The guardrails that are not PASS, worst first: every one, not only the first."""
        return held_back(self.guardrails)


def endpoint_views(result: AnalysisResult) -> list[EndpointView]:
    """Every judged endpoint, worst class first (the readiness table's order)."""
    verdict = result.verdict
    summaries = {label(s.endpoint, s.candidate): s for s in verdict.endpoints}
    guardrails: dict[str, list[Any]] = {}
    for r in verdict.results:
        guardrails.setdefault(label(r.endpoint, r.candidate), []).append(r)
    views = []
    for name, cls, reason in endpoint_rollup(verdict):
        own = sorted(guardrails.get(name, []), key=lambda r: r.metric)
        summary = summaries.get(name)
        first = own[0] if own else None
        needed = [r.needed_n for r in own if r.needed_n is not None and class_name(r.cls) != "PASS"]
        fields = [f for f in result.fields if f.name == name]
        views.append(EndpointView(
            name=name,
            endpoint=summary.endpoint if summary else (first.endpoint if first else name),
            candidate=summary.candidate if summary else (first.candidate if first else None),
            cls=cls, reason=reason,
            paired=summary.paired if summary else bool(first and first.paired),
            n_primary=summary.n_primary if summary else (first.n_primary if first else 0),
            n_candidate=summary.n_candidate if summary else (first.n_candidate if first else 0),
            needed=max(needed) if needed else None,
            guardrails=own,
            real_fields=[f for f in fields if not f.noise],
            noise_fields=[f for f in fields if f.noise]))
    return views


def endpoint_view(result: AnalysisResult, endpoint: str, candidate: str | None) -> EndpointView | None:
    name = label(endpoint, candidate or None)
    return next((v for v in endpoint_views(result) if v.name == name), None)


def field_by_anchor(result: AnalysisResult, anchor: str) -> FieldDiff | None:
    return next((f for f in result.fields if f.anchor == anchor), None)


def sample_for(result: AnalysisResult, endpoint: str, candidate: str | None) -> Any:
    """The pipeline's EndpointSample (latency arrays) behind an endpoint, or None."""
    name = label(endpoint, candidate or None)
    return next((s for s in result.samples if label(s.endpoint, s.candidate) == name), None)


def verdict_state(result: AnalysisResult | None) -> dict[str, Any]:
    """The overall verdict and each endpoint's class and counts, as JSON for scripts (/api/state)."""
    if result is None:
        return {"verdict": None, "score": None, "reason": None, "endpoints": []}
    verdict = result.verdict
    return {
        "verdict": class_name(verdict.overall), "score": round(float(verdict.score), 1), "reason": verdict.reason,
        "endpoints": [{"name": v.name, "endpoint": v.endpoint, "candidate": v.candidate, "class": v.cls,
                       "n_primary": v.n_primary, "n_candidate": v.n_candidate, "needed": v.needed,
                       "still_needed": v.still_needed,
                       "held_back": [r.metric for r in v.held_back]} for v in endpoint_views(result)],
    }
