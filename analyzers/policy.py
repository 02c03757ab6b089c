"""The cutover policy: margins per endpoint and metric, and how strict the evidence must be.

A policy is a set of defaults plus ordered per-endpoint-glob overrides (first match wins, each
override replaces only the fields it names). It comes from a mapping (the `shadow: analysis:`
section of the gateway YAML, or a standalone policy file):

    alpha: 0.05
    power: 0.8
    sequential: false
    compare_recorded_latency: false
    defaults:
      latency: {p50: 1.10, p95: 1.10, p99: 1.20, bulk: 1.10, floor_ms: 2}
      error_rate: {relative: 0.25, pp: 0.2}       # candidate <= primary x 1.25 + 0.2 pp
      transport_error: {relative: 0.25, pp: 0.2}
      mismatch_budget: 0.01
      min_samples: 50
      min_clients: 20
    endpoints:
      "/api/search*":
        latency: {p99: 1.5}
        min_samples: 200

Every bad field raises ConfigError naming the file, line (when known) and the field's path.
docs/policy.md explains every key, its default and why. The older `error_rate_pp: X` /
`transport_error_pp: X` still load, with their old meaning (`{pp: X, relative: 0}`).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from shadow.errors import ConfigError

# Quantile names a policy may gate on, and the probability each stands for.
QUANTILE_NAMES: dict[str, float] = {"p50": 0.50, "p75": 0.75, "p90": 0.90, "p95": 0.95, "p99": 0.99,
                                    "p999": 0.999}
DEFAULT_LATENCY_MARGINS: dict[str, float] = {"p50": 1.10, "p95": 1.10, "p99": 1.20}


@dataclass(frozen=True)
class Margins:
    """What one endpoint must show to pass. Ratios are candidate/primary; pp = percentage points."""

    latency_ratio: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LATENCY_MARGINS))
    bulk_ratio: float = 1.10  # whole-distribution shift (Hodges-Lehmann) ratio margin
    floor_ms: float = 2.0  # a latency delta under this many ms never fails and always counts as within margin
    # Error rates: candidate rate <= primary rate x (1 + relative) + pp / 100 (docs/policy.md: why).
    error_rate_pp: float = 0.2
    error_rate_relative: float = 0.25
    transport_error_pp: float = 0.2
    transport_error_relative: float = 0.25
    mismatch_budget: float = 0.01  # share of pairs with a real (non-noise) difference
    min_samples: int = 50  # per arm; below this a guardrail is INSUFFICIENT_DATA, never PASS
    # Sticky split traffic is analysed per client: fewer distinct clients per arm than this is
    # INSUFFICIENT_DATA (one client behind a NAT is one unit of evidence, however many requests).
    min_clients: int = 20
    # A quantile p is only judged when at least this many observations per arm lie above it.
    min_tail_obs: int = 5
    gate_bulk: bool = True
    gate_errors: bool = True
    gate_transport_errors: bool = True
    gate_mismatch: bool = True

    @property
    def gated_quantiles(self) -> tuple[str, ...]:
        return tuple(sorted(self.latency_ratio, key=lambda q: QUANTILE_NAMES[q]))


@dataclass(frozen=True)
class EndpointOverride:
    glob: str
    margins: Margins


@dataclass(frozen=True)
class Policy:
    defaults: Margins = field(default_factory=Margins)
    overrides: tuple[EndpointOverride, ...] = ()
    alpha: float = 0.05  # one-sided level of each non-inferiority test; family-wise level of FAIL flags
    power: float = 0.80  # target power used for the sample size still needed
    sequential: bool = False  # anytime-valid monitoring: the verdict may be recomputed at every look
    n_boot: int = 1000  # bootstrap resamples per endpoint
    # Replays against recorded answers (`--primary recorded`): recorded latencies were measured
    # elsewhere, at another time, so latency guardrails are not judged unless this opts in.
    compare_recorded_latency: bool = False
    source: str | None = None

    def margins_for(self, endpoint: str) -> Margins:
        for override in self.overrides:
            if fnmatch.fnmatchcase(endpoint, override.glob):
                return override.margins
        return self.defaults

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready echo of the policy, for the verdict."""
        return {
            "alpha": self.alpha,
            "power": self.power,
            "sequential": self.sequential,
            "n_boot": self.n_boot,
            "compare_recorded_latency": self.compare_recorded_latency,
            "source": self.source,
            "defaults": _margins_dict(self.defaults),
            "endpoints": {o.glob: _margins_dict(o.margins) for o in self.overrides},
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, source: str | None = None) -> Policy:
        return _parse_policy(data or {}, source)


