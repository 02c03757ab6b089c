"""Traefik's rule-matcher tables, run against shadow's rule engine (shadow.gateway.rules).

Source: Traefik TRAEFIK_VERSION (tests/traefik/__init__.py), pkg/muxer/http/matcher_test.go; the
tables are in matcher_cases.py. A rule Traefik refuses must raise RuleSyntaxError; otherwise, for
every request of the case, the rule matches (Go: 200) or not (Go: 404). Requests the Go test builds
in ways no client can send are skipped per request, with the reason (SKIPPED below).
"""

from __future__ import annotations

from typing import Any

import pytest

from shadow.gateway.rules import RequestView, RuleSyntaxError, compile_rule
from tests.traefik.gohttp import url_view
from tests.traefik.matcher_cases import CASES

# (function, case desc, request key as in the table) -> why it cannot apply
SKIPPED: dict[tuple[str, str, str], str] = {}
HEADER_KEY_REASON = ("Go test sets a non-canonical key in the http.Header map, which Header.Values "
                     "cannot find; on the wire header names are case-insensitive (a client cannot send this)")


def _key(request: Any) -> str:
    return repr(request)


def view_for(function: str, request: Any) -> RequestView:
    if function == "TestClientIPMatcher":
        remote = str(request)
        ip = remote.rsplit(":", 1)[0] if remote.count(":") == 1 else remote
        return RequestView(method="GET", host="example.com", path="", client_ip=ip)
    if function == "TestMethodMatcher":
        return RequestView(method=str(request), host="example.com", path="")
    if function in ("TestHeaderMatcher", "TestHeaderRegexpMatcher"):
        headers = tuple((name, value) for name, values in request.items() for value in values)
        return RequestView(method="GET", host="example.com", path="", headers=headers)
    return url_view(str(request))


def _cases() -> list[Any]:
    out = []
    for function, cases in CASES.items():
        for i, case in enumerate(cases):
            out.append(pytest.param(function, case, id=f"{function}[{i}] {case['desc']}"))
    return out


def _non_canonical_header_request(request: Any) -> bool:
    return isinstance(request, dict) and any(
        name != "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-")) for name in request)


@pytest.mark.parametrize(("function", "case"), _cases())
def test_matcher(function: str, case: dict[str, Any]) -> None:
    rule_text = case["rule"]
    if case.get("expectedError"):
        with pytest.raises(RuleSyntaxError):
            compile_rule(rule_text)
        return
    rule = compile_rule(rule_text)
    checked = 0
    for request, status in case["expected"]:
        if _non_canonical_header_request(request):
            continue  # HEADER_KEY_REASON
        assert rule.matches(view_for(function, request)) is (status == 200), (rule_text, request, status)
        checked += 1
    if checked == 0:
        pytest.skip(HEADER_KEY_REASON)
