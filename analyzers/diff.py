"""The diff engine: one pure function from two answers to a list of differences.

    diffs = diff_pair(primary, candidate, rules, endpoint="/api/orders/{id}")

`diff_pair` compares status, headers and body and returns one `Difference` per difference, in
document order. It never hides anything: a difference that a rule ignores, a number within
tolerance or a presence-only field is returned with `noise=True` and the rule as `noise_reason`.

Bodies are settled without parsing whenever possible — equal bytes, or equal canonical hashes
(shadow.capture.canonical's "j:" hash ignores key order and whitespace) — and parsed only when they differ.
JSON is compared by a purpose-written recursive walker over orjson values that descends only into
subtrees whose values differ (Python's C-level `==` settles equal subtrees); pointers are RFC 6901
(`~` → `~0`, `/` → `~1`), pointer templates replace array indices by `*`. Other kinds (text, HTML,
XML, forms, multipart, binary) are in analyzers/bodies.py.

The shared types (Difference, ExchangeSide, escape_token, …) live in analyzers/difference.py, and
`compute_diffs` (the streaming `diffs` table over a whole capture) in analyzers/diffs_table.py.
"""

from __future__ import annotations

import difflib
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from analyzers import bodies
from analyzers.difference import MAX_VALUE_CHARS, Difference, ExchangeSide, escape_token, render_value
from analyzers.rules import EndpointRules, NodeRules, RuleSet

__all__ = [
    "MAX_VALUE_CHARS",
    "Difference",
    "ExchangeSide",
    "diff_pair",
    "escape_token",
    "render_value",
]

