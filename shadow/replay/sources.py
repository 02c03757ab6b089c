"""Readers of recorded traffic: mitmproxy flow files, HAR 1.2 files and capture folders.

Every reader yields `SourceEntry` values in source order and stops with a `SourceError` naming the
file and the 1-based entry number at the first entry it cannot read, after yielding every entry
before it — a truncated recording still replays up to the damage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from shadow.errors import ShadowError

Headers = list[tuple[str, str]]

# Connection-level headers describe one hop, never the request itself: a replay recomputes them.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
     "content-length", "trailer", "http2-settings", "expect"}
)


class SourceError(ShadowError):
    """A source that cannot be read (further): `FILE: entry N: reason`, or `FILE: reason`."""

    def __init__(self, file: str | os.PathLike[str], reason: str, *, entry: int | None = None) -> None:
        self.file, self.entry, self.reason = str(file), entry, reason
        where = f"{file}: entry {entry}" if entry is not None else str(file)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class RecordedResponse:
    """What the recorded server answered. `body` is decoded when the recording stored it decoded
    (HAR, capture) — then `headers` carry no Content-Encoding."""

    status: int | None
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    latency_ms: float | None = None
    error: str | None = None
    service: str | None = None
    upstream: str | None = None


@dataclass(frozen=True)
class SourceEntry:
    index: int  # 0-based position in its source (entry number in errors is index + 1)
    method: str
    scheme: str
    host: str  # the client's Host (authority), as recorded
    path: str  # path without query
    query: str  # raw query string, "" when none
    headers: Headers  # end-to-end request headers (no hop-by-hop, no HTTP/2 pseudo-headers)
    body: bytes
    ts_ns: int | None = None  # when the recorded request started
    recorded: RecordedResponse | None = None
    client_key: str | None = None

    @property
    def target(self) -> str:
        """Path with query, as sent on the request line."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


class Source(Protocol):
    path: Path
    kind: str

    @property
    def identity(self) -> str: ...

    def count(self) -> int | None: ...

    def entries(self) -> Iterator[SourceEntry]: ...


def clean_headers(pairs: list[tuple[str, str]]) -> tuple[Headers, str | None]:
    """Drop hop-by-hop and HTTP/2 pseudo-headers; return (headers, :authority if one was present)."""
    out: Headers = []
    authority = None
    for k, v in pairs:
        lk = k.lower()
        if lk.startswith(":"):
            if lk == ":authority":
                authority = v
            continue
        if lk in HOP_BY_HOP:
            continue
        out.append((k, v))
    return out, authority


def _without(headers: Headers, *names: str) -> Headers:
    drop = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in drop]


def _file_identity(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# mitmproxy flow files


class FlowFileSource:
    kind = "flows"

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def identity(self) -> str:
        return _file_identity(self.path)

    def count(self) -> int | None:
        """Top-level records, found by hopping over their length prefixes (no parsing): cheap, so
        the progress bar can show an ETA. Counts up to the first damaged record."""
        n = 0
        try:
            with self.path.open("rb") as fo:
                while True:
                    prefix = fo.read(12)
                    if not prefix:
                        return n
                    digits, sep, _ = prefix.partition(b":")
                    if not sep or not digits.isdigit():
                        return n
                    fo.seek(fo.tell() - len(prefix) + len(digits) + 1 + int(digits))
                    if not fo.read(1):  # the type byte: missing means a truncated record
                        return n
                    n += 1
        except OSError:
            return None

    def entries(self) -> Iterator[SourceEntry]:
        # mitmproxy's format and its migrations, through the adapter (no mitmproxy import in shadow/)
        from addons.flowfile import flow_state

        index = 0
        with self.path.open("rb") as fo:
            while True:
                try:
                    record = _read_record(fo)
                except ValueError as e:
                    raise SourceError(self.path, f"unreadable flow data (truncated or corrupt): {e}",
                                      entry=index + 1) from None
                if record is None:
                    return
                try:
                    entry = flow_state_entry(flow_state(record), index)
                except Exception as e:  # damaged data surfaces as many types in the parser
                    raise SourceError(self.path, f"invalid flow: {type(e).__name__}: {e}",
                                      entry=index + 1) from None
                if entry is not None:  # TCP/UDP/DNS flows are counted but not replayed
                    yield entry
                index += 1


def _read_record(fo: Any) -> bytes | None:
    """One top-level tnetstring record ("<length>:<payload><type>"), None at a clean end of file."""
    prefix = fo.read(12)
    if not prefix:
        return None
    digits, sep, rest = prefix.partition(b":")
    if not sep or not digits.isdigit():
        raise ValueError("not a tnetstring record (no length prefix)")
    need = int(digits) + 1 - len(rest)
    tail = fo.read(need) if need > 0 else b""
    if len(tail) < need:
        raise ValueError(f"file ends inside the record ({len(rest) + len(tail)} of {int(digits) + 1} bytes)")
    data = prefix + tail
    if len(data) > len(digits) + 1 + int(digits) + 1:  # a short record: push back what follows
        extra = len(data) - (len(digits) + 1 + int(digits) + 1)
        fo.seek(-extra, 1)
        data = data[:-extra]
    if data[-1:] != b"}":
        raise ValueError("a record that is not a flow (not a dictionary)")
    return data


def _pairs_of(fields: Any) -> Headers:
    return [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in fields or ()]


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes | bytearray) else str(value)


