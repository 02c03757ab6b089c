"""Traefik v3 rule language: syntax errors with positions, and each matcher's semantics."""

from __future__ import annotations

import pytest

from shadow.gateway.rules import RequestView, RuleSyntaxError, canonical_host, compile_rule, routing_path


def req(method: str = "GET", host: str = "example.com", path: str = "/", query: str = "",
        headers: tuple[tuple[str, str], ...] = (), client_ip: str = "10.1.2.3") -> RequestView:
    return RequestView(method=method, host=host, path=path, query=query, headers=headers, client_ip=client_ip)


# --- syntax ------------------------------------------------------------------------------------

VALID_RULES = [
    "Host(`example.com`)",
    'Host("example.com")',
    "PathPrefix(`/`)",
    "Host(`a.com`) && PathPrefix(`/api`)",
    "Host(`a.com`) || Host(`b.com`)",
    "!Method(`POST`)",
    "!(Method(`POST`) || Method(`PUT`))",
    "((Path(`/a`)))",
    "Header(`X-A`, `1`) && HeaderRegexp(`X-B`, `^v[0-9]+$`)",
    "Query(`k`, `v`) || Query(`flag`)",
    "QueryRegexp(`k`, `^a`)",
    "ClientIP(`10.0.0.0/8`) || ClientIP(`::1`)",
    "HostRegexp(`^api\\.`)",
    'PathRegexp("^/a\\\\.b$")',
    "  Path(`/x`)\n && Method(`GET`)  ",
    "Path(`/with space`)",
    "host(`a.com`) && PATHPREFIX(`/x`) && Pathprefix(`/x`)",  # Traefik's accepted spellings
]


@pytest.mark.parametrize("text", VALID_RULES)
def test_valid_rules_compile(text: str) -> None:
    assert compile_rule(text).text == text


INVALID_RULES = [
    # (rule, position of the problem, words the message contains)
    ("", 0, "empty rule"),
    ("   ", 0, "empty rule"),
    ("Host(`a`", 8, "expected ',' or ')'"),
    ("Host(`a`))", 9, "unexpected ')'"),
    ("Host(`a`) && ", 13, "unexpected end of rule"),
    ("Hots(`a`)", 0, "did you mean Host"),
    ("hOst(`a`)", 0, "did you mean Host"),
    ("Query(`k`, ``)", 11, "empty argument"),
    ("Header(``, `v`)", 7, "empty argument"),
    ("Host('a')", 5, "single quotes"),
    ("Host(`a)", 5, "unterminated string"),
    ('Host("a)', 5, "unterminated string"),
    ("Path(`x`)", 5, "does not start with '/'"),
    ("PathPrefix(`api`)", 11, "does not start with '/'"),
    ("Host(`a`) & Path(`/`)", 10, "'&&'"),
    ("Host(`a`) | Path(`/`)", 10, "'||'"),
    ("Header(`a`)", 0, "takes 2 arguments"),
    ("Host(`a`, `b`)", 0, "takes 1 argument"),
    ("Query()", 0, "takes 1 or 2 arguments"),
    # Go's RE2 syntax (RE2 reports no offset: the position is the pattern's opening quote)
    ("PathRegexp(`(`)", 11, "invalid regular expression"),
    ("PathRegexp(`/a/(b`)", 11, "missing )"),
    ('PathRegexp("/a/(b")', 11, "missing )"),
    ("HeaderRegexp(`X`, `ab[`)", 18, "missing ]"),
    ("PathRegexp(`^/(a)\\1$`)", 11, "invalid escape sequence: \\1"),  # no backreferences in RE2
    ("HostRegexp(`(?=a)b`)", 11, "invalid perl operator"),  # nor look-around
    ("ClientIP(`1.2.3`)", 9, "not an IP address"),
    ('Path("/a\\.b")', 8, "invalid escape"),
    ("Host(`a`) Path(`/`)", 10, "unexpected 'Path'"),
    ("Host", 4, "expected '(' after Host"),
    ("Host(a)", 5, "expected a quoted value"),
    ("(Host(`a`)", 10, "expected ')'"),
    ("Host(`a`) && $", 13, "unexpected character '$'"),
    ("Host(`é.com`)", 5, "non-ASCII"),
    ("Method(``)", 7, "empty argument"),
    ("Host(`/`)", 5, "not a host name"),
    ("Host(`a.com:8080`)", 5, "not a host name"),
    ("Host(`a b`)", 5, "not a host name"),
]


