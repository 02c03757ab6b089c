"""Diffs of non-JSON bodies: text by lines, HTML/XML by normalized structure, forms by field,
multipart by part, anything else by hash and length.

Pointers (all usable in rules, as pointer templates):
- text: `/line/12` (the primary's line number for removed/changed, the candidate's for added),
  template `/line/*`;
- HTML/XML: one segment per element, `name[n]` with n the 1-based position among same-named
  siblings (XPath style), then `@attr` for an attribute or `text()` for the element's own text;
  e.g. `/html/body/div[2]/@class`, template `/html/body/div[*]/@class`. Text is whitespace-collapsed
  and attributes are compared as a set, so indentation and attribute order never differ;
- form: `/field`; multipart: `/part/NAME`;
- binary: `` (the whole body), old/new = "N bytes, sha256:…".
"""

from __future__ import annotations

import difflib
import hashlib
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

import orjson

from analyzers.difference import MAX_VALUE_CHARS, Difference, escape_token
from analyzers.rules import EndpointRules

MAX_ROWS_PER_BODY = 1000  # a rewritten document yields this many rows, then one "more" row
_WS = re.compile(r"\s+")


def _text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    out = orjson.dumps(value).decode()
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _charset(content_type: str | None) -> str:
    m = re.search(r"charset=\"?([\w.:-]+)", content_type or "", re.I)
    return m.group(1) if m else "utf-8"


