"""shadow.gateway.watch: config file change detection for hot reload."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from shadow.gateway.watch import ConfigFileWatcher


def test_change_detected_once(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("a: 1\n")
    w = ConfigFileWatcher(cfg)
    w.prime()
    assert not w.poll()
    cfg.write_text("a: 22\n")
    assert w.poll()
    assert not w.poll()


def test_identical_content_and_touch_are_skipped(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("a: 1\n")
    w = ConfigFileWatcher(cfg)
    w.prime()
    st = cfg.stat()
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert not w.poll()
    cfg.write_text("a: 1\n")
    assert not w.poll(force=True)


def test_old_mtime_trusts_stat_unless_forced(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("a: 1\n")
    old = time.time_ns() - 60_000_000_000
    os.utime(cfg, ns=(old, old))
    w = ConfigFileWatcher(cfg)
    w.prime()
    cfg.write_text("a: 2\n")  # same size; pin the old mtime: only a forced poll (SIGHUP) sees it
    os.utime(cfg, ns=(old, old))
    assert not w.poll()
    assert w.poll(force=True)


def test_same_size_writes_in_one_mtime_tick_are_seen(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("a: 1\n")
    w = ConfigFileWatcher(cfg)
    w.prime()
    st = cfg.stat()
    cfg.write_text("a: 2\n")  # same size, and the same (coarse) mtime as the first write
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert w.poll()  # a recent mtime is never trusted: the content is hashed


def test_missing_file_is_no_change(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("a: 1\n")
    w = ConfigFileWatcher(cfg)
    w.prime()
    cfg.unlink()
    assert not w.poll()
    cfg.write_text("a: 1\n")
    assert not w.poll()  # back with the same content
    cfg.write_text("a: 3\n")
    assert w.poll()


def test_an_oversized_file_is_a_change_without_being_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # issue #17: a 50 MB config was read and hashed whole; past the config limit the stat stands in
    p = tmp_path / "gw.yaml"
    p.write_text("a: 1\n")
    w = ConfigFileWatcher(p)
    w.prime()
    monkeypatch.setattr("shadow.gateway.watch.MAX_CONFIG_BYTES", 64)
    p.write_text("# " + "x" * 100 + "\n")
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, *args, **kwargs)
        real_read = f.read
        f.read = lambda *a: reads.append(1) or real_read(*a)  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(Path, "open", counting_open)
    assert w.poll(force=True)
    assert reads == []
    assert not w.poll(force=True)  # the same oversized file again: no change


def test_a_directory_is_watched_as_its_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    watcher = ConfigFileWatcher(tmp_path)
    watcher.prime()
    assert not watcher.poll(force=True)
    (tmp_path / "notes.txt").write_text("not a manifest")
    assert not watcher.poll(force=True)
    (tmp_path / "b.yml").write_text("b: 1\n")
    assert watcher.poll(force=True)
    (tmp_path / "b.yml").rename(tmp_path / "c.yml")  # same bytes, another name: a change
    assert watcher.poll(force=True)
    (tmp_path / "a.yaml").write_text("a: 2\n")
    assert watcher.poll(force=True) and not watcher.poll(force=True)
