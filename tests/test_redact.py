"""Redaction of headers, cookies and JSON fields; key handling; no secret reaches any capture file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from shadow.capture.canonical import body_hash
from shadow.capture.redact import KEY_ENV, KEY_FILE_ENV, Redactor, load_redaction_key, normalize_name
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
    assert len(out["Authorization"]) == len("Bearer redacted:") + 64  # the full HMAC-SHA256, not a short tag


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


def test_key_precedence_and_persistence_outside_the_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "keys" / "redaction.key"))
    assert load_redaction_key(tmp_path, RedactionSettings(key=b"explicit")) == b"explicit"
    generated = load_redaction_key(tmp_path / "c", RedactionSettings())
    key_file = tmp_path / "keys" / "redaction.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())  # nothing in the capture
    assert load_redaction_key(tmp_path / "c", RedactionSettings()) == generated  # survives restarts
    assert load_redaction_key(tmp_path / "d", RedactionSettings()) == generated  # one key, many captures
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert load_redaction_key(tmp_path / "c", RedactionSettings()) == b"from-env"
    monkeypatch.delenv(KEY_ENV)
    own = tmp_path / "own.key"
    assert load_redaction_key(tmp_path / "c", RedactionSettings(key_file=own)) == own.read_text().strip().encode()
    (tmp_path / "e.key").write_text("")
    monkeypatch.setattr("shadow.capture.redact.time.sleep", lambda _s: None)  # skip the wait for a concurrent writer
    with pytest.raises(CaptureError, match=r"e.key: redaction key file is empty"):
        load_redaction_key(tmp_path / "c", RedactionSettings(key_file=tmp_path / "e.key"))
    with pytest.raises(CaptureError, match=r"must not be inside the capture folder"):
        load_redaction_key(tmp_path / "c", RedactionSettings(key_file=tmp_path / "c" / "k"))


def test_a_capture_with_its_key_inside_is_refused_with_a_migration_line(tmp_path: Path) -> None:
    legacy = tmp_path / "cap"
    legacy.mkdir()
    (legacy / ".shadow-key").write_text("0" * 64 + "\n")
    with pytest.raises(CaptureError, match=r"cap/.shadow-key: this capture keeps its redaction key inside it.*"
                                           r"move the file out"):
        load_redaction_key(legacy, RedactionSettings(key=b"explicit"))
    with pytest.raises(CaptureError, match=r".shadow-key"):
        CaptureWriter(CaptureSettings(dir=legacy, redaction=RedactionSettings(key=b"k")), gateway_id="gw")


def test_names_are_matched_case_and_separator_insensitively() -> None:
    assert {normalize_name(n) for n in ("API_KEY", "apiKey", "api-key", "api.key", "api_key[]", "x[apiKey]")} == {"apikey"}
    assert normalize_name("X-Api-Key", header=True) == "apikey" and normalize_name("Xenon") == "xenon"
    r = Redactor(RedactionSettings(), KEY)
    for name in ("password", "New-Password", "client_secret", "githubToken", "X-Csrf-Token", "card_number",
                 "cardNumber", "CVV", "access_token", "API_KEY", "apiKey", "user[password]", "sessionId"):
        assert r.is_secret_name(name), name
    for name in ("id", "name", "total_tokens", "token_type", "description", "company", "keys", "amount"):
        assert not r.is_secret_name(name), name
    for header in ("x-api-key", "x-auth-token", "x-csrf-token", "authorization", "cookie", "api-key"):
        assert r.is_secret_header(header), header
    for header in ("x-request-id", "content-type", "accept", "x-forwarded-for", "traceparent"):
        assert not r.is_secret_header(header), header


def test_default_names_in_every_place_they_occur() -> None:
    r = Redactor(RedactionSettings(), KEY)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"
    q = r.query("api_key=S1&token=S2&page=2&api_key%5B%5D=S3&API-KEY=S4;password=S5&id_jwt=" + jwt)
    for secret in ("S1", "S2", "S3", "S4", "S5", jwt):
        assert secret not in q, (secret, q)
    assert "page=2" in q and q.count("redacted:") == 6 and ";password=redacted:" in q
    url = r.url(f"http://h/a;api_key=S6/b/{jwt}/c?access_token={jwt}#access_token=S7")
    assert "S6" not in url and jwt not in url and "S7" not in url and url.startswith("http://h/a;api_key=redacted:")
    assert r.path("/files/report.pdf;jsessionid=S8") == "/files/report.pdf;jsessionid=" + r.token("S8")
    assert r.url("http://h/p?z=1&q=hello") == "http://h/p?z=1&q=hello"
    headers = dict(r.headers([("X-Api-Key", "S9"), ("x-auth-token", "S10"), ("X-CSRF-Token", "S11"),
                              ("Referer", "http://h/p?token=S12"), ("X-Request-Id", "keep")]))
    assert not any(s in v for v in headers.values() for s in ("S9", "S10", "S11", "S12"))
    assert headers["X-Request-Id"] == "keep"


def test_json_keys_nested_escaped_and_renamed() -> None:
    r = Redactor(RedactionSettings(), KEY)
    body = (b'{"user": {"name": "n", "Password": "S1", "cardNumber": "4111111111111111"},'
            b' "auth": {"client_secret": "S2"}, "\\u0070assword": "S3", "list": [{"api_key": "S4"}], "id": 7}')
    out = r.json_body(body)
    for secret in (b"S1", b"4111111111111111", b"S2", b"S3", b"S4"):
        assert secret not in out, secret
    doc = orjson.loads(out)
    assert doc["user"]["name"] == "n" and doc["id"] == 7 and doc["auth"].startswith("redacted:")
    plain = b'{"id": 1, "items": [{"name": "a", "total_tokens": 3}]}'
    assert r.json_body(plain) is plain


def test_form_and_multipart_bodies_are_redacted_by_the_same_names() -> None:
    r = Redactor(RedactionSettings(), KEY)
    form, _ = r.body(b"user=bob&password=S1&card_number=S2&x=1", "application/x-www-form-urlencoded; charset=utf-8")
    assert b"S1" not in form and b"S2" not in form and form.startswith(b"user=bob&password=redacted:")
    multipart = (b"--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nbob\r\n"
                 b"--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nS3\r\n"
                 b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
                 b"Content-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n")
    out, _ = r.body(multipart, 'multipart/form-data; boundary="XyZ"')
    assert b"S3" not in out and b"bob" in out and b"hello" in out and out.count(b"--XyZ") == 4
    assert r.token("S3").encode() in out
    remove = Redactor(RedactionSettings(mode="remove"), KEY)
    assert remove.body(b"a=1&token=S4", "application/x-www-form-urlencoded")[0] == b"a=1"


def test_defaults_are_extendable_and_explicitly_reducible() -> None:
    extended = Redactor(RedactionSettings(names=("member_no",)), KEY)
    assert extended.is_secret_name("memberNo") and extended.is_secret_name("password")
    allowed = Redactor(RedactionSettings(allow=("nextPageToken", "pin")), KEY)
    assert not allowed.is_secret_name("next_page_token") and not allowed.is_secret_name("PIN")
    assert allowed.is_secret_name("token") and allowed.is_secret_name("password")
    bare = Redactor(RedactionSettings(defaults=False), KEY)
    assert not bare.is_secret_name("password") and bare.query("password=x") == "password=x"
    assert bare.headers([("Cookie", "a=b")])[0][1].startswith("a=redacted:")  # always


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


def test_names_allow_defaults_and_key_file_come_from_the_config_file(tmp_path: Path) -> None:
    from shadow.errors import ConfigError
    from shadow.gateway.config import parse_config

    head = ("http:\n"
            "  routers: {r: {rule: \"PathPrefix(`/`)\", service: s}}\n"
            "  services: {s: {loadBalancer: {servers: [{url: \"http://127.0.0.1:1\"}]}}}\n"
            "shadow:\n")
    config = parse_config(head + "  redaction: {names: [member_no], allow: [pin], defaults: true, keyFile: k.key}\n",
                          base_dir=tmp_path)
    red = config.shadow.capture.redaction
    assert (red.names, red.allow, red.defaults, red.key_file) == (("member_no",), ("pin",), True, tmp_path / "k.key")
    r = Redactor(red, KEY)
    assert r.is_secret_name("memberNo") and not r.is_secret_name("pin") and r.is_secret_name("password")
    assert not Redactor(parse_config(head + "  redaction: {defaults: false}\n").shadow.capture.redaction,
                        KEY).is_secret_name("password")
    with pytest.raises(ConfigError, match=r"<string>:6: shadow\.redaction\.defaults: expected true or false"):
        parse_config(head + "  redaction:\n    defaults: maybe\n")


def test_only_bodies_with_a_secret_key_are_parsed_whatever_their_layout() -> None:
    from shadow.capture.redact import UNPARSED

    r = Redactor(RedactionSettings(), KEY)
    for body in (b'{"CVV": 1}', b'{"Api-Key": "x"}', b'{"a": {"PIN": 1}}', b'{"sessionId": "x"}',
                 b'{"x": [{"otp": 2}]}', b'{"a" : 1, "password"  :  "x"}', b'{\n  "token":\n "x"\n}',
                 b'{"a": "b\\"c", "secret": 1}', b'[{"id": 1}, {"card_number": "4111"}]'):
        out, doc = r.redact_json(body)
        assert out != body and doc is not UNPARSED, body
    for body in (b'{"note": "the password and the token are in a value", "id": 1}', b'{"a": {"b": [1, 2]}}'):
        assert r.redact_json(body) == (body, UNPARSED), body  # not even parsed
        assert r.redact_json(body) == (body, UNPARSED), body  # the second time from the known keys
