"""`shadow gate` and `shadow report` as CI runs them: real subprocesses, exit codes, JUnit XML."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from shadow.cli import cli
from tests.conftest import shadow_cli
from tests.synthetic_capture import EndpointTraffic, write_capture

POLICY_YAML = """\
n_boot: 200
defaults:
  error_rate_pp: 1.0
  transport_error_pp: 1.0
  mismatch_budget: 0.02
rules:
  - ignore: "**/request_ts"
    reason: timestamp set per call
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gate")
    policy = root / "policy.yaml"
    policy.write_text(POLICY_YAML)
    (root / "empty" / "exchanges").mkdir(parents=True)
    bad = root / "bad" / "exchanges" / "dt=2026-11-26" / "hour=06"
    bad.mkdir(parents=True)
    (bad / "part-00000.parquet").write_bytes(b"PAR1 not really")
    return {
        "bad": root / "bad",
        "policy": policy,
        "pass": write_capture(root / "pass", [EndpointTraffic(n=1200, volatile_field=True)], seed=11),
        "fail": write_capture(root / "fail", [EndpointTraffic(n=500, latency_factor=1.7, candidate_5xx_rate=0.06)],
                              seed=12),
        "inconclusive": write_capture(root / "inconclusive", [EndpointTraffic(n=40)], seed=13),
        "empty": root / "empty",
        "root": root,
    }


def test_gate_pass_exits_0(setup: dict[str, Path]) -> None:
    out = shadow_cli("gate", str(setup["pass"]), "--policy", str(setup["policy"]))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("verdict: PASS")


def test_gate_fail_exits_1_with_one_line_per_failing_guardrail_and_junit(setup: dict[str, Path]) -> None:
    junit = setup["root"] / "junit" / "gate.xml"
    out = shadow_cli("gate", str(setup["fail"]), "--policy", str(setup["policy"]), "--junit", str(junit))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("verdict: FAIL")
    assert any(line.startswith("FAIL") and "/api/items/{id}" in line and "error_rate" in line for line in lines)
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests", "-1")) >= 5  # endpoint × metric
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert "error_rate" in failed and int(suite.get("failures", "0")) == len(failed)
    assert all(c.get("classname") == "/api/items/{id} → items-svc" for c in cases)


def test_junit_failure_text_has_plain_numbers(setup: dict[str, Path]) -> None:
    junit = setup["root"] / "junit" / "plain.xml"
    shadow_cli("gate", str(setup["fail"]), "--policy", str(setup["policy"]), "--junit", str(junit))
    text = junit.read_text()
    assert "np.float64" not in text and "np.int" not in text
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.text is not None
    assert re.search(r"estimate=(×\d+\.\d{3}|[+-]\d+\.\d{2} pp|\d+\.\d{2} %) ", failure.text), failure.text
    assert re.search(r" p=(—|\d[\d.e+-]*) ", failure.text), failure.text


def test_gate_without_pairs_is_inconclusive_with_the_reason(setup: dict[str, Path]) -> None:
    """Split rows whose every service answered as primary: no child was declared a candidate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    capture = write_capture(setup["root"] / "split-undeclared", [EndpointTraffic(n=60, mode="split")], seed=14)
    for segment in (capture / "exchanges").rglob("*.parquet"):
        table = pq.read_table(segment)
        table = table.set_column(table.schema.get_field_index("role"), "role", pa.array(["primary"] * table.num_rows))
        pq.write_table(table, segment)
    junit = setup["root"] / "undeclared.xml"
    out = shadow_cli("gate", str(capture), "--policy", str(setup["policy"]), "--junit", str(junit))
    assert out.returncode == 3, out.stdout + out.stderr
    assert "nothing to judge" in out.stdout and "monolith (" in out.stdout and "items-svc (" in out.stdout
    assert "shadow.split.candidates" in out.stdout and out.stderr == ""
    assert out.stdout.strip().splitlines()[-1] == "verdict: INCONCLUSIVE (score 0.0)"
    skipped = ET.parse(junit).getroot().find("testsuite/testcase/skipped")
    assert skipped is not None and "shadow.split.candidates" in skipped.get("message", "")


def test_gate_inconclusive_exits_3(setup: dict[str, Path]) -> None:
    junit = setup["root"] / "inconclusive.xml"
    out = shadow_cli("gate", str(setup["inconclusive"]), "--policy", str(setup["policy"]), "--junit", str(junit))
    assert out.returncode == 3, out.stdout + out.stderr
    assert "verdict: INCONCLUSIVE" in out.stdout
    assert any(line.startswith(("INCONCLUSIVE", "INSUFFICIENT_DATA")) for line in out.stdout.splitlines())
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("skipped", "0")) > 0


@pytest.mark.parametrize("args, message", [
    (("gate", "{root}/missing"), "capture folder not found"),
    (("gate", "{empty}"), "no sealed Parquet"),
    (("gate", "{pass}", "--policy", "{root}/nope.yaml"), "cannot read policy file"),
])
def test_usage_errors_exit_2_with_one_clear_line(setup: dict[str, Path], args: tuple[str, ...],
                                                 message: str) -> None:
    argv = [a.format(root=setup["root"], empty=setup["empty"], **{"pass": setup["pass"]}) for a in args]
    out = shadow_cli(*argv)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip() == f"error: {out.stderr.strip().removeprefix('error: ')}"
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (("gate",), "Missing argument"),
    (("gate", "{bad}"), "cannot read the exchanges data"),
    (("report", "{empty}"), "no sealed Parquet"),
    (("report", "{pass}", "--policy", "{bad_policy}"), "defaults.latency.p95"),
    (("serve-verdict", "{empty}", "--listen", "nowhere"), "expected HOST:PORT"),
])
def test_usage_errors_in_process(setup: dict[str, Path], args: tuple[str, ...], message: str) -> None:
    bad_policy = setup["root"] / "bad-policy.yaml"
    bad_policy.write_text("defaults:\n  latency:\n    p95: 0.5\n")
    argv = [a.format(root=setup["root"], empty=setup["empty"], bad=setup["bad"], bad_policy=bad_policy,
                     **{"pass": setup["pass"]}) for a in args]
    out = CliRunner().invoke(cli, argv)
    assert out.exit_code == 2, out.output
    assert message in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)


def test_report_command_writes_three_files(setup: dict[str, Path]) -> None:
    out_dir = setup["root"] / "report-out"
    out = CliRunner().invoke(cli, ["report", str(setup["fail"]), "-o", str(out_dir), "--policy",
                                   str(setup["policy"]), "--no-progress"])
    assert out.exit_code == 0, out.output
    for name in ("report.html", "summary.md", "verdict.json"):
        assert str(out_dir / name) in out.stdout
        assert (out_dir / name).stat().st_size > 0
    assert "verdict: FAIL" in out.stdout
    assert json.loads((out_dir / "verdict.json").read_text())["verdict"] == "fail"
