"""shadow.gateway.goregex: Go's regexp semantics on RE2 (expected outputs are Go's, from its docs)."""

from __future__ import annotations

import re

import pytest

from shadow.gateway.goregex import GoRegexpError, compile_go


def test_catastrophic_pattern_answers_correctly() -> None:
    # Python's re takes seconds (doubling per character) on this; RE2 is linear.
    regexp = compile_go(r"^/(a+)+$")
    assert regexp.search("/" + "a" * 40) is True
    assert regexp.search("/" + "a" * 39 + "b") is False


@pytest.mark.parametrize(("template", "expected"), [
    # Go's ExampleRegexp_ReplaceAllString
    ("T", "-T-T-"),
    ("$1", "--xx-"),
    ("$1W", "---"),  # "$1W" names the group "1W", which does not exist
    ("${1}W", "-W-xxW-"),
    ("$$", "-$-$-"),
    ("$", "-$-$-"),  # malformed: the '$' is kept
    ("${1", "-${1-${1-"),
])
def test_replace_all_expands_like_go(template: str, expected: str) -> None:
    assert compile_go("a(x*)b").replace_all("-ab-axxb-", template) == expected


def test_replace_all_empty_matches_like_go() -> None:
    # Go: "XbXcX"; Python's re.sub gives "XbXXcX" (an empty match after "aaa").
    assert compile_go("a*").replace_all("baaac", "X") == "XbXcX"
    assert compile_go("").replace_all("aé", "-") == "-a-é-"


def test_named_groups_both_spellings() -> None:
    assert compile_go(r"(?P<first>\w+) (?<last>\w+)").replace_all("Alan Turing", "${last} $first") == "Turing Alan"


def test_find_groups() -> None:
    m = compile_go(r"^/api/(v\d+)/(x)?").find("/api/v2/y")
    assert m is not None
    assert m.group(1) == "v2"
    assert m.group(2) == ""
    assert compile_go("z").find("abc") is None


@pytest.mark.parametrize(("pattern", "message"), [
    (r"(a)\1", "invalid escape sequence"),
    (r"(?=a)", "invalid perl operator"),
    (r"(?<!a)b", "invalid"),
    (r"\Z", "invalid escape sequence"),
    (r"\C", "invalid escape sequence"),  # RE2 C++ takes it; Go does not
    (r"a{1001}", "invalid repetition size"),
    ("(", "missing )"),
])
def test_rejects_what_go_rejects(pattern: str, message: str) -> None:
    with pytest.raises(GoRegexpError, match=re.escape(message)):
        compile_go(pattern)


@pytest.mark.parametrize("pattern", [r"\z", r"\Q\C\E", r"(?i)abc", r"[[:alpha:]]+", r"\pL", r"(?U)a+", r"a{1000}"])
def test_accepts_what_go_accepts(pattern: str) -> None:
    compile_go(pattern)


def test_equality_by_pattern() -> None:
    assert compile_go("a+") == compile_go("a+")
    assert compile_go("a+") != compile_go("b+")
    assert len({compile_go("a+"), compile_go("a+")}) == 1
