"""Regenerate data/demo-capture/: a small capture of the demo for notebooks and tests.

    .venv/bin/python data/regenerate.py [--requests 2000]

Runs `shadow demo` (real services, real gateway) into a temporary folder and copies the sealed
capture here. The traffic plan and the data are seeded, so the rows, ids and bodies come out the
same every time; timestamps, latencies, the volatile fields and which list calls got a 500 differ
from run to run. The redaction key is fixed (below) so redacted values are stable across
regenerations; the per-folder key file and the journal are not copied.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "demo-capture"
# Not a secret: it only makes redacted sample values reproducible. Real captures get their own key.
SAMPLE_REDACTION_KEY = "shadow-demo-sample-data"
MAX_SAMPLE_BYTES = 5_000_000


def copy_sealed(capture: Path, target: Path) -> int:
    """Copy sealed Parquet segments and stats (nothing hidden, no journal, no key); return bytes copied."""
    copied = 0
    for src in sorted(capture.rglob("*")):
        rel = src.relative_to(capture)
        if not src.is_file() or any(part.startswith(".") or part == "_journal" for part in rel.parts):
            continue
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied += dst.stat().st_size
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE.parent))
    from shadow.demo.run import CONFIG_NAME, run_demo, summarize_capture

    os.environ["SHADOW_REDACTION_KEY"] = SAMPLE_REDACTION_KEY  # inherited by the gateway
    with tempfile.TemporaryDirectory(prefix="shadow-sample-") as tmp:
        out = Path(tmp) / "demo"
        capture, interrupted = run_demo(out, requests=args.requests, concurrency=2, max_seconds=120,
                                        keep_running=False, seed=args.seed, progress=True)
        if interrupted:
            print("interrupted: data/demo-capture left as it was", file=sys.stderr)
            return 130
        staged = Path(tmp) / "staged"
        size = copy_sealed(capture, staged)
        if size > MAX_SAMPLE_BYTES:
            print(f"error: the sample is {size / 1e6:.1f} MB, over {MAX_SAMPLE_BYTES / 1e6:.0f} MB; "
                  "use fewer --requests", file=sys.stderr)
            return 1
        shutil.copyfile(out / CONFIG_NAME, staged / "gateway.yaml")
        if TARGET.exists():
            shutil.rmtree(TARGET)
        shutil.copytree(staged, TARGET)
    print(f"\nwrote {TARGET} ({size / 1e6:.1f} MB)\n")
    print(summarize_capture(TARGET))
    return 0


if __name__ == "__main__":
    sys.exit(main())
