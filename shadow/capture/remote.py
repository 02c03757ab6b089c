"""Captures in an object store: gateways upload their sealed files, readers fetch them.

A capture location is a folder or a URI that pyarrow's file systems open (`s3://bucket/prefix`,
`gs://…`, `abfs://…`, with options as query parameters, e.g.
`s3://captures/shop?endpoint_override=127.0.0.1:9000&scheme=http` for an S3-compatible server;
credentials from the usual environment variables, AWS_ACCESS_KEY_ID...).

Writing: a gateway always captures to its local folder first (journal, fsync, sealed segments:
crash-safe as ever); with `shadow.capture.upload: URI` it uploads each segment it sealed (only its
own: `part-<gateway id>-…`, under the same relative path), deletes the local copy once the upload
succeeded, and uploads its counters `_stats/<gateway id>.json`. A segment is immutable and an
object appears whole when its upload completes, so gateways on any number of machines share one
prefix with no shared mutable object and no coordination.

Reading: `resolve_capture(URI)` fetches the sealed objects not fetched before into a local cache
folder (objects never change, so each is fetched once) and returns it; `shadow sql`, the analyzers
and the notebooks then read the union there with DuckDB as any capture folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from shadow.errors import CaptureError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["CACHE_ENV", "Uploader", "cache_folder", "is_remote", "open_location", "resolve_capture",
           "sync_to_cache", "upload_sealed"]

log = logging.getLogger("shadow.capture.remote")

CACHE_ENV = "SHADOW_CAPTURE_CACHE"
STATS_DIR = "_stats"


def is_remote(location: str | os.PathLike[str]) -> bool:
    """A URI with a scheme other than file:// (a Windows drive letter is not a scheme)."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme != "file"


def open_location(uri: str) -> tuple[pafs.FileSystem, str]:
    """(file system, base path without a trailing slash). CaptureError (one line) for a bad URI."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise CaptureError(f"{_public(uri)}: cannot open this capture location: {exc}") from None
    return fs, path.rstrip("/")


def _public(uri: str) -> str:
    """The URI without its query (which may hold credentials), for messages."""
    return uri.split("?", 1)[0]


def _is_sealed(relative: PurePosixPath) -> bool:
    """A sealed table segment (table/…/x.parquet, no hidden or `_` part) or a counters file."""
    parts = relative.parts
    if len(parts) >= 2 and parts[0] == STATS_DIR:
        return len(parts) == 2 and relative.suffix == ".json" and not parts[1].startswith(".")
    return relative.suffix == ".parquet" and not any(p.startswith((".", "_")) for p in parts)


def _local_sealed(root: Path) -> Iterator[PurePosixPath]:
    if not root.is_dir():
        return
    for path in root.rglob("*"):
        relative = PurePosixPath(path.relative_to(root).as_posix())
        if path.is_file() and _is_sealed(relative):
            yield relative


def _copy(src: Any, out: Any, chunk: int = 8 << 20) -> None:
    """Stream in chunks: a segment can be hundreds of MB."""
    while data := src.read(chunk):
        out.write(data)


def _owned(relative: PurePosixPath, owner: str) -> bool:
    """Written by gateway `owner`: `part-<owner>-<uuid>.parquet`, `_stats/<owner>[.table].json`."""
    name = relative.name
    if relative.parts[0] == STATS_DIR:
        return name == f"{owner}.json" or name.startswith(f"{owner}.")
    return name.startswith(f"part-{owner}-") and len(name) == len(f"part-{owner}-") + 32 + len(".parquet")


def upload_sealed(local_root: Path, uri: str, *, owner: str) -> int:
    """Upload gateway `owner`'s sealed segments under `local_root` to `uri` (same relative paths),
    deleting each local segment once uploaded; upload its counters. Returns the segments uploaded.
    Raises CaptureError (one line) when the location cannot be written."""
    fs, base = open_location(uri)
    uploaded = 0
    for relative in sorted(_local_sealed(local_root)):
        if not _owned(relative, owner):
            continue
        source = local_root / relative
        target = f"{base}/{relative}"
        try:
            with source.open("rb") as src, fs.open_output_stream(target) as out:  # an object appears whole, at close
                _copy(src, out)
        except FileNotFoundError:
            continue  # sealed and removed meanwhile (e.g. a stats file being replaced)
        except OSError as exc:
            raise CaptureError(f"{_public(uri)}: cannot upload {relative}: {exc}") from None
        if relative.parts[0] != STATS_DIR:
            source.unlink(missing_ok=True)
            uploaded += 1
    return uploaded


def cache_folder(uri: str) -> Path:
    """The local folder a remote capture is fetched into: $SHADOW_CAPTURE_CACHE or ~/.cache/shadow/captures,
    then a name derived from the URI (query included: another endpoint is another capture)."""
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "shadow" / "captures")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in _public(uri).split("://", 1)[-1])[-40:]
    return base / f"{label}-{digest}"


def sync_to_cache(uri: str, cache: Path | None = None) -> tuple[Path, int]:
    """Fetch the sealed objects of `uri` not in the cache yet (counters always); (cache folder, fetched)."""
    import pyarrow.fs as pafs

    fs, base = open_location(uri)
    cache = cache or cache_folder(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise CaptureError(f"{_public(uri)}: cannot list the capture: {exc}") from None
    fetched = 0
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        relative = PurePosixPath(info.path[len(base):].lstrip("/"))
        if not _is_sealed(relative):
            continue
        target = cache / relative
        is_stats = relative.parts[0] == STATS_DIR
        if not is_stats and target.exists() and target.stat().st_size == info.size:
            continue  # segments are immutable: fetched once
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"  # hidden: never read
        try:
            with fs.open_input_stream(info.path) as src, temporary.open("wb") as out:
                _copy(src, out)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise CaptureError(f"{_public(uri)}: cannot fetch {relative}: {exc}") from None
        fetched += not is_stats
    (cache / "exchanges").mkdir(parents=True, exist_ok=True)
    return cache, fetched


def resolve_capture(location: str | os.PathLike[str]) -> Path:
    """A capture folder to read: `location` itself, or the local cache of a remote one, brought up to date."""
    if not is_remote(location):
        return Path(location)
    folder, fetched = sync_to_cache(str(location))
    log.info("%s: %d new segment(s) fetched into %s", _public(str(location)), fetched, folder)
    return folder


class Uploader:
    """Uploads a gateway's sealed segments every `interval` seconds on a daemon thread, and once
    more at `close()` (after the writer sealed its last segment)."""

    def __init__(self, local_root: Path, uri: str, owner: str, interval: float) -> None:
        open_location(uri)  # a bad URI fails at startup, in one line
        self.local_root, self.uri, self.owner, self.interval = local_root, uri, owner, interval
        self.uploaded = 0
        self.failures = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="shadow-capture-upload", daemon=True)
        self._thread.start()

    def upload_now(self) -> None:
        with self._lock:
            try:
                self.uploaded += upload_sealed(self.local_root, self.uri, owner=self.owner)
            except CaptureError as exc:  # the segments stay local; the next round retries
                self.failures += 1
                log.warning("%s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.upload_now()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.upload_now()
