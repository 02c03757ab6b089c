"""Traefik's encodedCharacters tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/middlewares/encodedcharacters/encoded_characters_test.go — TestEncodedCharacters (table in
encoded_characters_cases.py) and TestMapDeniedCharacters (below).
"""

from __future__ import annotations

from typing import Any

import pytest

from shadow.gateway.middlewares.encodedcharacters import EncodedCharacters
from shadow.gateway.middlewares.request import LocalAnswer
from tests.traefik.encoded_characters_cases import CASES
from tests.traefik.gohttp import new_request

GO_FIELDS = {"AllowEncodedSlash": "allow_slash", "AllowEncodedBackSlash": "allow_back_slash",
             "AllowEncodedNullCharacter": "allow_null", "AllowEncodedSemicolon": "allow_semicolon",
             "AllowEncodedPercent": "allow_percent", "AllowEncodedQuestionMark": "allow_question_mark",
             "AllowEncodedHash": "allow_hash"}


def middleware(config: dict[str, bool]) -> EncodedCharacters:
    return EncodedCharacters("test-encoded-characters", **{GO_FIELDS[k]: v for k, v in config.items()})


@pytest.mark.parametrize("case", CASES["TestEncodedCharacters"], ids=[c["desc"] for c in CASES["TestEncodedCharacters"]])
def test_encoded_characters(case: dict[str, Any]) -> None:
    out = middleware(case["config"]).check(new_request("GET", case["path"]))
    assert (out.status if isinstance(out, LocalAnswer) else 200) == case["expectedStatusCode"]


ALL = {"%2F", "%2f", "%5C", "%5c", "%00", "%3B", "%3b", "%25", "%3F", "%3f", "%23"}


@pytest.mark.parametrize(("desc", "config", "expected"), [
    ("deny all characters", {}, ALL),
    ("allow only encoded slash", {"AllowEncodedSlash": True}, ALL - {"%2F", "%2f"}),
    ("allow all characters", dict.fromkeys(GO_FIELDS, True), set()),
])
def test_map_denied_characters(desc: str, config: dict[str, bool], expected: set[str]) -> None:
    assert middleware(config).denied() == expected
