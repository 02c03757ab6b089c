"""`shadow gate CAPTURE`: the cutover verdict as an exit code, for CI.

Exit 0 PASS, 1 FAIL, 3 INCONCLUSIVE (also: exchanges but nothing to compare, with the reason), 2 usage
error (bad arguments, unreadable policy, empty or malformed capture). One line per guardrail that is not PASS says what and why; `--junit FILE`
writes a JUnit XML report (one testcase per endpoint × metric) that CI systems display natively.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import click

from shadow.cli.capture_location import CAPTURE_LOCATION

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3


def exit_code_for(overall: str) -> int:
    return {"PASS": EXIT_PASS, "FAIL": EXIT_FAIL}.get(overall.upper(), EXIT_INCONCLUSIVE)


def guardrail_line(result: Any) -> str:
    from analyzers.report import class_name, label

    name = label(result.endpoint, getattr(result, "candidate", None))
    return f"{class_name(result.cls):<17} {name} {result.metric}: {result.reason}"


def _plain(value: Any) -> str:
    """A number as a person writes it (no numpy repr): 4 significant digits; "—" for none."""
    if value is None:
        return "—"
    number = float(value)
    return f"{int(number):,}" if number.is_integer() and abs(number) < 1e15 else f"{number:.4g}"


def inconclusive_junit(reason: str, *, suite_name: str = "shadow gate") -> bytes:
    """JUnit XML for a capture that could not be judged: one skipped testcase saying why."""
    root = ET.Element("testsuites", name=suite_name, tests="1", failures="0", errors="0", skipped="1")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests="1", failures="0", errors="0", skipped="1")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="verdict", value="INCONCLUSIVE")
    case = ET.SubElement(suite, "testcase", classname="capture", name="verdict")
    ET.SubElement(case, "skipped", message=f"INCONCLUSIVE: {reason}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(junit_file: Path, document: bytes) -> None:
    try:
        junit_file.parent.mkdir(parents=True, exist_ok=True)
        junit_file.write_bytes(document)
    except OSError as exc:
        from shadow.errors import ShadowError

        raise ShadowError(f"{junit_file}: cannot write JUnit report: {exc.strerror}") from None


def junit_xml(verdict: Any, *, suite_name: str = "shadow gate") -> bytes:
    """JUnit XML: one testcase per endpoint × metric; FAIL is a <failure>, INCONCLUSIVE and
    INSUFFICIENT_DATA are <skipped> (not proven either way), PASS is a plain testcase."""
    from analyzers.report import class_name, format_interval, format_value, label, verdict_results

    results = sorted(verdict_results(verdict), key=lambda r: (r.endpoint, r.metric))
    failures = sum(class_name(r.cls) == "FAIL" for r in results)
    skipped = sum(class_name(r.cls) not in ("PASS", "FAIL") for r in results)
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(results)), failures=str(failures),
                       errors="0", skipped=str(skipped))
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="verdict", value=class_name(verdict.overall))
    ET.SubElement(props, "property", name="score", value=str(getattr(verdict, "score", "")))
    for r in results:
        name = label(r.endpoint, getattr(r, "candidate", None))
        case = ET.SubElement(suite, "testcase", classname=name, name=str(r.metric))
        cls = class_name(r.cls)
        detail = (f"estimate={format_value(r.estimate, r.unit)} interval={format_interval(r.interval, r.unit)} "
                  f"margin={format_value(r.margin, r.unit)} n_primary={r.n_primary} n_candidate={r.n_candidate} "
                  f"test={r.test} paired={r.paired} p={_plain(r.p_value)} needed_n={_plain(r.needed_n)}")
        if cls == "FAIL":
            failure = ET.SubElement(case, "failure", message=str(r.reason), type="FAIL")
            failure.text = detail
        elif cls != "PASS":
            ET.SubElement(case, "skipped", message=f"{cls}: {r.reason}")
        out = ET.SubElement(case, "system-out")
        out.text = f"{cls}: {r.reason}\n{detail}"
    root = ET.Element("testsuites", name=suite_name, tests=str(len(results)), failures=str(failures),
                      errors="0", skipped=str(skipped))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


@click.command("gate")
@click.argument("capture", type=CAPTURE_LOCATION)
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Analysis policy YAML (margins, alpha, rules); defaults apply without it.")
@click.option("--junit", "junit_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write a JUnit XML report here (a testcase per endpoint × metric).")
@click.option("--learn-endpoints", is_flag=True,
              help="Re-template paths learned from the capture (/users/alice, /users/bob → /users/{name}) "
                   "instead of the endpoint the gateway captured.")
@click.option("--compare-recorded-latency", is_flag=True,
              help="Judge latency on replays against recorded answers (--primary recorded) too: recorded "
                   "latencies were measured elsewhere, so by default they are not compared with live ones.")
@click.option("--ai", "ai_switch", is_flag=True,
              help="Judge a model switch: the mirrored model calls (semantic distance against the primary "
                   "model's own noise, JSON validity, tool calls, refusals, errors, latency, cost); the policy "
                   "file's ai: section holds its margins (docs/ai-gateway.md).")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb", show_default=True,
              help="Read the samples on DuckDB or on Apache Spark (the `spark` extra; docs/scale-out.md).")
@click.option("--spark-master", default=None, metavar="URL",
              help="With --engine spark: local[N] (default local[2]), spark://…, yarn, or sc://… (Spark Connect).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
def gate(capture: Path, policy_file: Path | None, junit_file: Path | None, learn_endpoints: bool,
         compare_recorded_latency: bool, ai_switch: bool, engine: str, spark_master: str | None,
         progress: bool | None) -> None:
    """Judge CAPTURE and exit 0 PASS, 1 FAIL, 3 INCONCLUSIVE (2: usage error)."""
    import dataclasses

    from analyzers.pipeline import NothingToJudge, analyze, learn_templater, load_inputs
    from analyzers.report import class_name, overall_name, verdict_results

    policy, rules = load_inputs(policy_file)
    if compare_recorded_latency:
        policy = dataclasses.replace(policy, compare_recorded_latency=True)
    if ai_switch:
        from analyzers.ai_verdict import judge_model_switch, load_ai_policy

        verdict = judge_model_switch(capture, policy, load_ai_policy(policy_file))
    else:
        templater = learn_templater(capture) if learn_endpoints else None
        try:
            verdict = analyze(capture, policy, rules=rules, progress=progress, templater=templater, engine=engine,
                              spark_master=spark_master).verdict
        except NothingToJudge as exc:  # exchanges, but nothing to compare: no evidence, not a usage error
            reason = exc.format_message()
            if junit_file is not None:
                write_junit(junit_file, inconclusive_junit(reason))
            click.echo(f"INCONCLUSIVE      {reason}")
            click.echo("verdict: INCONCLUSIVE (score 0.0)")
            sys.exit(EXIT_INCONCLUSIVE)
    for r in sorted(verdict_results(verdict), key=lambda r: (r.endpoint, r.metric)):
        if class_name(r.cls) != "PASS":
            click.echo(guardrail_line(r))
    if junit_file is not None:
        write_junit(junit_file, junit_xml(verdict))
    for warning in getattr(verdict, "warnings", []):
        click.echo(f"warning: {warning}")
    overall = overall_name(verdict)
    click.echo(f"verdict: {overall} (score {float(getattr(verdict, 'score', 0.0)):.1f})")
    sys.exit(exit_code_for(overall))
