"""shadow.capture.atomic.replace_text: all of the new content or none of it, and no temporary file left."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import pytest

from shadow.capture.atomic import replace_text


def test_the_new_content_replaces_the_old(tmp_path: Path) -> None:
    target = tmp_path / "gateway.yaml"
    target.write_text("old\n")
    replace_text(target, lambda out: out.write("new\n"))
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gateway.yaml"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old\n")

    def half_then_fail(out: TextIO) -> None:
        out.write("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        replace_text(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
