"""Reading YAML configuration files with file, line and field in every error.

The gateway's config (shadow/gateway/config.py), its auth middlewares (shadow/auth/config.py) and its
telemetry section (shadow/telemetry/tracing.py) share this: `read_yaml_file` / `load_yaml` turn text
into ruamel's round-trip tree (which keeps line numbers) or raise one `ConfigError`; `YamlReader`
gives typed access to that tree, each failure a `ConfigError` naming file, line and dotted field.
Imports nothing of the project but shadow.errors, so every config parser can use it without cycles.

A config file is input from whoever can write it, and a hot reload parses it inside the running
gateway, so reading one is bounded (issue #17, "config bombs"): at most `MAX_CONFIG_BYTES`, mappings
and lists nested at most `MAX_NESTING` deep, aliases expanding to at most `MAX_ALIAS_NODES` nodes
(an anchors bomb is rejected while it is composed, before anything walks the expanded tree),
rule-like expressions inside values (router rules, breaker expressions, claim conditions) nested at
most `MAX_EXPRESSION_NESTING` deep, and `chain` middlewares expanding to at most
`MAX_CHAIN_MIDDLEWARES` (shadow/gateway/config.py). Each limit is one `ConfigError` naming file and line.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from shadow.errors import ConfigError

# Limits of a config file. A real gateway config is a few KB, a dozen levels deep, with a few small
# aliases; these leave it ample room and keep a hostile one to a few seconds and a few MB (ruamel's
# round-trip parser reads dense YAML at ~100 KB/s: the size limit is what bounds the time).
MAX_CONFIG_BYTES = 256 * 1024
MAX_NESTING = 64  # mappings and lists inside each other
MAX_ALIAS_NODES = 100_000  # nodes that all the aliases of a file stand for, expanded
MAX_EXPRESSION_NESTING = 64  # parentheses and negations in a rule, breaker expression or claim condition
MAX_CHAIN_MIDDLEWARES = 1000  # middlewares a `chain` stands for once nested chains are expanded

# An HTTP header name as a config value may give it: an RFC 9110 token.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from a Go-style duration ("5s", "250ms", "1m30s") or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 5s, 250ms or 1m")
    if not isinstance(value, int | float | str):
        raise ValueError("expected a duration like 5s, 250ms or 1m")
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise ValueError(f"{value!r} is not a duration like 5s, 250ms or 1m") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a duration like 5s, 250ms or 1m")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds



class YamlReader:
    """Typed access to the YAML tree; every failure is a ConfigError with file, line and field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str, field: str | None, line: int | None) -> NoReturn:
        raise ConfigError(message, file=self.source, line=line, field=field)

    # line numbers (1-based) ----------------------------------------------------------------------
    @staticmethod
    def key_line(node: Any, key: Any) -> int | None:
        try:
            return int(node.lc.key(key)[0]) + 1
        except (AttributeError, KeyError, TypeError):
            return YamlReader.node_line(node)

    @staticmethod
    def value_line(node: Any, key: Any) -> int | None:
        try:
            if node[key] is None:  # an empty value has no position of its own: point at its key
                return YamlReader.key_line(node, key)
            return int(node.lc.value(key)[0]) + 1
        except (AttributeError, KeyError, TypeError):
            return YamlReader.key_line(node, key)

    @staticmethod
    def item_line(node: Any, index: int) -> int | None:
        try:
            return int(node.lc.item(index)[0]) + 1
        except (AttributeError, KeyError, TypeError, IndexError):
            return YamlReader.node_line(node)

    @staticmethod
    def node_line(node: Any) -> int | None:
        try:
            return int(node.lc.line) + 1
        except (AttributeError, TypeError):
            return None

    # structure ----------------------------------------------------------------------------------
    def mapping(self, node: Any, field: str, line: int | None, *, allow_null: bool = True) -> dict[Any, Any]:
        if node is None and allow_null:
            return CommentedMap()
        if not isinstance(node, dict):
            self.fail(f"expected a mapping, got {value_kind(node)}", field, line)
        return node

    def check_keys(self, node: dict[Any, Any], field: str, allowed: Iterable[str],
                   unsupported: Iterable[str] = (), ignored: Iterable[str] = ()) -> None:
        allowed = tuple(allowed)
        unsupported = frozenset(unsupported)
        known = (*allowed, *unsupported, *ignored)
        self.canonicalize_keys(node, field, known)
        for key in node:
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                self.fail(f"keys must be strings, got {value_kind(key)}", field or None, self.key_line(node, key))
            if key in unsupported:
                self.fail("not supported yet by the shadow gateway", where, self.key_line(node, key))
            if key not in known:
                self.fail(f"unknown key{did_you_mean(key, allowed)}", where, self.key_line(node, key))

    def canonicalize_keys(self, node: dict[Any, Any], field: str, known: Iterable[str]) -> None:
        """Traefik matches option names case-insensitively (`loadbalancer` is `loadBalancer`):
        rename such keys in place to their canonical spelling, keeping their line numbers."""
        by_lower = {k.lower(): k for k in known}
        renames = {key: by_lower[key.lower()] for key in node
                   if isinstance(key, str) and key not in by_lower.values() and key.lower() in by_lower}
        if not renames:
            return
        seen: dict[str, str] = {}
        for key in node:
            canonical = renames.get(key, key)
            if canonical in seen:
                where = f"{field}.{key}" if field else str(key)
                self.fail(f"duplicate key: {seen[canonical]!r} and {key!r} are the same option",
                          where, self.key_line(node, key))
            seen[canonical] = key
        items = list(node.items())
        positions = dict(getattr(getattr(node, "lc", None), "data", None) or {})
        node.clear()
        for key, value in items:
            canonical = renames.get(key, key)
            node[canonical] = value
            if key in positions:
                node.lc.data[canonical] = positions[key]  # type: ignore[attr-defined]

    def string(self, node: dict[Any, Any], key: str, field: str, *, default: str | None = None,
               required: bool = False, allow_empty: bool = False) -> str | None:
        where = f"{field}.{key}"
        if key not in node or node[key] is None:
            if required:
                self.fail("required", where, self.node_line(node))
            return default
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(f"expected a string, got {value_kind(value)}", where, self.value_line(node, key))
        text = str(value)
        if not text and not allow_empty:
            self.fail("must not be empty", where, self.value_line(node, key))
        return text

    def required_string(self, node: dict[Any, Any], key: str, field: str) -> str:
        value = self.string(node, key, field, required=True)
        if value is None:  # string() already failed; this keeps the type checker informed
            self.fail("required", f"{field}.{key}", self.node_line(node))
        return value

    def integer(self, node: dict[Any, Any], key: str, field: str, default: int, *,
                minimum: int | None = None, maximum: int | None = None) -> int:
        where = f"{field}.{key}"
        if key not in node or node[key] is None:
            return default
        value = node[key]
        line = self.value_line(node, key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"expected an integer, got {value_kind(value)}", where, line)
        value = int(value)
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            self.fail(f"must be between {minimum} and {maximum}, got {value}", where, line)
        if minimum is not None and value < minimum:
            self.fail(f"must be at least {minimum}, got {value}", where, line)
        if maximum is not None and value > maximum:
            self.fail(f"must be at most {maximum}, got {value}", where, line)
        return value

    def number(self, node: dict[Any, Any], key: str, field: str, default: float, *, minimum: float) -> float:
        where = f"{field}.{key}"
        if key not in node or node[key] is None:
            return default
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"expected a number, got {value_kind(value)}", where, self.value_line(node, key))
        if value < minimum:
            self.fail(f"must be at least {minimum}, got {value}", where, self.value_line(node, key))
        return float(value)

    def boolean(self, node: dict[Any, Any], key: str, field: str, default: bool) -> bool:
        if key not in node or node[key] is None:
            return default
        value = node[key]
        if not isinstance(value, bool):
            self.fail(f"expected true or false, got {value_kind(value)}", f"{field}.{key}",
                      self.value_line(node, key))
        return value

    def duration(self, node: dict[Any, Any], key: str, field: str, default: float) -> float:
        if key not in node or node[key] is None:
            return default
        try:
            return parse_duration(node[key])
        except ValueError as exc:
            self.fail(str(exc), f"{field}.{key}", self.value_line(node, key))

    def sequence(self, node: dict[Any, Any], key: str, field: str) -> CommentedSeq:
        if key not in node or node[key] is None:
            return CommentedSeq()
        value = node[key]
        if not isinstance(value, list):
            self.fail(f"expected a list, got {value_kind(value)}", f"{field}.{key}", self.value_line(node, key))
        return value  # type: ignore[return-value]

    def string_list(self, node: dict[Any, Any], key: str, field: str) -> tuple[str, ...]:
        items = self.sequence(node, key, field)
        out: list[str] = []
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, str | int) or str(item) == "":
                what = "an empty string" if item == "" else value_kind(item)
                self.fail(f"expected a non-empty string, got {what}", f"{field}.{key}[{i}]",
                          self.item_line(items, i))
            out.append(str(item))
        return tuple(out)


