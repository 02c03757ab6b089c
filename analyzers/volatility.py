"""Does a changed value look volatile (a timestamp, an id, a random token) rather than a result?

Used only where an endpoint has no noise evidence at all (no secondary, no probe, no repeated
identical requests): a field whose every real difference is such a value change cannot by itself
FAIL the gate — it is *unproven*, and the mismatch guardrail stays INCONCLUSIVE, naming the field
and the command that settles it (`shadow probe`). Structural changes (a key added, removed or
renamed, a type changed) and changes of ordinary values (a price, a status word, a rounded total)
never look volatile: they still FAIL with no evidence needed.

Both values must have the same shape, one of:
* an ISO 8601 date-time (`2026-12-07T14:22:22.123Z`, `2026-12-07 14:22:22`) or an HTTP date;
* a UUID;
* a token: 12+ characters of letters, digits and `-_+/=.:` with at least one digit and one letter
  (hex ids, base64, request ids such as `req-7f3a9c1e2b`), where the two values differ in at least
  a third of their characters (an id that differs by one digit, a SKU, is not a random token);
* an epoch time as a number or a numeric string (seconds 10 digits, milliseconds 13, µs 16), the
  two within a day of each other.
"""

from __future__ import annotations

import re

import orjson

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_HTTP_DATE = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TOKEN = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-+/=.:]{12,}$")
_EPOCH = re.compile(r"^\d{10}(\.\d+)?$|^\d{13}$|^\d{16}$")
_DAY = {10: 86_400, 13: 86_400_000, 16: 86_400_000_000}


def _shape(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        text = repr(value) if isinstance(value, float) else str(value)
        return "epoch" if _EPOCH.match(text) else None
    if not isinstance(value, str):
        return None
    if _ISO.match(value) or _HTTP_DATE.match(value):
        return "time"
    if _UUID.match(value):
        return "uuid"
    if _EPOCH.match(value):
        return "epoch"
    if _TOKEN.match(value):
        return "token"
    return None


def _parse(text: str | None) -> object:
    if text is None or text.endswith("…"):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _may_be_volatile_text(text: str | None) -> bool:
    """Before parsing: a JSON string of 10+ characters, or a number with 10+ digits (an epoch)."""
    if text is None or len(text) < 10:
        return False
    return text[0] == '"' or text[0].isdigit()


def looks_volatile(old: str | None, new: str | None) -> bool:
    """Are the primary's and the candidate's values (JSON texts, as the diff engine renders them) two
    draws of one volatile value (see module doc)?"""
    if not (_may_be_volatile_text(old) and _may_be_volatile_text(new)):
        return False  # the common case (a price, a word, a flag) without parsing anything
    a, b = _parse(old), _parse(new)
    shape = _shape(a)
    if shape is None or shape != _shape(b):
        return False
    if shape == "epoch":
        x, y = float(a), float(b)  # type: ignore[arg-type]
        digits = len(str(int(x)))
        return abs(x - y) <= _DAY.get(digits, 0)
    if shape == "token":
        sa, sb = str(a), str(b)
        if len(sa) != len(sb):
            return abs(len(sa) - len(sb)) <= max(len(sa), len(sb)) // 4  # base64 / ids of close lengths
        differing = sum(ca != cb for ca, cb in zip(sa, sb, strict=True))
        return differing * 3 >= len(sa)
    return True
