"""shadow.watch: config file change detection for hot reload."""

from __future__ import annotations

import os
from pathlib import Path

from shadow.watch import ConfigFileWatcher


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


def test_same_size_same_mtime_change_found_by_force(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("a: 1\n")
    w = ConfigFileWatcher(cfg)
    w.prime()
    st = cfg.stat()
    cfg.write_text("a: 2\n")  # same size; pin the old mtime: only a forced poll (SIGHUP) sees it
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not w.poll()
    assert w.poll(force=True)


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