def value_kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def plain(node: Any) -> Any:
    """ruamel's commented containers → plain dicts/lists (for the raw analysis section)."""
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool | None):
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _yaml_error(exc: YAMLError, source: str, text: str) -> ConfigError:
    if isinstance(exc, MarkedYAMLError) and exc.problem_mark is not None:
        line = exc.problem_mark.line + 1
        problem = (exc.problem or "syntax error").split("\n")[0]
        if "duplicate key" in problem:  # ruamel quotes both values too, which may be huge: the key only
            duplicate = re.match(r"(?:found )?(duplicate key .*?) with value ", problem)
            message = duplicate.group(1) if duplicate else problem.replace("found ", "")
            return ConfigError(message + " (each key may appear once)",
                               file=source, line=line, field=_dotted_path_at(text, line))
        context = f" ({exc.context})" if exc.context else ""
        return ConfigError(f"YAML syntax error: {problem}{context}", file=source, line=line)
    return ConfigError(f"YAML error: {str(exc).splitlines()[0]}", file=source)


def _complex_key_line(text: str) -> int | None:
    """Line (1-based) of the first mapping key that is not a scalar."""
    try:
        node = _bounded_yaml().compose(text)
    except YAMLError:
        return None
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, MappingNode):
            for key, value in current.value:
                if not isinstance(key, ScalarNode):
                    return int(key.start_mark.line) + 1
                stack.append(value)
        elif isinstance(current, SequenceNode):
            stack.extend(current.value)
    return None


