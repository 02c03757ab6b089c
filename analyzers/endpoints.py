"""Endpoint templating for the analyzers: raw paths → templates such as /users/{name}/orders/{id}.

Three layers, first match wins:

1. explicit templates from the config (`shadow.endpoints: ["/api/orders/{id}", "/files/{path*}"]`):
   `{x}` matches one segment, `{x*}` the rest of the path (one or more segments); literals match
   exactly. The template itself is the endpoint.
2. the static rules of shadow.capture.endpoints.template_path (numeric ids, UUIDs, dates, long hex), the same
   ones the gateway applies at capture time;
3. segments learned from the data: a segment position whose distinct values under one parent prefix
   exceed `threshold` (/users/alice, /users/bob, … → /users/{name}) becomes a placeholder; the
   subtrees under those values are merged, so /users/alice/orders and /users/bob/orders both read
   /users/{name}/orders.

    templater = EndpointTemplater.learn(paths, explicit=["/files/{path*}"], threshold=25)
    templater.template("/users/alice/orders/7")       # "/users/{name}/orders/{id}"
    templater.template_many(arrow_or_pandas_column)  # same kind of column back, computed per distinct path
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadow.capture.endpoints import template_segment
from shadow.errors import ConfigError

DEFAULT_THRESHOLD = 25
DEFAULT_PLACEHOLDER = "{name}"
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}$")


def _is_placeholder(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


SLUG = "{slug}"  # the static rules' placeholder for slug-like ids: merged with literals when learning


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    collapsed: bool = False  # literal children were merged into children[placeholder]
    slugs: set[str] = field(default_factory=set)  # raw values behind children[SLUG] (capped)

    def merge(self, other: _Node) -> None:
        for seg, child in other.children.items():
            mine = self.children.get(seg)
            if mine is None:
                self.children[seg] = child
            else:
                mine.merge(child)


def compile_template(template: str, *, index: int | None = None, field_name: str = "shadow.endpoints") -> re.Pattern[str]:
    """`/api/orders/{id}` → an anchored regex; a malformed template raises ConfigError."""
    where = f"{field_name}[{index}]" if index is not None else field_name
    if not isinstance(template, str) or not template.startswith("/"):
        raise ConfigError(f"endpoint template must be a string starting with '/', got {template!r}", field=where)
    parts = template.split("/")[1:]
    out = ""
    for i, seg in enumerate(parts):
        m = _PARAM.match(seg)
        if m and m.group(2):
            if i != len(parts) - 1:
                raise ConfigError(f"{template!r}: a rest parameter {{{m.group(1)}*}} must be the last segment",
                                  field=where)
            out += "/.+"
        elif m:
            out += "/[^/]+"
        elif "{" in seg or "}" in seg:
            raise ConfigError(f"{template!r}: segment {seg!r} is not a literal or a {{name}} / {{name*}} parameter",
                              field=where)
        else:
            out += "/" + re.escape(seg)
    return re.compile("^" + out + "$")


class EndpointTemplater:
    """Maps raw paths (no query) to endpoint templates. Build with `learn`, or directly with only
    explicit templates (then it is the static templating plus the overrides)."""

    def __init__(self, explicit: Sequence[str] = (), *, threshold: int = DEFAULT_THRESHOLD,
                 placeholder: str = DEFAULT_PLACEHOLDER, _root: _Node | None = None) -> None:
        if threshold < 1:
            raise ConfigError(f"the learning threshold must be ≥ 1, got {threshold}", field="threshold")
        if not _is_placeholder(placeholder):
            raise ConfigError(f"placeholder must look like {{name}}, got {placeholder!r}", field="placeholder")
        self.explicit = tuple(explicit)
        self._explicit = [(t, compile_template(t, index=i)) for i, t in enumerate(self.explicit)]
        self.threshold = threshold
        self.placeholder = placeholder
        self._root = _root or _Node()
        self._cache: dict[str, str] = {}

    @classmethod
    def learn(cls, paths: Iterable[str | None], *, explicit: Sequence[str] = (), threshold: int = DEFAULT_THRESHOLD,
              placeholder: str = DEFAULT_PLACEHOLDER) -> EndpointTemplater:
        """Learn high-cardinality segments from `paths` (any iterable; duplicates are fine)."""
        root = _Node()
        for path in set(paths):
            if not path:
                continue
            path = path.split("?", 1)[0]
            node = root
            for seg in _segments(path):
                templated = template_segment(seg) if seg else seg
                if templated == SLUG and len(node.slugs) <= threshold:
                    node.slugs.add(seg)
                node = node.children.setdefault(templated, _Node())
        _collapse(root, threshold, placeholder)
        return cls(explicit, threshold=threshold, placeholder=placeholder, _root=root)

    def template(self, path: str) -> str:
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        result = self._template(path.split("?", 1)[0] or "/")
        if len(self._cache) < 1_000_000:
            self._cache[path] = result
        return result

    def _template(self, path: str) -> str:
        for template, rx in self._explicit:
            if rx.match(path):
                return template
        out = []
        node: _Node | None = self._root
        for seg in _segments(path):
            seg = template_segment(seg) if seg else seg
            if node is not None and node.collapsed and seg and (not _is_placeholder(seg) or seg == SLUG):
                seg = self.placeholder
            out.append(seg)
            node = node.children.get(seg) if node is not None else None
        return "/" + "/".join(out)

    def template_many(self, paths: Any) -> Any:
        """Vectorised over a column: a pyarrow Array/ChunkedArray gives a pyarrow string Array, a pandas
        Series a Series (same index), any other iterable a list. Each distinct path is templated once."""
        import pyarrow as pa

        if isinstance(paths, (pa.Array, pa.ChunkedArray)):
            import pyarrow.compute as pc

            encoded = pc.dictionary_encode(paths)
            chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
            out = []
            for chunk in chunks:
                uniques = [None if p is None else self.template(p) for p in chunk.dictionary.to_pylist()]
                out.append(pa.array(uniques, pa.string()).take(chunk.indices))
            if not out:
                return pa.array([], pa.string())
            return out[0] if len(out) == 1 else pa.concat_arrays(out)
        import pandas as pd

        if isinstance(paths, pd.Series):
            codes, distinct = pd.factorize(paths, use_na_sentinel=True)
            mapped = [self.template(str(p)) for p in distinct.tolist()]
            return pd.Series([mapped[c] if c >= 0 else None for c in codes], index=paths.index, dtype=object)
        return [None if p is None else self.template(p) for p in paths]

    def learned(self) -> list[str]:
        """The learned templates (every root-to-node path ending at a placeholder), for display."""
        found: list[str] = []

        def visit(node: _Node, prefix: str) -> None:
            for seg, child in node.children.items():
                here = f"{prefix}/{seg}"
                if seg == self.placeholder and node.collapsed:
                    found.append(here)
                visit(child, here)

        visit(self._root, "")
        return sorted(found)


def _segments(path: str) -> list[str]:
    return path.split("/")[1:] if path.startswith("/") else path.split("/")


def _collapse(node: _Node, threshold: int, placeholder: str) -> None:
    # slug-like values count with the literals: /users/ada and /users/ada-lovelace-17 are one parameter
    literals = [s for s in node.children if s and not _is_placeholder(s)]
    if literals and len(literals) + len(node.slugs) > threshold:
        if SLUG in node.children and placeholder != SLUG:
            literals.append(SLUG)
        merged = node.children.get(placeholder) or _Node()
        for seg in literals:
            merged.merge(node.children.pop(seg))
        node.children[placeholder] = merged
        node.collapsed = True
    for child in node.children.values():
        _collapse(child, threshold, placeholder)


def learn_from_capture(capture_dir: str | Path, *, explicit: Sequence[str] = (), threshold: int = DEFAULT_THRESHOLD,
                       placeholder: str = DEFAULT_PLACEHOLDER) -> EndpointTemplater:
    """Learn from the distinct paths of a capture's exchanges (streamed from DuckDB)."""
    from shadow.capture.store import open_store

    with open_store(capture_dir) as store:
        reader = store.con.sql("SELECT DISTINCT path FROM exchanges WHERE path IS NOT NULL").to_arrow_reader(
            65536)
        assert reader is not None
        paths = (p for batch in reader for p in batch.column(0).to_pylist())
        return EndpointTemplater.learn(paths, explicit=explicit, threshold=threshold, placeholder=placeholder)
