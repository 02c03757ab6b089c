"""shadow.ai.guard: PII, secrets, keywords and RE2 regexps, blocked or masked in JSON and text bodies."""

from __future__ import annotations

import json

import pytest

from shadow.ai.guard import GuardSide, guard_body, keyword_rule, named_rule, regex_rule
from shadow.errors import ConfigError
from shadow.gateway.config import parse_config


def chat(text: str) -> bytes:
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).encode()


@pytest.mark.parametrize(("kind", "name", "hit", "miss"), [
    ("pii", "email", "write to ann.lee+x@mail.example.org", "ann at example dot org"),
    ("pii", "credit_card", "card 4111-1111-1111-1111", "order 4111 1111 1111 1112"),  # the Luhn check
    ("pii", "us_ssn", "ssn 078-05-1120", "call 078-05-11201"),
    ("pii", "iban", "IBAN DE89 3704 0044 0532 0130 00", "DE89 only"),
    ("pii", "ipv4", "host 10.0.12.7 down", "version 1.2.3"),
    ("secret", "openai_key", "key sk-proj-abcdefghijklmnopqrstuvwx", "sk-short"),
    ("secret", "aws_access_key", "AKIAIOSFODNN7EXAMPLE", "AKIA-no"),
    ("secret", "private_key", "-----BEGIN RSA PRIVATE KEY-----", "BEGIN PUBLIC KEY"),
])
def test_named_rules(kind: str, name: str, hit: str, miss: str) -> None:
    rule = named_rule(kind, name)
    assert rule.finds(hit) and not rule.finds(miss)


def test_block_before_mask_and_structure_untouched() -> None:
    side = GuardSide(block=(named_rule("pii", "credit_card"),), mask=(named_rule("pii", "email"), keyword_rule("acme")))
    out = guard_body(side, chat("mail a@b.io about ACME, not acmeco"))
    assert out.blocked_by is None and out.masked == {"pii.email": 1, "keyword.acme": 1}
    body = json.loads(out.body or b"")
    assert body["model"] == "gpt-4o" and body["messages"][0]["role"] == "user"
    assert body["messages"][0]["content"] == "mail [MASKED:pii.email] about [MASKED:keyword.acme], not acmeco"
    assert guard_body(side, chat("pay 4111 1111 1111 1111 to a@b.io")).blocked_by == "pii.credit_card"
    assert guard_body(side, chat("nothing here")) == guard_body(GuardSide(), chat("x"))  # unchanged: no body
    assert guard_body(side, b"plain a@b.io text").body == b"plain [MASKED:pii.email] text"


def test_regexps_are_re2_and_unicode_safe() -> None:
    rule = regex_rule(0, "(?i)int[a-z]+")
    assert rule.mask("héllo Internal é interior") == ("héllo [MASKED:regex.0] é [MASKED:regex.0]", 2)
    assert regex_rule(1, "(a+)+$").finds("a" * 5000 + "b") is False  # linear time, no backtracking blow-up


@pytest.mark.parametrize(("body", "message"), [
    ("{request: {block: {pii: [passport]}}}", "unknown pii rule 'passport'"),
    ("{request: {mask: {regex: ['a(?=b)']}}}", "invalid regular expression"),
    ("{request: {}}", "needs at least one block or mask rule"),
    ("{answer: {}}", "unknown key"),
])
def test_config_errors(body: str, message: str) -> None:
    text = ("http:\n  routers: {r: {rule: \"PathPrefix(`/`)\", service: s, middlewares: [g]}}\n"
            "  services: {s: {loadBalancer: {servers: [{url: \"http://127.0.0.1:9\"}]}}}\n"
            f"  middlewares:\n    g:\n      contentGuard: {body}\n")
    with pytest.raises(ConfigError, match=r"gw\.yaml:6") as err:
        parse_config(text, "gw.yaml")
    assert message in str(err.value)
