"""Rule regexps before/after RE2, side by side in one run (python bench/goregex.py).

Before: Python's backtracking `re` (what `PathRegexp` used). After: `shadow.gateway.goregex` (RE2,
Go's semantics, as Traefik). Two patterns:

1. `^/(a+)+$` against `/aaa…ab` (n a's): `re` doubles its time per character, RE2 is linear.
   `re` is only run up to --max-re-length characters (each extra one doubles its time).
2. A typical route regexp on a typical path: the per-request price of RE2 through its binding.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadow.gateway.goregex import compile_go

EVIL = r"^/(a+)+$"
TYPICAL = r"^/api/v[0-9]+/orders/[0-9a-f-]{8,}$"
TYPICAL_PATH = "/api/v2/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6"


def seconds(fn: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-re-length", type=int, default=22)
    args = ap.parse_args()
    slow, fast = re.compile(EVIL), compile_go(EVIL)
    print(f"1. {EVIL} against '/' + 'a' * n + 'b'")
    print(f"{'n':>4} {'re (ms)':>12} {'RE2 (ms)':>12}")
    for n in (10, 14, 18, args.max_re_length, 40, 1000):
        subject = "/" + "a" * n + "b"
        after = seconds(lambda s=subject: fast.search(s), 200) * 1000
        before = f"{seconds(lambda s=subject: slow.search(s), 1) * 1000:12.3f}" if n <= args.max_re_length else f"{'(skipped)':>12}"
        print(f"{n:>4} {before} {after:12.4f}")
    slow_t, fast_t = re.compile(TYPICAL), compile_go(TYPICAL)
    assert (slow_t.search(TYPICAL_PATH) is not None) == fast_t.search(TYPICAL_PATH)
    before = seconds(lambda: slow_t.search(TYPICAL_PATH), 100_000) * 1e6
    after = seconds(lambda: fast_t.search(TYPICAL_PATH), 100_000) * 1e6
    print(f"2. {TYPICAL} on {TYPICAL_PATH}: re {before:.2f} µs, RE2 {after:.2f} µs per match")


if __name__ == "__main__":
    main()
