"""Per-path diff rules (analyzers/rules.py) applied by the diff engine, and their config errors."""

from __future__ import annotations

from typing import Any

import pytest
from ruamel.yaml import YAML

from analyzers.diff import Difference, diff_json
from analyzers.rules import glob_to_regex, load_rules
from shadow.errors import ConfigError


def rows(a: Any, b: Any, rules: list[dict[str, Any]], endpoint: str | None = None) -> list[tuple[Any, ...]]:
    diffs: list[Difference] = diff_json(a, b, load_rules(rules).for_endpoint(endpoint))
    return [(d.op, d.pointer, d.noise, d.noise_reason) for d in diffs]


def test_glob_semantics() -> None:
    assert glob_to_regex("/items/*/updatedAt").match("/items/*/updatedAt")
    assert not glob_to_regex("/items/*/updatedAt").match("/items/*/x/updatedAt")
    rx = glob_to_regex("**/requestId")
    assert rx.match("/requestId") and rx.match("/a/*/b/requestId") and not rx.match("/requestIds")
    assert glob_to_regex("/meta/**").match("/meta") and glob_to_regex("/meta/**").match("/meta/a/b")
    assert glob_to_regex("/a/upd*").match("/a/updatedAt")


def test_ignore_glob_marks_noise_and_covers_subtrees() -> None:
    a = {"requestId": "1", "items": [{"id": 1, "updatedAt": "t1"}], "meta": {"x": 1, "y": [1]}, "n": 1}
    b = {"requestId": "2", "items": [{"id": 1, "updatedAt": "t2"}], "meta": {"x": 2, "y": [2]}, "n": 2}
    got = rows(a, b, [{"ignore": "**/requestId"}, {"path": "/items/*/updatedAt", "ignore": True},
                      {"ignore": "/meta"}])
    assert got == [
        ("changed", "/requestId", True, "rule: ignore **/requestId"),
        ("changed", "/items/0/updatedAt", True, "rule: ignore /items/*/updatedAt"),
        ("changed", "/meta", True, "rule: ignore /meta"),  # one row for the ignored subtree
        ("changed", "/n", False, None),
    ]


def test_ignore_applies_to_added_and_removed_fields() -> None:
    assert rows({"a": 1, "traceId": "x"}, {"a": 1}, [{"ignore": "**/traceId"}]) == [
        ("removed", "/traceId", True, "rule: ignore **/traceId")]


def test_ignore_by_regex() -> None:
    got = rows({"a": {"etag": 1, "rev": 1, "x": 1}}, {"a": {"etag": 2, "rev": 2, "x": 2}},
               [{"regex": "/(etag|rev)$", "ignore": True}])
    assert [(op, p, n) for op, p, n, _ in got] == [("changed", "/a/etag", True), ("changed", "/a/rev", True),
                                                   ("changed", "/a/x", False)]
    assert got[0][3] == "rule: ignore regex /(etag|rev)$"


def test_numeric_tolerance_absolute_and_relative() -> None:
    a = {"p": 10.0, "q": 1000.0, "r": 5}
    b = {"p": 10.004, "q": 1001.0, "r": 6}
    got = rows(a, b, [{"path": "/p", "tolerance": 0.01}, {"path": "/q", "tolerance": {"rel": 0.002}},
                      {"path": "/r", "tolerance": {"abs": 0.5}}])
    assert [(p, n) for _, p, n, _ in got] == [("/p", True), ("/q", True), ("/r", False)]
    assert got[0][3] == "rule: tolerance abs 0.01 /p"
    # a tolerance never excuses a type change
    assert rows({"p": 1}, {"p": "1"}, [{"path": "/p", "tolerance": 5}]) == [("type_changed", "/p", False, None)]


def test_presence_only() -> None:
    rules = [{"path": "/session", "presence": True}]
    assert rows({"session": "abc"}, {"session": {"id": 1}}, rules) == [
        ("type_changed", "/session", True, "rule: presence-only /session")]
    assert rows({"session": "abc"}, {}, rules) == [("removed", "/session", False, None)]


def test_array_ordered_is_the_default() -> None:
    # ordered by default: the same elements in another order are one `reordered` difference
    assert [r[:2] for r in rows({"t": ["a", "b"]}, {"t": ["b", "a"]}, [])] == [("reordered", "/t")]
    assert [r[:2] for r in rows({"t": ["a", "b"]}, {"t": ["c", "a"]}, [])] == [("changed", "/t/0"), ("changed", "/t/1")]