def _fingerprint(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


_canonical = _fingerprint  # equal canonical texts = strictly equal values (true and 1 serialize apart)


def diff_pair(primary: ExchangeSide, candidate: ExchangeSide, rules: RuleSet | EndpointRules | None = None,
              *, endpoint: str | None = None, max_value_chars: int = MAX_VALUE_CHARS,
              compare_headers: bool = True, compare_body: bool = True) -> list[Difference]:
    """All differences between two answers to the same request (headers, then body), or one status
    difference.

    One outcome, one guardrail: when the statuses differ (or a side got no answer) the pair's only
    difference is the status change (`200` → `500`): a 500's error body against a 200's order body
    says nothing the status does not, and the error guardrails judge it. Headers and bodies are
    compared only between two answers of the same status.

    `rules` may be a RuleSet (resolved for `endpoint`) or rules already resolved for the endpoint.
    `compare_headers` / `compare_body` = False skip a part the caller already knows to be equal."""
    if primary.status != candidate.status:
        return [Difference("status", "changed", "", "", _status_text(primary), _status_text(candidate))]
    if primary.status is None:
        return []  # a transport error on both sides: there are no headers or body to compare
    er = _resolve(rules, endpoint)
    out: list[Difference] = []
    if compare_headers:
        out.extend(diff_headers(primary.headers, candidate.headers, er))
    if compare_body:
        out.extend(diff_bodies(primary, candidate, er, max_value_chars=max_value_chars))
    return out


def _resolve(rules: RuleSet | EndpointRules | None, endpoint: str | None) -> EndpointRules:
    if rules is None:
        rules = _DEFAULT
    if isinstance(rules, RuleSet):
        return rules.for_endpoint(endpoint)
    return rules


_DEFAULT = RuleSet()


def _status_text(side: ExchangeSide) -> str:
    if side.status is None:
        return orjson.dumps(f"error: {side.error or 'no response'}"[:MAX_VALUE_CHARS]).decode()
    return str(side.status)


# ---------------------------------------------------------------------------------------------------
# Headers


def header_map(headers: Iterable[Any]) -> dict[str, str]:
    """Lower-cased name → value; repeated headers joined with ", " in order (RFC 9110 §5.3). Lines may be
    (name, value) pairs of str or latin-1 bytes, or {"name", "value"} mappings (the capture's form)."""
    out: dict[str, str] = {}
    for h in headers:
        if isinstance(h, Mapping):
            name, value = h["name"], h["value"]
        else:
            name, value = h
        if isinstance(name, bytes):  # raw header lines (mitmproxy's fields) are latin-1 bytes
            name, value = name.decode("latin-1"), value.decode("latin-1")
        key = name.lower()
        out[key] = out[key] + ", " + value if key in out else value
    return out


def diff_headers(primary: Iterable[Any], candidate: Iterable[Any], rules: EndpointRules) -> list[Difference]:
    a, b = header_map(primary), header_map(candidate)
    if a == b:
        return []
    out: list[Difference] = []
    for name in sorted(a.keys() | b.keys()):
        if rules.header_ignored(name):
            continue
        va, vb = a.get(name), b.get(name)
        if va == vb:
            continue
        ptr = "/" + escape_token(name)
        op = "added" if va is None else "removed" if vb is None else "changed"
        out.append(Difference("header", op, ptr, ptr, None if va is None else orjson.dumps(va).decode(),
                              None if vb is None else orjson.dumps(vb).decode()))
    return out


# ---------------------------------------------------------------------------------------------------
# Bodies


def body_kind(content_type: str | None, body: bytes | None) -> str:
    """json | html | xml | text | form | multipart | binary, from the media type (then a sniff)."""
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    if "json" in ct:
        return "json"
    if ct in ("text/html", "application/xhtml+xml"):
        return "html"
    if ct.endswith("/xml") or ct.endswith("+xml"):
        return "xml"
    if ct == "application/x-www-form-urlencoded":
        return "form"
    if ct.startswith("multipart/"):
        return "multipart"
    if ct.startswith("text/") or ct in ("application/javascript", "application/x-yaml", "application/yaml"):
        return "text"
    if not ct and body:
        head = body[:64].lstrip()
        if head[:1] in (b"{", b"["):
            return "json"
        if head[:1] == b"<":
            return "html" if head[:14].lower().startswith((b"<!doctype html", b"<html")) else "xml"
        try:
            body[:4096].decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            return "binary"
    return "binary"


def _decoded(side: ExchangeSide) -> bytes:
    body = side.body or b""
    if side.content_encoding and side.content_encoding.lower() not in ("identity", ""):
        from shadow.capture.canonical import decode_body

        body = decode_body(body, side.content_encoding)
    return body


def _hash_text(body: bytes) -> str:
    return f"{len(body)} bytes, sha256:{hashlib.sha256(body).hexdigest()[:16]}"


def diff_bodies(primary: ExchangeSide, candidate: ExchangeSide, rules: EndpointRules, *,
                max_value_chars: int = MAX_VALUE_CHARS) -> list[Difference]:
    # Cheapest first: equal bytes, equal canonical hashes. Raw (still encoded) bodies skip the bytes
    # test, since two encodings of one body need not be equal bytes.
    raw_a, raw_b = primary.body or b"", candidate.body or b""
    encoded = bool(primary.content_encoding or candidate.content_encoding)
    if not encoded and raw_a == raw_b and primary.truncated == candidate.truncated:
        return []
    if primary.body_hash and primary.body_hash == candidate.body_hash:
        return []
    if primary.truncated or candidate.truncated:
        which = "both" if primary.truncated and candidate.truncated else (
            "primary" if primary.truncated else "candidate")
        return [Difference("body", "truncated", "", "", primary.body_hash and orjson.dumps(primary.body_hash).decode(),
                           candidate.body_hash and orjson.dumps(candidate.body_hash).decode(), True,
                           f"body truncated at capture ({which}): not compared")]
    a, b = _decoded(primary), _decoded(candidate)
    if a == b:
        return []
    kind = body_kind(primary.content_type, a)
    kind_b = body_kind(candidate.content_type, b)
    if kind != kind_b and "binary" in (kind, kind_b):
        kind = "binary"
    if kind == "json":
        try:
            va, vb = orjson.loads(a) if a else None, orjson.loads(b) if b else None
        except orjson.JSONDecodeError:
            kind = "text"
        else:
            return diff_json(va, vb, rules, max_value_chars=max_value_chars,
                             exact_shortcut=not _may_conflate(a, b))
    return bodies.diff_other(kind, a, b, primary.content_type, candidate.content_type, rules,
                             max_value_chars=max_value_chars)


# ---------------------------------------------------------------------------------------------------
# JSON


def _jtype(v: Any) -> str:
    t = type(v)
    if t is dict:
        return "object"
    if t is list:
        return "array"
    if t is str:
        return "string"
    if t is bool:
        return "boolean"
    if t is int or t is float:
        return "number"
    return "null"


def _leaf_equal(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if ta is tb:
        return bool(a == b)
    # JSON has one number type: 1 and 1.0 are the same value; true and 1 are not.
    return ta in (int, float) and tb in (int, float) and a == b


def _may_conflate(a: bytes | None, b: bytes | None) -> bool:
    """Python's `==` says True == 1 and False == 0. When neither text holds a boolean, `==` on two
    subtrees is exact; otherwise the walker confirms an `==`-equal subtree by its canonical text."""
    return a is None or b is None or b"true" in a or b"false" in a or b"true" in b or b"false" in b


def diff_json(a: Any, b: Any, rules: EndpointRules | RuleSet | None = None, *,
              max_value_chars: int = MAX_VALUE_CHARS, exact_shortcut: bool = False) -> list[Difference]:
    """Differences between two parsed JSON values. `exact_shortcut=True` promises that no boolean can
    meet a number (e.g. neither text contains true/false), so `==` alone settles equal subtrees."""
    er = _resolve(rules, None)
    walker = _Walker(er, max_value_chars, shortcut=exact_shortcut)
    walker.walk(a, b, "", "")
    return walker.out


def diff_json_bytes(a: bytes, b: bytes, rules: EndpointRules | RuleSet | None = None, *,
                    max_value_chars: int = MAX_VALUE_CHARS) -> list[Difference]:
    """Parse and diff two JSON texts (raises orjson.JSONDecodeError on invalid JSON)."""
    if a == b:
        return []
    return diff_json(orjson.loads(a), orjson.loads(b), rules, max_value_chars=max_value_chars,
                     exact_shortcut=not _may_conflate(a, b))


_MISSING: Any = object()  # a key absent from the candidate's object


class _Walker:
    __slots__ = ("limit", "out", "rules", "shortcut")

    def __init__(self, rules: EndpointRules, limit: int, *, shortcut: bool) -> None:
        self.rules, self.limit, self.shortcut = rules, limit, shortcut
        self.out: list[Difference] = []

    def emit(self, op: str, ptr: str, tpl: str, old: Any, new: Any, *, has_old: bool = True,
             has_new: bool = True, reason: str | None = None) -> None:
        self.out.append(Difference(
            "body", op, ptr, tpl, render_value(old, self.limit) if has_old else None,
            render_value(new, self.limit) if has_new else None, reason is not None, reason))

    def _equal(self, a: Any, b: Any) -> bool:
        if a != b:
            return False
        return self.shortcut or _canonical(a) == _canonical(b) or _strict_equal(a, b)

    def walk(self, a: Any, b: Any, ptr: str, tpl: str) -> None:
        if a == b:  # C speed; exact unless a boolean meets a number (True == 1), checked below
            ta = type(a)
            if ta is dict or ta is list:
                if self.shortcut or _canonical(a) == _canonical(b) or _strict_equal(a, b):
                    return
            elif _leaf_equal(a, b):
                return
        self._node(a, b, ptr, tpl)

    def _children(self, pairs: list[tuple[Any, Any, str, str]]) -> None:
        """Walk child pairs. `==`-equal containers are confirmed together with one canonical
        serialisation per side (not one per child): cheap when, as usual, they really are equal."""
        suspects: list[tuple[Any, Any, str, str]] = []
        for item in pairs:
            va, vb = item[0], item[1]
            if va == vb:
                if self.shortcut:
                    continue
                tv = type(va)
                if tv is dict or tv is list:
                    suspects.append(item)
                    continue
                if _leaf_equal(va, vb):
                    continue
            elif vb is _MISSING:
                ctpl = item[3]
                self.emit("removed", item[2], ctpl, va, None, has_new=False, reason=self._child_noise(ctpl))
                continue
            self._node(*item)
        if suspects and _canonical([x[0] for x in suspects]) != _canonical([x[1] for x in suspects]):
            for item in suspects:
                self.walk(*item)

    def _node(self, a: Any, b: Any, ptr: str, tpl: str) -> None:
        node = self.rules.node(tpl)
        ta, tb = type(a), type(b)
        if node.ignore is not None or node.presence is not None:
            if not self._equal(a, b):
                op = "changed" if _jtype(a) == _jtype(b) else "type_changed"
                self.emit(op, ptr, tpl, a, b, reason=node.ignore or node.presence)
            return
        if ta is dict and tb is dict:
            self._object(a, b, ptr, tpl)
        elif ta is list and tb is list:
            self._array(a, b, ptr, tpl, node)
        elif _leaf_equal(a, b):
            return
        elif _jtype(a) != _jtype(b):
            self.emit("type_changed", ptr, tpl, a, b)
        elif node.tolerance is not None and ta is not bool and tb is not bool and ta in (int, float) and \
                node.tolerance.accepts(a, b):
            self.emit("changed", ptr, tpl, a, b, reason=node.tolerance_label)
        else:
            self.emit("changed", ptr, tpl, a, b)

    def _child_noise(self, tpl: str) -> str | None:
        return self.rules.node(tpl).ignore if not self.rules.empty else None

    def _object(self, a: dict[str, Any], b: dict[str, Any], ptr: str, tpl: str) -> None:
        renamed = None if a.keys() == b.keys() else _renamed_keys(a, b)
        if not renamed:
            pairs: list[tuple[Any, Any, str, str]] = []
            for k, va in a.items():
                ek = escape_token(k)
                pairs.append((va, b.get(k, _MISSING), ptr + "/" + ek, tpl + "/" + ek))
            self._children(pairs)
            if renamed is not None:  # keys differ: the added ones
                for k, vb in b.items():
                    if k not in a:
                        ek = escape_token(k)
                        ctpl = tpl + "/" + ek
                        self.emit("added", ptr + "/" + ek, ctpl, None, vb, has_old=False,
                                  reason=self._child_noise(ctpl))
            return
        pairs = []
        for k, va in a.items():
            if k in renamed:
                continue
            ek = escape_token(k)
            pairs.append((va, b.get(k, _MISSING), ptr + "/" + ek, tpl + "/" + ek))
        self._children(pairs)
        for old_key, new_key in renamed.items():
            # the same value moved to a new key: one cause, one difference (old key → new key)
            eo, en = escape_token(old_key), escape_token(new_key)
            ctpl = tpl + "/" + eo
            self.out.append(Difference("body", "renamed", ptr + "/" + eo, ctpl, render_value(ptr + "/" + eo),
                                       render_value(ptr + "/" + en), *_noise_of(self._child_noise(ctpl))))
        moved = set(renamed.values())
        for k, vb in b.items():
            if k not in a and k not in moved:
                ek = escape_token(k)
                ctpl = tpl + "/" + ek
                self.emit("added", ptr + "/" + ek, ctpl, None, vb, has_old=False, reason=self._child_noise(ctpl))

    def _array(self, a: list[Any], b: list[Any], ptr: str, tpl: str, node: NodeRules) -> None:
        ctpl = tpl + "/*"
        if node.array_mode == "keyed" and node.array_key is not None:
            if self._keyed(a, b, ptr, ctpl, node.array_key):
                return
            self._unordered(a, b, ptr, ctpl)  # elements without a unique key: fall back to a multiset
        elif node.array_mode == "unordered":
            self._unordered(a, b, ptr, ctpl)
        elif len(a) == len(b):
            if len(a) > 1 and self._reordered(a, b, ptr, tpl):
                return
            self._children([(va, vb, f"{ptr}/{i}", ctpl) for i, (va, vb) in enumerate(zip(a, b, strict=True))])
        else:
            self._aligned(a, b, ptr, ctpl)

    def _reordered(self, a: list[Any], b: list[Any], ptr: str, tpl: str) -> bool:
        """The same elements in another order: one `reordered` difference at the array (not one
        `changed` per shifted element). Checked only on arrays already known to differ."""
        # Equal positions cancel out: only the differing ones need fingerprints, and a permutation
        # moves at least two elements (one changed element, the usual case, costs next to nothing).
        moved = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(moved) < 2:
            return False
        if Counter(_fingerprint(a[i]) for i in moved) != Counter(_fingerprint(b[i]) for i in moved):
            return False
        if not self.shortcut and len(moved) < len(a):
            # `==` may conflate true with 1: the positions it called equal must be equal strictly too
            skip = set(moved)
            kept = [i for i in range(len(a)) if i not in skip]
            if _canonical([a[i] for i in kept]) != _canonical([b[i] for i in kept]):
                return False
        self.emit("reordered", ptr, tpl, a, b)
        return True

    def _aligned(self, a: list[Any], b: list[Any], ptr: str, ctpl: str) -> None:
        """Arrays of different lengths: align equal elements (difflib) so one insertion reads as one
        `added`, not as every later element changed."""
        fa, fb = [_fingerprint(v) for v in a], [_fingerprint(v) for v in b]
        noise = self._child_noise(ctpl)
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, fa, fb, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            common = min(i2 - i1, j2 - j1) if tag == "replace" else 0
            for k in range(common):
                self.walk(a[i1 + k], b[j1 + k], f"{ptr}/{i1 + k}", ctpl)
            for i in range(i1 + common, i2):
                self.emit("removed", f"{ptr}/{i}", ctpl, a[i], None, has_new=False, reason=noise)
            for j in range(j1 + common, j2):
                self.emit("added", f"{ptr}/{j}", ctpl, None, b[j], has_old=False, reason=noise)

    def _unordered(self, a: list[Any], b: list[Any], ptr: str, ctpl: str) -> None:
        """Multiset comparison: elements are matched in order; the unmatched ones are removed/added."""
        fa, fb = [_fingerprint(v) for v in a], [_fingerprint(v) for v in b]
        noise = self._child_noise(ctpl)
        left_b = Counter(fb)
        for i, f in enumerate(fa):
            if left_b[f] > 0:
                left_b[f] -= 1
            else:
                self.emit("removed", f"{ptr}/{i}", ctpl, a[i], None, has_new=False, reason=noise)
        left_a = Counter(fa)
        for j, f in enumerate(fb):
            if left_a[f] > 0:
                left_a[f] -= 1
            else:
                self.emit("added", f"{ptr}/{j}", ctpl, None, b[j], has_old=False, reason=noise)

    def _keyed(self, a: list[Any], b: list[Any], ptr: str, ctpl: str, key: str) -> bool:
        ia, ib = _index_by(a, key), _index_by(b, key)
        if ia is None or ib is None:
            return False
        noise = self._child_noise(ctpl)
        for k, i in ia.items():
            j = ib.get(k)
            if j is None:
                self.emit("removed", f"{ptr}/{i}", ctpl, a[i], None, has_new=False, reason=noise)
            else:
                self.walk(a[i], b[j], f"{ptr}/{i}", ctpl)
        for k, j in ib.items():
            if k not in ia:
                self.emit("added", f"{ptr}/{j}", ctpl, None, b[j], has_old=False, reason=noise)
        return True


def _renamed_keys(a: dict[str, Any], b: dict[str, Any]) -> dict[str, str]:
    """Keys of `a` missing from `b` whose value is (strictly) the value of a key of `b` missing from
    `a`: old key → new key, each key used once, in document order."""
    removed = [k for k in a if k not in b]
    if not removed:
        return {}
    added: dict[bytes, list[str]] = {}
    for k, v in b.items():
        if k not in a:
            added.setdefault(_fingerprint(v), []).append(k)
    if not added:
        return {}
    out: dict[str, str] = {}
    for k in removed:
        candidates = added.get(_fingerprint(a[k]))
        if candidates:
            out[k] = candidates.pop(0)
    return out


def _noise_of(reason: str | None) -> tuple[bool, str | None]:
    return reason is not None, reason


def _index_by(items: list[Any], key: str) -> dict[Any, int] | None:
    """key value → index, or None when an element is not an object, lacks the key, or repeats it."""
    out: dict[Any, int] = {}
    for i, v in enumerate(items):
        if type(v) is not dict or key not in v:
            return None
        k = v[key]
        k = _fingerprint(k) if isinstance(k, (dict, list)) else (type(k).__name__, k)
        if k in out:
            return None
        out[k] = i
    return out


def _strict_equal(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if ta is dict:
        return tb is dict and a.keys() == b.keys() and all(_strict_equal(v, b[k]) for k, v in a.items())
    if ta is list:
        return tb is list and len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return _leaf_equal(a, b)