def load_policy(path: str | Path) -> Policy:
    """Read a policy YAML file. The file may hold the policy at its top level, under `analysis:`,
    or under `shadow: analysis:` (the gateway config)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read policy file: {exc.strerror}", file=str(path)) from None
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(str(problem), file=str(path), line=line) from None
    if data is None:
        return Policy(source=str(path))
    if not isinstance(data, Mapping):
        raise ConfigError("a policy file must hold a mapping", file=str(path))
    if isinstance(data.get("shadow"), Mapping):
        data = data["shadow"].get("analysis") or {}
    elif "analysis" in data:
        data = data["analysis"] or {}
    return _parse_policy(data, str(path))


# ---------------------------------------------------------------------------------------------- parsing

# `ai`: the model-switch judge's section, read by analyzers/ai_verdict.py.
_TOP_KEYS = {"alpha", "power", "sequential", "n_boot", "compare_recorded_latency", "defaults", "endpoints", "ai"}
_MARGIN_KEYS = {"latency", "error_rate", "transport_error", "error_rate_pp", "transport_error_pp",
                "mismatch_budget", "min_samples", "min_clients", "min_tail_obs", "gate"}
_RATE_KEYS = {"pp", "relative"}
_GATE_KEYS = {"bulk", "errors", "transport_errors", "mismatch"}


def _line_of(node: Any, key: Any) -> int | None:
    """1-based line of `key` in a ruamel round-trip mapping, None for plain dicts."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        return int(lc.key(key)[0]) + 1
    except (KeyError, TypeError, AttributeError):
        return None


class _Ctx:
    def __init__(self, source: str | None) -> None:
        self.source = source

    def error(self, message: str, node: Any, key: Any, path: str) -> ConfigError:
        return ConfigError(message, file=self.source, line=_line_of(node, key), field=path)


def _number(ctx: _Ctx, node: Mapping[str, Any], key: str, path: str, *, lo: float, hi: float,
            lo_open: bool = False) -> float:
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ctx.error(f"must be a number, got {value!r}", node, key, path)
    if value < lo or value > hi or (lo_open and value == lo):
        bracket = "(" if lo_open else "["
        raise ctx.error(f"must be in {bracket}{lo}, {hi}], got {value!r}", node, key, path)
    return float(value)


def _integer(ctx: _Ctx, node: Mapping[str, Any], key: str, path: str, *, lo: int) -> int:
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ctx.error(f"must be an integer >= {lo}, got {value!r}", node, key, path)
    return int(value)


def _boolean(ctx: _Ctx, node: Mapping[str, Any], key: str, path: str) -> bool:
    value = node[key]
    if not isinstance(value, bool):
        raise ctx.error(f"must be true or false, got {value!r}", node, key, path)
    return value


def _mapping(ctx: _Ctx, parent: Any, key: Any, path: str) -> Mapping[str, Any]:
    value = parent[key]
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error(f"must be a mapping, got {type(value).__name__}", parent, key, path)
    return value


def _unknown(ctx: _Ctx, node: Mapping[str, Any], allowed: set[str], path: str) -> None:
    for key in node:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ctx.error(f"unknown field (expected one of {', '.join(sorted(allowed))})", node, key, where)


