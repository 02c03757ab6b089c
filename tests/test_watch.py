"""shadow.gateway.watch: config file change detection for hot reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