def _dotted_path_at(text: str, line: int) -> str | None:
    """Dotted key path of block-style YAML line `line` (1-based), from indentation."""
    lines = text.splitlines()
    if not 0 < line <= len(lines):
        return None
    key_re = re.compile(r"^(\s*)(?:-\s+)?([^\s:#'\"][^:#]*?|'[^']*'|\"[^\"]*\")\s*:(?:\s|$)")
    m = key_re.match(lines[line - 1])
    if not m:
        return None
    parts = [m.group(2).strip("'\"")]
    indent = len(m.group(1))
    for prev in reversed(lines[:line - 1]):
        pm = key_re.match(prev)
        if pm and len(pm.group(1)) < indent and not prev.lstrip().startswith("-"):
            parts.append(pm.group(2).strip("'\""))
            indent = len(pm.group(1))
            if indent == 0:
                break
    return ".".join(reversed(parts))



class ConfigLimitError(YAMLError):
    """A config exceeded one of the limits above; `line` is 1-based (None: the file as a whole)."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _BoundedComposer(Composer):
    """ruamel's composer, counting what each alias stands for: an alias is the node it names, so a
    bomb (nine aliases of nine aliases of ...) costs nothing to compose and blows up only in
    whatever walks it later. Counting expanded sizes here (memoized per node) rejects it first."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        self.alias_nodes = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, expanded
        self._complete: set[int] = set()  # nodes composed to the end (an alias of an open one recurses)
        self._alias_line: int | None = None

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            self._alias_line = int(self.parser.peek_event().start_mark.line) + 1
            return super().compose_node(parent, index)
        node = super().compose_node(parent, index)
        self._complete.add(id(node))
        return node

    def return_alias(self, a: Any) -> Any:
        if id(a) not in self._complete:
            raise ConfigLimitError("an alias inside the node it names (a structure that contains itself)",
                                   self._alias_line)
        self.alias_nodes += _expanded_size(a, self._sizes)
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise ConfigLimitError(f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)",
                                   self._alias_line)
        return a


def _expanded_size(root: Node, sizes: dict[int, int]) -> int:
    """Nodes `root` stands for with every alias expanded; iterative, memoized in `sizes`."""
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        else:
            sizes[id(node)] = 1
            continue
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _bounded_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.max_depth = MAX_NESTING
    yaml.Composer = _BoundedComposer
    return yaml


def load_yaml(text: str, source: str) -> Any:
    """The round-trip tree of YAML `text` (None for an empty document); duplicate keys, syntax errors,
    mappings used as keys and the limits above are one `ConfigError` naming `source` and the line."""
    return _bounded_load(text, source, lambda yaml: yaml.load(text))


def load_yaml_all(text: str, source: str) -> list[Any]:
    """Every document of a multi-document `text` (`---` between them, as kubectl takes manifests), with
    load_yaml's checks; the limits apply to the file as a whole."""
    return _bounded_load(text, source, lambda yaml: list(yaml.load_all(text)))


def _bounded_load(text: str, source: str, load: Callable[[YAML], Any]) -> Any:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{size} bytes is larger than a config may be ({MAX_CONFIG_BYTES} bytes)", file=source)
    try:
        return load(_bounded_yaml())
    except ConfigLimitError as exc:
        raise ConfigError(exc.message, file=source, line=exc.line) from None
    except MaxDepthExceededError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise ConfigError(f"nested deeper than {MAX_NESTING} levels of mappings and lists", file=source,
                          line=line) from None
    except YAMLError as exc:
        raise _yaml_error(exc, source, text) from None
    except TypeError:  # ruamel cannot build a mapping whose key is itself a mapping or a list
        raise ConfigError("mapping keys must be plain values, not mappings or lists", file=source,
                          line=_complex_key_line(text)) from None


def read_yaml_file(path: Path) -> str:
    """The text of the YAML file at `path`; a missing, unreadable or non-UTF-8 file is a `ConfigError`."""
    source = str(path)
    try:
        with path.open("rb") as fo:
            raw = fo.read(MAX_CONFIG_BYTES + 1)  # never more than the limit in memory
    except FileNotFoundError:
        raise ConfigError("no such file", file=source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a YAML file", file=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=source) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than a config may be ({MAX_CONFIG_BYTES} bytes)", file=source)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", file=source, line=line) from None
