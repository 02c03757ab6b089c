"""DuckDB views over a capture folder's sealed Parquet (nothing is copied; no .duckdb file is written).

Views (created when their data exists):

* ``exchanges`` — every row of ``CAPTURE/exchanges/**/*.parquet`` read with
  ``hive_partitioning=true, union_by_name=true`` (so segments written before a column was added
  stay readable; a column of the EXCHANGES schema that no file has yet reads as NULL). Adds the
  partition columns ``dt`` (DATE) and ``hour`` (INTEGER).
* ``pairs`` — each primary joined (inner) to its candidate and left-joined to its secondary on
  ``request_id``: shared columns from the primary (request_id, endpoint, method, path, query, url,
  mode, client_key, ts, router, req_headers, req_body) and, for each role prefix ``p_``/``c_``/``s_``,
  exchange_id, service, status, latency_ms, body_hash, body_size, resp_body, resp_headers,
  resp_content_type, error, truncated, trace_id, span_id.
* ``diffs``, ``spans``, ``diffs_summary``, ... — one view per other subfolder of CAPTURE holding
  Parquet (its name, when it is a plain lower-case identifier), read the same way.
* ``capture_stats`` — the writers' counters from ``CAPTURE/_stats/*.json``, one row per writer.

Only *sealed* data is visible: rows a running gateway holds in its journal (``_journal/*.arrows``)
appear at its next seal (segment_rows / segment_seconds, or at close).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from shadow.capture.schema import EXCHANGES, sql_type
from shadow.errors import CaptureError

__all__ = ["PAIR_ROLE_COLUMNS", "PAIR_SHARED_COLUMNS", "Store", "open_store", "pairs_sql", "sealed_parquet",
           "table_folders"]

PAIR_SHARED_COLUMNS = ("request_id", "endpoint", "method", "path", "query", "url", "mode", "client_key", "ts",
                       "router", "req_headers", "req_body")
PAIR_ROLE_COLUMNS = ("exchange_id", "service", "status", "latency_ms", "body_hash", "body_size", "resp_body",
                     "resp_headers", "resp_content_type", "error", "truncated", "trace_id", "span_id",
                     "recorded")
log = logging.getLogger("shadow.capture.store")

_RESERVED = frozenset({"exchanges", "pairs", "capture_stats"})
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


def table_folders(root: Path) -> list[str]:
    """Sibling tables of `exchanges` (diffs, spans, diffs_summary, ...): subfolders holding sealed Parquet."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and _IDENTIFIER.match(p.name) and p.name not in _RESERVED and _has_parquet(p))


def sealed_parquet(folder: Path) -> Iterator[Path]:
    """Sealed Parquet files, lazily (DuckDB's glob matches hidden names too; the writer never leaves one)."""
    if not folder.is_dir():
        return
    for p in folder.rglob("*.parquet"):
        if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts):
            yield p


def _has_parquet(folder: Path) -> bool:
    return next(sealed_parquet(folder), None) is not None


def _sql_str(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class Store:
    """A DuckDB connection with the capture's views. `sql()` returns a lazy relation."""

    con: duckdb.DuckDBPyConnection
    root: Path
    views: list[str] = field(default_factory=list)

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        return self.con.sql(query)

    def tables(self) -> list[str]:
        return sorted(self.views)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parquet_source(folder: Path) -> str:
    # Partition columns typed explicitly (hour=07 would otherwise read as VARCHAR '07'), but only those
    # the folder has: DuckDB rejects a hive_types key that is not a partition.
    first = next(sealed_parquet(folder), None)
    parts = first.relative_to(folder).parts[:-1] if first is not None else ()
    keys = {part.split("=", 1)[0] for part in parts if "=" in part}
    types = {k: v for k, v in (("dt", "DATE"), ("hour", "INTEGER")) if k in keys}
    hive_types = (", hive_types={" + ", ".join(f"'{k}': {v}" for k, v in types.items()) + "}") if types else ""
    return (f"read_parquet({_sql_str(folder / '**' / '*.parquet')}, hive_partitioning=true{hive_types}, "
            "union_by_name=true)")


def _create_view(con: duckdb.DuckDBPyConnection, name: str, select: str, root: Path, *,
                 check: bool = True) -> None:
    try:
        con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {select}')
        if check:
            # Reads every file's footer now, so an unreadable file is reported here, naming it.
            con.execute(f'SELECT count(*) FROM "{name}"').fetchall()
    except duckdb.Error as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"{root}: cannot read the {name} data: {first_line}") from None


def pairs_sql() -> str:
    """The `pairs` view's query over an `exchanges` view (plain SQL: DuckDB and Spark SQL alike)."""
    shared = ", ".join(f"p.{c}" for c in PAIR_SHARED_COLUMNS)
    roles = ", ".join(f"{alias}.{c} AS {alias}_{c}" for alias in ("p", "c", "s") for c in PAIR_ROLE_COLUMNS)
    return (
        f"SELECT {shared}, {roles} "
        "FROM exchanges p "
        "JOIN exchanges c ON c.request_id = p.request_id AND c.role = 'candidate' "
        "LEFT JOIN exchanges s ON s.request_id = p.request_id AND s.role = 'secondary' "
        "WHERE p.role = 'primary'"
    )


def open_store(capture_dir: str | Path, *, threads: int | None = None) -> Store:
    """Open DuckDB views over a capture folder. Raises CaptureError (one line, naming the path) if the
    folder is missing, is not a capture, holds no sealed Parquet yet, or holds an unreadable file."""
    root = Path(capture_dir)
    if not root.exists():
        raise CaptureError(f"{root}: capture folder not found")
    if not root.is_dir():
        raise CaptureError(f"{root}: not a folder (a capture is a folder with an exchanges/ subfolder)")
    exchanges_dir = root / "exchanges"
    if not exchanges_dir.is_dir():
        raise CaptureError(f"{root}: not a capture folder (no exchanges/ subfolder)")
    if not _has_parquet(exchanges_dir):
        raise CaptureError(f"{exchanges_dir}: no sealed Parquet yet (empty capture, or the gateway has not "
                           "sealed a segment: rows appear at each seal and at shutdown)")
    con = duckdb.connect(":memory:")
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        views: list[str] = []
        source = _parquet_source(exchanges_dir)
        try:
            present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        except duckdb.Error as e:
            first_line = str(e).strip().splitlines()[0]
            raise CaptureError(f"{exchanges_dir}: cannot read the exchanges data: {first_line}") from None
        missing = [f for f in EXCHANGES if f.name not in present]
        fill = "".join(f", CAST(NULL AS {sql_type(f.type, "duckdb")}) AS {f.name}" for f in missing)
        _create_view(con, "exchanges", f"SELECT *{fill} FROM {source}", root)
        views.append("exchanges")
        _create_view(con, "pairs", pairs_sql(), root, check=False)  # a join: too costly to run here
        views.append("pairs")
        for name in table_folders(root):
            _create_view(con, name, f"SELECT * FROM {_parquet_source(root / name)}", root)
            views.append(name)
        stats_dir = root / "_stats"
        if stats_dir.is_dir() and any(p for p in stats_dir.glob("*.json") if not p.name.startswith(".")):
            try:
                _create_view(con, "capture_stats",
                             f"SELECT * FROM read_json_auto({_sql_str(stats_dir / '*.json')}, union_by_name=true)",
                             root)
                views.append("capture_stats")
            except CaptureError as e:  # counters are auxiliary: the captured data stays usable
                log.warning("%s; the capture_stats view is left out", e)
    except BaseException:
        con.close()
        raise
    return Store(con=con, root=root, views=views)
