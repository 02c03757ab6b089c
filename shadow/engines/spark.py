"""The capture's views on Apache Spark, for captures beyond one machine.

`open_spark_store(CAPTURE)` gives what `shadow.capture.store.open_store` gives on DuckDB — the
views `exchanges`, `pairs`, one per other table folder (diffs, diffs_summary, spans, ...) and
`capture_stats` — on a Spark session: a `local[N]` one by default, or any master
(`spark://…`, `yarn`, `sc://…` for Spark Connect). The store's `sql(query)` returns a relation
with `to_arrow_table()` and `fetchall()`, the two calls the analyzers' data access makes, so the
sample and aggregation queries of analyzers/pipeline.py run unchanged on either engine (written
in DuckDB's dialect, transpiled to Spark SQL by sqlglot); the statistics then run on the
per-endpoint arrays, as with DuckDB.

Reading the same files differently than DuckDB, on purpose:
- Parquet with `mergeSchema` (DuckDB's `union_by_name`), Hive partitions `dt` (date) and `hour`
  (int); a column of the EXCHANGES schema that no file has yet reads as NULL;
- Spark has no nanosecond timestamps: `ts` is read as its nanoseconds
  (`spark.sql.legacy.parquet.nanosAsLong`) and exposed as a microsecond TIMESTAMP; the
  nanoseconds stay available as `ts_ns`, and ordering by `ts, request_id` matches DuckDB's
  unless two rows share a microsecond.
- Files named with a leading `.` or `_` (a writer's temporaries, `_journal/`) are never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from shadow.capture.schema import EXCHANGES, sql_type
from shadow.capture.store import pairs_sql, table_folders
from shadow.errors import CaptureError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["DEFAULT_MASTER", "SparkRelation", "SparkStore", "open_spark_store", "spark_session", "to_spark_sql"]

DEFAULT_MASTER = "local[2]"
SQL_SETTINGS = {
    "spark.sql.legacy.parquet.nanosAsLong": "true",  # the capture's ns timestamps (see the module doc)
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "2",  # small captures: Spark's default 200 tasks per shuffle cost seconds
}


def spark_session(master: str | None = None) -> SparkSession:
    """A Spark session for the capture views (getOrCreate: one per process). Raises CaptureError
    (one line) when pyspark is not installed (`pip install -e '.[spark]'`)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise CaptureError("the spark engine needs pyspark: pip install -e '.[spark]' (Java 17+ too)") from None
    master = master or DEFAULT_MASTER
    builder = SparkSession.builder.appName("shadow")
    if master.startswith("sc://"):
        session = builder.remote(master).getOrCreate()  # Spark Connect
    else:
        builder = builder.master(master).config("spark.ui.enabled", "false")
        if master.startswith("local"):
            builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        session = builder.getOrCreate()
    for key, value in SQL_SETTINGS.items():
        session.conf.set(key, value)
    return session


def to_spark_sql(query: str) -> str:
    """A DuckDB query as Spark SQL, by sqlglot: casts (`VARCHAR`, `x::T`), `IS NOT TRUE`, and NULLs
    ordered last as DuckDB does (Spark orders them first), so results come in the same order."""
    import sqlglot

    return str(sqlglot.transpile(query, read="duckdb", write="spark")[0])


class SparkRelation:
    """A Spark DataFrame with the DuckDB relation calls the analyzers use."""

    def __init__(self, df: DataFrame) -> None:
        self.df = df

    def to_arrow_table(self) -> pa.Table:
        table: pa.Table = self.df.toArrow()
        return table

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.df.collect()]


class _Registrar:
    """`store.con.register(name, arrow_table)` / `store.con.execute(sql)` as on DuckDB."""

    def __init__(self, session: SparkSession) -> None:
        self.session = session

    def register(self, name: str, table: pa.Table) -> None:
        self.session.createDataFrame(table.to_pandas()).createOrReplaceTempView(name)

    def execute(self, query: str) -> SparkRelation:
        return SparkRelation(self.session.sql(to_spark_sql(query)))


class SparkStore:
    """The capture's views on a Spark session; `sql()` returns a SparkRelation."""

    def __init__(self, session: SparkSession, root: Path, views: list[str]) -> None:
        self.session = session
        self.root = root
        self.views = views
        self.con = _Registrar(session)

    def sql(self, query: str) -> SparkRelation:
        """`query` in DuckDB's dialect (the analyzers' queries), run as Spark SQL."""
        return SparkRelation(self.session.sql(to_spark_sql(query)))

    def tables(self) -> list[str]:
        return sorted(self.views)

    def close(self) -> None:
        """The session stays (getOrCreate shares it); the views are dropped."""
        for name in self.views:
            self.session.catalog.dropTempView(name)

    def __enter__(self) -> SparkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_parquet(session: SparkSession, folder: Path) -> DataFrame:
    from pyspark.sql import functions as F

    df = session.read.option("mergeSchema", "true").parquet(str(folder))
    for name in ("ts", "start_ts", "end_ts", "received_ts"):
        if name in df.columns and dict(df.dtypes)[name] == "bigint":  # nanoseconds (nanosAsLong)
            df = (df.withColumn(f"{name}_ns", F.col(name))
                  .withColumn(name, F.timestamp_micros(F.floor(F.col(name) / 1000).cast("bigint"))))
    return df


def open_spark_store(capture_dir: str | Path, *, session: SparkSession | None = None,
                     master: str | None = None) -> SparkStore:
    """Spark views over a capture folder (the same checks and one-line errors as open_store)."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    root = Path(capture_dir)
    exchanges_dir = root / "exchanges"
    if not exchanges_dir.is_dir():
        raise CaptureError(f"{root}: not a capture folder (no exchanges/ subfolder)")
    session = session or spark_session(master)
    views: list[str] = []
    try:
        df = _read_parquet(session, exchanges_dir)
        for f in EXCHANGES:
            if f.name not in df.columns:
                df = df.withColumn(f.name, F.lit(None).cast(sql_type(f.type, "spark")))
        df.createOrReplaceTempView("exchanges")
        views.append("exchanges")
        session.sql(pairs_sql()).createOrReplaceTempView("pairs")
        views.append("pairs")
        for name in table_folders(root):
            _read_parquet(session, root / name).createOrReplaceTempView(name)
            views.append(name)
        stats = sorted(p for p in (root / "_stats").glob("*.json") if not p.name.startswith("."))
        if stats:
            session.read.option("multiLine", "true").json([str(p) for p in stats]).createOrReplaceTempView(
                "capture_stats")
            views.append("capture_stats")
    except PySparkException as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaptureError(f"{root}: cannot read the capture on Spark: {first_line}") from None
    return SparkStore(session, root, views)