@pytest.mark.parametrize(("text", "position", "words"), INVALID_RULES)
def test_invalid_rules_report_position(text: str, position: int, words: str) -> None:
    with pytest.raises(RuleSyntaxError) as err:
        compile_rule(text)
    assert err.value.position == position, str(err.value)
    assert words in err.value.message
    assert str(err.value).endswith(f"at column {position + 1}")


# --- matchers ----------------------------------------------------------------------------------

def matches(rule: str, request: RequestView) -> bool:
    return compile_rule(rule).matches(request)


def test_host_ignores_port_case_and_trailing_dot() -> None:
    assert matches("Host(`Example.COM`)", req(host="example.com:8080"))
    assert matches("Host(`example.com`)", req(host="EXAMPLE.com"))
    assert matches("Host(`example.com`)", req(host="example.com."))
    assert matches("Host(`example.com.`)", req(host="example.com"))
    assert not matches("Host(`example.com`)", req(host="www.example.com"))
    assert not matches("Host(`example.com`)", req(host=""))
    assert matches("Host(`::1`)", req(host="[::1]:8080"))


def test_host_regexp_is_unanchored_on_the_host_without_port() -> None:
    assert matches("HostRegexp(`api`)", req(host="my-api.example.com:80"))
    assert matches("HostRegexp(`^[a-z]+\\.example\\.com$`)", req(host="shop.example.com:443"))
    assert not matches("HostRegexp(`^[a-z]+\\.example\\.com$`)", req(host="a.b.example.com"))


def test_path_is_exact_on_the_routing_path() -> None:
    assert matches("Path(`/api/orders`)", req(path="/api/orders"))
    assert not matches("Path(`/api/orders`)", req(path="/api/orders/"))
    assert matches("Path(`/api/orders`)", req(path="/api/%6Frders"))  # unreserved 'o' decoded
    assert matches("Path(`/a b`)", req(path="/a%20b"))


def test_path_prefix_is_a_plain_string_prefix() -> None:
    assert matches("PathPrefix(`/products`)", req(path="/products"))
    assert matches("PathPrefix(`/products`)", req(path="/products-for-sale"))
    assert matches("PathPrefix(`/products/`)", req(path="/products/1"))
    assert not matches("PathPrefix(`/products/`)", req(path="/products"))
    assert not matches("PathPrefix(`/products`)", req(path="/Products"))


def test_path_prefix_decodes_non_reserved_escapes_only() -> None:
    assert matches("PathPrefix(`/foo bar`)", req(path="/foo%20bar/x"))
    assert matches("PathPrefix(`/api/orders`)", req(path="/api/%6f%72ders/1"))
    assert matches("PathPrefix(`/caf\u00e9`)", req(path="/caf%C3%A9/menu"))
    # %2F is a reserved escape: it stays encoded (upper-cased) and is not a path separator
    assert not matches("PathPrefix(`/a/b`)", req(path="/a%2Fb"))
    assert matches("PathPrefix(`/a%2Fb`)", req(path="/a%2fb"))
    assert not matches("PathPrefix(`/a%b`)", req(path="/a%25b"))
    assert matches("PathPrefix(`/a%25b`)", req(path="/a%25b"))


def test_routing_path_and_canonical_host_helpers() -> None:
    assert routing_path("/plain") == "/plain"
    assert routing_path("/%41%2f%3a%7E") == "/A%2F%3A~"
    assert routing_path("/bad%zz%4") == "/bad%zz%4"
    assert canonical_host("Example.COM:443") == "example.com"
    assert canonical_host("[2001:DB8::1]:80") == "2001:db8::1"
    assert canonical_host("2001:db8::1") == "2001:db8::1"


def test_path_regexp_is_unanchored() -> None:
    assert matches("PathRegexp(`/orders/[0-9]+`)", req(path="/api/orders/42/items"))
    assert not matches("PathRegexp(`^/orders`)", req(path="/api/orders"))


