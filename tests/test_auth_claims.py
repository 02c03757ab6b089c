"""Claims conditions (shadow.auth.claims): parsing with columns, evaluation over nested claims."""

from __future__ import annotations

import pytest

from shadow.auth.claims import ClaimSyntaxError, claim_at, parse_claims

CLAIMS = {"sub": "u1", "plan": "beta", "scope": "orders:read orders:write", "groups": ["dev", "ops"],
          "org": {"name": "acme", "tier": 2}, "email_verified": True}


@pytest.mark.parametrize(("expr", "expected"), [
    ('Equals("plan", "beta")', True),
    ('Equals("org.name", "acme")', True),
    ('Equals("org.tier", "2")', True),
    ('Equals("email_verified", "true")', True),
    ('Equals("groups", "ops")', True),
    ('Prefix("sub", "u")', True),
    ('Prefix("groups", "op")', True),
    ('Contains("scope", "write")', True),
    ('Contains("groups", "de")', False),  # a list claim: element equality, not substring
    ('SplitContains("scope", " ", "orders:write")', True),
    ('SplitContains("scope", " ", "orders")', False),
    ('OneOf("plan", "free", "beta")', True),
    ('OneOf("plan", "free", "pro")', False),
    ('Equals("missing", "x")', False),
    ('!Equals("missing", "x")', True),
    ('Equals("plan", "beta") && Equals("sub", "u2")', False),
    ('Equals("plan", "beta") && Equals("sub", "u2") || Equals("org.name", "acme")', True),
    ('Equals("plan", "beta") && (Equals("sub", "u2") || !Equals("org.name", "x"))', True),
    ('!(Equals("plan", "beta"))', False),
    ("Equals(`plan`, `beta`)", True),
    (r'Equals("sub", "u\"1")', False),
])
def test_evaluation(expr: str, expected: bool) -> None:
    assert parse_claims(expr).evaluate(CLAIMS) is expected


@pytest.mark.parametrize(("expr", "message", "column"), [
    ('Equal("a", "b")', "unknown function 'Equal'", 1),
    ('Equals("a")', "Equals takes 2 arguments, got 1", 1),
    ('Equals("a", "b") &&', "expected a function such as Equals, found 'end of expression'", 20),
    ('Equals("a", "b"', "expected ')', found 'end of expression'", 16),
    ('(Equals("a", "b")', "expected ')'", 18),
    ('Equals("a", b)', "expected a quoted string, found 'b'", 13),
    ('Equals("a", "b") Equals("c", "d")', "unexpected 'E'", 18),
    ('OneOf("a")', "OneOf takes at least 2 arguments, got 1", 1),
    ('Equals("a", "b)', "unterminated string", 13),
    ("", "empty claims expression", 1),
])
def test_syntax_errors_name_the_column(expr: str, message: str, column: int) -> None:
    with pytest.raises(ClaimSyntaxError) as info:
        parse_claims(expr)
    assert info.value.message.startswith(message) and info.value.column == column


def test_claim_at_prefers_a_dotted_top_level_key() -> None:
    assert claim_at({"a.b": 1, "a": {"b": 2}}, "a.b") == 1
    assert claim_at({"a": {"b": {"c": "x"}}}, "a.b.c") == "x"
    assert claim_at({"a": "s"}, "a.b") is None


@pytest.mark.parametrize("expr", ["(" * 3000 + 'Equals("a", "b")' + ")" * 3000, "!" * 3000 + 'Equals("a", "b")'])
def test_nesting_is_bounded_not_a_recursion_error(expr: str) -> None:
    with pytest.raises(ClaimSyntaxError) as info:
        parse_claims(expr)
    assert info.value.message.startswith("nested deeper than 64 levels") and info.value.column == 65
    assert parse_claims("!" * 64 + 'Equals("a", "b")').op == "not"
