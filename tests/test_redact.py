"""Redaction of headers, cookies and JSON fields; key handling; no secret reaches any capture file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from shadow.capture.canonical import body_hash
from shadow.capture.redact import KEY_ENV, Redactor, load_redaction_key
from shadow.capture.settings import CaptureSettings, RedactionSettings
from shadow.capture.writer import CaptureWriter, prepare_exchange
from shadow.errors import CaptureError
from tests.test_capture import assert_no_secrets

KEY = b"test-key"


def test_default_headers_are_hashed_and_equal_values_stay_equal() -> None:
    r = Redactor(RedactionSettings(), KEY)
    out = dict(r.headers([("Authorization", "Bearer abc.def"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                          ("X-Other", "keep"), ("authorization", "Bearer abc.def")]))
    assert out["X-Other"] == "keep"
    assert out["Authorization"].startswith("Bearer redacted:") and "abc.def" not in out["Authorization"]
    assert out["Authorization"] == out["authorization"]
    assert out["Proxy-Authorization"].startswith("Basic redacted:")
    assert len(out["Authorization"]) == len("Bearer redacted:") + 16


def test_cookies_keep_names_and_attributes() -> None:
    r = Redactor(RedactionSettings(), KEY)
    out = r.headers([("Cookie", "sid=S3CRET; theme=dark"),
                     ("Set-Cookie", "sid=S3CRET; Path=/; HttpOnly; Max-Age=60; SameSite=Lax")])
    cookie, set_cookie = out[0][1], out[1][1]
    assert "S3CRET" not in cookie + set_cookie
    assert cookie.startswith("sid=redacted:") and "; theme=redacted:" in cookie
    assert set_cookie.startswith("sid=redacted:")
    assert set_cookie.endswith("; Path=/; HttpOnly; Max-Age=60; SameSite=Lax")
    assert cookie.split(";")[0] == set_cookie.split(";")[0]  # the same session id hashes equal


def test_configured_header_and_remove_mode() -> None:
    r = Redactor(RedactionSettings(headers=("X-Api-Key",), mode="remove"), KEY)
    out = r.headers([("x-api-key", "k1"), ("Cookie", "a=b"), ("Accept", "*/*")])
    assert out == [("Accept", "*/*")]


def test_query_params_and_url_userinfo() -> None:
    r = Redactor(RedactionSettings(query_params=("api_key", "Token")), KEY)
    q = r.query("a=1&api_key=s1&TOKEN=x%20y&flag")
    assert q.startswith("a=1&api_key=redacted:") and "&TOKEN=redacted:" in q and q.endswith("&flag")
    assert "s1" not in q and "x%20y" not in q
    url = r.url("https://bob:pw@h:8/p?api_key=s1&z=1#frag")
    assert url.startswith("https://bob:redacted:") and url.endswith("@h:8/p?api_key=" + r.token("s1") + "&z=1#frag")
    assert r.url("http://h/p?z=1") == "http://h/p?z=1"
    remove = Redactor(RedactionSettings(query_params=("api_key",), mode="remove"), KEY)
    assert remove.url("https://bob:pw@h/p?api_key=s1&z=1") == "https://bob@h/p?z=1"


def test_different_keys_give_different_tokens() -> None:
    assert Redactor(RedactionSettings(), b"a").token("v") != Redactor(RedactionSettings(), b"b").token("v")


def test_json_bare_name_at_any_depth_and_pointer_with_wildcard() -> None:
    r = Redactor(RedactionSettings(json_fields=("password", "/cards/*/number")), KEY)
    body = orjson.dumps({"user": {"Password": "pw1", "name": "n"}, "password": "pw2",
                         "cards": [{"number": "4111", "exp": "12/30"}, {"number": "5500"}],
                         "list": [{"password": "pw3"}]})
    doc = orjson.loads(r.json_body(body))
    assert doc["user"]["Password"].startswith("redacted:") and doc["user"]["name"] == "n"
    assert doc["password"].startswith("redacted:") and doc["list"][0]["password"].startswith("redacted:")
    assert [c["number"][:9] for c in doc["cards"]] == ["redacted:", "redacted:"]
    assert doc["cards"][0]["exp"] == "12/30"
    assert doc["user"]["Password"] != doc["password"]


def test_json_non_ascii_field_names_and_escaped_keys() -> None:
    r = Redactor(RedactionSettings(json_fields=("pässwort",)), KEY)
    for body in ('{"PÄSSWORT": "geheim"}'.encode(), b'{"p\\u00e4sswort": "geheim"}', b'{"P\\u00c4SSWORT": "geheim"}'):
        out = r.json_body(body)
        assert b"geheim" not in out, body


def test_json_remove_mode_and_non_string_values() -> None:
    r = Redactor(RedactionSettings(json_fields=("/a/0", "pin"), mode="remove"), KEY)
    assert orjson.loads(r.json_body(b'{"a": [1, 2], "b": {"pin": 1234}}')) == {"a": [2], "b": {}}
    h = Redactor(RedactionSettings(json_fields=("pin",)), KEY)
    assert orjson.loads(h.json_body(b'{"pin": 1234}'))["pin"].startswith("redacted:")


def test_non_json_malformed_and_unmatched_bodies_are_unchanged() -> None:
    r = Redactor(RedactionSettings(json_fields=("password",)), KEY)
    for body in (b"password=hunter2", b'{"password": "x"', b"", b'{"other": 1,   "x": 2}'):
        assert r.json_body(body) is body


def test_key_precedence_and_persistence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert load_redaction_key(tmp_path, RedactionSettings(key=b"explicit")) == b"explicit"
    generated = load_redaction_key(tmp_path / "c", RedactionSettings())
    key_file = tmp_path / "c" / ".shadow-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_redaction_key(tmp_path / "c", RedactionSettings()) == generated  # survives restarts
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert load_redaction_key(tmp_path / "c", RedactionSettings()) == b"from-env"
    monkeypatch.delenv(KEY_ENV)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / ".shadow-key").write_text("")
    monkeypatch.setattr("shadow.capture.redact.time.sleep", lambda _s: None)  # skip the wait for a concurrent writer
    with pytest.raises(CaptureError, match=r"e/.shadow-key: redaction key file is empty"):
        load_redaction_key(tmp_path / "e", RedactionSettings())


SECRETS = (b"SECRET-AUTHZ", b"SECRET-PROXY", b"SECRET-COOKIE", b"SECRET-SETCOOKIE", b"SECRET-APIKEY",
           b"SECRET-NESTED", b"SECRET-BARE", b"SECRET-RESP", b"SECRET-QUERY", b"SECRET-USERINFO")


def secret_row(i: int) -> dict[str, object]:
    return {
        "request_id": str(i), "exchange_id": f"e{i}", "role": "primary",
        "url": "http://bob:SECRET-USERINFO@h/login?access_token=SECRET-QUERY&page=2",
        "req_headers": [("Authorization", "Bearer SECRET-AUTHZ"), ("Proxy-Authorization", "Basic SECRET-PROXY"),
                        ("Cookie", "sid=SECRET-COOKIE"), ("X-Api-Key", "SECRET-APIKEY"), ("X-Plain", "SHOWN")],
        "req_body": orjson.dumps({"account": {"card": {"cvv": "SECRET-NESTED"}}, "deep": [{"password": "SECRET-BARE"}]}),
        "status": 200,
        "resp_headers": [("Set-Cookie", "sid=SECRET-SETCOOKIE; Path=/"), ("Content-Type", "application/json")],
        "resp_body": orjson.dumps({"token": "SECRET-RESP", "ok": True}),
    }


def test_no_secret_reaches_any_file(tmp_path: Path) -> None:
    red = RedactionSettings(headers=("x-api-key",), json_fields=("/account/card/cvv", "password", "token"),
                            query_params=("access_token",))
    s = CaptureSettings(dir=tmp_path / "cap", redaction=red, segment_rows=3)
    w = CaptureWriter(s, gateway_id="gw")
    for i in range(5):
        w.submit(secret_row(i))
    w.flush()
    assert_no_secrets(s.dir, SECRETS, b"SHOWN")  # journal and sealed segments while running
    w.close()
    assert_no_secrets(s.dir, SECRETS, b"SHOWN")
    assert w.stats().sealed_rows == 5


def test_hash_mode_keeps_equality_across_writers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    s = CaptureSettings(dir=tmp_path, redaction=RedactionSettings(json_fields=("token",)))
    key1 = load_redaction_key(tmp_path, s.redaction)
    a = prepare_exchange(secret_row(1), s, key1)
    b = prepare_exchange(secret_row(2), s, load_redaction_key(tmp_path, s.redaction))
    assert a["req_headers"] == b["req_headers"]
    assert a["resp_body"] == b["resp_body"] and a["body_hash"] == b["body_hash"]
    # The stored hash is reproducible from the stored (redacted) body, with or without a content type.
    assert a["body_hash"] == body_hash(a["resp_body"], "application/json")
    untyped = prepare_exchange({**secret_row(4), "resp_headers": []}, s, key1)
    assert untyped["resp_content_type"] is None
    assert untyped["body_hash"] == body_hash(untyped["resp_body"], None) == a["body_hash"]
    other = prepare_exchange({**secret_row(3), "resp_body": b'{"token": "different", "ok": true}'}, s, key1)
    assert other["body_hash"] != a["body_hash"]
    assert os.environ.get(KEY_ENV) is None


def test_the_secret_search_sees_inside_compressed_parquet_and_journals(tmp_path: Path) -> None:
    # The check above is only meaningful if it would find a secret that did reach disk.
    s = CaptureSettings(dir=tmp_path / "cap", redaction=RedactionSettings(headers=(), key=KEY))
    with CaptureWriter(s, gateway_id="gw", prepare=lambda row: row) as w:  # no redaction at all
        w.submit({"request_id": "1", "req_headers": [("X-Plain", "SHOWN"), ("X-Token", "LEAKED-SECRET")],
                  "resp_body": b"x" * 5000 + b"LEAKED-BODY" + b"x" * 5000})
        w.flush()
        with pytest.raises(AssertionError, match="LEAKED-SECRET"):
            assert_no_secrets(s.dir, (b"LEAKED-SECRET",), b"SHOWN")  # in the journal
    with pytest.raises(AssertionError, match=r"LEAKED-SECRET.*parquet"):  # zstd pages: decoded, then searched
        assert_no_secrets(s.dir, (b"LEAKED-SECRET",), b"SHOWN")


def test_query_params_come_from_the_config_file() -> None:
    from shadow.gateway.config import parse_config

    config = parse_config(
        "http:\n"
        "  routers: {r: {rule: \"PathPrefix(`/`)\", service: s}}\n"
        "  services: {s: {loadBalancer: {servers: [{url: \"http://127.0.0.1:1\"}]}}}\n"
        "shadow:\n"
        "  redaction: {queryParams: [api_key]}\n"
    )
    red = config.shadow.capture.redaction
    assert red.query_params == ("api_key",)
    assert Redactor(red, KEY).query("api_key=s3cret&a=1").startswith("api_key=redacted:")
