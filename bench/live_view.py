"""What the live view costs on a capture: one analysis (the first, then after a new sealed segment),
an idle look (nothing sealed: one directory listing), and each page's render time.

    .venv/bin/python bench/live_view.py [CAPTURE]     # default: a copy of data/demo-capture

Prints seconds side by side; the figures go to docs/benchmarks.md ("Session 7 — live view").
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed(fn: object, *args: object) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start, out


def main() -> None:
    from starlette.testclient import TestClient

    from shadow.web.app import create_app
    from shadow.web.live import LiveAnalysis, pipeline_analyzer

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "data" / "demo-capture"
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "capture"
        shutil.copytree(source, capture, ignore=shutil.ignore_patterns("diffs*", "report", "_verdict"))
        live = LiveAnalysis(capture, pipeline_analyzer(None))
        first, snap = timed(live.refresh)
        idle, _ = timed(live.refresh)
        live.forget()  # as if a segment had been sealed
        again, snap = timed(live.refresh)
        assert snap is not None and snap.result is not None, snap
        result = snap.result
        view = result.verdict.endpoints[0]
        field = next((f for f in result.fields if f.examples), None)
        with TestClient(create_app(live, config_file=source / "gateway.yaml"
                                   if (source / "gateway.yaml").exists() else None)) as client:
            pages = {"/": {}, "/endpoint": {"e": view.endpoint, "c": view.candidate or ""},
                     "/latency.png": {"e": view.endpoint, "c": view.candidate or ""},
                     "/routers": {}}
            if field is not None:
                pages["/field"] = {"id": field.anchor}
            renders = {}
            for path, params in pages.items():
                client.get(path, params=params)  # warm (templates compiled, imports done)
                renders[path], response = timed(lambda p=path, q=params: client.get(p, params=q))
                assert response.status_code == 200, (path, response.status_code)  # type: ignore[attr-defined]
    print(f"capture: {source} ({snap.counts.exchanges:,} exchanges, {snap.counts.pairs:,} pairs)")
    print(f"analysis, first look (imports, diffs, verdict): {first:8.2f} s")
    print(f"analysis, after a new segment:                  {again:8.2f} s")
    print(f"idle look (nothing sealed since):              {idle * 1000:8.2f} ms")
    for path, seconds in renders.items():
        print(f"render {path:<14}                         {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
