"""Traefik's digestAuth tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py): pkg/middlewares/auth/digest_auth_test.go —
TestDigestAuthError, TestDigestAuthFail, TestDigestAuthUsersFromFile, TestDigestAuthUserHeaderCanonical.
Go's newDigestRequest (ask, read the challenge, answer it) is `digest_login` below, on shadow's core.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.gateway.middlewares.digestauth import DigestAuth, DigestAuthenticator, digest_params
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

TEST = "test:traefik:a2688e031edb4be6a3797f3882655c05"  # password "test"
TEST2 = "test2:traefik:518845800f9e2bfb1f1f740ec24f074e"  # "test2"
TEST3 = "test3:traefik:c8e9f57ce58ecb4424407f665a91646c"  # "test3"
TEST2_OVERRIDDEN = "test2:traefik:8de60a1c52da68ccf41f0c0ffb7c51a0"  # "overridden"
TEST_TRAEFIKER = "test:traefiker:a3d334dff2645b914918de78bec50bf4"  # "test2"


def load(options: dict[str, object], tmp: Path | None = None) -> DigestAuth:
    text = ("http:\n  routers: {r: {rule: \"PathPrefix(`/`)\", service: s, middlewares: [auth]}}\n"
            "  services: {s: {loadBalancer: {servers: [{url: \"http://127.0.0.1:9\"}]}}}\n"
            f"  middlewares: {{auth: {{digestAuth: {json.dumps(options)}}}}}\n")
    mw = parse_config(text, "gw.yaml", base_dir=tmp).middlewares["auth"]
    assert isinstance(mw, DigestAuth)
    return mw


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def request(headers: tuple[tuple[str, str], ...] = ()) -> MiddlewareRequest:
    return MiddlewareRequest(method="GET", scheme="http", host="127.0.0.1", path="/", headers=headers)


def digest_login(auth: DigestAuthenticator, user: str, password: str,
                 extra: tuple[tuple[str, str], ...] = ()) -> MiddlewareRequest | LocalAnswer:
    challenge = auth.check(request(extra))
    assert isinstance(challenge, LocalAnswer) and challenge.status == 401
    params = digest_params(dict(challenge.headers)["Www-Authenticate"])
    assert params is not None
    realm, nonce, opaque = params["realm"], params["nonce"], params["opaque"]
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5("GET:/")
    cnonce, nc = "0a4f113b", "00000001"
    response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    header = (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="/", algorithm=MD5, qop=auth, '
              f'nc={nc}, cnonce="{cnonce}", response="{response}", opaque="{opaque}"')
    return auth.check(request((*extra, ("Authorization", header))))


def test_digest_auth_error() -> None:
    with pytest.raises(ConfigError):
        load({"users": ["test"]})


def test_digest_auth_fail() -> None:
    auth = DigestAuthenticator(load({"users": [TEST]}))
    basic = base64.b64encode(b"test:test").decode()
    out = auth.check(request((("Authorization", f"Basic {basic}"),)))
    assert isinstance(out, LocalAnswer) and out.status == 401


USERS_FROM_FILE = [
    ("Finds the users in the file", f"{TEST}\n{TEST2}\n", [], {"test": "test", "test2": "test2"}, ""),
    ("Merges given users with users from the file", f"{TEST}\n", [TEST2, TEST3],
     {"test": "test", "test2": "test2", "test3": "test3"}, ""),
    ("Given users have priority over users in the file", f"{TEST}\n{TEST2}\n", [TEST2_OVERRIDDEN],
     {"test": "test", "test2": "overridden"}, ""),
    ("Should authenticate the correct user based on the realm", f"{TEST}\n{TEST_TRAEFIKER}\n", [], {"test": "test2"},
     "traefiker"),
]


@pytest.mark.parametrize(("desc", "content", "given", "expected", "realm"), USERS_FROM_FILE,
                         ids=[c[0] for c in USERS_FROM_FILE])
def test_digest_auth_users_from_file(tmp_path: Path, desc: str, content: str, given: list[str],
                                     expected: dict[str, str], realm: str) -> None:
    (tmp_path / "users").write_text(content)
    options: dict[str, object] = {"users": given, "usersFile": "users"}
    if realm:
        options["realm"] = realm
    auth = DigestAuthenticator(load(options, tmp_path))
    for user, password in expected.items():
        assert isinstance(digest_login(auth, user, password), MiddlewareRequest), user
    refused = digest_login(auth, "foo", "foo")
    assert isinstance(refused, LocalAnswer) and refused.status == 401 and b"traefik" not in refused.body


def test_digest_auth_user_header_canonical() -> None:
    auth = DigestAuthenticator(load({"users": [TEST], "headerField": "x-user"}))
    out = digest_login(auth, "test", "test", (("X-User", "admin"),))
    assert isinstance(out, MiddlewareRequest)
    assert [(k, v) for k, v in out.headers if k.lower() == "x-user"] == [("x-user", "test")]


def test_replayed_nonce_count_is_refused_and_unknown_nonce_is_stale() -> None:
    auth = DigestAuthenticator(load({"users": [TEST]}))
    ok = digest_login(auth, "test", "test")
    assert isinstance(ok, MiddlewareRequest)
    replay = auth.check(ok.with_headers(ok.headers))  # the same nc again
    assert isinstance(replay, LocalAnswer) and replay.status == 401
    auth.clients.clear()  # the gateway forgot the nonce (restart, cache purge)
    stale = auth.check(ok)
    assert isinstance(stale, LocalAnswer) and "stale=true" in dict(stale.headers)["Www-Authenticate"]
