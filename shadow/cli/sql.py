"""`shadow sql CAPTURE "SELECT …"`: run SQL over a capture's DuckDB views (see shadow.capture.store)."""

from __future__ import annotations

import base64
import csv
import re
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from shadow.cli.capture_location import CAPTURE_LOCATION
from shadow.errors import ShadowError

_CELL_WIDTH = 60
# Tables the analysis writes into the capture (analyzers/diffs_table.py), absent until it has run.
DERIVED_TABLES = frozenset({"diffs", "diffs_summary", "diffs_fields"})


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode()
    return str(value)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _json_default(value)
    if isinstance(value, (list, dict)):
        return orjson.dumps(value, default=_json_default).decode()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"  # for reading; --format json / csv keep every digit
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = str(value)
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 1] + "…"


def _print_table(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _run_on_duckdb(capture: Path, query: str, max_rows: int, threads: int | None) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    from shadow.capture.store import open_store

    store = open_store(capture, threads=threads)
    try:
        rel = store.sql(query)
        if rel is None:  # a statement without a result (SET, CREATE VIEW ...)
            return [], []
        # Through Arrow: DuckDB's own fetchall() needs pytz for TIMESTAMPTZ columns such as `ts`.
        result = (rel.limit(max_rows + 1) if max_rows else rel).to_arrow_table()
        return list(result.column_names), [tuple(r.values()) for r in result.to_pylist()]
    except duckdb.Error as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        missing = DERIVED_TABLES.intersection(re.findall(r"Table with name (\w+) does not exist", message))
        if missing:
            message = (f"{capture}: no {', '.join(sorted(missing))} table yet: the analysis writes it; run "
                       f"`shadow report {capture}` (or `shadow gate {capture}`) first")
        raise ShadowError(message) from None
    finally:
        store.close()


def _run_on_spark(capture: Path, query: str, max_rows: int, master: str | None) -> tuple[list[str], list[tuple[Any, ...]]]:
    from pyspark.errors import PySparkException

    from shadow.engines.spark import open_spark_store

    store = open_spark_store(capture, master=master)
    try:
        df = store.session.sql(query)
        result = (df.limit(max_rows + 1) if max_rows else df).toArrow()
        return list(result.column_names), [tuple(r.values()) for r in result.to_pylist()]
    except PySparkException as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShadowError(message) from None
    finally:
        store.close()  # the session ends with the process


@click.command("sql")
@click.argument("capture", type=CAPTURE_LOCATION)
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="table: aligned text; csv: RFC 4180 with a header; json: an array of objects.")
@click.option("--max-rows", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Print at most this many rows (0: no limit); a note on stderr says when rows were cut.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="DuckDB threads (default: all cores).")
@click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb", show_default=True,
              help="spark: the same views on Apache Spark (the `spark` extra; docs/scale-out.md). "
                   "Write Spark SQL then.")
@click.option("--spark-master", default=None, metavar="URL",
              help="Spark master: local[N] (default local[2]), spark://…, yarn, or sc://… (Spark Connect).")
def sql(capture: Path, query: str, fmt: str, max_rows: int, threads: int | None, engine: str,
        spark_master: str | None) -> None:
    """Run QUERY over the capture folder CAPTURE.

    Views: exchanges, pairs (primary ⋈ candidate ⟕ secondary on request_id), capture_stats, and one
    per other subfolder holding Parquet (diffs once `shadow report` or `gate` ran, spans, ...).
    Floats print with 6 significant digits in the table; --format json/csv keep every digit. Only sealed data is visible: a running
    gateway's journal shows up at its next seal (every segment_rows / segment_seconds) and at
    shutdown.

    \b
    Example:
      shadow sql capture "SELECT endpoint, count(*) AS n FROM exchanges GROUP BY 1 ORDER BY n DESC"
    """
    if engine == "spark":
        columns, rows = _run_on_spark(capture, query, max_rows, spark_master)
    else:
        columns, rows = _run_on_duckdb(capture, query, max_rows, threads)
    if not columns:  # a statement without a result (SET, CREATE VIEW ...)
        return
    cut = bool(max_rows) and len(rows) > max_rows
    if cut:
        rows = rows[:max_rows]
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(v) for v in row])
    elif fmt == "json":
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        sys.stdout.write(orjson.dumps(records, default=_json_default,
                                      option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
    else:
        _print_table(columns, rows)
    if cut:
        click.echo(f"(showing the first {max_rows} rows; use --max-rows to see more)", err=True)