def _parse_margins(ctx: _Ctx, node: Mapping[str, Any], base: Margins, path: str) -> Margins:
    _unknown(ctx, node, _MARGIN_KEYS, path)
    changes: dict[str, Any] = {}
    if "latency" in node:
        lat = _mapping(ctx, node, "latency", f"{path}.latency")
        ratios = dict(base.latency_ratio)
        for key in lat:
            kpath = f"{path}.latency.{key}"
            if key == "floor_ms":
                changes["floor_ms"] = _number(ctx, lat, key, kpath, lo=0.0, hi=1e6)
            elif key == "bulk":
                changes["bulk_ratio"] = _number(ctx, lat, key, kpath, lo=1.0, hi=100.0, lo_open=True)
            elif key in QUANTILE_NAMES:
                if lat[key] is None or lat[key] is False:  # `p50: null` or `p50: false`: stop gating it
                    ratios.pop(key, None)
                else:
                    ratios[key] = _number(ctx, lat, key, kpath, lo=1.0, hi=100.0, lo_open=True)
            else:
                allowed = sorted([*QUANTILE_NAMES, "bulk", "floor_ms"])
                raise ctx.error(f"unknown latency field (expected one of {', '.join(allowed)})",
                                lat, key, kpath)
        changes["latency_ratio"] = ratios
    for key in ("error_rate", "transport_error"):
        old = f"{key}_pp"
        if old in node and key in node:
            raise ctx.error(f"give either {key}: {{relative, pp}} or the older {old}, not both", node, old,
                            f"{path}.{old}")
        if old in node:  # the older absolute-only margin keeps its meaning
            changes[old] = _number(ctx, node, old, f"{path}.{old}", lo=0.0, hi=100.0, lo_open=True)
            changes[f"{key}_relative"] = 0.0
        if key in node:
            rate = _mapping(ctx, node, key, f"{path}.{key}")
            _unknown(ctx, rate, _RATE_KEYS, f"{path}.{key}")
            if "pp" in rate:
                changes[old] = _number(ctx, rate, "pp", f"{path}.{key}.pp", lo=0.0, hi=100.0)
            if "relative" in rate:
                changes[f"{key}_relative"] = _number(ctx, rate, "relative", f"{path}.{key}.relative", lo=0.0, hi=100.0)
            if changes.get(old, base.error_rate_pp if key == "error_rate" else base.transport_error_pp) == 0.0 \
                    and changes.get(f"{key}_relative", 1.0) == 0.0:
                raise ctx.error("a zero margin (pp: 0 and relative: 0) can never be proven", node, key,
                                f"{path}.{key}")
    if "mismatch_budget" in node:
        changes["mismatch_budget"] = _number(ctx, node, "mismatch_budget", f"{path}.mismatch_budget",
                                             lo=0.0, hi=1.0, lo_open=True)
    if "min_samples" in node:
        changes["min_samples"] = _integer(ctx, node, "min_samples", f"{path}.min_samples", lo=2)
    if "min_clients" in node:
        changes["min_clients"] = _integer(ctx, node, "min_clients", f"{path}.min_clients", lo=2)
    if "min_tail_obs" in node:
        changes["min_tail_obs"] = _integer(ctx, node, "min_tail_obs", f"{path}.min_tail_obs", lo=1)
    if "gate" in node:
        gate = _mapping(ctx, node, "gate", f"{path}.gate")
        _unknown(ctx, gate, _GATE_KEYS, f"{path}.gate")
        for key in gate:
            changes[f"gate_{key}"] = _boolean(ctx, gate, key, f"{path}.gate.{key}")
    return replace(base, **changes)


def _parse_policy(data: Mapping[str, Any], source: str | None) -> Policy:
    ctx = _Ctx(source)
    if not isinstance(data, Mapping):
        raise ConfigError("the analysis policy must be a mapping", file=source)
    _unknown(ctx, data, _TOP_KEYS, "")
    kwargs: dict[str, Any] = {"source": source}
    if "alpha" in data:
        kwargs["alpha"] = _number(ctx, data, "alpha", "alpha", lo=0.0, hi=0.5, lo_open=True)
    if "power" in data:
        kwargs["power"] = _number(ctx, data, "power", "power", lo=0.5, hi=0.9999)
    if "sequential" in data:
        kwargs["sequential"] = _boolean(ctx, data, "sequential", "sequential")
    if "n_boot" in data:
        kwargs["n_boot"] = _integer(ctx, data, "n_boot", "n_boot", lo=200)
    if "compare_recorded_latency" in data:
        kwargs["compare_recorded_latency"] = _boolean(ctx, data, "compare_recorded_latency",
                                                      "compare_recorded_latency")
    defaults = Margins()
    if "defaults" in data:
        defaults = _parse_margins(ctx, _mapping(ctx, data, "defaults", "defaults"), defaults, "defaults")
    overrides: list[EndpointOverride] = []
    if "endpoints" in data:
        endpoints = _mapping(ctx, data, "endpoints", "endpoints")
        for glob in endpoints:
            path = f"endpoints.{glob}"
            if not isinstance(glob, str) or not glob:
                raise ctx.error("an endpoint glob must be a non-empty string", endpoints, glob, path)
            node = _mapping(ctx, endpoints, glob, path)
            overrides.append(EndpointOverride(glob, _parse_margins(ctx, node, defaults, path)))
    return Policy(defaults=defaults, overrides=tuple(overrides), **kwargs)


def _margins_dict(m: Margins) -> dict[str, Any]:
    d = asdict(m)
    d["gated_quantiles"] = list(m.gated_quantiles)
    return d
