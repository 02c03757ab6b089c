"""The analyzers' data access on a real local Spark session (pyspark, `local[2]`, Java 17) gives the
same samples, counts and verdict as on DuckDB over the same capture. One session for the module."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from analyzers.diffs_table import compute_diffs
from analyzers.pipeline import field_diffs, paired_samples, pairs_per_endpoint, split_samples
from analyzers.policy import Policy
from analyzers.verdict import judge
from shadow.capture.store import open_store
from shadow.cli import cli
from shadow.errors import CaptureError
from tests.synthetic_capture import EndpointTraffic, write_capture

# Starting the JVM takes 5-10 s on an idle 2-core machine, much longer on a loaded one.
pytestmark = pytest.mark.timeout(600)

pyspark = pytest.importorskip("pyspark", reason="pyspark is the `spark` extra: make venv installs it")
if shutil.which("java") is None:
    pytest.skip("Spark needs a JDK (java on PATH)", allow_module_level=True)

from shadow.engines.spark import open_spark_store, spark_session  # noqa: E402


@pytest.fixture(scope="module")
def session() -> Iterator[Any]:
    spark = spark_session("local[2]")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_capture(tmp_path_factory.mktemp("spark") / "capture", [
        EndpointTraffic(endpoint="/api/items/{id}", n=300, latency_factor=1.5, candidate_5xx_rate=0.04,
                        changed_field_rate=0.2, candidate_transport_error_rate=0.02),
        EndpointTraffic(endpoint="/api/users/{id}", n=200, changed_field_rate=0.1, volatile_field=True),
        EndpointTraffic(endpoint="/api/cart", n=240, mode="split", candidate_service="cart-svc", clients=30),
    ], seed=11)
    compute_diffs(root, progress=False, workers=1)  # diffs, diffs_summary, diffs_fields: both engines read them
    return root


def _key(sample: Any) -> tuple[str, str]:
    return (sample.endpoint, sample.candidate or "")


def _same_array(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return bool(np.array_equal(a.astype(float), b.astype(float), equal_nan=True))
    return bool(np.array_equal(a, b))


ARRAYS = ("primary_latency_ms", "candidate_latency_ms", "primary_5xx", "candidate_5xx", "primary_transport_error",
          "candidate_transport_error", "primary_client_key", "candidate_client_key", "mismatch", "mismatch_compared")


def test_samples_counts_and_verdict_equal_duckdb(capture: Path, session: Any) -> None:
    results = {}
    for engine in ("duckdb", "spark"):
        store = open_store(capture) if engine == "duckdb" else open_spark_store(capture, session=session)
        with store:
            samples = paired_samples(store) + split_samples(store)
            totals = pairs_per_endpoint(store)
            fields = field_diffs(store, totals)
            rows = store.sql("SELECT role, count(*) FROM exchanges GROUP BY ALL ORDER BY ALL").fetchall()
        results[engine] = (samples, totals, fields, rows)
    (d_samples, d_totals, d_fields, d_rows), (s_samples, s_totals, s_fields, s_rows) = results["duckdb"], results["spark"]
    assert d_rows == s_rows and d_totals == s_totals
    assert sorted(map(_key, d_samples)) == sorted(map(_key, s_samples)) and len(d_samples) == 3
    spark_by_key = {_key(s): s for s in s_samples}
    for d in d_samples:
        s = spark_by_key[_key(d)]
        assert d.paired == s.paired and d.sticky == s.sticky
        for name in ARRAYS:
            assert _same_array(getattr(d, name), getattr(s, name)), (d.endpoint, name)
    # The diff-field table: same groups and counts (examples are a sample whose choice hashes
    # request ids with each engine's own hash function).
    strip = [(f.endpoint, f.c_service, f.kind, f.op, f.pointer_template, f.noise, f.count, f.pairs_affected,
              f.pairs_total) for f in d_fields]
    assert strip and strip == [(f.endpoint, f.c_service, f.kind, f.op, f.pointer_template, f.noise, f.count,
                                f.pairs_affected, f.pairs_total) for f in s_fields]
    d_verdict, s_verdict = judge(d_samples, Policy()), judge(s_samples, Policy())
    assert d_verdict.overall == s_verdict.overall
    assert [(r.endpoint, r.metric, r.cls, r.n_primary, r.n_candidate) for r in d_verdict.results] == \
        [(r.endpoint, r.metric, r.cls, r.n_primary, r.n_candidate) for r in s_verdict.results]
    assert d_verdict.overall != "PASS"  # the items endpoint regressed: a check that can fail


def test_sql_and_gate_commands_on_spark(capture: Path, session: Any) -> None:
    # In this process: the commands' getOrCreate finds the module's session (a second JVM would
    # double the module's time).
    runner = CliRunner()
    out = runner.invoke(cli, ["sql", str(capture), "SELECT mode, count(*) AS n FROM exchanges GROUP BY mode "
                              "ORDER BY mode", "--engine", "spark", "--format", "csv"])
    assert out.exit_code == 0, out.output
    with open_store(capture) as store:
        expected = store.sql("SELECT mode, count(*) FROM exchanges GROUP BY mode ORDER BY mode").fetchall()
    assert out.output.splitlines() == ["mode,n", *(f"{m},{n}" for m, n in expected)]
    # The whole gate: the same exit code (FAIL: the items endpoint regressed) and the same lines.
    on_duckdb = runner.invoke(cli, ["gate", str(capture), "--no-progress"])
    on_spark = runner.invoke(cli, ["gate", str(capture), "--no-progress", "--engine", "spark"])
    assert on_duckdb.exit_code == on_spark.exit_code == 1, (on_duckdb.output, on_spark.output)
    assert on_duckdb.output == on_spark.output


def test_not_a_capture_is_one_line(tmp_path: Path, session: Any) -> None:
    with pytest.raises(CaptureError, match="not a capture folder"):
        open_spark_store(tmp_path, session=session)