def test_method_is_case_insensitive_in_the_rule() -> None:
    assert matches("Method(`post`)", req(method="POST"))
    assert not matches("Method(`POST`)", req(method="GET"))


def test_header_matches_any_value_exactly_name_case_insensitive() -> None:
    headers = (("X-Tenant", "acme"), ("x-tenant", "globex"), ("Accept", "a, b"))
    assert matches("Header(`X-Tenant`, `acme`)", req(headers=headers))
    assert matches("Header(`x-tenant`, `globex`)", req(headers=headers))
    assert not matches("Header(`X-Tenant`, `acm`)", req(headers=headers))
    assert not matches("Header(`Accept`, `a`)", req(headers=headers))  # a whole header line, not a list item
    assert not matches("Header(`X-Missing`, `acme`)", req(headers=headers))


def test_header_regexp_is_unanchored_on_any_value() -> None:
    headers = (("User-Agent", "curl/8.4.0"), ("User-Agent", "Mozilla/5.0 (X11)"))
    assert matches("HeaderRegexp(`User-Agent`, `X11`)", req(headers=headers))
    assert matches("HeaderRegexp(`user-agent`, `^curl/`)", req(headers=headers))
    assert not matches("HeaderRegexp(`User-Agent`, `^X11`)", req(headers=headers))


def test_query_value_and_single_argument_form() -> None:
    assert matches("Query(`mobile`, `true`)", req(query="a=1&mobile=true"))
    assert matches("Query(`mobile`, `true`)", req(query="mobile=false&mobile=true"))
    assert not matches("Query(`mobile`, `true`)", req(query="mobile=truthy"))
    assert matches("Query(`q`, `a b`)", req(query="q=a+b"))
    assert matches("Query(`q`, `a&b`)", req(query="q=a%26b"))
    # one argument is Traefik's Query(`k`, ``): present with an empty value
    assert matches("Query(`debug`)", req(query="debug"))
    assert matches("Query(`debug`)", req(query="x=1&debug="))
    assert not matches("Query(`debug`)", req(query="debug=1"))
    assert not matches("Query(`debug`)", req(query=""))
    # presence with any value
    assert matches("QueryRegexp(`debug`, `.*`)", req(query="debug=1"))
    assert matches("QueryRegexp(`debug`, `.*`)", req(query="debug"))
    assert not matches("QueryRegexp(`debug`, `.*`)", req(query="other=1"))
    assert not matches("Query(`a`, `1`)", req(query="a=1;b=2"))  # Go rejects ';' pairs


def test_client_ip_cidr_and_single_address() -> None:
    assert matches("ClientIP(`10.0.0.0/8`)", req(client_ip="10.200.0.1"))
    assert not matches("ClientIP(`10.0.0.0/8`)", req(client_ip="11.0.0.1"))
    assert matches("ClientIP(`192.168.1.7`)", req(client_ip="192.168.1.7"))
    assert matches("ClientIP(`10.0.0.0/8`)", req(client_ip="::ffff:10.0.0.9"))
    assert matches("ClientIP(`2001:db8::/32`)", req(client_ip="2001:db8::5"))
    assert not matches("ClientIP(`2001:db8::/32`)", req(client_ip="10.0.0.1"))
    assert not matches("ClientIP(`10.0.0.0/8`)", req(client_ip="not-an-ip"))


def test_not_and_precedence() -> None:
    r = req(method="GET", host="a.com", path="/x")
    # && binds tighter than ||: false && false || true → true
    assert matches("Host(`b.com`) && Path(`/y`) || Method(`GET`)", r)
    # ... and true || false && false → true (not (true || false) && false)
    assert matches("Method(`GET`) || Host(`b.com`) && Path(`/y`)", r)
    assert not matches("(Method(`GET`) || Host(`b.com`)) && Path(`/y`)", r)
    assert not matches("!Method(`GET`)", r)
    assert matches("!!Method(`GET`)", r)
    assert matches("!Method(`POST`) && Host(`a.com`)", r)  # ! binds to the matcher, not the && chain
    assert not matches("!(Method(`GET`) && Host(`a.com`))", r)
    assert matches("!(Method(`POST`) || Host(`b.com`))", r)


