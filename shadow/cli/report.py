"""`shadow report CAPTURE [-o DIR] [--policy FILE]`: report.html, summary.md and verdict.json.

Prints the three paths and the verdict. Exit status is 0 whenever the report was written (the
verdict is for `shadow gate`); 2 for a usage error or an empty or malformed capture.
"""

from __future__ import annotations

from pathlib import Path

import click

from shadow.cli.capture_location import CAPTURE_LOCATION


@click.command("report")
@click.argument("capture", type=CAPTURE_LOCATION)
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path, dir_okay=True, file_okay=False),
              help="Folder for report.html, summary.md, verdict.json (default: CAPTURE/report).")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Analysis policy YAML (margins, alpha, rules); defaults apply without it.")
@click.option("--learn-endpoints", is_flag=True,
              help="Re-template paths learned from the capture (/users/alice, /users/bob → /users/{name}) "
                   "instead of the endpoint the gateway captured.")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb", show_default=True,
              help="Read the samples on DuckDB or on Apache Spark (the `spark` extra; docs/scale-out.md).")
@click.option("--spark-master", default=None, metavar="URL",
              help="With --engine spark: local[N] (default local[2]), spark://…, yarn, or sc://… (Spark Connect).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
def report(capture: Path, out_dir: Path | None, policy_file: Path | None, learn_endpoints: bool, engine: str,
           spark_master: str | None, progress: bool | None) -> None:
    """Analyse CAPTURE and write an HTML report, a Markdown summary and verdict.json."""
    from analyzers.pipeline import analyze, learn_templater, load_inputs
    from analyzers.report import overall_name, write_report
    from shadow.errors import ShadowError

    policy, rules = load_inputs(policy_file)
    templater = learn_templater(capture) if learn_endpoints else None
    result = analyze(capture, policy, rules=rules, progress=progress, templater=templater, engine=engine,
                     spark_master=spark_master)
    target = out_dir if out_dir is not None else capture / "report"
    try:
        files = write_report(result, target, progress=progress)
    except OSError as exc:
        raise ShadowError(f"{target}: cannot write the report: {exc.strerror}") from None
    click.echo(f"report:  {files.html}")
    click.echo(f"summary: {files.markdown}")
    click.echo(f"json:    {files.json}")
    score = float(getattr(result.verdict, "score", 0.0))
    click.echo(f"verdict: {overall_name(result.verdict)} (score {score:.1f})")


def demo_report(capture: Path, out_dir: Path, *, progress: bool | None = None) -> int:
    """The demo's last step: analyse its capture with the default policy, write the report and print
    the verdict and where to read it. Returns the gate's exit code (the demo itself still exits 0:
    its seeded candidate is meant to fail)."""
    from analyzers.pipeline import analyze, load_inputs
    from analyzers.report import overall_name, write_report
    from shadow.cli.gate import exit_code_for

    click.echo("\nanalysing the capture: diffs, statistics, verdict…")
    policy, rules = load_inputs(None)
    result = analyze(capture, policy, rules=rules, progress=progress)
    files = write_report(result, out_dir, progress=progress)
    overall = overall_name(result.verdict)
    click.echo(f"verdict: {overall} (score {float(result.verdict.score):.1f}): {result.verdict.reason}")
    click.echo(f"report:  {files.html}")
    click.echo(f"summary: {files.markdown}  (verdict.json beside it)")
    return exit_code_for(overall)
