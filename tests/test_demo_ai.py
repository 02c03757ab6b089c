"""`shadow demo --ai`: the model switch judged end to end, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import shadow_cli


def test_demo_ai_judges_the_switch_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = shadow_cli("demo", "--ai", "--requests", "60", "--out", str(out), timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "sent 60 chat calls" in run.stdout and "verdict: FAIL" in run.stdout
    assert "FAIL              model:chat → cand-turbo json_invalid_rate" in run.stdout
    assert "cand-mini" in run.stdout and "FAIL              model:chat → cand-mini" not in run.stdout
    report = (out / "report" / "ai-verdict.md").read_text()
    assert "## Answer pairs: primary vs cand-mini" in report and "the primary asked again" in report
    verdict = json.loads((out / "report" / "ai-verdict.json").read_text())
    assert verdict["overall"] == "FAIL" and verdict["exit_code"] == 1
    gate = shadow_cli("gate", str(out / "capture"), "--ai", "--policy", str(out / "gateway.yaml"), timeout=120)
    assert gate.returncode in (1, 3)  # the default min_samples (50): the same capture, judged in CI
