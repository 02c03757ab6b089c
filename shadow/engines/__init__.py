"""Query engines over a capture: the embedded DuckDB (shadow.capture.store) or Spark (shadow.engines.spark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ENGINES = ("duckdb", "spark")


def open_engine_store(capture_dir: str | Path, engine: str = "duckdb", *, spark_master: str | None = None) -> Any:
    """The capture's views on `engine`: a `shadow.capture.store.Store` (DuckDB) or a
    `shadow.engines.spark.SparkStore`; both answer `sql(query).to_arrow_table()` / `.fetchall()`."""
    if engine == "spark":
        from shadow.engines.spark import open_spark_store

        return open_spark_store(capture_dir, master=spark_master)
    if engine != "duckdb":
        raise ValueError(f"unknown engine {engine!r}: one of {', '.join(ENGINES)}")
    from shadow.capture.store import open_store

    return open_store(capture_dir)