def flow_state_entry(state: dict[Any, Any], index: int) -> SourceEntry | None:
    """A SourceEntry from a mitmproxy HTTP flow's state dict (current format, after
    mitmproxy.io.compat.migrate_flow); None for a flow that is not HTTP. Bodies stay as they went
    over the wire (Content-Encoding kept: the capture writer decodes)."""
    if state.get("type") != "http":
        return None
    req = state["request"]
    scheme = _text(req["scheme"])
    server = f"{scheme}://{_text(req['host'])}:{int(req['port'])}"
    headers, authority = clean_headers(_pairs_of(req["headers"]))
    host = next((v for k, v in headers if k.lower() == "host"), None) or authority
    if not host:
        host = _text(req.get("authority") or b"") or _text(req["host"])
    path, _, query = _text(req["path"]).partition("?")
    recorded: RecordedResponse | None = None
    resp = state.get("response")
    error = state.get("error")
    if resp:
        latency = None
        if resp.get("timestamp_end") and req.get("timestamp_start"):
            latency = (resp["timestamp_end"] - req["timestamp_start"]) * 1000.0
        recorded = RecordedResponse(status=int(resp["status_code"]), headers=_pairs_of(resp["headers"]),
                                    body=bytes(resp.get("content") or b""), latency_ms=latency, upstream=server)
    elif error:
        recorded = RecordedResponse(status=None, error=str(error.get("msg") or "error"), upstream=server)
    peer = (state.get("client_conn") or {}).get("peername")
    started = req.get("timestamp_start")
    return SourceEntry(
        index=index,
        method=_text(req["method"]).upper(),
        scheme=scheme,
        host=host,
        path=path or "/",
        query=query,
        headers=headers,
        body=bytes(req.get("content") or b""),
        ts_ns=int(started * 1e9) if started else None,
        recorded=recorded,
        client_key=str(peer[0]) if peer else None,
    )


# ---------------------------------------------------------------------------------------------
# HAR 1.2


class _Truncated(Exception):
    pass


