"""From a capture folder to a verdict: diff the pairs, build per-endpoint samples, judge them.

    result = analyze(Path("capture"), policy)
    result.verdict.overall, result.samples, result.fields

The heavy parts belong to other modules: `compute_diffs` (analyzers/diff.py) writes CAPTURE/diffs/,
`judge` (analyzers/verdict.py) runs the statistics. This module only decides *what is compared with
what*:

- mirrored and replayed requests (mode mirror | replay) are pairs: the primary and the candidate
  answered the same request, so the samples are paired arrays, one entry per request;
- split requests (mode split) were answered by one side only: unpaired arrays per side;
- one sample per endpoint and candidate service; passthrough (mode serve) rows are not judged.

The body-mismatch flag of a pair comes from the diff engine's per-pair summary (a pair mismatches
when it has at least one real, non-noise difference).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shadow.errors import CaptureError

PAIRED_MODES = ("mirror", "replay")
SPLIT_MODE = "split"
EXAMPLES_PER_FIELD = 3
EXAMPLE_VALUE_CHARS = 400
PARALLEL_DIFF_MIN_PAIRS = 50_000


@dataclass(frozen=True)
class DiffExample:
    """One concrete difference behind a diff-field row: where to look and both values."""

    request_id: str
    pointer: str
    old: str | None  # the primary's value, as the diff engine rendered it
    new: str | None  # the candidate's value


@dataclass(frozen=True)
class SecondaryEvidence:
    """The noise test of one field (analyzers/noise.py): candidate vs secondary on the same requests."""

    requests: int  # requests that had a secondary
    candidate_diffs: int  # of them, where the candidate differed here
    secondary_diffs: int  # where the secondary (same code as the primary) differed here
    p_holm: float | None  # one-sided McNemar, Holm-adjusted; None when the secondary never differed
    diffy_real: bool  # Diffy's count rule, for comparison

    def describe(self) -> str:
        test = "" if self.p_holm is None else f", McNemar p = {self.p_holm:.2g} (Holm)"
        return (f"candidate differs on {self.candidate_diffs:,} and the secondary on "
                f"{self.secondary_diffs:,} of {self.requests:,} requests{test}")

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "candidate_diffs": self.candidate_diffs,
                "secondary_diffs": self.secondary_diffs, "p_holm": self.p_holm, "diffy_real": self.diffy_real}


@dataclass(frozen=True)
class FieldDiff:
    """One row of the diff-field table: a (templated) field that differed on an endpoint."""

    endpoint: str
    c_service: str
    kind: str  # status | header | body ...
    op: str  # changed | added | removed ...
    pointer_template: str
    noise: bool
    noise_reason: str | None
    count: int  # difference rows
    pairs_affected: int  # distinct requests with this difference
    pairs_total: int  # paired requests on the endpoint (the rate's denominator)
    examples: tuple[DiffExample, ...] = ()
    secondary: SecondaryEvidence | None = None

    @property
    def name(self) -> str:
        """The endpoint × candidate label the report uses everywhere."""
        return f"{self.endpoint} → {self.c_service}" if self.c_service else self.endpoint

    @property
    def rate(self) -> float:
        return self.pairs_affected / self.pairs_total if self.pairs_total else 0.0

    @property
    def anchor(self) -> str:
        """A stable HTML id for this field's examples section."""
        import hashlib

        key = "\x1f".join((self.endpoint, self.c_service, self.kind, self.op, self.pointer_template, str(self.noise)))
        return "ex-" + hashlib.sha1(key.encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint, "candidate_service": self.c_service, "kind": self.kind,
            "op": self.op, "pointer_template": self.pointer_template, "noise": self.noise,
            "noise_reason": self.noise_reason, "count": self.count,
            "pairs_affected": self.pairs_affected, "pairs_total": self.pairs_total,
            "rate": self.rate,
            "secondary": None if self.secondary is None else self.secondary.to_json(),
            "examples": [{"request_id": e.request_id, "pointer": e.pointer, "primary": e.old,
                          "candidate": e.new} for e in self.examples],
        }