def _decode(body: bytes, content_type: str | None) -> str:
    try:
        return body.decode(_charset(content_type), "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


class _Rows:
    """Collects rows for one body, applying ignore rules by template and the row cap."""

    def __init__(self, rules: EndpointRules, limit: int) -> None:
        self.rules, self.limit, self.out = rules, limit, list[Difference]()
        self.dropped = 0

    def add(self, op: str, ptr: str, tpl: str, old: str | None, new: str | None) -> None:
        if len(self.out) >= MAX_ROWS_PER_BODY:
            self.dropped += 1
            return
        reason = self.rules.node(tpl).ignore if not self.rules.empty else None
        self.out.append(Difference("body", op, ptr, tpl, _text(old, self.limit), _text(new, self.limit),
                                   reason is not None, reason))

    def finish(self) -> list[Difference]:
        if self.dropped:
            self.out.append(Difference("body", "changed", "", "", None,
                                       _text(f"{self.dropped} more differences not listed", self.limit)))
        return self.out


def diff_other(kind: str, a: bytes, b: bytes, ct_a: str | None, ct_b: str | None, rules: EndpointRules, *,
               max_value_chars: int = MAX_VALUE_CHARS) -> list[Difference]:
    rows = _Rows(rules, max_value_chars)
    if kind in ("html", "xml"):
        ta, tb = _parse_markup(a, kind), _parse_markup(b, kind)
        if ta is not None and tb is not None:
            if ta != tb:
                _walk_markup(ta, tb, "", "", rows)
            return rows.finish()
        kind = "text"
    if kind == "form":
        diff_fields(_form(a, ct_a), _form(b, ct_b), "", rows)
        return rows.finish()
    if kind == "multipart":
        pa_, pb = _multipart(a, ct_a), _multipart(b, ct_b)
        if pa_ is not None and pb is not None:
            diff_fields(pa_, pb, "/part", rows)
            return rows.finish()
        kind = "binary"
    if kind == "text":
        diff_lines(_decode(a, ct_a).splitlines(), _decode(b, ct_b).splitlines(), rows)
        return rows.finish()
    return [Difference("body", "changed", "", "", _text(_digest(a), max_value_chars),
                       _text(_digest(b), max_value_chars))]


def _digest(body: bytes) -> str:
    return f"{len(body)} bytes, sha256:{hashlib.sha256(body).hexdigest()[:16]}"


def diff_lines(la: list[str], lb: list[str], rows: _Rows) -> None:
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, la, lb, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        common = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(common):
            rows.add("changed", f"/line/{i1 + k + 1}", "/line/*", la[i1 + k], lb[j1 + k])
        for i in range(i1 + common, i2):
            rows.add("removed", f"/line/{i + 1}", "/line/*", la[i], None)
        for j in range(j1 + common, j2):
            rows.add("added", f"/line/{j + 1}", "/line/*", None, lb[j])


def diff_fields(a: dict[str, list[str]], b: dict[str, list[str]], prefix: str, rows: _Rows) -> None:
    for name in list(a) + [n for n in b if n not in a]:
        va, vb = a.get(name), b.get(name)
        if va == vb:
            continue
        ptr = prefix + "/" + escape_token(name)
        old = None if va is None else (va[0] if len(va) == 1 else orjson.dumps(va).decode())
        new = None if vb is None else (vb[0] if len(vb) == 1 else orjson.dumps(vb).decode())
        rows.add("added" if va is None else "removed" if vb is None else "changed", ptr, ptr, old, new)


def _form(body: bytes, content_type: str | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in parse_qsl(_decode(body, content_type), keep_blank_values=True):
        out.setdefault(k, []).append(v)
    return out


def _multipart(body: bytes, content_type: str | None) -> dict[str, list[str]] | None:
    """Part name → [text, or "N bytes, sha256:…" for a binary part]; None if it does not parse."""
    if not content_type or "boundary=" not in content_type.lower():
        return None
    try:
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    except Exception:
        return None
    if not msg.is_multipart():
        return None
    out: dict[str, list[str]] = {}
    for i, part in enumerate(msg.iter_parts()):
        name = part.get_param("name", header="content-disposition") or f"#{i}"
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        try:
            value = raw.decode("utf-8") if part.get_content_maintype() == "text" else _digest(raw)
        except UnicodeDecodeError:
            value = _digest(raw)
        filename = part.get_filename()
        if filename:
            value = f"{filename}: {value}"
        out.setdefault(str(name), []).append(value)
    return out


# ---------------------------------------------------------------------------------------------------
# HTML / XML: parsed with lxml, reduced to (name, attributes, text, children) tuples.

Node = tuple[str, tuple[tuple[str, str], ...], str, tuple[Any, ...]]


def _parse_markup(body: bytes, kind: str) -> Node | None:
    from lxml import etree, html

    try:
        if kind == "html":
            root = html.document_fromstring(body)
        else:
            parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True,
                                     remove_pis=True, huge_tree=False)
            root = etree.fromstring(body, parser)
    except Exception:
        return None
    return _normalize(root)


def _local(tag: Any) -> str | None:
    if not isinstance(tag, str):
        return None  # comments, processing instructions
    return tag.rsplit("}", 1)[-1]


def _normalize(el: Any) -> Node:
    texts = [el.text or ""]
    children = []
    for child in el:
        if _local(child.tag) is not None:
            children.append(_normalize(child))
        texts.append(child.tail or "")
    text = _WS.sub(" ", " ".join(texts)).strip()
    attrs = tuple(sorted((_local(k) or str(k), _WS.sub(" ", v).strip()) for k, v in el.attrib.items()))
    return (_local(el.tag) or "", attrs, text, tuple(children))


def _serialize(node: Node) -> str:
    name, attrs, text, children = node
    inner = text if not children else text + "".join(_serialize(c) for c in children)
    attr = "".join(f' {k}="{v}"' for k, v in attrs)
    return f"<{name}{attr}>{inner}</{name}>"


def _walk_markup(a: Node, b: Node, ptr: str, tpl: str, rows: _Rows) -> None:
    if a == b:
        return
    if a[0] != b[0]:
        rows.add("changed", ptr or "/", tpl or "/", _serialize(a), _serialize(b))
        return
    here, here_tpl = ptr, tpl
    if not ptr:  # the root element
        here, here_tpl = "/" + escape_token(a[0]), "/" + escape_token(a[0])
    if not rows.rules.empty and rows.rules.node(here_tpl).ignore is not None:
        rows.add("changed", here, here_tpl, _serialize(a), _serialize(b))
        return
    attrs_a, attrs_b = dict(a[1]), dict(b[1])
    for attr in list(attrs_a) + [x for x in attrs_b if x not in attrs_a]:
        va, vb = attrs_a.get(attr), attrs_b.get(attr)
        if va != vb:
            p = f"{here}/@{escape_token(attr)}"
            t = f"{here_tpl}/@{escape_token(attr)}"
            rows.add("added" if va is None else "removed" if vb is None else "changed", p, t, va, vb)
    if a[2] != b[2]:
        rows.add("changed", here + "/text()", here_tpl + "/text()", a[2], b[2])
    ca, cb = a[3], b[3]
    pos_a, pos_b = _positions(ca), _positions(cb)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, [c[0] for c in ca], [c[0] for c in cb],
                                                       autojunk=False).get_opcodes():
        common = (i2 - i1) if tag == "equal" else min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(common):
            x, y = ca[i1 + k], cb[j1 + k]
            name = escape_token(x[0])
            _walk_markup(x, y, f"{here}/{name}[{pos_a[i1 + k]}]", f"{here_tpl}/{name}[*]", rows)
        for i in range(i1 + common, i2):
            name = escape_token(ca[i][0])
            rows.add("removed", f"{here}/{name}[{pos_a[i]}]", f"{here_tpl}/{name}[*]", _serialize(ca[i]), None)
        for j in range(j1 + common, j2):
            name = escape_token(cb[j][0])
            rows.add("added", f"{here}/{name}[{pos_b[j]}]", f"{here_tpl}/{name}[*]", None, _serialize(cb[j]))


def _positions(children: tuple[Node, ...]) -> list[int]:
    seen: dict[str, int] = {}
    out = []
    for c in children:
        seen[c[0]] = seen.get(c[0], 0) + 1
        out.append(seen[c[0]])
    return out