class _HarScanner:
    """Walks `{"log": {..., "entries": [e1, e2, ...]}}` element by element, so a HAR cut short in
    entry N still yields entries 1..N-1 (a whole-document json.loads would lose them all)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.decoder = json.JSONDecoder()

    def _ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        self.pos = pos

    def _expect(self, chars: str) -> str:
        self._ws()
        if self.pos >= len(self.text):
            raise _Truncated()
        ch = self.text[self.pos]
        if ch not in chars:
            raise ValueError(f"expected one of {chars!r} at offset {self.pos}, found {ch!r}")
        self.pos += 1
        return ch

    def _value(self) -> Any:
        self._ws()
        try:
            value, self.pos = self.decoder.raw_decode(self.text, self.pos)
        except json.JSONDecodeError as e:
            if e.pos >= len(self.text) - 1 or "Unterminated" in e.msg:
                raise _Truncated() from None
            raise ValueError(f"{e.msg} at offset {e.pos}") from None
        return value

    def _keys(self) -> Iterator[str]:
        """Iterate the keys of an object whose `{` was consumed; the caller consumes each value."""
        self._ws()
        if self.text.startswith("}", self.pos):
            self.pos += 1
            return
        while True:
            key = self._value()
            if not isinstance(key, str):
                raise ValueError(f"expected an object key at offset {self.pos}")
            self._expect(":")
            yield key
            if self._expect(",}") == "}":
                return

    def entries(self) -> Iterator[Any]:
        self._expect("{")
        found = False
        for key in self._keys():
            if key != "log":
                self._value()
                continue
            self._expect("{")
            for log_key in self._keys():
                if log_key != "entries":
                    self._value()
                    continue
                found = True
                self._expect("[")
                self._ws()
                if self.text.startswith("]", self.pos):
                    self.pos += 1
                    continue
                while True:
                    yield self._value()
                    if self._expect(",]") == "]":
                        break
        if not found:
            raise ValueError('no "log.entries" array')


class HarSource:
    kind = "har"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._count: int | None = None

    @property
    def identity(self) -> str:
        return _file_identity(self.path)

    def _text(self) -> str:
        data = self.path.read_bytes()
        if self.path.suffix == ".zhar":
            try:
                data = zlib.decompress(data)
            except zlib.error as e:
                raise SourceError(self.path, f"not a zlib-compressed HAR: {e}") from None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise SourceError(self.path, f"not UTF-8 text at byte {e.start}") from None

    def count(self) -> int | None:
        if self._count is None:
            try:
                doc = json.loads(self._text())
                self._count = len(doc["log"]["entries"])
            except (ValueError, KeyError, TypeError, SourceError):
                return None
        return self._count

    def entries(self) -> Iterator[SourceEntry]:
        scanner = _HarScanner(self._text())
        index = 0
        items = scanner.entries()
        while True:
            try:
                raw = next(items)
            except StopIteration:
                return
            except _Truncated:
                if index == 0 and scanner.pos < 64:
                    raise SourceError(self.path, "truncated HAR (no entries array)") from None
                raise SourceError(self.path, "truncated (file ends inside this entry)",
                                  entry=index + 1) from None
            except ValueError as e:
                raise SourceError(self.path, f"invalid HAR JSON: {e}", entry=index + 1) from None
            try:
                yield har_entry(raw, index)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
                raise SourceError(self.path, f"invalid HAR entry: {detail}", entry=index + 1) from None
            index += 1


def _har_pairs(items: Any) -> list[tuple[str, str]]:
    return [(str(h["name"]), str(h.get("value", ""))) for h in items or []]


def _har_content(content: dict[str, Any]) -> bytes:
    text = content.get("text")
    if text is None:
        return b""
    if content.get("encoding") == "base64":
        return base64.b64decode(text, validate=False)
    return str(text).encode("utf-8")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_to_ns(text: str) -> int:
    """ISO 8601 (HAR startedDateTime) to ns since the epoch, exactly (no float rounding)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def har_entry(raw: Any, index: int) -> SourceEntry:
    """One HAR 1.2 entry (browser DevTools, Firefox, Charles, mitmproxy savehar) as a SourceEntry."""
    if not isinstance(raw, dict):
        raise ValueError("entry is not an object")
    req = raw["request"]
    method = str(req["method"]).upper()
    url = urlsplit(str(req["url"]))
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"request.url {req['url']!r} is not an absolute http(s) URL")
    headers, authority = clean_headers(_har_pairs(req.get("headers")))
    host = next((v for k, v in headers if k.lower() == "host"), None) or authority or url.netloc
    if not any(k.lower() == "host" for k, _ in headers):
        headers.insert(0, ("Host", host))
    body = b""
    post = req.get("postData")
    if post:
        if post.get("text") is not None:
            body = _har_content(post)
        elif post.get("params"):
            # DevTools may keep only the parsed form; re-encode it the way a form post sends it.
            body = urlencode([(p["name"], p.get("value", "")) for p in post["params"]]).encode()
        if post.get("mimeType") and not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", str(post["mimeType"])))
    recorded = None
    resp = raw.get("response")
    if isinstance(resp, dict):
        status = int(resp.get("status") or 0)
        error = resp.get("_error") or (None if status else "no response recorded")
        total = raw.get("time")
        recorded = RecordedResponse(
            status=status or None,
            # HAR stores the body decoded: its Content-Encoding no longer describes it.
            headers=_without(clean_headers(_har_pairs(resp.get("headers")))[0], "content-encoding"),
            body=_har_content(resp.get("content") or {}),
            latency_ms=float(total) if isinstance(total, int | float) and total >= 0 else None,
            error=None if status else str(error),
            upstream=f"{url.scheme}://{url.netloc}",
        )
    ts_ns = None
    started = raw.get("startedDateTime")
    if started:
        ts_ns = iso_to_ns(str(started))
    return SourceEntry(
        index=index,
        method=method,
        scheme=url.scheme,
        host=host,
        path=url.path or "/",
        query=url.query,
        headers=headers,
        body=body,
        ts_ns=ts_ns,
        recorded=recorded,
        client_key=None,
    )


# ---------------------------------------------------------------------------------------------
# capture folders (the primary rows of a previous capture)


