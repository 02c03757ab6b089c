"""Change detection for the gateway's config file (hot reload), without any proxy.

Cheap check first (mtime + size from one stat), content hash second, so an editor that rewrites
the same bytes, or a `touch`, does not trigger a reload: Traefik skips identical configurations too.

File systems stamp mtimes with a coarse clock (a few ms), so two same-size writes in one tick look
identical to stat. As git does with "racily clean" files, a file whose mtime is within
`RACY_WINDOW_NS` of now is always hashed.

A file larger than a config may be (shadow.yamlconfig.MAX_CONFIG_BYTES) is not read at all: its
stat stands in for its hash, so every new write of it is a change, which the loader then rejects
in one line without reading more than the limit.

A directory (Gateway API manifests) is watched as the set of its `*.yaml` / `*.yml` files: a file
added, removed, renamed or changed is a change.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from shadow.yamlconfig import MAX_CONFIG_BYTES


@dataclass(frozen=True)
class FileState:
    mtime_ns: int
    size: int
    sha256: str | None  # None: not read (missing file)


RACY_WINDOW_NS = 2_000_000_000


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file())


def _stat(path: Path) -> tuple[int, int] | None:
    """(newest mtime, size): of the file, or of the directory and its YAML files together."""
    try:
        st = os.stat(path)
        if not path.is_dir():
            return st.st_mtime_ns, st.st_size
        stats = [os.stat(p) for p in _yaml_files(path)]
    except OSError:
        return None
    return max([st.st_mtime_ns, *(s.st_mtime_ns for s in stats)]), sum(s.st_size for s in stats) + len(stats)


def _file_digest(path: Path) -> str:
    with path.open("rb") as fo:
        st = os.fstat(fo.fileno())
        if st.st_size > MAX_CONFIG_BYTES:
            return f"oversize:{st.st_mtime_ns}:{st.st_size}"
        return hashlib.sha256(fo.read()).hexdigest()


class ConfigFileWatcher:
    """`poll()` says whether the file's content changed since the last poll (or `prime()`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stat: tuple[int, int] | None = None
        self._hash: str | None = None

    def prime(self) -> None:
        """Record the current content as seen (the one the gateway started with)."""
        self._stat = _stat(self.path)
        self._hash = self._read_hash()

    def _read_hash(self) -> str | None:
        try:
            if not self.path.is_dir():
                return _file_digest(self.path)
            digest = hashlib.sha256()
            for file in _yaml_files(self.path):
                digest.update(file.name.encode() + b"\0" + _file_digest(file).encode() + b"\0")
            return digest.hexdigest()
        except OSError:
            return None

    def poll(self, *, force: bool = False) -> bool:
        """True when the content differs from what was last seen. `force` (SIGHUP) skips the
        stat shortcut but still ignores identical content. A missing file is no change: the
        running config stays until a file is back."""
        current = _stat(self.path)
        if current is None:
            return False
        if not force and current == self._stat and time.time_ns() - current[0] > RACY_WINDOW_NS:
            return False
        self._stat = current
        digest = self._read_hash()
        if digest is None or digest == self._hash:
            return False
        self._hash = digest
        return True
