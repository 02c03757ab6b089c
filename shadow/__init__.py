"""shadow: route, mirror and capture live traffic; diff, compare and judge a cutover.

One folder per concern: gateway/ (config, routing, shifting, mirroring), capture/ (schema, writer,
store), telemetry/, auth/, replay/, delivery/ (canary, verdict service), demo/, cli/ (the `shadow`
command). None of them imports mitmproxy (addons/ adapts) and only cli/ imports cli/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shadow.notebook import Capture

__version__ = "0.1.0"


def open(capture_dir: str | Path, *, policy: Any = None, progress: bool = True) -> Capture:
    """Open a capture folder for exploration in a notebook (shadow/notebook.py): DuckDB relations
    and pandas frames of exchanges, pairs, diffs and spans, one pair side by side as HTML, the
    verdict as a table. Imported here lazily, so `import shadow` stays cheap (no DuckDB, no pandas)."""
    from shadow.notebook import open_capture

    return open_capture(capture_dir, policy=policy, progress=progress)