class CaptureSource:
    kind = "capture"
    COLUMNS = ("method", "url", "host", "path", "query", "req_headers", "req_body", "status",
               "resp_headers", "resp_body", "latency_ms", "error", "client_key", "service",
               "upstream", "ts")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._count: int | None = None

    def _files(self) -> list[Path]:
        root = self.path / "exchanges"
        return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))

    @property
    def identity(self) -> str:
        h = hashlib.sha256(str(self.path.resolve()).encode())
        for p in self._files():
            st = p.stat()
            h.update(f"{p.relative_to(self.path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def _query(self, select: str) -> tuple[Any, str, list[str]]:
        import duckdb

        files = self._files()
        if not files:
            raise SourceError(self.path, "capture folder holds no exchanges (no sealed Parquet segment)")
        con = duckdb.connect()
        rel = "read_parquet(?, hive_partitioning=true, union_by_name=true)"
        return con, select.replace("{src}", rel), [str(p) for p in files]

    def count(self) -> int | None:
        if self._count is None:
            try:
                con, sql, files = self._query("SELECT count(*) FROM {src} WHERE role = 'primary'")
                self._count = int(con.execute(sql, [files]).fetchone()[0])
            except Exception:
                return None
        return self._count

    def entries(self) -> Iterator[SourceEntry]:
        import duckdb

        con, sql, files = self._query(
            "SELECT " + ", ".join(self.COLUMNS) + " FROM {src} WHERE role = 'primary' "
            "ORDER BY ts, exchange_id")
        try:
            reader = con.sql(sql, params=[files]).to_arrow_reader(2048)
        except duckdb.Error as e:
            raise SourceError(self.path, f"unreadable capture: {str(e).splitlines()[0]}") from None
        index = 0
        for batch in reader:
            for row in batch.to_pylist():
                try:
                    yield capture_entry(row, index)
                except (KeyError, TypeError, ValueError) as e:
                    raise SourceError(self.path, f"invalid primary row: {e}", entry=index + 1) from None
                index += 1


def capture_entry(row: dict[str, Any], index: int) -> SourceEntry:
    def pairs(items: Any) -> Headers:
        return [(h["name"], h["value"] or "") for h in items or []]

    path, query = row.get("path"), row.get("query")
    if path is None:
        u = urlsplit(row["url"])
        path, query = u.path or "/", u.query
    headers, _ = clean_headers(pairs(row.get("req_headers")))
    ts = row.get("ts")
    ts_ns = int(ts.timestamp() * 1e9) if ts is not None else None
    recorded = RecordedResponse(
        status=row.get("status"),
        headers=_without(pairs(row.get("resp_headers")), "content-encoding", "content-length"),
        body=row.get("resp_body") or b"",
        latency_ms=row.get("latency_ms"),
        error=row.get("error"),
        service=row.get("service"),
        upstream=row.get("upstream"),
    )
    return SourceEntry(
        index=index,
        method=str(row["method"]).upper(),
        scheme=urlsplit(row.get("url") or "http://x/").scheme or "http",
        host=row.get("host") or urlsplit(row.get("url") or "").netloc,
        path=path,
        query=query or "",
        headers=headers,
        body=row.get("req_body") or b"",
        ts_ns=ts_ns,
        recorded=recorded,
        client_key=row.get("client_key"),
    )


# ---------------------------------------------------------------------------------------------


def open_source(path: str | os.PathLike[str]) -> Source:
    """Recognise a source by its content: capture folder, HAR (JSON), or mitmproxy flow file."""
    p = Path(path)
    if not p.exists():
        raise SourceError(p, "no such file or folder")
    if p.is_dir():
        if (p / "exchanges").is_dir():
            return CaptureSource(p)
        raise SourceError(p, "a folder, but not a capture (no exchanges/ inside)")
    if p.suffix == ".zhar":
        return HarSource(p)
    try:
        with p.open("rb") as fo:
            head = fo.read(64)
    except OSError as e:
        raise SourceError(p, f"cannot read: {e.strerror}") from None
    if not head:
        raise SourceError(p, "empty file")
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if stripped.startswith(b"{"):
        return HarSource(p)
    # A mitmproxy flow file is a sequence of tnetstrings: "<length>:<payload><type>".
    digits = len(head) - len(head.lstrip(b"0123456789"))
    if 0 < digits <= 12 and head[digits:digits + 1] == b":":
        return FlowFileSource(p)
    raise SourceError(p, "unknown format (expected a mitmproxy flow file, a HAR file or a capture folder)")
