"""The `diffs` table: every difference of every pair in a capture, streamed to Parquet.

    summary = compute_diffs("capture", rules)        # rules: RuleSet, the raw config list, or None

writes, replacing the previous run's output (each folder is built under a hidden temporary name and
renamed into place, so a reader sees the old run or the new one, never half of one):

* CAPTURE/diffs/part-0.parquet — one row per difference (schema shadow.capture.schema.DIFFS): request_id,
  endpoint, c_service, kind (status | header | body), op, pointer, pointer_template, old, new,
  noise, noise_reason. Noise is flagged, never dropped.
* CAPTURE/diffs_summary/part-0.parquet — one row per pair (shadow.capture.schema.DIFFS_SUMMARY): request_id,
  endpoint, c_service, mode, method, equal, status_equal, real_diff_count, noise_diff_count,
  truncated, has_secondary. `status_equal` is true when both sides answered with the same status;
  only those pairs are compared for the body-mismatch rate (a status change or a transport error is
  the error guardrails' business, and its one `status` difference row is the whole story). `equal`
  is true when such a pair has no real difference, false when it has one, and NULL when it was not
  compared: statuses differ, or a truncated body kept it from being compared (so `avg(NOT equal)`
  skips it rather than guessing).
* CAPTURE/diffs_fields/part-0.parquet — per (endpoint, c_service, kind, pointer_template) seen on
  requests with a secondary: the candidate's and the secondary's difference counts, the exact
  McNemar p-value (raw and Holm), Diffy's verdict for comparison, and whether the field is real.

How it stays fast and bounded, in two stages:
A. DuckDB pairs every request without reading a body, and settles what needs no Python — equal
   status, equal header lists after the ignore list, equal canonical body hashes (a hash covers the
   whole decoded body, so truncated bodies settle too). Every pair gets its base row here; the
   metadata of the pairs left unsettled goes to a side file.
B. Only those pairs are joined to their bodies (the hash join is built on them, so the bodies of
   settled pairs are never held in memory) and go through the pure `diff_pair`, in record batches,
   in worker processes when `workers > 1`, with at most a few batches in flight.
A last relational pass applies the per-field noise verdicts and builds the per-pair summary.

Endpoints: the captured `endpoint` column (static templating at capture time), unless a
`templater` (analyzers.endpoints.EndpointTemplater, e.g. learned with `learn_from_capture`) is
given, which is then applied to `path`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzers.diff import MAX_VALUE_CHARS, Difference, ExchangeSide, diff_pair
from analyzers.gateway_changes import GATEWAY_REASON, copy_changes, explain_all, may_be_gateways
from analyzers.noise import (
    DEFAULT_ALPHA,
    MIN_EVIDENCE,
    FieldCounts,
    FieldNoise,
    ProbeResult,
    classify_fields,
    field_noise_table,
    load_probe,
    mark_secondary_noise,
    repeat_evidence,
)
from analyzers.rules import RuleSet, load_rules
from analyzers.volatility import looks_volatile
from shadow.capture.endpoints import template_path
from shadow.capture.schema import DIFFS, DIFFS_SUMMARY

__all__ = ["DiffRunSummary", "compute_diffs", "diff_batch"]

BASE_SCHEMA = pa.schema([("request_id", pa.string()), ("endpoint", pa.string()), ("c_service", pa.string()),
                         ("mode", pa.string()), ("method", pa.string()), ("has_secondary", pa.bool_()),
                         ("status_equal", pa.bool_())])
OUTPUT_DIRS = ("diffs", "diffs_summary", "diffs_fields")
SMALL_RUN_PAIRS = 20_000  # fewer unsettled pairs than this: diff in-process
VOLATILE_SHARE = 0.95  # a field is volatile-looking when this share of its real differences look volatile


@dataclass(frozen=True)
class DiffRunSummary:
    capture_dir: Path
    pairs: int
    equal_pairs: int  # no real difference
    pairs_with_real_diffs: int
    truncated_pairs: int  # a truncated body kept the pair from being compared (equal is NULL)
    secondary_pairs: int
    diff_rows: int
    real_rows: int
    noise_rows: int
    seconds: float
    workers: int
    probe_used: bool
    cpu_seconds: float = 0.0  # this process (DuckDB included) plus the workers
    status_changed_pairs: int = 0  # statuses differ or a side got no answer (equal is NULL)
    worker_cpu_seconds: float = 0.0  # the workers' share (0 when diffing in-process)
    peak_rss_mb: float = 0.0  # the largest of this process and each worker
    fields: tuple[FieldNoise, ...] = ()
    diffs_dir: Path = field(default=Path("diffs"))
    summary_dir: Path = field(default=Path("diffs_summary"))
    fields_dir: Path = field(default=Path("diffs_fields"))

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else float("inf")

    @property
    def mismatch_rate(self) -> float:
        """Pairs with a real difference among the pairs compared (same status, bodies not truncated)."""
        compared = self.equal_pairs + self.pairs_with_real_diffs
        return self.pairs_with_real_diffs / compared if compared else 0.0


# ---------------------------------------------------------------------------------------------------
# The per-batch pure part


@dataclass
class BatchContext:
    rules: RuleSet
    templater: Any = None  # EndpointTemplater or None
    probe: ProbeResult | None = None
    max_value_chars: int = MAX_VALUE_CHARS
    repeats: ProbeResult | None = None  # the primary's own answers to repeated identical requests


@dataclass
class BatchResult:
    diffs: pa.Table
    counts: FieldCounts
    pairs: int
    cpu_seconds: float = 0.0  # of the worker process so far (set by workers)
    peak_rss_mb: float = 0.0
    pid: int = 0


def _endpoints(batch: pa.RecordBatch, templater: Any) -> list[str]:
    paths = batch.column("path")
    if templater is not None:
        templated = templater.template_many(paths)
        return templated.to_pylist() if isinstance(templated, pa.Array) else list(templated)
    captured = batch.column("endpoint").to_pylist()
    if all(e is not None for e in captured):
        return captured
    return [e if e is not None else template_path(p or "/") for e, p in zip(captured, paths.to_pylist(), strict=True)]


_SIDE_COLUMNS = ("status", "resp_headers", "resp_body", "resp_content_type", "body_hash", "truncated", "error")


def _without_gateway_changes(diffs: list[Difference], batch: pa.RecordBatch, idx: int, prefix: str,
                             request_id: str) -> list[Difference]:
    """Body differences that follow from what the gateway changed in the copy (its marking headers,
    dropped hop-by-hop headers, another URL) become noise, labelled the gateway's. The requests are
    read from the batch only for pairs with a real body difference (a header list costs to convert)."""
    if not any(may_be_gateways(d) for d in diffs):
        return diffs

    def value(name: str) -> Any:
        return batch.column(name)[idx].as_py() if name in batch.schema.names else None

    changes = copy_changes(value("p_req_headers"), value("p_url"), value(prefix + "req_headers"),
                           value(prefix + "url"), request_id=request_id)
    return explain_all(diffs, changes)


def base_rows(batch: pa.RecordBatch, ctx: BatchContext) -> tuple[pa.Table, dict[tuple[str, str], int]]:
    """From a batch of the flags query (every pair): the per-pair base rows, and per (endpoint,
    c_service) the requests with a usable secondary (the rate test's denominator)."""
    endpoints = _endpoints(batch, ctx.templater)
    c_services = batch.column("c_service").to_pylist()
    has_s = batch.column("has_s").to_pylist()
    # both sides answered, with the same status: the pairs whose bodies the mismatch rate is about
    status_equal = pc.fill_null(pc.equal(batch.column("p_status"), batch.column("c_status")), False)
    base = pa.table({"request_id": batch.column("request_id"), "endpoint": endpoints, "c_service": c_services,
                     "mode": batch.column("mode"), "method": batch.column("method"), "has_secondary": has_s,
                     "status_equal": status_equal}, schema=BASE_SCHEMA)
    requests: dict[tuple[str, str], int] = {}
    # a secondary that failed to answer says nothing about the primary's determinism: left out
    s_failed = pc.fill_null(pc.and_(pc.is_null(batch.column("s_status")), pc.is_valid(batch.column("p_status"))),
                            False).to_pylist()
    for ep, svc, present, failed in zip(endpoints, c_services, has_s, s_failed, strict=True):
        if present and not failed:
            requests[(ep, svc)] = requests.get((ep, svc), 0) + 1
    return base, requests


def diff_batch(batch: pa.RecordBatch, ctx: BatchContext) -> BatchResult:
    """Diff the unsettled pairs of one record batch of the bodies query (see `_bodies_query`)."""
    n = batch.num_rows
    endpoints = _endpoints(batch, ctx.templater)
    request_ids = batch.column("request_id").to_pylist()
    c_services = batch.column("c_service").to_pylist()
    has_s = batch.column("has_s").to_pylist()
    counts = FieldCounts()
    cols: dict[str, list[Any]] = {name: [] for name in DIFFS.names}
    wanted = ["c_settled", "s_settled", "c_h_eq", "c_b_eq", "s_h_eq", "s_b_eq"] + [
        f"{r}_{c}" for r in "pcs" for c in _SIDE_COLUMNS]
    for idx, row in enumerate(batch.select(wanted).to_pylist()):
        ep, svc, rid = endpoints[idx], c_services[idx], request_ids[idx]
        er = ctx.rules.for_endpoint(ep)
        primary = ExchangeSide.from_row(row, "p_")
        cd: list[Difference] = []
        if not row["c_settled"]:
            cd = diff_pair(primary, ExchangeSide.from_row(row, "c_"), er, max_value_chars=ctx.max_value_chars,
                           compare_headers=not row["c_h_eq"], compare_body=not row["c_b_eq"])
            cd = _without_gateway_changes(cd, batch, idx, "c_", rid)
        if has_s[idx] and not (row["s_status"] is None and row["p_status"] is not None):
            sd: list[Difference] = []
            if not row["s_settled"]:
                sd = diff_pair(primary, ExchangeSide.from_row(row, "s_"), er,
                               max_value_chars=ctx.max_value_chars, compare_headers=not row["s_h_eq"],
                               compare_body=not row["s_b_eq"])
                sd = _without_gateway_changes(sd, batch, idx, "s_", rid)
                # the secondary's gateway-made differences are no evidence about the candidate's fields
                sd = [d for d in sd if not (d.noise_reason or "").startswith(GATEWAY_REASON)]
                cd = mark_secondary_noise(cd, sd)
            counts.add_request(ep, svc, {(d.kind, d.pointer_template) for d in cd if d.op != "truncated"},
                               {(d.kind, d.pointer_template) for d in sd if d.op != "truncated"},
                               count_request=False)
        for d in cd:
            for evidence in (ctx.probe, ctx.repeats):
                if not d.noise and evidence is not None:
                    reason = evidence.reason(ep, d.kind, d.pointer_template)
                    if reason:
                        d = d._replace(noise=True, noise_reason=reason)
            cols["request_id"].append(rid)
            cols["endpoint"].append(ep)
            cols["c_service"].append(svc)
            cols["kind"].append(d.kind)
            cols["op"].append(d.op)
            cols["pointer"].append(d.pointer)
            cols["pointer_template"].append(d.pointer_template)
            cols["old"].append(d.old)
            cols["new"].append(d.new)
            cols["noise"].append(d.noise)
            cols["noise_reason"].append(d.noise_reason)
            # looks volatile (decided per field in _finish: unproven where the endpoint has no evidence)
            cols["unproven"].append(not d.noise and d.kind == "body" and d.op == "changed"
                                    and looks_volatile(d.old, d.new))
    return BatchResult(pa.table(cols, schema=DIFFS), counts, n)


_WORKER_CTX: BatchContext | None = None


def _init_worker(ctx: BatchContext) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx


def _diff_file_in_worker(path: str) -> BatchResult:
    """Diff the batch in an Arrow IPC file the parent wrote (memory-mapped here, then deleted): one
    copy through the page cache instead of pickling tens of MB through a pipe."""
    assert _WORKER_CTX is not None
    with pa.memory_map(path) as source:
        result = diff_batch(pa.ipc.open_file(source).get_batch(0), _WORKER_CTX)
    os.unlink(path)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = usage.ru_utime + usage.ru_stime  # cumulative: the caller keeps the latest per pid
    result.peak_rss_mb = usage.ru_maxrss / 1024
    result.pid = os.getpid()
    return result


# ---------------------------------------------------------------------------------------------------
# SQL: pair up and settle what needs no Python


def _sql_str(s: str | Path) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _header_ignored_sql(globs: Iterable[str], name: str) -> str:
    """SQL: is the lower-cased header `name` matched by one of the globs? Exact names become one IN
    list and trailing-* globs prefix tests (much cheaper per row than a regex); others a regex."""
    import re

    exact, prefixes, patterns = [], [], []
    for g in (g.lower() for g in globs):
        if "*" not in g and "?" not in g:
            exact.append(g)
        elif g.endswith("*") and "*" not in g[:-1] and "?" not in g:
            prefixes.append(g[:-1])
        else:
            patterns.append("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in g))
    terms = []
    if exact:
        terms.append(f"{name} IN ({', '.join(_sql_str(e) for e in exact)})")
    terms += [f"starts_with({name}, {_sql_str(p)})" for p in prefixes]
    if patterns:
        terms.append(f"regexp_full_match({name}, {_sql_str('(' + '|'.join(patterns) + ')')})")
    return "(" + " OR ".join(terms) + ")" if terms else "false"


def _flags_query(rules: RuleSet) -> str:
    """Stage A, every pair, no bodies read: what is settled by status, the compared headers and the
    canonical body hashes; the metadata the diff needs for the rest."""
    ignored = _header_ignored_sql(rules.compared_header_superset_ignores(), "lower(h.name)")

    def hdr(col: str) -> str:
        # compared headers as sorted "name:value" strings; equal lists settle the headers in SQL
        return (f"list_sort(list_transform(list_filter({col}, lambda h: NOT {ignored}), "
                "lambda h: lower(h.name) || ':' || h.value))")

    def body_eq(r: str) -> str:
        # the canonical hash covers the whole decoded body, so it settles truncated bodies too
        return f"coalesce(p_body_hash = {r}_body_hash, false)"

    return f"""
    WITH flagged AS (
      SELECT request_id, endpoint, path, method, mode, c_service, p_exchange_id, c_exchange_id, s_exchange_id,
        p_status, c_status, s_status, p_error, c_error, s_error, p_truncated, c_truncated, s_truncated,
        p_body_hash, c_body_hash, s_body_hash, p_resp_content_type, c_resp_content_type, s_resp_content_type,
        p_resp_headers, c_resp_headers, s_resp_headers,
        s_exchange_id IS NOT NULL AS has_s,
        p_status IS NOT DISTINCT FROM c_status AS c_st_eq,
        s_exchange_id IS NULL OR (p_status IS NOT DISTINCT FROM s_status) AS s_st_eq,
        coalesce({hdr('p_resp_headers')} = {hdr('c_resp_headers')}, p_resp_headers IS NULL AND c_resp_headers IS NULL)
          AS c_h_eq,
        s_exchange_id IS NULL OR coalesce({hdr('p_resp_headers')} = {hdr('s_resp_headers')},
          p_resp_headers IS NULL AND s_resp_headers IS NULL) AS s_h_eq,
        {body_eq('c')} AS c_b_eq,
        s_exchange_id IS NULL OR {body_eq('s')} AS s_b_eq
      FROM pairs
    )
    SELECT request_id, endpoint, path, method, mode, c_service, has_s, p_exchange_id, c_exchange_id, s_exchange_id,
      c_st_eq AND c_h_eq AND c_b_eq AS c_settled, s_st_eq AND s_h_eq AND s_b_eq AS s_settled,
      c_h_eq, c_b_eq, s_h_eq, s_b_eq,
      p_status, c_status, s_status, p_error, c_error, s_error, p_truncated, c_truncated, s_truncated,
      p_body_hash, c_body_hash, s_body_hash, p_resp_content_type, c_resp_content_type, s_resp_content_type,
      CASE WHEN c_h_eq AND s_h_eq THEN NULL ELSE p_resp_headers END AS p_resp_headers,
      CASE WHEN c_h_eq THEN NULL ELSE c_resp_headers END AS c_resp_headers,
      CASE WHEN s_h_eq THEN NULL ELSE s_resp_headers END AS s_resp_headers
    FROM flagged
    """


def _bodies_query(unsettled: Path, *, with_secondary: bool) -> str:
    """Stage B, only the pairs stage A could not settle: their metadata joined to the bodies still
    needed. Run with DuckDB's join-order and build-side optimizers off (see `_bodies_reader`), so
    every hash table is built on the right-hand side as written: the unsettled pairs, never a
    whole role's bodies. The exchanges are streamed through as the probe side."""
    u = f"read_parquet({_sql_str(unsettled)})"
    # The requests as each side received them (headers, URL) come along where bodies differ: what the
    # gateway changed in a copy explains echoed differences (analyzers/gateway_changes.py).
    if with_secondary:
        u = (f"(SELECT u.*, s.resp_body AS s_body, s.req_headers AS s_req_headers, s.url AS s_url "
             f"FROM exchanges s RIGHT JOIN {u} u ON s.exchange_id = u.s_exchange_id)")
    else:
        u = (f"(SELECT *, CAST(NULL AS BLOB) AS s_body, NULL AS s_req_headers, CAST(NULL AS VARCHAR) AS s_url "
             f"FROM {u})")
    pu = (f"(SELECT u.*, p.resp_body AS p_body, p.req_headers AS p_req, p.url AS p_req_url "
          f"FROM exchanges p JOIN {u} u ON p.exchange_id = u.p_exchange_id)")
    return f"""
    SELECT pu.* EXCLUDE (p_body, s_body, p_req, p_req_url, s_req_headers, s_url),
      CASE WHEN pu.c_b_eq AND pu.s_b_eq THEN NULL ELSE pu.p_body END AS p_resp_body,
      CASE WHEN pu.c_b_eq THEN NULL ELSE c.resp_body END AS c_resp_body,
      CASE WHEN pu.s_b_eq THEN NULL ELSE pu.s_body END AS s_resp_body,
      CASE WHEN pu.c_b_eq AND pu.s_b_eq THEN NULL ELSE pu.p_req END AS p_req_headers,
      CASE WHEN pu.c_b_eq AND pu.s_b_eq THEN NULL ELSE pu.p_req_url END AS p_url,
      CASE WHEN pu.c_b_eq THEN NULL ELSE c.req_headers END AS c_req_headers,
      CASE WHEN pu.c_b_eq THEN NULL ELSE c.url END AS c_url,
      CASE WHEN pu.s_b_eq THEN NULL ELSE pu.s_req_headers END AS s_req_headers,
      CASE WHEN pu.s_b_eq THEN NULL ELSE pu.s_url END AS s_url
    FROM exchanges c JOIN {pu} pu ON c.exchange_id = pu.c_exchange_id
    """


# ---------------------------------------------------------------------------------------------------
# The run


def compute_diffs(capture_dir: str | Path, rules: RuleSet | Iterable[Mapping[str, Any]] | None = None, *,
                  templater: Any = None, progress: bool | Callable[..., None] = True, workers: int | None = None,
                  batch_rows: int = 8192, alpha: float = DEFAULT_ALPHA, use_probe: bool = True,
                  max_value_chars: int = MAX_VALUE_CHARS, memory_limit: str = "1GB",
                  chunk_pairs: int = 100_000) -> DiffRunSummary:
    """Diff every pair of the capture and (re)write CAPTURE/diffs, diffs_summary, diffs_fields.

    `rules`: a RuleSet, the raw `shadow.analysis.rules` list, or None (defaults only).
    `workers`: processes for the per-pair work (default: 2 when the machine has ≥ 2 cores, else 1;
    by default 1 when fewer than SMALL_RUN_PAIRS pairs need diffing).
    `progress`: True for a bar on a terminal, False for none, or a callback `report(done, total)`.
    `chunk_pairs`: unsettled pairs joined to their bodies per query (bounds DuckDB's hash tables:
    ≈ chunk_pairs × the mean body size); `memory_limit`: DuckDB's, beyond which it spills to disk.
    `use_probe`: apply CAPTURE/noise/probe.parquet (from `probe_noise`) when it exists.
    Raises CaptureError for a missing or unreadable capture."""
    from shadow.capture.store import open_store

    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    root = Path(capture_dir)
    ruleset = rules if isinstance(rules, RuleSet) else load_rules(rules)
    probe = load_probe(root) if use_probe else None
    ctx = BatchContext(ruleset, templater, probe, max_value_chars)
    auto_workers = workers is None
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 1
    worker_usage: dict[int, tuple[float, float]] = {}  # pid → (cpu seconds, peak RSS MiB)
    store = open_store(root)  # first: a missing or malformed capture is reported before anything is written
    run = root / f".diffs-run-{uuid.uuid4().hex[:12]}"
    run.mkdir()
    try:
        with store:
            con = store.con
            con.execute(f"SET memory_limit = {_sql_str(memory_limit)}")
            con.execute(f"SET temp_directory = {_sql_str(run / 'duckdb-tmp')}")
            con.execute("SET preserve_insertion_order = false")
            # Under Jupyter without ipywidgets DuckDB refuses even to turn its bar off (and shows none).
            with contextlib.suppress(duckdb.Error):
                con.execute("SET enable_progress_bar = false")
            ctx.repeats = repeat_evidence(con, templater=templater)
            counts = FieldCounts()
            raw_path, base_path = run / "raw.parquet", run / "base.parquet"
            # Stage A: every pair's base row; the unsettled pairs' metadata to side files of at most
            # `chunk_pairs` rows each (stage B joins one file at a time: that bounds its hash tables)
            flags = con.sql(_flags_query(ruleset)).to_arrow_reader(batch_rows)
            assert flags is not None
            n_total = n_unsettled = n_secondary = 0
            chunks: list[Path] = []
            chunk_w: pq.ParquetWriter | None = None
            chunk_rows = 0
            try:
                with pq.ParquetWriter(base_path, BASE_SCHEMA) as base_w:
                    for batch in flags:
                        base, requests = base_rows(batch, ctx)
                        base_w.write_table(base)
                        for key, n in requests.items():
                            counts.requests[key] = counts.requests.get(key, 0) + n
                        todo = batch.filter(pc.invert(pc.fill_null(pc.and_(batch.column("c_settled"),
                                                                           batch.column("s_settled")), False)))
                        n_total += batch.num_rows
                        if not todo.num_rows:
                            continue
                        if chunk_w is None or chunk_rows >= chunk_pairs:
                            if chunk_w is not None:
                                chunk_w.close()
                            chunks.append(run / f"unsettled-{len(chunks)}.parquet")
                            chunk_w, chunk_rows = pq.ParquetWriter(chunks[-1], flags.schema), 0
                        chunk_w.write_batch(todo)
                        chunk_rows += todo.num_rows
                        n_unsettled += todo.num_rows
                        n_secondary += pc.sum(todo.column("has_s")).as_py() or 0
            finally:
                if chunk_w is not None:
                    chunk_w.close()
            if auto_workers and n_unsettled < SMALL_RUN_PAIRS:
                workers = 1  # starting worker processes costs more than it saves
            pairs = n_total
            done = n_total - n_unsettled
            bar = _progress(progress is True, n_total)
            if callable(progress):
                progress(done, n_total)
            elif bar is not None:
                bar.update(done)
            # Stage B: diff the unsettled pairs, their bodies joined in
            with pq.ParquetWriter(raw_path, DIFFS) as raw_w:

                def take(result: BatchResult) -> None:
                    nonlocal done
                    if result.pid:
                        worker_usage[result.pid] = (result.cpu_seconds, result.peak_rss_mb)
                    if result.diffs.num_rows:
                        raw_w.write_table(result.diffs)
                    counts.merge(result.counts)
                    done += result.pairs
                    if callable(progress):
                        progress(done, n_total)
                    elif bar is not None:
                        bar.update(result.pairs)

                def stage_b() -> Iterator[pa.RecordBatch]:
                    con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
                    for chunk in chunks:
                        bodies = con.sql(_bodies_query(chunk, with_secondary=n_secondary > 0)).to_arrow_reader(
                            batch_rows)
                        assert bodies is not None
                        yield from bodies

                reader = stage_b()
                if workers <= 1:
                    for batch in reader:
                        take(diff_batch(batch, ctx))
                else:
                    # forkserver: forking this process (DuckDB's threads are running) could deadlock.
                    # Workers fork from a server that has already imported the diff engine (and pyarrow's
                    # pandas shim), so each starts in milliseconds instead of re-importing everything.
                    mp = multiprocessing.get_context("forkserver")
                    mp.set_forkserver_preload(["analyzers.diffs_table", "analyzers.bodies", "pandas"])
                    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(ctx,),
                                             mp_context=mp) as pool:
                        pending: deque[Future[BatchResult]] = deque()
                        for k, batch in enumerate(reader):
                            path = run / f"batch-{k}.arrow"
                            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as ipc:
                                ipc.write_batch(batch)
                            pending.append(pool.submit(_diff_file_in_worker, str(path)))
                            while len(pending) > 2 * workers:
                                take(pending.popleft().result())
                        while pending:
                            take(pending.popleft().result())
                if bar is not None:
                    bar.close()
            con.execute("RESET disabled_optimizers")
            fields = classify_fields(counts, alpha=alpha)
            stats = _finish(con, run, raw_path, base_path, fields, _evidence(counts, ctx))
        _swap_into_place(root, run)
    finally:
        shutil.rmtree(run, ignore_errors=True)
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu = own.ru_utime + own.ru_stime - cpu_before + sum(c for c, _ in worker_usage.values())
    peak = max([own.ru_maxrss / 1024] + [m for _, m in worker_usage.values()])
    return DiffRunSummary(
        cpu_seconds=cpu, worker_cpu_seconds=sum(c for c, _ in worker_usage.values()), peak_rss_mb=peak,
        capture_dir=root, pairs=pairs, equal_pairs=stats["equal"], pairs_with_real_diffs=stats["unequal"],
        truncated_pairs=stats["truncated"], status_changed_pairs=stats["status_changed"], secondary_pairs=stats["secondary"], diff_rows=stats["rows"],
        real_rows=stats["real"], noise_rows=stats["rows"] - stats["real"], seconds=time.perf_counter() - started,
        workers=workers, probe_used=probe is not None, fields=tuple(fields), diffs_dir=root / "diffs",
        summary_dir=root / "diffs_summary", fields_dir=root / "diffs_fields")


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="diffing pairs", unit=" pairs", leave=False, file=sys.stderr,
                disable=not sys.stderr.isatty())


