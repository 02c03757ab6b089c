"""Config bombs (issue #17 item 3): each hostile config through `shadow config check` in a child
process capped at 2 GB and 60 s, with its wall time and peak RSS, beside a real config's.

    .venv/bin/python bench/config_bombs.py                  # this checkout
    .venv/bin/python bench/config_bombs.py --repo ../other  # another checkout (its .venv), e.g. before

Figures: docs/benchmarks.md, "Config bombs".
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_yamlconfig import VALID_HTTP, alias_bomb, deep_rule  # noqa: E402

CAP_BYTES = 2 * 1024**3
TIMEOUT_S = 60.0


def cases() -> dict[str, str]:
    dense = "".join(f"    r{i}: {{rule: \"PathPrefix(`/api/{i}`)\", service: mono}}\n" for i in range(4000))
    return {
        "real config (docs/examples/gateway.yaml)": (REPO / "docs/examples/gateway.yaml").read_text(),
        "4,000 one-line routers (~250 KB)": VALID_HTTP.replace("  services:\n", dense + "  services:\n"),
        "anchors bomb (9 levels x 9 aliases)": VALID_HTTP + alias_bomb(),
        "3,000-deep rule": deep_rule(3000),
        "3,000-deep YAML lists": VALID_HTTP + "shadow:\n  analysis: " + "[" * 3000 + "]" * 3000 + "\n",
        "50 MB file": VALID_HTTP + "# padding\n" * 5_000_000,
    }


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))


def run(repo: Path, path: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in MB, last stderr line) of one `shadow config check` of `repo`."""
    started = time.monotonic()
    proc = subprocess.Popen([str(repo / ".venv/bin/python"), "-m", "shadow.cli", "config", "check", str(path)],
                            cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_cap)
    deadline = started + TIMEOUT_S
    while True:
        pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, _status, usage = os.wait4(proc.pid, 0)
            return time.monotonic() - started, usage.ru_maxrss // 1024, f"killed after {TIMEOUT_S:.0f} s"
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    err = proc.stderr.read() if proc.stderr else ""
    out = proc.stdout.read() if proc.stdout else ""
    last = (err.strip() or out.strip()).splitlines()[-1] if (err.strip() or out.strip()) else ""
    return elapsed, usage.ru_maxrss // 1024, last.replace(str(path), "FILE")[:110]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose shadow to run (its .venv)")
    repo = parser.parse_args().repo.resolve()
    print(f"shadow config check of {repo}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'case':42} {'seconds':>8} {'peak MB':>8}  outcome")
        for name, text in cases().items():
            path = Path(tmp) / "config.yaml"
            path.write_text(text)
            seconds, peak_mb, outcome = run(repo, path)
            print(f"{name:42} {seconds:8.2f} {peak_mb:8d}  {outcome}")


if __name__ == "__main__":
    main()