@dataclass(frozen=True)
class AnalysisResult:
    capture_dir: Path
    policy: Any  # analyzers.policy.Policy
    samples: tuple[Any, ...]  # analyzers.stats.EndpointSample, one per endpoint × candidate service
    verdict: Any  # analyzers.verdict.Verdict
    fields: tuple[FieldDiff, ...]
    pairs_by_endpoint: dict[str, int] = field(default_factory=dict)
    diff_summary: Any = None  # analyzers.diff.DiffRunSummary

    @property
    def real_fields(self) -> list[FieldDiff]:
        return [f for f in self.fields if not f.noise]

    @property
    def noise_fields(self) -> list[FieldDiff]:
        return [f for f in self.fields if f.noise]

    def to_json(self) -> dict[str, Any]:
        """The verdict's JSON plus the diff-field summary (what verdict.json holds)."""
        doc: dict[str, Any] = dict(self.verdict.to_json())
        doc["capture"] = str(self.capture_dir)
        doc["diff_fields"] = [f.to_json() for f in self.fields]
        return doc


# ---------------------------------------------------------------------------------------------------
# Progress: a bar on a terminal, silence elsewhere (CI logs, tests, the verdict server).

ProgressFactory = Callable[[str, int | None], "Progress"]


class Progress:
    """A minimal progress handle: `update(n)` and `close()`; tqdm underneath on a TTY."""

    def __init__(self, desc: str, total: int | None, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="", leave=False, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_total(self, total: int) -> None:
        if self._bar is not None and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_enabled(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


@contextmanager
def stage(desc: str, enabled: bool) -> Iterator[Progress]:
    """A one-step bar for work that reports no progress of its own: shows what is running."""
    bar = Progress(desc, 1, enabled)
    try:
        yield bar
        bar.update(1)
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------------
# Inputs: the policy file may also carry the diff rules (`rules:` beside the margins).


def load_inputs(policy_file: Path | None) -> tuple[Any, Any]:
    """(Policy, RuleSet) from a policy YAML file, or the defaults without one.

    The file holds the analysis section at its top level, under `analysis:`, or under
    `shadow: analysis:` (a gateway config); a `rules:` list in that section is the diff rules,
    everything else is the policy (analyzers/policy.py reports its errors with file and line)."""
    from analyzers.policy import Policy, load_policy
    from analyzers.rules import DEFAULT_RULES, load_rules

    if policy_file is None:
        return Policy(), DEFAULT_RULES
    section = _analysis_section(policy_file)
    if not isinstance(section, dict) or "rules" not in section:
        return load_policy(policy_file), DEFAULT_RULES
    rules = load_rules(section["rules"] or [], file=str(policy_file))
    rest = section.copy()  # a ruamel CommentedMap copy keeps the line numbers for error messages
    rest.pop("rules", None)
    return Policy.from_mapping(rest, source=str(policy_file)), rules


def _analysis_section(policy_file: Path) -> Any:
    """The analysis mapping of a policy file, or None when the file is not shaped like one
    (load_policy then reports the problem, with its line)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from shadow.errors import ConfigError

    try:
        data = YAML(typ="rt").load(policy_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read policy file: {exc.strerror}", file=str(policy_file)) from None
    except YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("shadow"), dict):
        return data["shadow"].get("analysis")
    if "analysis" in data:
        return data["analysis"]
    return data


# ---------------------------------------------------------------------------------------------------
# Samples


def _status_5xx(status: np.ndarray) -> np.ndarray:
    """True where an answer came with 5xx; NaN (no answer) is not a 5xx: it is a transport error."""
    with np.errstate(invalid="ignore"):
        return (status >= 500) & (status < 600)


def _column(table: Any, name: str, dtype: Any = float) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=dtype)


def _keys(table: Any, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), dtype=object)


def paired_samples(store: Any, mismatch_ids: set[tuple[str, str]] | None) -> list[Any]:
    """One paired EndpointSample per (endpoint, candidate service) of mirrored/replayed pairs.

    `mismatch_ids`: (request_id, candidate service) of pairs with a real difference; None when no
    diff ran (then the samples carry no mismatch array and the mismatch guardrail has nothing to judge)."""
    from analyzers.verdict import EndpointSample

    modes = ", ".join(f"'{m}'" for m in PAIRED_MODES)
    table = store.sql(
        "SELECT endpoint, c_service, request_id, p_latency_ms, c_latency_ms, "
        "CAST(p_status AS DOUBLE) AS p_status, CAST(c_status AS DOUBLE) AS c_status, "
        "p_error IS NOT NULL AS p_err, c_error IS NOT NULL AS c_err, client_key "
        f"FROM pairs WHERE mode IN ({modes}) "
        "ORDER BY endpoint, c_service, ts, request_id"
    ).to_arrow_table()
    samples: list[Any] = []
    if table.num_rows == 0:
        return samples
    endpoints = _keys(table, "endpoint")
    services = _keys(table, "c_service")
    group_keys = [(str(e), str(s)) for e, s in zip(endpoints, services, strict=True)]
    starts: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(group_keys):
        starts.setdefault(key, []).append(i)
    p_lat, c_lat = _column(table, "p_latency_ms"), _column(table, "c_latency_ms")
    p_status, c_status = _column(table, "p_status"), _column(table, "c_status")
    p_err, c_err = _column(table, "p_err", bool), _column(table, "c_err", bool)
    request_ids = _keys(table, "request_id")
    clients = _keys(table, "client_key")
    for (endpoint, service), rows in starts.items():
        idx = np.asarray(rows)
        mismatch = None
        if mismatch_ids is not None:
            mismatch = np.array([(str(request_ids[i]), service) in mismatch_ids for i in idx], dtype=bool)
        keys = clients[idx]
        has_keys = any(k is not None for k in keys)
        samples.append(EndpointSample(
            endpoint=endpoint, paired=True,
            primary_latency_ms=np.where(p_err[idx], np.nan, p_lat[idx]),
            candidate_latency_ms=np.where(c_err[idx], np.nan, c_lat[idx]),
            primary_5xx=_status_5xx(p_status[idx]), candidate_5xx=_status_5xx(c_status[idx]),
            primary_transport_error=p_err[idx], candidate_transport_error=c_err[idx],
            primary_client_key=keys if has_keys else None, candidate_client_key=keys if has_keys else None,
            mismatch=mismatch, sticky=False, candidate=service,
        ))
    return samples


def split_samples(store: Any) -> list[Any]:
    """One unpaired EndpointSample per (endpoint, candidate service) of split traffic: every primary
    row of the endpoint against that candidate's rows. Assignment counts as sticky when the rows
    carry a client_key (the gateway sets it from the sticky cookie / HRW key)."""
    from analyzers.verdict import EndpointSample

    table = store.sql(
        "SELECT endpoint, role, service, latency_ms, CAST(status AS DOUBLE) AS status, "
        "error IS NOT NULL AS err, client_key FROM exchanges "
        f"WHERE mode = '{SPLIT_MODE}' AND role IN ('primary', 'candidate') ORDER BY endpoint, ts, request_id"
    ).to_arrow_table()
    if table.num_rows == 0:
        return []
    endpoints = _keys(table, "endpoint")
    roles = _keys(table, "role")
    services = _keys(table, "service")
    lat, status = _column(table, "latency_ms"), _column(table, "status")
    err = _column(table, "err", bool)
    clients = _keys(table, "client_key")
    by_endpoint: dict[str, dict[str, list[int]]] = {}
    for i, (endpoint, role, service) in enumerate(zip(endpoints, roles, services, strict=True)):
        arms = by_endpoint.setdefault(str(endpoint), {})
        arms.setdefault("primary" if role == "primary" else f"candidate:{service}", []).append(i)
    samples: list[Any] = []
    for endpoint, arms in by_endpoint.items():
        primary = np.asarray(arms.get("primary", []), dtype=int)
        for arm, rows in sorted(arms.items()):
            if arm == "primary":
                continue
            cand = np.asarray(rows, dtype=int)
            p_keys, c_keys = clients[primary], clients[cand]
            sticky = any(k is not None for k in p_keys) or any(k is not None for k in c_keys)
            samples.append(EndpointSample(
                endpoint=endpoint, paired=False,
                primary_latency_ms=np.where(err[primary], np.nan, lat[primary]),
                candidate_latency_ms=np.where(err[cand], np.nan, lat[cand]),
                primary_5xx=_status_5xx(status[primary]), candidate_5xx=_status_5xx(status[cand]),
                primary_transport_error=err[primary], candidate_transport_error=err[cand],
                primary_client_key=p_keys if sticky else None, candidate_client_key=c_keys if sticky else None,
                mismatch=None, sticky=sticky, candidate=arm.split(":", 1)[1],
            ))
    return samples


# ---------------------------------------------------------------------------------------------------
# Diff fields: the relational half of the diff report


def mismatched_pairs(store: Any) -> set[tuple[str, str]]:
    """(request_id, candidate service) of every pair that is not proven equal after noise.

    From the diff engine's per-pair summary (CAPTURE/diffs_summary): `equal` false is a real
    difference; `equal` NULL (a truncated body kept the pair from being compared) also counts as a
    mismatch, because a verdict is PASS only with evidence. Without a summary, from the diffs rows."""
    if "diffs_summary" in store.views:
        rows = store.sql("SELECT request_id, c_service FROM diffs_summary WHERE equal IS NOT TRUE").fetchall()
    elif "diffs" in store.views:
        rows = store.sql("SELECT DISTINCT request_id, c_service FROM diffs WHERE NOT coalesce(noise, false)"
                         ).fetchall()
    else:
        return set()
    return {(str(r), str(s)) for r, s in rows}


def pairs_per_endpoint(store: Any) -> dict[tuple[str, str], int]:
    modes = ", ".join(f"'{m}'" for m in PAIRED_MODES)
    rows = store.sql(f"SELECT endpoint, c_service, count(*) FROM pairs WHERE mode IN ({modes}) "
                     "GROUP BY ALL").fetchall()
    return {(str(e), str(s)): int(n) for e, s, n in rows}


def field_diffs(store: Any, pairs_total: dict[tuple[str, str], int],
                examples_per_field: int = EXAMPLES_PER_FIELD) -> list[FieldDiff]:
    """The diff-field table: per (endpoint, candidate service, kind, op, pointer template, noise,
    reason) how many differences and pairs, with examples from a few distinct requests each, and
    the secondary's evidence for the field when the capture had a secondary (CAPTURE/diffs_fields)."""
    if "diffs" not in store.views:
        return []
    group = ("endpoint, coalesce(c_service, '') AS c_service, kind, op, pointer_template, "
             "coalesce(noise, false) AS noise, coalesce(noise_reason, '') AS noise_reason")
    partition = ("endpoint, coalesce(c_service, ''), kind, op, pointer_template, coalesce(noise, false), "
                 "coalesce(noise_reason, '')")
    groups = store.sql(
        f"SELECT {group}, count(*) AS n, count(DISTINCT request_id) AS pairs FROM diffs GROUP BY ALL"
    ).fetchall()
    # One difference per request (its first pointer), then the first few requests in a stable but
    # scattered order (by hash), so the examples show different requests, not one array's elements.
    examples_rows = store.sql(
        f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY hash(request_id), "
        "request_id) AS k FROM (SELECT * FROM (SELECT "
        f"{group}, request_id, pointer, CAST(old AS VARCHAR) AS old, CAST(new AS VARCHAR) AS new, "
        f"row_number() OVER (PARTITION BY {partition}, request_id ORDER BY pointer) AS j FROM diffs) "
        f"WHERE j = 1)) WHERE k <= {int(examples_per_field)} ORDER BY k"
    ).fetchall()
    examples: dict[tuple[Any, ...], list[DiffExample]] = {}
    for row in examples_rows:
        examples.setdefault(tuple(row[:7]), []).append(DiffExample(
            request_id=str(row[7]), pointer=str(row[8]),
            old=None if row[9] is None else _clip(row[9]), new=None if row[10] is None else _clip(row[10])))
    evidence = secondary_evidence(store)
    fields = []
    for endpoint, service, kind, op, template, noise, reason, n, pairs in groups:
        k = (endpoint, service, kind, op, template, noise, reason)
        fields.append(FieldDiff(
            endpoint=str(endpoint), c_service=str(service), kind=str(kind), op=str(op),
            pointer_template=str(template), noise=bool(noise), noise_reason=str(reason) or None,
            count=int(n), pairs_affected=int(pairs), pairs_total=pairs_total.get((str(endpoint), str(service)), 0),
            examples=tuple(examples.get(k, ())),
            secondary=evidence.get((str(endpoint), str(service), str(kind), str(template))),
        ))
    fields.sort(key=lambda f: (f.noise, -f.count, f.endpoint, f.pointer_template, f.op))
    return fields


def secondary_evidence(store: Any) -> dict[tuple[str, str, str, str], SecondaryEvidence]:
    """Per (endpoint, candidate service, kind, pointer template): how often the candidate and the
    secondary (the primary's own code, again) differed from the primary on the same requests."""
    if "diffs_fields" not in store.views:
        return {}
    rows = store.sql(
        "SELECT endpoint, coalesce(c_service, ''), kind, pointer_template, requests, candidate_diffs, "
        "secondary_diffs, p_holm, diffy_real FROM diffs_fields").fetchall()
    return {(str(e), str(s), str(k), str(t)): SecondaryEvidence(
        requests=int(n), candidate_diffs=int(c), secondary_diffs=int(d),
        p_holm=None if p is None else float(p), diffy_real=bool(dr))
        for e, s, k, t, n, c, d, p, dr in rows}


def _clip(value: str) -> str:
    if len(value) <= EXAMPLE_VALUE_CHARS:
        return value
    return value[:EXAMPLE_VALUE_CHARS] + f"… (+{len(value) - EXAMPLE_VALUE_CHARS} chars)"


# ---------------------------------------------------------------------------------------------------
# The pipeline


def analyze(capture_dir: Path, policy: Any, *, rules: Any = None, progress: bool | None = None,
            run_diffs: bool = True, sequential_state: Any = None) -> AnalysisResult:
    """Diff the capture's pairs (writing CAPTURE/diffs/), build the samples and judge them.

    Raises CaptureError for a missing, empty or malformed capture (one line, naming the path)."""
    from shadow.store import open_store

    capture_dir = Path(capture_dir)
    show = progress_enabled(progress)
    # Open once before diffing: an empty or malformed capture is reported before any work.
    with open_store(capture_dir) as store:
        modes = ", ".join(f"'{m}'" for m in PAIRED_MODES)
        n_pairs = int(store.sql(f"SELECT count(*) FROM pairs WHERE mode IN ({modes})").fetchall()[0][0])
    has_pairs = n_pairs > 0
    diff_summary = None
    if run_diffs and has_pairs:
        diff_summary = _run_diffs(capture_dir, rules, show, n_pairs)
    with open_store(capture_dir) as store, stage("reading samples", show):
        totals = pairs_per_endpoint(store)
        mismatch = mismatched_pairs(store) if (run_diffs and has_pairs) else None
        samples = paired_samples(store, mismatch) + split_samples(store)
        fields = field_diffs(store, totals)
    if not samples:
        raise CaptureError(f"{capture_dir}: nothing to judge: no mirrored, replayed or split exchanges "
                           "with both a primary and a candidate")
    from analyzers.verdict import judge  # scipy: imported only once there is something to judge

    with stage(f"judging {len(samples)} endpoint(s)", show):
        verdict = judge(samples, policy, sequential_state=sequential_state)
    pairs_by_endpoint = {(e if not s else f"{e} → {s}"): n for (e, s), n in totals.items()}
    return AnalysisResult(capture_dir=capture_dir, policy=policy, samples=tuple(samples), verdict=verdict,
                          fields=tuple(fields), pairs_by_endpoint=pairs_by_endpoint,
                          diff_summary=diff_summary)


def _run_diffs(capture_dir: Path, rules: Any, show: bool, pairs: int) -> Any:
    from analyzers.diff import compute_diffs
    from analyzers.rules import DEFAULT_RULES

    bar = Progress("diffing pairs", None, show)
    try:
        # Worker processes pay off only on large captures (forkserver start-up costs about a second).
        workers = 1 if pairs < PARALLEL_DIFF_MIN_PAIRS else None
        return compute_diffs(capture_dir, rules if rules is not None else DEFAULT_RULES,
                             progress=_progress_callback(bar), workers=workers)
    except OSError as exc:
        # The diff step writes CAPTURE/diffs*/ beside the capture: a read-only copy cannot be judged.
        raise CaptureError(f"{capture_dir}: cannot write the diffs table there: "
                           f"{exc.strerror or exc} (copy the capture somewhere writable)") from None
    finally:
        bar.close()


def _progress_callback(bar: Progress) -> Callable[..., None]:
    """Adapt the diff engine's progress reports (done, total) or (n) to the bar."""
    state = {"done": 0}

    def report(done: int, total: int | None = None) -> None:
        if total is not None:
            bar.set_total(total)
        bar.update(max(0, done - state["done"]))
        state["done"] = max(state["done"], done)

    return report
