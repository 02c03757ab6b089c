"""Traefik's basicAuth tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py): pkg/middlewares/auth/basic_auth_test.go.
Skipped, Go plumbing: TestNewBasicNotFoundSecretIsSet (an internal field; the same-cost check of an
unknown user is in test_unknown_user_is_checked_against_a_hash below) and TestBasicAuthConcurrentHashOnce
(Go's singleflight deduplication of concurrent hash checks; the gateway checks on one event loop).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.gateway.middlewares import basicauth
from shadow.gateway.middlewares.basicauth import BasicAuth, check_secret
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

TEST = "test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/"  # password "test"
TEST2 = "test2:$apr1$d9hr9HBB$4HxwgUir3HP4EsggP/QNo0"  # "test2"
TEST3 = "test3:$apr1$3rJbDP0q$RfzJiorTk78jQ1EcKqWso0"  # "test3"
TEST2_OVERRIDDEN = "test2:$apr1$mK.GtItK$ncnLYvNLek0weXdxo68690"  # "overridden"


def load(users: list[str] | None = None, tmp: Path | None = None, users_file: str = "", **options: object) -> BasicAuth:
    body: dict[str, object] = dict(options)
    if users is not None:
        body["users"] = users
    if users_file:
        assert tmp is not None
        (tmp / "users").write_text(users_file)
        body["usersFile"] = "users"
    import json
    text = ("http:\n  routers: {r: {rule: \"PathPrefix(`/`)\", service: s, middlewares: [auth]}}\n"
            "  services: {s: {loadBalancer: {servers: [{url: \"http://127.0.0.1:9\"}]}}}\n"
            f"  middlewares: {{auth: {{basicAuth: {json.dumps(body)}}}}}\n")
    mw = parse_config(text, "gw.yaml", base_dir=tmp).middlewares["auth"]
    assert isinstance(mw, BasicAuth)
    return mw


def request(user: str | None = None, password: str = "", headers: tuple[tuple[str, str], ...] = ()) -> MiddlewareRequest:
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers = (*headers, ("Authorization", f"Basic {token}"))
    return MiddlewareRequest(method="GET", scheme="http", host="127.0.0.1", path="/", headers=headers)


def test_new_basic_empty() -> None:
    with pytest.raises(ConfigError, match="no users found"):
        load([])


def test_basic_auth_fail() -> None:
    with pytest.raises(ConfigError):
        load(["test"])  # not user:hash
    out = load(["test:test"]).check(request("test", "test"))  # a plain-text "hash" never matches
    assert isinstance(out, LocalAnswer) and out.status == 401


def test_basic_auth_success() -> None:
    out = load([TEST]).check(request("test", "test"))
    assert isinstance(out, MiddlewareRequest)


def test_basic_auth_user_header() -> None:
    out = load([TEST], headerField="X-Webauth-User").check(request("test", "test"))
    assert isinstance(out, MiddlewareRequest)
    assert out.header("X-Webauth-User") == "test"


def test_basic_auth_user_header_canonical() -> None:
    # Go deletes X-User and sets the raw key "x-user": on the wire one header, x-user: test.
    out = load([TEST], headerField="x-user").check(request("test", "test", (("X-User", "admin"),)))
    assert isinstance(out, MiddlewareRequest)
    assert [(k, v) for k, v in out.headers if k.lower() == "x-user"] == [("x-user", "test")]


def test_basic_auth_header_removed() -> None:
    out = load([TEST], removeHeader=True).check(request("test", "test"))
    assert isinstance(out, MiddlewareRequest)
    assert out.header("Authorization") == ""


def test_basic_auth_header_present() -> None:
    out = load([TEST]).check(request("test", "test"))
    assert isinstance(out, MiddlewareRequest)
    assert out.header("Authorization") != ""


USERS_FROM_FILE = [  # (desc, file content, given users, expected users → passwords, realm)
    ("Finds the users in the file", f"{TEST}\n{TEST2}\n", [], {"test": "test", "test2": "test2"}, ""),
    ("Merges given users with users from the file", f"{TEST}\n", [TEST2, TEST3],
     {"test": "test", "test2": "test2", "test3": "test3"}, ""),
    ("Given users have priority over users in the file", f"{TEST}\n{TEST2}\n", [TEST2_OVERRIDDEN],
     {"test": "test", "test2": "overridden"}, ""),
    ("Should authenticate the correct user based on the realm", f"{TEST}\n{TEST2}\n", [TEST2_OVERRIDDEN],
     {"test": "test", "test2": "overridden"}, "traefik"),
    ("Should skip comments", f"#Comment\n{TEST}\n{TEST2}\n", [], {"test": "test", "test2": "test2"}, "traefiker"),
]


@pytest.mark.parametrize(("desc", "content", "given", "expected", "realm"), USERS_FROM_FILE,
                         ids=[c[0] for c in USERS_FROM_FILE])
def test_basic_auth_users_from_file(tmp_path: Path, desc: str, content: str, given: list[str],
                                    expected: dict[str, str], realm: str) -> None:
    options: dict[str, object] = {"realm": realm} if realm else {}
    mw = load(given, tmp_path, content, **options)
    for user, password in expected.items():
        assert isinstance(mw.check(request(user, password)), MiddlewareRequest), user
    refused = mw.check(request("foo", "foo"))
    assert isinstance(refused, LocalAnswer) and refused.status == 401
    if realm:
        assert dict(refused.headers)["Www-Authenticate"] == f'Basic realm="{realm}"'
    assert b"traefik" not in refused.body


def test_bcrypt_and_sha_hashes() -> None:
    # the bcrypt hash of TestBasicAuthConcurrentHashOnce ("test"), and htpasswd -s for "test"
    assert check_secret("test", "$2a$04$.8sTYfcxbSplCtoxt5TdJOgpBYkarKtZYsYfYxQ1edbYRuO1DNi0e")
    assert check_secret("test", "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=")
    assert not check_secret("nope", "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=")


def test_unknown_user_is_checked_against_a_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    real = basicauth.check_secret
    monkeypatch.setattr(basicauth, "check_secret", lambda p, s: checked.append(s) or real(p, s))
    out = load([TEST]).check(request("mallory", "x"))
    assert isinstance(out, LocalAnswer)
    assert checked == [TEST.split(":", 1)[1]]  # same cost as a known user: no user-name oracle
