"""`shadow demo --mcp`: an MCP server shadow-tested and judged end to end, as a user runs it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import capture_rows, shadow_cli


def test_demo_mcp_fails_the_changed_tool_schema_and_not_the_equivalent_server(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = shadow_cli("demo", "--mcp", "--out", str(out), timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ran 6 agent sessions" in run.stdout and "verdict: FAIL" in run.stdout
    assert "FAIL              /mcp tools/list → tools-v2-changed mismatch_rate" in run.stdout
    # The equivalent server is not failed, though the gateway's policy hid a tool from the agents:
    # the candidate's tool list is filtered by the same policy before it is compared.
    assert "→ tools-v2 " in run.stdout and "FAIL              /mcp tools/list → tools-v2 " not in run.stdout
    copies = capture_rows(out / "capture", "role = 'candidate'")
    assert {r["endpoint"] for r in copies} == {"/mcp tools/list", "/mcp tools/call add"}  # echo: not safe to repeat
    gate = shadow_cli("gate", str(out / "capture"), "--policy", str(out / "policy.yaml"), "--no-progress",
                      timeout=120)
    assert gate.returncode == 1, gate.stdout[-2000:]
