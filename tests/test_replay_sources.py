"""Readers of recorded traffic: flows and HAR written by a real mitmdump, browser-style HAR,
capture folders, and damaged or unknown files."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shadow.replay.sources import (
    CaptureSource,
    FlowFileSource,
    HarSource,
    SourceEntry,
    SourceError,
    open_source,
)
from tests.upstream import ReceivedRequest, Response, Upstream, echo, free_port

DATA = Path(__file__).parent / "data" / "replay"
MITMDUMP = Path(sys.executable).parent / "mitmdump"


def _handler(req: ReceivedRequest) -> Response:
    if req.path.startswith("/gz"):
        return 200, {"Content-Type": "text/plain", "Content-Encoding": "gzip"}, gzip.compress(b"zipped " * 20)
    if req.path.startswith("/missing"):
        return 404, {"Content-Type": "text/plain"}, b"no such thing"
    return echo("monolith")(req)


SENT = [
    ("GET", "/api/items/1?x=1", None),
    ("GET", "/api/items/2", None),
    ("POST", "/api/orders", b'{"sku": "A1"}'),
    ("GET", "/gz", None),
    ("GET", "/missing", None),
    ("DELETE", "/api/items/3", None),
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A real mitmdump in reverse mode in front of a real upstream, writing a flow file (-w) and,
    at exit, a HAR through mitmproxy's own savehar addon (hardump)."""
    folder = tmp_path_factory.mktemp("recorded")
    flows, har = folder / "traffic.flows", folder / "traffic.har"
    with Upstream("monolith", handler=_handler) as up:
        port = free_port()
        proc = subprocess.Popen(
            [str(MITMDUMP), "--mode", f"reverse:{up.url}", "--listen-host", "127.0.0.1", "--listen-port",
             str(port), "-w", str(flows), "--set", f"hardump={har}", "--set", "connection_strategy=lazy", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/warmup", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("mitmdump did not start") from None
                    time.sleep(0.1)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-User": "u1"}, timeout=30.0) as client:
                for method, path, body in SENT:
                    client.request(method, path, content=body)
        finally:
            proc.send_signal(signal.SIGINT)  # a clean exit writes the HAR (hardump) at "done"
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert flows.exists() and har.exists()
    yield flows, har


def _sent_entries(entries: list[SourceEntry]) -> list[SourceEntry]:
    return [e for e in entries if e.path != "/api/warmup"]


def test_flow_file_from_mitmdump(recorded: tuple[Path, Path]) -> None:
    src = open_source(recorded[0])
    assert isinstance(src, FlowFileSource)
    all_entries = list(src.entries())
    assert src.count() == len(all_entries) == len(SENT) + 1  # counted without parsing (for the ETA)
    entries = _sent_entries(all_entries)
    assert [(e.method, e.target) for e in entries] == [(m, p) for m, p, _ in SENT]
    post = entries[2]
    assert post.body == b'{"sku": "A1"}'
    assert post.header("x-user") == "u1"
    assert not any(k.lower() in ("content-length", "connection") for k, _ in post.headers)
    assert entries[0].query == "x=1" and entries[0].path == "/api/items/1"
    assert entries[0].client_key == "127.0.0.1"
    assert entries[0].host.startswith("127.0.0.1:")
    # Flow files keep bodies as on the wire: the gzip body stays encoded, with its header.
    gz = entries[3].recorded
    assert gz is not None and gz.status == 200
    assert gzip.decompress(gz.body) == b"zipped " * 20
    assert ("Content-Encoding", "gzip") in gz.headers
    assert entries[4].recorded is not None and entries[4].recorded.status == 404
    assert all(e.recorded and e.recorded.latency_ms and e.recorded.latency_ms > 0 for e in entries)
    stamps = [e.ts_ns for e in entries]
    assert all(s is not None for s in stamps) and stamps == sorted(stamps)  # type: ignore[type-var]


def test_har_from_mitmproxy_savehar(recorded: tuple[Path, Path]) -> None:
    flows, har = recorded
    src = open_source(har)
    assert isinstance(src, HarSource)
    entries = _sent_entries(list(src.entries()))
    from_flows = _sent_entries(list(open_source(flows).entries()))
    assert src.count() == len(entries) + 1  # plus the warm-up request
    assert [(e.method, e.target, e.body) for e in entries] == [(e.method, e.target, e.body) for e in from_flows]
    # HAR holds bodies decoded: the gzip response is plain text and its Content-Encoding is gone.
    gz = entries[3].recorded
    assert gz is not None and gz.body == b"zipped " * 20
    assert not any(k.lower() == "content-encoding" for k, _ in gz.headers)
    echoed = json.loads(entries[0].recorded.body)  # type: ignore[union-attr]
    assert echoed["path"] == "/api/items/1?x=1"
    # savehar writes ISO timestamps with microseconds: the same instants as the flow file.
    for h, f in zip(entries, from_flows, strict=True):
        assert h.ts_ns is not None and f.ts_ns is not None and abs(h.ts_ns - f.ts_ns) < 1_000


def test_browser_har_fields() -> None:
    entries = list(open_source(DATA / "browser.har").entries())
    assert len(entries) == 5
    get, png, post, form, failed = entries
    # HTTP/2 pseudo-headers are dropped; :authority becomes the Host; the fragment is not sent.
    assert not any(k.startswith(":") for e in entries for k, _ in e.headers)
    assert get.host == "shop.example" and ("Host", "shop.example") in get.headers
    assert get.target == "/api/orders/42?expand=items&x=%2F"
    assert get.header("cookie") == "sid=abc" and get.header("x-user") == "alice"
    assert get.recorded is not None and get.recorded.latency_ms == 35.25
    # The body in a HAR is decoded, so its "content-encoding: br" no longer applies.
    assert get.recorded.body == b'{"id": 42, "items": [1, 2]}'
    assert not any(k.lower() == "content-encoding" for k, _ in get.recorded.headers)
    assert png.recorded is not None and png.recorded.body == bytes(range(256))  # base64 "encoding"
    assert post.body == b'{"sku": "A1", "n": 2}' and post.header("content-type") == "application/json"
    assert post.header("content-length") is None
    assert form.body == b"user=alice&next=%2Fa+b"  # postData.params only: re-encoded as a form
    assert failed.path == "/api/slow" and failed.recorded is not None
    assert failed.recorded.status is None and failed.recorded.error == "net::ERR_CONNECTION_RESET"
    # "+01:00" and "Z" timestamps are the same clock: entry 2 started 250 ms after entry 1.
    assert png.ts_ns is not None and get.ts_ns is not None
    assert png.ts_ns - get.ts_ns == 250_000_000


def test_capture_folder_reads_primary_rows_in_time_order(tmp_path: Path) -> None:
    from shadow.capture.settings import CaptureSettings
    from shadow.capture.writer import CaptureWriter

    base = 1_790_000_000_000_000_000
    with CaptureWriter(CaptureSettings(dir=tmp_path / "cap")) as writer:
        for i in (2, 0, 1):
            for role in ("primary", "candidate"):
                writer.submit({
                    "request_id": f"r{i}", "role": role, "mode": "mirror", "service": f"svc-{role}",
                    "ts": base + i * 1_000_000, "latency_ms": 5.0 + i, "method": "get",
                    "url": f"http://monolith:8080/api/items/{i}?q={i}", "host": "shop.example",
                    "upstream": "http://monolith:8080",
                    "req_headers": [("Accept", "application/json"), ("Content-Length", "0")],
                    "req_body": b"", "status": 200 + i,
                    "resp_headers": [("Content-Type", "application/json")],
                    "resp_body": json.dumps({"i": i, "role": role}).encode(), "client_key": f"user{i}",
                })
    src = open_source(tmp_path / "cap")
    assert isinstance(src, CaptureSource) and src.count() == 3
    entries = list(src.entries())
    assert [e.target for e in entries] == ["/api/items/0?q=0", "/api/items/1?q=1", "/api/items/2?q=2"]
    assert [e.method for e in entries] == ["GET"] * 3
    first = entries[0]
    assert first.host == "shop.example" and first.client_key == "user0"
    assert first.header("content-length") is None and first.header("accept") == "application/json"
    assert first.recorded is not None and first.recorded.status == 200
    assert json.loads(first.recorded.body) == {"i": 0, "role": "primary"}
    assert first.recorded.service == "svc-primary" and first.recorded.latency_ms == 5.0


# --- damaged and unknown sources ------------------------------------------------------------------


def _read_until_error(path: Path) -> tuple[list[SourceEntry], SourceError]:
    got: list[SourceEntry] = []
    with pytest.raises(SourceError) as info:
        for e in open_source(path).entries():
            got.append(e)
    return got, info.value


def test_truncated_har_yields_entries_before_the_damage(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    text = recorded[1].read_text()
    doc = json.loads(text)
    third_url = doc["log"]["entries"][3]["request"]["url"]
    cut = tmp_path / "cut.har"
    cut.write_text(text[: text.index(third_url) + 5])  # ends inside entry 4
    got, err = _read_until_error(cut)
    assert len(got) == 3
    assert err.entry == 4 and str(cut) in err.message and "truncated" in err.message


def test_har_entry_without_url_names_the_entry(tmp_path: Path) -> None:
    doc = json.loads((DATA / "browser.har").read_text())
    del doc["log"]["entries"][2]["request"]["url"]
    bad = tmp_path / "bad.har"
    bad.write_text(json.dumps(doc))
    got, err = _read_until_error(bad)
    assert len(got) == 2
    assert err.message == f"{bad}: entry 3: invalid HAR entry: missing field 'url'"


def test_har_invalid_json_inside_an_entry(tmp_path: Path) -> None:
    text = (DATA / "browser.har").read_text()
    bad = tmp_path / "bad.har"
    i = text.index('"method": "POST"')
    bad.write_text(text[:i] + '"method": POST' + text[i + len('"method": "POST"'):])
    got, err = _read_until_error(bad)
    assert len(got) == 2 and err.entry == 3 and "invalid HAR JSON" in err.message


def test_truncated_flow_file_yields_flows_before_the_damage(recorded: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    data = recorded[0].read_bytes()
    # Flow k+1 starts right after flow k: cut in the middle of the 5th flow.
    from mitmproxy.io import tnetstring

    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        _, rest = tnetstring.pop(memoryview(data)[pos:])
        pos = len(data) - len(rest)
    cut = tmp_path / "cut.flows"
    cut.write_bytes(data[: offsets[4] + 100])
    got, err = _read_until_error(cut)
    assert len(got) == 4 and err.entry == 5 and open_source(cut).count() == 4
    assert err.message.startswith(f"{cut}: entry 5: unreadable flow data")
    garbage = tmp_path / "garbage.flows"
    garbage.write_bytes(data[: offsets[2]] + b"12:not a flow!!" + data[offsets[3]:])
    got, err = _read_until_error(garbage)
    assert len(got) == 2 and err.entry == 3


@pytest.mark.parametrize(("content", "reason"), [
    (b"PK\x03\x04 a zip file", "unknown format"),
    (b"", "empty file"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "unknown format"),
])
def test_unknown_source_names_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "thing.bin"
    path.write_bytes(content)
    with pytest.raises(SourceError) as info:
        open_source(path)
    assert info.value.message.startswith(f"{path}: {reason}")


def test_missing_source_and_folder_that_is_not_a_capture(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "nope.har")
    with pytest.raises(SourceError, match="not a capture"):
        open_source(tmp_path)


def test_har_identity_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.har"
    shutil.copy(DATA / "browser.har", path)
    first = open_source(path).identity
    assert open_source(path).identity == first
    os.utime(path, ns=(1, 1))
    assert open_source(path).identity != first


def test_flow_file_with_older_format_and_non_http_flows(tmp_path: Path) -> None:
    """A record in an older flow format goes through mitmproxy's own migrations; TCP flows are
    counted (entry numbers stay those of the file) but not replayed."""
    from mitmproxy.io import tnetstring
    from mitmproxy.test import tflow

    old = tflow.tflow(resp=True).get_state()
    old["version"] = 20
    path = tmp_path / "mixed.flows"
    with path.open("wb") as fo:
        tnetstring.dump(old, fo)
        tnetstring.dump(tflow.ttcpflow().get_state(), fo)
        current = tflow.tflow(resp=True)
        current.request.path = "/now?x=1"
        tnetstring.dump(current.get_state(), fo)
    entries = list(open_source(path).entries())
    assert [(e.index, e.method, e.target) for e in entries] == [(0, "GET", "/path"), (2, "GET", "/now?x=1")]
    assert entries[0].recorded is not None and entries[0].recorded.body == b"message"
    assert entries[1].client_key == "127.0.0.1" and entries[1].body == b"content"
    assert open_source(path).count() == 3