def test_array_unordered_multiset() -> None:
    rules = [{"path": "/t", "array": "unordered"}]
    assert rows({"t": ["a", "b", "b"]}, {"t": ["b", "a", "b"]}, rules) == []
    assert [r[:2] for r in rows({"t": ["a", "b", "b"]}, {"t": ["b", "a", "c"]}, rules)] == [
        ("removed", "/t/2"), ("added", "/t/2")]


def test_array_keyed_by_field() -> None:
    a = {"items": [{"id": 1, "q": 1}, {"id": 2, "q": 2}, {"id": 3, "q": 3}]}
    b = {"items": [{"id": 3, "q": 3}, {"id": 1, "q": 5}, {"id": 4, "q": 4}]}
    got = rows(a, b, [{"path": "/items", "array": {"key": "id"}}])
    assert [r[:2] for r in got] == [("changed", "/items/0/q"), ("removed", "/items/1"), ("added", "/items/2")]
    long_form = rows(a, b, [{"path": "/items", "array": "keyed", "key": "id"}])
    assert long_form == got
    # elements without a unique key fall back to the multiset comparison
    dup = rows({"items": [{"id": 1}, {"id": 1}]}, {"items": [{"id": 1}, {"id": 1}]}, [
        {"path": "/items", "array": {"key": "id"}}])
    assert dup == []


def test_rules_scoped_to_an_endpoint() -> None:
    rules = [{"ignore": "/total", "endpoint": "/api/orders/*"}]
    assert rows({"total": 1}, {"total": 2}, rules, "/api/orders/{id}")[0][2] is True
    assert rows({"total": 1}, {"total": 2}, rules, "/api/carts/{id}")[0][2] is False


@pytest.mark.parametrize(("rule", "field", "words"), [
    ({"ignore": 3}, "shadow.analysis.rules[0].ignore", "true or a path glob"),
    ({"path": "/a"}, "shadow.analysis.rules[0]", "exactly one action"),
    ({"path": "/a", "ignore": True, "presence": True}, "shadow.analysis.rules[0]", "exactly one action"),
    ({"ignore": True}, "shadow.analysis.rules[0].path", "exactly one selector"),
    ({"path": "/a", "tolerance": {"abs": -1}}, "shadow.analysis.rules[0].tolerance.abs", "non-negative"),
    ({"path": "/a", "tolerance": {"pct": 1}}, "shadow.analysis.rules[0].tolerance", "unknown 'pct'"),
    ({"path": "/a", "array": "sorted"}, "shadow.analysis.rules[0].array", "ordered, unordered, keyed"),
    ({"path": "/a", "array": "keyed"}, "shadow.analysis.rules[0].key", "needs `key: FIELD`"),
    ({"regex": "(", "ignore": True}, "shadow.analysis.rules[0].regex", "not a valid regular expression"),
    ({"ignore": "/a", "colour": 1}, "shadow.analysis.rules[0].colour", "unknown field"),
    ({"header": "Bad Name"}, "shadow.analysis.rules[0].header", "header name or glob"),
    ({"header": "etag", "tolerance": 1}, "shadow.analysis.rules[0].tolerance", "does not apply"),
    ("ignore", "shadow.analysis.rules[0]", "must be a mapping"),
])
def test_bad_rules_name_index_and_field(rule: Any, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_rules([rule])
    assert err.value.field == field
    assert words in err.value.message and "rule 0" in err.value.message


def test_bad_rule_from_yaml_names_file_and_line() -> None:
    doc = YAML().load("rules:\n  - ignore: '**/requestId'\n  - path: /a\n    tolerance: lots\n")
    with pytest.raises(ConfigError) as err:
        load_rules(doc["rules"], file="gateway.yaml")
    assert err.value.message.startswith("gateway.yaml:3: shadow.analysis.rules[1].tolerance: rule 1:")


def test_the_documented_rules_example_loads() -> None:
    # docs/policy.md, "Diff rules": the example a reader copies must be valid
    import io
    import re
    from pathlib import Path

    from ruamel.yaml import YAML

    text = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text(encoding="utf-8")
    section = text[text.index("## Diff rules"):]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    data = YAML(typ="rt").load(io.StringIO(match.group(1)))
    rules = load_rules(data["shadow"]["analysis"]["rules"])
    assert [r.action for r in rules.rules] == ["ignore", "ignore", "ignore", "tolerance", "tolerance", "presence",
                                              "array", "array", "header", "header"]
