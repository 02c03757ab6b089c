"""The diff rule that would accept a difference, as copy-pasteable YAML.

    suggested_rules("/api/orders/{id}", "body", "changed", "/generated_at", '"2026-…"', '"2026-…"')
    # ['- {ignore: "/generated_at", endpoint: "/api/orders/{id}"}']

Each line is one item for the `rules:` list of a policy file (docs/policy.md, "Diff rules"); the first
is the narrowest rule that accepts the difference, any others are alternatives:

* a reordered array → `array: unordered` on it;
* a number that moved a little → `tolerance: {abs: X}` (X the difference rounded up to one
  significant digit), then `ignore` as the blunt alternative;
* a header → a header rule (ignored on that endpoint);
* anything else, a renamed key included (its template is the old key's) → `ignore` on the field;
* a status change → nothing: statuses are judged by the error guardrails, not by rules.

Rules are scoped to the endpoint template (`endpoint:` matches it literally unless it holds `*`).
"""

from __future__ import annotations

import json
import math

import orjson


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def _number(text: str | None) -> float | None:
    if text is None or text.endswith("…"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def round_up(x: float) -> float:
    """x rounded up to one significant digit (0.0049 → 0.005, 0.012 → 0.02, 3 → 3)."""
    if x <= 0:
        return 0.0
    exponent = math.floor(math.log10(x))
    step = 10.0 ** exponent
    value = math.ceil(round(x / step, 9)) * step
    return float(f"{value:.12g}")


def suggested_rules(endpoint: str, kind: str, op: str, pointer_template: str, old: str | None = None,
                    new: str | None = None) -> list[str]:
    """YAML list items for `rules:` that would make this difference noise (see module doc)."""
    scope = f", endpoint: {_q(endpoint)}" if endpoint else ""
    if kind == "status":
        return []
    if kind == "header":
        return [f"- {{header: {_q(pointer_template.lstrip('/').replace('~1', '/').replace('~0', '~'))}{scope}}}"]
    path = pointer_template or "**"  # the whole body: a glob that matches the root
    if op == "reordered":
        return [f"- {{path: {_q(path)}, array: unordered{scope}}}"]
    out = []
    if op == "changed":
        a, b = _number(old), _number(new)
        if a is not None and b is not None and a != b:
            out.append(f"- {{path: {_q(path)}, tolerance: {{abs: {round_up(abs(a - b)):g}}}{scope}}}")
    out.append(f"- {{ignore: {_q(path)}{scope}}}")
    return out
