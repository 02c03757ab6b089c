"""A part of a capture, written as a capture of its own: the requests of a time window and/or of
some endpoints. `shadow serve-verdict`'s `?since=`, `?window=` and `?endpoint=` judge such a part
with the unchanged pipeline, so a windowed verdict is the verdict of exactly those requests.

A request is kept whole (every role's row) or not at all: it belongs to the window when its first
row (the client's request) is at or after `since`, so a mirror answered a moment later never loses
its primary at the window's edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shadow.capture.store import open_store

__all__ = ["SubsetSpec", "write_subset"]


@dataclass(frozen=True)
class SubsetSpec:
    since: datetime | None = None  # timezone-aware; None: from the beginning
    endpoint: str | None = None  # a glob over the templated endpoint (`/api/orders*`); None: every endpoint

    @property
    def empty(self) -> bool:
        return self.since is None and self.endpoint is None

    def describe(self) -> str:
        parts = []
        if self.since is not None:
            parts.append(f"since {self.since.isoformat()}")
        if self.endpoint is not None:
            parts.append(f"endpoint {self.endpoint}")
        return ", ".join(parts) or "everything"


def write_subset(capture: Path, dest: Path, spec: SubsetSpec) -> int:
    """Write the requests of `capture` that `spec` selects to `dest`/exchanges (Hive layout, like the
    gateway's); returns how many exchange rows were written (0: `dest` holds no capture)."""
    conditions: list[str] = []
    params: list[object] = []
    if spec.since is not None:
        conditions.append("request_id IN (SELECT request_id FROM exchanges GROUP BY request_id HAVING min(ts)::TIMESTAMPTZ >= ?::TIMESTAMPTZ)")
        params.append(spec.since)
    if spec.endpoint is not None:
        conditions.append("endpoint GLOB ?")
        params.append(spec.endpoint)
    where = " AND ".join(conditions) or "true"
    with open_store(capture) as store:
        n = int(store.con.execute(f"SELECT count(*) FROM exchanges WHERE {where}", params).fetchall()[0][0])
        if n:
            columns = {row[0] for row in store.con.execute("DESCRIBE exchanges").fetchall()}
            (dest / "exchanges").mkdir(parents=True, exist_ok=True)
            if {"dt", "hour"} <= columns:
                target, options = dest / "exchanges", "PARTITION_BY (dt, hour), "
            else:  # a capture written without the hour folders: one file
                target, options = dest / "exchanges" / "part-0.parquet", ""
            quoted = str(target).replace("'", "''")
            store.con.execute(f"COPY (SELECT * FROM exchanges WHERE {where}) TO '{quoted}' "
                              f"(FORMAT PARQUET, {options}COMPRESSION zstd, OVERWRITE_OR_IGNORE)", params)
    return n