def test_double_quoted_strings_use_go_escapes() -> None:
    assert matches('PathRegexp("^/a\\\\.b$")', req(path="/a.b"))
    assert not matches('PathRegexp("^/a\\\\.b$")', req(path="/axb"))
    assert matches('Header("X-Q", "say \\"hi\\"")', req(headers=(("X-Q", 'say "hi"'),)))


def test_many_rules_on_one_request_share_derived_views() -> None:
    r = req(path="/api/%6Frders", headers=(("A", "1"),), query="x=1")
    rules = [compile_rule(f"PathPrefix(`/api/o`) && Header(`a`, `{i}`) && Query(`x`, `1`)") for i in range(5)]
    assert [rule.matches(r) for rule in rules] == [False, True, False, False, False]
    assert r.routing_path == "/api/orders"  # computed once, cached on the view


def test_rule_equality_by_text() -> None:
    assert compile_rule("Path(`/a`)") == compile_rule("Path(`/a`)")
    assert len({compile_rule("Path(`/a`)"), compile_rule("Path(`/a`)")}) == 1


def test_random_token_soup_gives_syntax_errors_with_positions_inside_the_text() -> None:
    import random

    rng = random.Random(3)
    alphabet = ["Host", "Path", "PathPrefix", "Header", "Query", "ClientIP", "(", ")", ",", "&&", "||", "!",
                "`a`", "`/x`", '"b"', '"\\', "`", " ", "&", "|", "'", "`[`", "`10.0.0.0/8`", "`(?P<x`", "é"]
    failures = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        try:
            compile_rule(text)
        except RuleSyntaxError as exc:
            failures += 1
            assert 0 <= exc.position <= len(text), (text, exc.position)
    assert failures > 2000


def test_random_expressions_follow_boolean_precedence() -> None:
    # Random trees of true/false matchers, rendered with only the parentheses precedence needs
    # (! over && over ||): the compiled rule must give the tree's value.
    import random

    rng = random.Random(11)
    request = req(method="GET", path="/t")
    atoms = {"Method(`GET`)": True, "Path(`/t`)": True, "Method(`PUT`)": False, "Path(`/f`)": False}

    def build(depth: int) -> tuple[str, bool, int]:
        """(rule text, value of the tree, precedence of its top: 3 matcher or !, 2 &&, 1 ||)."""
        if depth == 0 or rng.random() < 0.3:
            atom = rng.choice(list(atoms))
            return atom, atoms[atom], 3
        op = rng.choice(["&&", "||", "!"])
        if op == "!":
            text, value, prec = build(depth - 1)
            return (f"!({text})" if prec < 3 else f"!{text}"), not value, 3
        prec = 2 if op == "&&" else 1
        left, lvalue, lprec = build(depth - 1)
        right, rvalue, rprec = build(depth - 1)
        left = f"({left})" if lprec < prec else left
        right = f"({right})" if rprec < prec else right
        value = (lvalue and rvalue) if op == "&&" else (lvalue or rvalue)
        return f"{left} {op} {right}", value, prec

    seen = set()
    for _ in range(300):
        text, value, _ = build(4)
        seen.add(value)
        assert compile_rule(text).matches(request) is value, text
    assert seen == {True, False}


def test_path_regexp_runs_in_linear_time_on_a_catastrophic_pattern() -> None:
    # With Python's backtracking re, one 26-character path held the event loop for seconds (doubling
    # per character); Go's RE2 answers at once. Correctness is asserted; the timing is bench/goregex.py.
    rule = "PathRegexp(`^/(a+)+$`)"
    assert not matches(rule, req(path="/" + "a" * 40 + "b"))
    assert matches(rule, req(path="/" + "a" * 40))


@pytest.mark.parametrize("text", ["(" * 3000 + "Path(`/`)" + ")" * 3000, "!" * 3000 + "Path(`/`)"])
def test_nesting_is_bounded_not_a_recursion_error(text: str) -> None:
    # issue #17: a 3,000-deep rule was a bare RecursionError at config load
    with pytest.raises(RuleSyntaxError) as err:
        compile_rule(text)
    assert (err.value.position, err.value.message) == (64, "nested deeper than 64 levels of parentheses and '!'")
    assert compile_rule("(" * 64 + "Path(`/`)" + ")" * 64).matches(RequestView(method="GET", host="h", path="/"))
