"""Replace a file atomically: write a temporary file beside it, fsync, rename over it. A crash
leaves the old content or the new, never half of either."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO


def replace_text(path: Path, write: Callable[[TextIO], object]) -> None:
    """Call `write` on a temporary text file in `path`'s folder, then fsync it and rename it to
    `path`. On any failure the temporary file is removed and `path` is left as it was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