def _evidence(counts: FieldCounts, ctx: BatchContext) -> pa.Table:
    """(endpoint, c_service) with at least MIN_EVIDENCE primary-vs-primary comparisons: requests with a
    secondary (per candidate service), probed or repeated requests (c_service NULL: any candidate)."""
    rows: list[tuple[str, str | None]] = [(ep, svc) for (ep, svc), n in counts.requests.items() if n >= MIN_EVIDENCE]
    for evidence in (ctx.probe, ctx.repeats):
        if evidence is not None:
            endpoints = set(evidence.endpoints) | {k[0] for k in evidence.differing}
            rows += [(ep, None) for ep in endpoints if evidence.compared(ep) >= MIN_EVIDENCE]
    return pa.table({"endpoint": [r[0] for r in rows], "c_service": [r[1] for r in rows]},
                    schema=pa.schema([("endpoint", pa.string()), ("c_service", pa.string())]))


def _finish(con: Any, run: Path, raw_path: Path, base_path: Path, fields: list[FieldNoise],
            evidence: pa.Table) -> dict[str, int]:
    """Second pass, relational: per-field noise verdicts onto the rows, the unproven fields (every real
    difference looks volatile and the endpoint has no noise evidence), then the per-pair summary."""
    for name in OUTPUT_DIRS:
        (run / name).mkdir()
    fields_table = field_noise_table(fields)
    pq.write_table(fields_table, run / "diffs_fields" / "part-0.parquet")
    noisy = fields_table.filter(pc.invert(fields_table.column("real"))).select(
        ["endpoint", "c_service", "kind", "pointer_template", "reason"])
    con.register("noisy_fields", noisy)
    diffs_out = run / "diffs" / "part-0.parquet"
    con.register("noise_evidence", evidence)
    con.execute(f"""
        COPY (
          WITH d AS (
            SELECT d.request_id, d.endpoint, d.c_service, d.kind, d.op, d.pointer, d.pointer_template, d.old, d.new,
                   d.noise OR f.reason IS NOT NULL AS noise,
                   CASE WHEN d.noise THEN d.noise_reason ELSE f.reason END AS noise_reason,
                   coalesce(d.unproven, false) AS volatile
            FROM read_parquet({_sql_str(raw_path)}) d
            LEFT JOIN noisy_fields f ON d.endpoint = f.endpoint AND d.c_service IS NOT DISTINCT FROM f.c_service
                 AND d.kind = f.kind AND d.pointer_template = f.pointer_template
          ), volatile_fields AS (
            SELECT endpoint, c_service, kind, pointer_template FROM d WHERE NOT noise AND kind = 'body'
            GROUP BY ALL HAVING count(*) FILTER (WHERE volatile) >= {VOLATILE_SHARE} * count(*)
              -- ... unless the primary gave the very same value in every one of MIN_EVIDENCE or more
              -- differing pairs: a value constant across the primary's answers to different requests is
              -- not volatile there, so a candidate rewriting it (a fresh id per answer) is a real change
              AND NOT (count(*) >= {MIN_EVIDENCE} AND count(DISTINCT d.old) = 1)
          )
          SELECT d.* EXCLUDE (volatile),
                 NOT d.noise AND v.endpoint IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM noise_evidence e WHERE e.endpoint = d.endpoint
                     AND (e.c_service IS NULL OR e.c_service IS NOT DISTINCT FROM d.c_service)) AS unproven
          FROM d LEFT JOIN volatile_fields v ON d.endpoint = v.endpoint AND d.c_service IS NOT DISTINCT FROM v.c_service
               AND d.kind = v.kind AND d.pointer_template = v.pointer_template
        ) TO {_sql_str(diffs_out)} (FORMAT parquet, ROW_GROUP_SIZE 100000)""")
    con.unregister("noisy_fields")
    con.unregister("noise_evidence")
    summary_out = run / "diffs_summary" / "part-0.parquet"
    con.execute(f"""
        COPY (
          SELECT b.request_id, b.endpoint, b.c_service, b.mode, b.method,
                 CASE WHEN coalesce(a.truncated, false) OR NOT b.status_equal THEN NULL
                      ELSE coalesce(a.real_n, 0) = 0 END AS equal,
                 b.status_equal,
                 coalesce(a.real_n, 0)::INTEGER AS real_diff_count,
                 coalesce(a.noise_n, 0)::INTEGER AS noise_diff_count,
                 coalesce(a.truncated, false) AS truncated, b.has_secondary,
                 coalesce(a.unproven_n, 0)::INTEGER AS unproven_diff_count
          FROM read_parquet({_sql_str(base_path)}) b
          LEFT JOIN (
            SELECT request_id, c_service, count(*) FILTER (WHERE NOT noise) AS real_n,
                   count(*) FILTER (WHERE noise) AS noise_n, bool_or(op = 'truncated') AS truncated,
                   count(*) FILTER (WHERE NOT noise AND unproven) AS unproven_n
            FROM read_parquet({_sql_str(diffs_out)}) GROUP BY request_id, c_service
          ) a ON a.request_id = b.request_id AND a.c_service IS NOT DISTINCT FROM b.c_service
        ) TO {_sql_str(summary_out)} (FORMAT parquet, ROW_GROUP_SIZE 100000)""")
    rows = con.execute(f"""
        SELECT count(*) FILTER (WHERE equal), count(*) FILTER (WHERE NOT equal), count(*) FILTER (WHERE truncated),
               count(*) FILTER (WHERE has_secondary), coalesce(sum(real_diff_count + noise_diff_count), 0),
               coalesce(sum(real_diff_count), 0), count(*) FILTER (WHERE NOT status_equal)
        FROM read_parquet({_sql_str(summary_out)})""").fetchall()
    row = rows[0]
    # check the written schemas match the declared ones (a drift here would break every reader)
    for path, schema in ((diffs_out, DIFFS), (summary_out, DIFFS_SUMMARY)):
        got = pq.read_schema(path)
        if got.names != schema.names:
            raise AssertionError(f"{path}: columns {got.names} != {schema.names}")
    keys = ("equal", "unequal", "truncated", "secondary", "rows", "real", "status_changed")
    return {k: int(v) for k, v in zip(keys, row, strict=True)}


def _swap_into_place(root: Path, run: Path) -> None:
    """Replace CAPTURE/{diffs,diffs_summary,diffs_fields} by this run's folders: rename the old one
    aside (hidden name), rename the new one in, delete the old."""
    for name in OUTPUT_DIRS:
        new, target = run / name, root / name
        for f in new.glob("*.parquet"):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = root / f".{name}-old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
