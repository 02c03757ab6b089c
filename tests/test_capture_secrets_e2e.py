"""Secrets off disk with default settings: 21 kinds of secret sent through a real gateway, then every
file of the capture (raw bytes, and the decoded values of each Parquet file and journal) is searched.

The config names nothing to redact: only the capture folder. The redaction key must not be in the
capture either (it lives in the key file the conftest points $SHADOW_REDACTION_KEY_FILE at)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx

from shadow.capture.redact import load_redaction_key
from shadow.capture.settings import RedactionSettings
from shadow.capture.store import open_store
from tests.conftest import GatewayProcess
from tests.test_capture import file_contents
from tests.upstream import ReceivedRequest, Response, Upstream


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


JWT = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64({'sub': 'S03-jwt-subject-q8'})}.S03sig-Zx81"
# kind -> a value found nowhere else; each must be absent from every file of the capture.
SECRETS = {
    "query api_key": "S01-qapikey-k2",
    "query token": "S02-qtoken-m4",
    "JWT in ?access_token=": JWT,
    "query password": "S04-qpassword-p1",
    "query api_key[]": "S05-qarray-a7",
    "path ;api_key=": "S06-pathparam-r3",
    "JSON password": "S07-jsonpw-w9",
    "JSON card_number": "4111111111111111",
    "JSON nested secret": "S09-nested-n5",
    "JSON key with \\u escape": "S10-escaped-e6",
    "X-Api-Key": "S11-xapikey-h1",
    "X-Auth-Token": "S12-xauthtoken-h2",
    "X-Csrf-Token": "S13-xcsrf-h3",
    "form-urlencoded password": "S14-formpw-f4",
    "multipart password": "S15-multipart-f5",
    "Authorization bearer": "S16-bearer-b6",
    "Cookie": "S17-cookie-c7",
    "Set-Cookie (response)": "S18-setcookie-c8",
    "JSON access_token (response)": "S19-respjson-t9",
    "Referer ?token=": "S20-referer-t0",
    "Location #access_token= (response)": "S21-location-l1",
}
VISIBLE = "VISIBLE-not-a-secret-v0"
CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: app}}
  services:
    app: {{loadBalancer: {{servers: [{{url: "{app}"}}]}}}}
shadow:
  capture: {{dir: "{capture}"}}
"""


def app(req: ReceivedRequest) -> Response:
    body = json.dumps({"access_token": SECRETS["JSON access_token (response)"], "note": VISIBLE}).encode()
    return 200, {"Content-Type": "application/json", "Set-Cookie": f"sid={SECRETS['Set-Cookie (response)']}; HttpOnly",
                 "Location": f"/callback#access_token={SECRETS['Location #access_token= (response)']}"}, body


def send_every_kind(client: httpx.Client) -> None:
    s = SECRETS
    query = (f"?api_key={s['query api_key']}&token={s['query token']}&access_token={JWT}"
             f"&password={s['query password']}&api_key[]={s['query api_key[]']}&q={VISIBLE}")
    headers = {"X-Api-Key": s["X-Api-Key"], "X-Auth-Token": s["X-Auth-Token"], "X-Csrf-Token": s["X-Csrf-Token"],
               "Authorization": f"Bearer {s['Authorization bearer']}", "Cookie": f"session={s['Cookie']}",
               "Referer": f"http://127.0.0.1/prev?token={s['Referer ?token=']}"}
    document = {"user": "ada", "password": s["JSON password"], "card_number": s["JSON card_number"], "note": VISIBLE,
                "payment": {"methods": [{"auth": {"client_secret": s["JSON nested secret"]}}]},
                "new_PASSWORD": s["JSON key with \\u escape"]}
    # A JSON encoder may escape any character of a key: "new_\u0070assword" is "new_password".
    json_body = json.dumps(document).replace('"new_PASSWORD"', '"new_\\u0070assword"')
    answers = [
        client.post(f"/api/login;api_key={s['path ;api_key=']}/x{query}", content=json_body,
                    headers={**headers, "Content-Type": "application/json"}),
        client.post("/form", data={"user": "ada", "password": s["form-urlencoded password"], "note": VISIBLE}),
        client.post("/upload", data={"user": "ada", "password": s["multipart password"]},
                    files={"doc": ("a.txt", VISIBLE.encode(), "text/plain")}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json()["access_token"] == s["JSON access_token (response)"]  # the client sees all


def test_no_secret_kind_reaches_any_capture_file_with_default_settings(tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    cfg = tmp_path / "gateway.yaml"
    with Upstream("app", handler=app) as upstream:
        cfg.write_text(CONFIG.format(app=upstream.url, capture=capture))
        with GatewayProcess(cfg) as gw, httpx.Client(base_url=gw.url, follow_redirects=False, timeout=30) as client:
            send_every_kind(client)
            assert gw.stop() == 0
        # The upstream got every secret: redaction is for the capture only.
        assert f"api_key={SECRETS['path ;api_key=']}" in upstream.received()[0].path
    contents = file_contents(capture)
    assert any(VISIBLE.encode() in data for _, data in contents), "the search must see stored values"
    found = {kind for kind, secret in SECRETS.items() for _, data in contents if secret.encode() in data}
    assert found == set(), f"{len(found)} of {len(SECRETS)} secret kinds stored in clear: {sorted(found)}"
    key = load_redaction_key(capture, RedactionSettings())
    assert not any(key in data for _, data in contents), "the redaction key must not be in the capture"
    with open_store(capture) as store:
        rows = store.sql("select url, path, query, endpoint from exchanges order by path").fetchall()
    assert len(rows) == 3
    url, path, query, endpoint = next(r for r in rows if r[1].startswith("/api/login"))
    assert "eyJ" not in url and "access_token=redacted:" in url and "api_key=redacted:" in path
    assert f"q={VISIBLE}" in query and "redacted:" in endpoint
