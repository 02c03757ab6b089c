"""Content guard (pure): block or mask configured content in model requests and answers.

Rules are PII patterns (`email`, `phone`, `credit_card` with a Luhn check, `iban`, `us_ssn`, `ipv4`),
secrets (`openai_key`, `anthropic_key`, `aws_access_key`, `github_token`, `private_key`, `jwt`,
`bearer`), keywords (whole words, case-insensitive) and regexps (Go/RE2 syntax, linear time, like the
router's). They apply to every string value of a JSON body (not to its keys, nor to the structural
fields `model`, `role`, `type`, `id`, `object`, `tool_call_id`, `finish_reason`), or to the text
of a non-JSON body. A block rule that matches refuses the exchange and says which rule; a mask
rule replaces each match with `[MASKED:<rule>]`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["PII", "SECRETS", "ContentGuardSettings", "GuardOutcome", "GuardRule", "GuardSide", "guard_body",
           "keyword_rule", "named_rule", "regex_rule"]


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and _luhn(digits)


# name → (pattern, extra check of a match)
PII: dict[str, tuple[str, Callable[[str], bool] | None]] = {
    "email": (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", None),
    "phone": (r"(?<![\w+])\+?\d{1,3}[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}(?!\w)", None),
    "credit_card": (r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)", _card_ok),
    "iban": (r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", None),
    "us_ssn": (r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)", None),
    "ipv4": (r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])", None),
}
SECRETS: dict[str, tuple[str, Callable[[str], bool] | None]] = {
    "openai_key": (r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}", None),
    "anthropic_key": (r"\bsk-ant-[A-Za-z0-9_-]{20,}", None),
    "aws_access_key": (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", None),
    "github_token": (r"\bgh[pousr]_[A-Za-z0-9]{36,}\b", None),
    "private_key": (r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----", None),
    "jwt": (r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}", None),
    "bearer": (r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*", None),
}

_STRUCTURAL = frozenset({"model", "role", "type", "id", "object", "tool_call_id", "finish_reason"})


@dataclass(frozen=True)
class GuardRule:
    name: str  # e.g. pii.email, secret.openai_key, keyword.bomb, regex.0
    finditer: Callable[[str], list[tuple[int, int]]] = field(repr=False, compare=False)

    def finds(self, text: str) -> bool:
        return bool(self.finditer(text))

    def mask(self, text: str) -> tuple[str, int]:
        spans = self.finditer(text)
        if not spans:
            return text, 0
        out, last = [], 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(f"[MASKED:{self.name}]")
            last = end
        out.append(text[last:])
        return "".join(out), len(spans)


def _python_rule(name: str, pattern: str, check: Callable[[str], bool] | None) -> GuardRule:
    compiled = re.compile(pattern)

    def spans(text: str) -> list[tuple[int, int]]:
        return [m.span() for m in compiled.finditer(text) if check is None or check(m.group(0))]

    return GuardRule(name, spans)


def named_rule(kind: str, name: str) -> GuardRule:
    """A built-in rule: kind `pii` or `secret`; raises KeyError for an unknown name."""
    table = PII if kind == "pii" else SECRETS
    pattern, check = table[name]
    return _python_rule(f"{kind}.{name}", pattern, check)


def keyword_rule(word: str) -> GuardRule:
    return _python_rule(f"keyword.{word}", rf"(?i)(?<!\w){re.escape(word)}(?!\w)", None)


def regex_rule(index: int, pattern: str) -> GuardRule:
    """A user's regexp, in RE2 (linear time whatever the pattern). Raises ValueError when invalid."""
    from shadow.gateway.goregex import compile_go

    regexp = compile_go(pattern)

    def spans(text: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        pos = 0
        while pos <= len(text):
            match = regexp.find(text[pos:])
            if match is None:
                break
            start_b, end_b = match.spans[0]  # byte offsets into the UTF-8 subject
            start = pos + len(match.subject[:start_b].decode("utf-8", "surrogateescape"))
            end = pos + len(match.subject[:end_b].decode("utf-8", "surrogateescape"))
            if end == start:  # an empty match: step over one character
                pos = end + 1
                continue
            out.append((start, end))
            pos = end
        return out

    return GuardRule(f"regex.{index}", spans)


@dataclass(frozen=True)
class GuardSide:
    block: tuple[GuardRule, ...] = ()
    mask: tuple[GuardRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.block or self.mask)


@dataclass(frozen=True)
class ContentGuardSettings:
    name: str
    request: GuardSide = GuardSide()
    response: GuardSide = GuardSide()


@dataclass(frozen=True)
class GuardOutcome:
    blocked_by: str | None = None  # the rule that blocked
    body: bytes | None = None  # the masked body; None: unchanged
    masked: dict[str, int] = field(default_factory=dict)  # rule → matches masked

    def note(self, where: str) -> str | None:
        """One line for the capture: `request blocked: pii.credit_card`, `answer masked: pii.email×2`."""
        if self.blocked_by:
            return f"{where} blocked: {self.blocked_by}"
        if self.masked:
            return f"{where} masked: " + ", ".join(f"{k}×{v}" for k, v in sorted(self.masked.items()))
        return None


def _strings(value: Any, visit: Callable[[str], str], key: str | None = None) -> Any:
    if isinstance(value, str):
        return value if key in _STRUCTURAL else visit(value)
    if isinstance(value, list):
        return [_strings(v, visit, key) for v in value]
    if isinstance(value, dict):
        return {k: _strings(v, visit, k) for k, v in value.items()}
    return value


def guard_body(side: GuardSide, body: bytes | None) -> GuardOutcome:
    if not side or not body:
        return GuardOutcome()
    try:
        obj: Any = orjson.loads(body)
        is_json = True
    except orjson.JSONDecodeError:
        obj, is_json = body.decode("utf-8", "replace"), False
    texts: list[str] = []
    _strings(obj, lambda s: texts.append(s) or s)  # type: ignore[func-returns-value]
    for rule in side.block:
        if any(rule.finds(t) for t in texts):
            return GuardOutcome(blocked_by=rule.name)
    if not side.mask:
        return GuardOutcome()
    masked: dict[str, int] = {}

    def mask(text: str) -> str:
        for rule in side.mask:
            text, n = rule.mask(text)
            if n:
                masked[rule.name] = masked.get(rule.name, 0) + n
        return text

    new = _strings(obj, mask)
    if not masked:
        return GuardOutcome()
    out = orjson.dumps(new) if is_json else str(new).encode()
    return GuardOutcome(body=out, masked=masked)
