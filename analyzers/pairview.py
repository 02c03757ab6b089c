"""One request as every role answered it, side by side, its differences highlighted.

    view = load_pair(store.con, request_id, rules=rules)      # a DuckDB connection over a capture
    view.to_html()                                            # one self-contained HTML fragment

The notebook's `cap.pair(request_id)` (shadow/notebook.py), the report's examples
(analyzers/report.py) and the live view's field page (shadow/web/) all show this view. Every value
that came from traffic is HTML-escaped: bodies and headers are untrusted input.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shadow.errors import CaptureError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["PAIR_STYLE", "Mark", "PairView", "load_pair", "render_body_html", "render_json_html"]

MAX_BODY_CHARS = 40_000  # a body shown in a cell is cut here (the frames keep it whole)
ROLE_PREFIXES = (("primary", "p_"), ("candidate", "c_"), ("secondary", "s_"))

PAIR_STYLE = """<style>
.shadow-nb table{border-collapse:collapse;font-size:12px}
.shadow-nb th,.shadow-nb td{border:1px solid #d0d7de;padding:2px 6px;text-align:left;vertical-align:top}
.shadow-nb pre{margin:0;font-size:11px;line-height:1.35;white-space:pre-wrap;word-break:break-all}
.shadow-nb .sd-real{background:#ffd8d3;outline:1px solid #cf222e}
.shadow-nb .sd-noise{background:#eaeef2;color:#57606a;text-decoration:underline dotted}
.shadow-nb .sd-badge{color:#fff;padding:1px 6px;border-radius:3px;font-weight:600}
</style>"""



def _e(value: Any) -> str:
    """HTML-escaped text of any value ('' for None): quotes too, so it is safe in attributes."""
    return "" if value is None else html.escape(str(value), quote=True)


# ---------------------------------------------------------------------------------------------------
# One pair, side by side


@dataclass(frozen=True)
class Mark:
    """How a pointer is highlighted on one side: real difference or noise, and why (a tooltip)."""

    noise: bool
    title: str


def _mark_span(mark: Mark | None, inner: str) -> str:
    if mark is None:
        return inner
    cls = "sd-noise" if mark.noise else "sd-real"
    return f'<span class="{cls}" title="{_e(mark.title)}">{inner}</span>'


def _token(key: str) -> str:
    """RFC 6901 escaping of one reference token (the diff engine's pointers use it)."""
    return key.replace("~", "~0").replace("/", "~1")


def render_json_html(value: Any, marks: Mapping[str, Mark], pointer: str = "", indent: int = 0) -> str:
    """`value` pretty-printed as escaped HTML (for a <pre>), each node whose JSON pointer is in
    `marks` wrapped in a highlighting span (the key with it)."""
    import orjson

    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = []
        for key, child in value.items():
            ptr = f"{pointer}/{_token(str(key))}"
            text = f"{_e(orjson.dumps(str(key)).decode())}: {render_json_html(child, marks, ptr, indent + 1)}"
            items.append(pad + _mark_span(marks.get(ptr), text))
        body = "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    elif isinstance(value, list) and value:
        items = []
        for i, child in enumerate(value):
            ptr = f"{pointer}/{i}"
            items.append(pad + _mark_span(marks.get(ptr), render_json_html(child, marks, ptr, indent + 1)))
        body = "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    else:
        body = _e(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode())
    return _mark_span(marks.get(pointer), body) if indent == 0 else body


def render_body_html(body: bytes | None, content_type: str | None, marks: Mapping[str, Mark]) -> str:
    """A response body for a cell: JSON pretty-printed with its differing pointers highlighted;
    anything else as (escaped, clipped) text, highlighted whole when the body as a whole differs."""
    import orjson

    if body is None:
        return "<em>no body</em>"
    if not body:
        return "<em>empty body</em>"
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", errors="replace")
        clipped = text[:MAX_BODY_CHARS] + (f"\n… (+{len(text) - MAX_BODY_CHARS:,} chars)" if len(text) > MAX_BODY_CHARS else "")
        whole = marks.get("") or next(iter(marks.values()), None)
        return f"<pre>{_mark_span(whole, _e(clipped))}</pre>"
    return f"<pre>{render_json_html(value, marks)}</pre>"


def _header_map(headers: Sequence[Any] | None) -> dict[str, str]:
    from analyzers.diff import header_map

    return header_map(headers or ())


def _renamed_pointer(new: str | None) -> str | None:
    """A `renamed` difference's new key pointer (its `new` is the pointer as a JSON string)."""
    try:
        value = json.loads(new) if new else None
    except ValueError:
        return None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class PairView:
    """One request as every role answered it, with the differences the diff engine found.

    `diffs` holds the primary-vs-candidate rows of the `diffs` table (noise flagged, never dropped);
    `secondary_diffs` the primary-vs-secondary differences computed here, which show what changes
    on every call even with the primary's own code (why those fields count as noise)."""

    request_id: str
    endpoint: str
    method: str
    url: str
    sides: dict[str, dict[str, Any]]  # role → status, latency_ms, error, headers, body, content_type, service
    diffs: list[dict[str, Any]] = field(default_factory=list)
    secondary_diffs: list[dict[str, Any]] = field(default_factory=list)
    compared: bool = True  # False: the diff run predates this pair (sealed since): cap.compute_diffs()
    request_headers: Sequence[Any] = ()  # the client's request as captured (secrets redacted)
    request_body: bytes | None = None

    @property
    def roles(self) -> list[str]:
        return [role for role, _ in ROLE_PREFIXES if role in self.sides]

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.diffs, columns=["kind", "op", "pointer", "pointer_template", "old", "new",
                                                 "noise", "noise_reason"])

    def _marks(self, role: str, kind: str) -> dict[str, Mark]:
        marks: dict[str, Mark] = {}
        if role == "secondary":
            rows, present = self.secondary_diffs, ("changed", "type_changed", "added", "truncated", "reordered",
                                                   "renamed")
        elif role == "primary":
            rows, present = self.diffs, ("changed", "type_changed", "removed", "truncated", "reordered", "renamed")
        else:
            rows, present = self.diffs, ("changed", "type_changed", "added", "truncated", "reordered", "renamed")
        for d in rows:
            if d["kind"] != kind or d["op"] not in present:
                continue
            pointer = d["pointer"]
            if d["op"] == "renamed" and role != "primary":
                pointer = _renamed_pointer(d["new"]) or pointer  # the new key, on the side that has it
            noise = bool(d["noise"]) or role == "secondary"
            reason = d.get("noise_reason") or ("differs from the primary on the secondary too" if role == "secondary"
                                               else "")
            title = f"{d['op']} {d['pointer'] or '(whole)'}: {d['old']} → {d['new']}"
            if noise:
                title += f" — noise: {reason}" if reason else " — noise"
            previous = marks.get(pointer)
            if previous is None or (previous.noise and not noise):  # a real difference wins over noise
                marks[pointer] = Mark(noise, title)
        return marks

    def _headers_table(self) -> str:
        roles = self.roles
        maps = {role: _header_map(self.sides[role]["headers"]) for role in roles}
        names = sorted(set().union(*(m.keys() for m in maps.values())))
        marks = {role: self._marks(role, "header") for role in roles}
        head = "".join(f"<th>{_e(role)}</th>" for role in roles)
        rows = []
        for name in names:
            ptr = "/" + _token(name)
            cells = "".join(f"<td>{_mark_span(marks[role].get(ptr), _e(maps[role].get(name, '—')))}</td>"
                            for role in roles)
            rows.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
        return f"<details><summary>response headers</summary><table><tr><th></th>{head}</tr>{''.join(rows)}</table></details>"

    def _diff_table(self) -> str:
        if not self.compared:
            return ("<p><strong>Not diffed yet</strong>: this pair was captured after the last diff run; "
                    "<code>cap.compute_diffs()</code> compares it.</p>")
        if not self.diffs:
            return "<p>No differences between the primary and the candidate.</p>"
        real = sum(not d["noise"] for d in self.diffs)
        rows = "".join(
            f'<tr class="{"sd-noise" if d["noise"] else "sd-real"}"><td>{_e(d["kind"])}</td><td>{_e(d["op"])}</td>'
            f"<td><code>{_e(d['pointer'] or '(whole)')}</code></td><td><code>{_e(d['old'])}</code></td>"
            f"<td><code>{_e(d['new'])}</code></td><td>{'noise: ' + _e(d['noise_reason'] or '') if d['noise'] else 'real'}</td></tr>"
            for d in sorted(self.diffs, key=lambda d: (bool(d["noise"]), d["kind"], d["pointer"])))
        return (f"<p>{real} real and {len(self.diffs) - real} noise difference(s), primary → candidate:</p>"
                "<table><tr><th>kind</th><th>op</th><th>pointer</th><th>primary</th><th>candidate</th>"
                f"<th>class</th></tr>{rows}</table>")

    def _request_section(self) -> str:
        headers = _header_map(self.request_headers)
        rows = "".join(f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in sorted(headers.items()))
        body = render_body_html(self.request_body, headers.get("content-type"), {}) if self.request_body else ""
        return (f"<details><summary>request: {len(headers)} header(s)"
                f"{f', {len(self.request_body):,} byte body' if self.request_body else ', no body'}</summary>"
                f"<table>{rows}</table>{body}</details>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_html(self) -> str:
        """The side-by-side view as one self-contained HTML fragment (styles included; every value
        from traffic escaped): the notebook cell, the live view and the report show the same."""
        roles = self.roles
        head = []
        for role in roles:
            s = self.sides[role]
            status = _e(s["status"]) if s["error"] is None else f"error: {_e(s['error'])}"
            marks = self._marks(role, "status")
            latency = "—" if s["latency_ms"] is None else f"{float(s['latency_ms']):.1f} ms"
            head.append(f"<th>{_e(role)} <small>({_e(s['service'])})</small><br>"
                        f"status {_mark_span(marks.get(''), status)} · {_e(latency)}</th>")
        bodies = "".join(f"<td>{render_body_html(self.sides[r]['body'], self.sides[r]['content_type'], self._marks(r, 'body'))}</td>"
                         for r in roles)
        legend = ('<p><span class="sd-real">real difference</span> · <span class="sd-noise">noise</span> '
                  "(hover a highlight for the values and the reason)</p>")
        return (f'{PAIR_STYLE}<div class="shadow-nb"><h4>{_e(self.method)} {_e(self.url)}</h4>'
                f"<p>request <code>{_e(self.request_id)}</code> · endpoint <code>{_e(self.endpoint)}</code></p>"
                f"{self._request_section()}{legend}<table><tr>{''.join(head)}</tr><tr>{bodies}</tr></table>"
                f"{self._headers_table()}{self._diff_table()}</div>")

    def __repr__(self) -> str:
        real = sum(not d["noise"] for d in self.diffs)
        return (f"<PairView {self.method} {self.url} request {self.request_id}: roles {', '.join(self.roles)}; "
                f"{real} real, {len(self.diffs) - real} noise differences>")


def load_pair(con: duckdb.DuckDBPyConnection, request_id: str, *, candidate: str | None = None, rules: Any = None,
              source: str = "the capture") -> PairView:
    """The pair of `request_id` from a connection with the capture's `pairs`, `diffs` and
    `diffs_summary` views (shadow.capture.store, after a diff run); `candidate` picks the candidate
    service when a route mirrored to several. The primary-vs-secondary differences are computed
    here with `rules` (the diff rules of the analysis; the defaults when None)."""
    from analyzers.diff import ExchangeSide, diff_pair
    from analyzers.rules import DEFAULT_RULES

    where = "request_id = ?" + (" AND c_service = ?" if candidate is not None else "")
    params = [request_id] + ([candidate] if candidate is not None else [])
    rel = con.execute(f"SELECT * FROM pairs WHERE {where} ORDER BY c_service LIMIT 1", params)
    names = [d[0] for d in rel.description or ()]
    row = rel.fetchone()
    if row is None:
        raise CaptureError(f"{source}: no pair with request_id {request_id!r}"
                           + (f" and candidate {candidate!r}" if candidate is not None else "")
                           + " (see cap.pairs for the paired requests)")
    data = dict(zip(names, row, strict=True))
    sides = {}
    for role, prefix in ROLE_PREFIXES:
        if data.get(prefix + "exchange_id") is None:
            continue
        sides[role] = {"service": data[prefix + "service"], "status": data[prefix + "status"],
                       "latency_ms": data[prefix + "latency_ms"], "error": data[prefix + "error"],
                       "headers": data[prefix + "resp_headers"], "body": data[prefix + "resp_body"],
                       "content_type": data[prefix + "resp_content_type"]}
    cols = ["kind", "op", "pointer", "pointer_template", "old", "new", "noise", "noise_reason"]
    diff_rows = con.execute(
        f"SELECT {', '.join(cols)} FROM diffs WHERE request_id = ? AND c_service IS NOT DISTINCT FROM ? "
        "ORDER BY kind, pointer", [request_id, data["c_service"]]).fetchall()
    compared = bool(con.execute(
        "SELECT count(*) FROM diffs_summary WHERE request_id = ? AND c_service IS NOT DISTINCT FROM ?",
        [request_id, data["c_service"]]).fetchall()[0][0])
    secondary: list[dict[str, Any]] = []
    if "secondary" in sides:
        found = diff_pair(ExchangeSide.from_row(data, "p_"), ExchangeSide.from_row(data, "s_"),
                          rules if rules is not None else DEFAULT_RULES, endpoint=data["endpoint"])
        secondary = [d._asdict() for d in found]
    return PairView(request_id=request_id, endpoint=str(data["endpoint"]), method=str(data["method"]),
                    url=str(data["url"]), sides=sides,
                    diffs=[dict(zip(cols, r, strict=True)) for r in diff_rows], secondary_diffs=secondary,
                    compared=compared, request_headers=data["req_headers"] or (), request_body=data["req_body"])
