"""From a capture folder to a verdict: diff the pairs, build per-endpoint samples, judge them.

    result = analyze(Path("capture"), policy)
    result.verdict.overall, result.samples, result.fields

The heavy parts belong to other modules: `compute_diffs` (analyzers/diffs_table.py) writes CAPTURE/diffs/,
`judge` (analyzers/verdict.py) runs the statistics. This module only decides *what is compared with
what*:

- mirrored and replayed requests (mode mirror | replay) are pairs: the primary and the candidate
  answered the same request, so the samples are paired arrays, one entry per request;
- split requests (mode split) were answered by one side only: unpaired arrays per side;
- one sample per endpoint and candidate service; passthrough (mode serve) rows are not judged.

The body-mismatch flag of a pair comes from the diff engine's per-pair summary (CAPTURE/diffs_summary:
a pair mismatches when it has a real, non-noise difference, or when a truncated body kept it from
being compared), and the samples hold exactly the pairs that diff run compared. Only pairs that
answered with the same status count for the mismatch rate (`EndpointSample.mismatch_compared`): a
status change or a transport error is judged by the error guardrails, once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shadow.errors import CaptureError

if TYPE_CHECKING:
    from analyzers.policy import Policy
    from analyzers.verdict import EndpointSample, Verdict

PAIRED_MODES = ("mirror", "replay")
SPLIT_MODE = "split"
EXAMPLES_PER_FIELD = 3
EXAMPLE_VALUE_CHARS = 400
PARALLEL_DIFF_MIN_PAIRS = 50_000


class NothingToJudge(CaptureError):
    """The capture holds exchanges but no pair and no split arm to compare: INCONCLUSIVE, not a usage
    error (`shadow gate` exits 3 with this reason)."""


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
    unproven: bool = False  # real, but looks volatile and the endpoint has no noise evidence

    @property
    def name(self) -> str:
        """The endpoint × candidate label the report uses everywhere."""
        return f"{self.endpoint} → {self.c_service}" if self.c_service else self.endpoint

    @property
    def rate(self) -> float:
        return self.pairs_affected / self.pairs_total if self.pairs_total else 0.0

    @property
    def renamed_to(self) -> str | None:
        """For a `renamed` field: the new key's pointer template (from an example's new pointer)."""
        if self.op != "renamed" or not self.examples or not self.examples[0].new:
            return None
        import json

        try:
            new = json.loads(self.examples[0].new)
        except ValueError:
            return None
        old = self.pointer_template.split("/")
        parts = str(new).split("/")
        if len(parts) != len(old):
            return str(new)
        return "/".join("*" if o == "*" else n for o, n in zip(old, parts, strict=True))

    @property
    def accept_with(self) -> tuple[str, ...]:
        """Copy-pasteable YAML `rules:` items that would accept this difference (none for noise or
        a status change; see analyzers/suggest.py and docs/policy.md, "Diff rules")."""
        if self.noise:
            return ()
        from analyzers.suggest import suggested_rules

        example = self.examples[0] if self.examples else None
        return tuple(suggested_rules(self.endpoint, self.kind, self.op, self.pointer_template,
                                     example.old if example else None, example.new if example else None))

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
            "noise_reason": self.noise_reason, "unproven": self.unproven, "count": self.count,
            "pairs_affected": self.pairs_affected, "pairs_total": self.pairs_total,
            "rate": self.rate, "renamed_to": self.renamed_to, "accept_with": list(self.accept_with),
            "secondary": None if self.secondary is None else self.secondary.to_json(),
            "examples": [{"request_id": e.request_id, "pointer": e.pointer, "primary": e.old,
                          "candidate": e.new} for e in self.examples],
        }


@dataclass(frozen=True)
class AnalysisResult:
    capture_dir: Path
    policy: Policy
    samples: tuple[EndpointSample, ...]  # one per endpoint × candidate service
    verdict: Verdict
    fields: tuple[FieldDiff, ...]
    pairs_by_endpoint: dict[str, int] = field(default_factory=dict)
    diff_summary: Any = None  # analyzers.diffs_table.DiffRunSummary
    # analyzers.spans.EndpointAttribution per regressed endpoint whose calls have spans (empty: no spans)
    span_attribution: tuple[Any, ...] = ()
    rules: Any = None  # the diff rules the analysis ran with (analyzers.rules.RuleSet; None: the defaults)

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
        if self.span_attribution:
            from analyzers.spans import attribution_to_json

            doc["span_attribution"] = attribution_to_json(list(self.span_attribution))
        return doc


# ---------------------------------------------------------------------------------------------------
# Progress: a bar on a terminal, silence elsewhere (CI logs, tests, the verdict server).

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
    section, where = _analysis_section(policy_file)
    if not isinstance(section, dict) or "rules" not in section:
        return load_policy(policy_file), DEFAULT_RULES
    rules = load_rules(section["rules"] or [], file=str(policy_file), base=f"{where}rules")
    rest = section.copy()  # a ruamel CommentedMap copy keeps the line numbers for error messages
    rest.pop("rules", None)
    return Policy.from_mapping(rest, source=str(policy_file)), rules


def learn_templater(capture_dir: Path, explicit: tuple[str, ...] = ()) -> Any:
    """An endpoint templater learned from the capture's paths (/users/alice, /users/bob, … →
    /users/{name}), for captures whose static templating left one endpoint per user, slug, etc."""
    from analyzers.endpoints import learn_from_capture

    return learn_from_capture(capture_dir, explicit=explicit)


def _analysis_section(policy_file: Path) -> tuple[Any, str]:
    """The analysis mapping of a policy file and its field path prefix, or None when the file is not
    shaped like one (load_policy then reports the problem, with its line)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from shadow.errors import ConfigError

    try:
        data = YAML(typ="rt").load(policy_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read policy file: {exc.strerror}", file=str(policy_file)) from None
    except YAMLError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    if isinstance(data.get("shadow"), dict):
        return data["shadow"].get("analysis"), "shadow.analysis."
    if "analysis" in data:
        return data["analysis"], "analysis."
    return data, ""


# ---------------------------------------------------------------------------------------------------
# Samples


def _status_5xx(status: np.ndarray) -> np.ndarray:
    """True where an answer came with 5xx; NaN (no answer) is not a 5xx: it is a transport error."""
    with np.errstate(invalid="ignore"):
        return (status >= 500) & (status < 600)


def _column(table: Any, name: str, dtype: Any = float) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=dtype)


def _objects(table: Any, name: str) -> np.ndarray:
    """A string column as an object array (client keys: None where absent)."""
    return np.asarray(table.column(name).to_pylist(), dtype=object)


def _groups(table: Any, *names: str) -> list[tuple[tuple[str, ...], slice]]:
    """(key values, row slice) of each run of equal `g` (`_grouped_rows`' dense_rank over `names`)."""
    g = _column(table, "g", np.int64)
    if len(g) == 0:
        return []
    starts = np.concatenate(([0], np.flatnonzero(np.diff(g)) + 1))
    ends = np.concatenate((starts[1:], [len(g)]))
    cols = [table.column(n) for n in names]
    return [(tuple("" if c[int(a)].as_py() is None else str(c[int(a)].as_py()) for c in cols), slice(int(a), int(b)))
            for a, b in zip(starts, ends, strict=True)]


ENDPOINT_MAP_VIEW = "endpoint_map"


def register_endpoint_map(store: Any, templater: Any) -> None:
    """Re-template every captured path with `templater` (analyzers.endpoints.EndpointTemplater), as a
    view `endpoint_map(path, endpoint)` the sample queries join: the same mapping the diff engine
    applies when given the templater, so samples, diffs and rates agree on endpoint names."""
    import pyarrow as pa

    paths = store.sql("SELECT DISTINCT path FROM exchanges WHERE path IS NOT NULL").to_arrow_table().column(0)
    mapping = pa.table({"path": paths, "endpoint": templater.template_many(paths)})
    store.con.register(ENDPOINT_MAP_VIEW + "_arrow", mapping)
    store.con.execute(f"CREATE OR REPLACE TEMP VIEW {ENDPOINT_MAP_VIEW} AS SELECT * FROM {ENDPOINT_MAP_VIEW}_arrow")
    store.views.append(ENDPOINT_MAP_VIEW)


def _endpoint_sql(store: Any, alias: str) -> tuple[str, str]:
    """(join clause, endpoint expression) for rows of `alias`: re-templated when a map is registered."""
    if ENDPOINT_MAP_VIEW in store.views:
        return (f"LEFT JOIN {ENDPOINT_MAP_VIEW} m ON m.path = {alias}.path",
                f"coalesce(m.endpoint, {alias}.endpoint)")
    return "", f"{alias}.endpoint"


def _grouped_rows(store: Any, *, alias: str, source: str, where: str, arm: str, columns: str) -> Any:
    """The rows of a sample query as an Arrow table, ordered by (endpoint, `arm`) and then capture order,
    with `g` numbering each (endpoint, arm) run for `_groups`. `alias` names the rows in `source` that
    carry path, ts and request_id."""
    map_join, endpoint = _endpoint_sql(store, alias)
    return store.sql(
        f"SELECT {endpoint} AS endpoint, {arm} AS arm, dense_rank() OVER (ORDER BY {endpoint}, {arm}) AS g, "
        f"{columns} FROM {source} {map_join} WHERE {where} "
        f"ORDER BY {endpoint}, {arm}, {alias}.ts, {alias}.request_id"
    ).to_arrow_table()


@dataclass(frozen=True)
class _Arm:
    """One side's columns of a sample query (or a slice of them): latency (NaN where no answer came),
    5xx, transport error and client key per row."""

    latency_ms: np.ndarray
    status_5xx: np.ndarray
    transport_error: np.ndarray
    client_key: np.ndarray

    @classmethod
    def read(cls, table: Any, prefix: str, client_key: np.ndarray) -> _Arm:
        """The `{prefix}latency_ms`, `{prefix}status` and `{prefix}err` columns of `table`."""
        err = _column(table, f"{prefix}err", bool)
        return cls(latency_ms=np.where(err, np.nan, _column(table, f"{prefix}latency_ms")),
                   status_5xx=_status_5xx(_column(table, f"{prefix}status")), transport_error=err,
                   client_key=client_key)

    def __getitem__(self, rows: slice) -> _Arm:
        return _Arm(self.latency_ms[rows], self.status_5xx[rows], self.transport_error[rows], self.client_key[rows])


def _endpoint_sample(endpoint: str, candidate_service: str, primary: _Arm, candidate: _Arm, *, paired: bool,
                    mismatch: np.ndarray | None = None, compared: np.ndarray | None = None) -> EndpointSample:
    """The EndpointSample of one endpoint × candidate service from its two arms. Client keys are kept
    when any row of either arm has one; in split traffic that means assignment was sticky (the gateway
    sets the key from the sticky cookie / HRW key), while mirrored pairs are paired anyway."""
    from analyzers.verdict import EndpointSample

    keyed = any(k is not None for k in primary.client_key) or any(k is not None for k in candidate.client_key)
    return EndpointSample(
        endpoint=endpoint, paired=paired,
        primary_latency_ms=primary.latency_ms, candidate_latency_ms=candidate.latency_ms,
        primary_5xx=primary.status_5xx, candidate_5xx=candidate.status_5xx,
        primary_transport_error=primary.transport_error, candidate_transport_error=candidate.transport_error,
        primary_client_key=primary.client_key if keyed else None,
        candidate_client_key=candidate.client_key if keyed else None,
        mismatch=mismatch, sticky=keyed and not paired, candidate=candidate_service or None,
        mismatch_compared=compared,
    )


def paired_samples(store: Any, *, use_diffs: bool = True) -> list[EndpointSample]:
    """One paired EndpointSample per (endpoint, candidate service) of mirrored/replayed pairs.

    With `use_diffs` and the diff engine's per-pair summary present (CAPTURE/diffs_summary), the
    samples hold exactly the pairs that were diffed (a live capture may have sealed more since),
    and each pair's mismatch flag: `equal` false is a real difference; NULL (a truncated body kept
    the pair from being compared) counts as a mismatch too, since PASS needs evidence. Pairs whose
    statuses differ (or that got a transport error) are left out of the mismatch rate
    (`mismatch_compared` false): the error guardrails judge them. Without the summary the samples
    carry no mismatch array and the mismatch guardrail has nothing to judge.

    A pair whose only real differences are in unproven fields (volatile-looking, no noise evidence on
    the endpoint: CAPTURE/diffs `unproven`) is flagged `mismatch_unproven`: it can neither fail nor
    pass the mismatch guardrail, whose reason then names those fields and `shadow probe CAPTURE`."""
    modes = ", ".join(f"'{m}'" for m in PAIRED_MODES)
    summary = use_diffs and "diffs_summary" in store.views
    join = ("JOIN diffs_summary d ON d.request_id = p.request_id AND d.c_service IS NOT DISTINCT FROM p.c_service"
            if summary else "")
    unproven = ("d.status_equal AND NOT d.truncated AND d.real_diff_count > 0 "
                "AND d.real_diff_count = d.unproven_diff_count" if summary and _has_column(store, "diffs_summary",
                                                                                       "unproven_diff_count")
                else "false")
    mismatch = (f"d.status_equal AND d.equal IS NOT TRUE AS mismatch, d.status_equal AS compared, {unproven} AS unproven"
                if summary else "NULL::BOOLEAN AS mismatch, NULL::BOOLEAN AS compared, false AS unproven")
    table = _grouped_rows(
        store, alias="p", source=f"pairs p {join}", where=f"p.mode IN ({modes})", arm="p.c_service",
        columns="p.p_latency_ms, p.c_latency_ms, CAST(p.p_status AS DOUBLE) AS p_status, "
        "CAST(p.c_status AS DOUBLE) AS c_status, p.p_error IS NOT NULL AS p_err, "
        f"p.c_error IS NOT NULL AS c_err, p.client_key, {mismatch}, "
        "coalesce(p.p_recorded, false) AS p_recorded")
    clients = _objects(table, "client_key")  # one client per pair: the same key on both sides
    primary, candidate = _Arm.read(table, "p_", clients), _Arm.read(table, "c_", clients)
    flags = _column(table, "mismatch", bool) if summary else None
    compared = _column(table, "compared", bool) if summary else None
    unproven_flags = _column(table, "unproven", bool)
    unproven_fields = _unproven_fields(store) if summary else {}
    recorded = _column(table, "p_recorded", bool)
    samples = []
    for (endpoint, service), rows in _groups(table, "endpoint", "arm"):
        sample = _endpoint_sample(endpoint, service, primary[rows], candidate[rows], paired=True,
                                  mismatch=None if flags is None else flags[rows],
                                  compared=None if compared is None else compared[rows])
        # A replay against recorded answers: the primary's latencies are not live measurements.
        sample.primary_recorded = bool(recorded[rows].any())
        if unproven_flags[rows].any():
            sample.mismatch_unproven = unproven_flags[rows]
            sample.unproven_fields = unproven_fields.get((endpoint, service), ())
            sample.unproven_command = f"shadow probe {store.root}"
        samples.append(sample)
    return samples


def _has_column(store: Any, view: str, column: str) -> bool:
    return any(row[0] == column for row in store.sql(f"DESCRIBE {view}").fetchall())


def _unproven_fields(store: Any) -> dict[tuple[str, str], tuple[str, ...]]:
    """Per (endpoint, candidate service): the unproven fields' pointer templates (CAPTURE/diffs)."""
    if "diffs" not in store.views or not _has_column(store, "diffs", "unproven"):
        return {}
    rows = store.sql("SELECT endpoint, coalesce(c_service, ''), pointer_template FROM diffs WHERE unproven "
                     "GROUP BY ALL ORDER BY ALL").fetchall()
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for endpoint, service, template in rows:
        key = (str(endpoint), str(service))
        out[key] = (*out.get(key, ()), str(template))
    return out


def split_samples(store: Any) -> list[EndpointSample]:
    """One unpaired EndpointSample per (endpoint, candidate service) of split traffic: every primary
    row of the endpoint against that candidate's rows. Assignment counts as sticky when the rows
    carry a client_key (the gateway sets it from the sticky cookie / HRW key)."""
    table = _grouped_rows(
        store, alias="x", source="exchanges x",
        where=f"x.mode = '{SPLIT_MODE}' AND x.role IN ('primary', 'candidate')",
        arm="CASE WHEN x.role = 'primary' THEN '' ELSE x.service END",
        columns="x.latency_ms, CAST(x.status AS DOUBLE) AS status, x.error IS NOT NULL AS err, x.client_key")
    rows = _Arm.read(table, "", _objects(table, "client_key"))
    by_endpoint: dict[str, dict[str, slice]] = {}
    for (endpoint, arm), group in _groups(table, "endpoint", "arm"):
        by_endpoint.setdefault(endpoint, {})[arm] = group  # arm "" = the primary
    samples: list[EndpointSample] = []
    for endpoint, arms in by_endpoint.items():
        primary = rows[arms.get("", slice(0, 0))]
        samples += [_endpoint_sample(endpoint, arm, primary, rows[group], paired=False)
                    for arm, group in arms.items() if arm != ""]
    return samples


# ---------------------------------------------------------------------------------------------------
# Diff fields: the relational half of the diff report


def pairs_per_endpoint(store: Any) -> dict[tuple[str, str], int]:
    """Paired requests per (endpoint, candidate service): those the diff run compared when it ran
    (the rates' denominator must be the pairs the differences were counted on)."""
    modes = ", ".join(f"'{m}'" for m in PAIRED_MODES)
    source = "diffs_summary" if "diffs_summary" in store.views else "pairs"
    rows = store.sql(f"SELECT endpoint, coalesce(c_service, ''), count(*) FROM {source} "
                     f"WHERE mode IN ({modes}) GROUP BY ALL").fetchall()
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
    # unproven is decided per field, so it is one value within each group
    unproven = "bool_or(coalesce(unproven, false))" if _has_column(store, "diffs", "unproven") else "false"
    groups = store.sql(
        f"SELECT {group}, count(*) AS n, count(DISTINCT request_id) AS pairs, {unproven} AS unproven "
        "FROM diffs GROUP BY ALL"
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
    for endpoint, service, kind, op, template, noise, reason, n, pairs, unproven_field in groups:
        k = (endpoint, service, kind, op, template, noise, reason)
        fields.append(FieldDiff(
            endpoint=str(endpoint), c_service=str(service), kind=str(kind), op=str(op),
            pointer_template=str(template), noise=bool(noise), noise_reason=str(reason) or None,
            count=int(n), pairs_affected=int(pairs), pairs_total=pairs_total.get((str(endpoint), str(service)), 0),
            examples=tuple(examples.get(k, ())),
            secondary=evidence.get((str(endpoint), str(service), str(kind), str(template))),
            unproven=bool(unproven_field),
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


def analyze(capture_dir: Path, policy: Policy, *, rules: Any = None, progress: bool | None = None,
            run_diffs: bool = True, sequential_state: Any = None, templater: Any = None,
            engine: str = "duckdb", spark_master: str | None = None) -> AnalysisResult:
    """Diff the capture's pairs (writing CAPTURE/diffs/), build the samples and judge them.

    `engine`: where the samples and the diff-field table are read from, "duckdb" (embedded) or
    "spark" (shadow.engines.spark, `spark_master` or local[2]); the diff stage runs on DuckDB and
    the statistics on the arrays either way. Span attribution needs DuckDB (none on Spark).

    `templater` (analyzers.endpoints.EndpointTemplater, see `learn_templater`) re-templates the
    captured paths for diffs and samples alike; None keeps the `endpoint` the gateway captured,
    unless it predates today's static templating (`static_templater_if_outdated`).
    Raises CaptureError for a missing, empty or malformed capture (one line, naming the path)."""
    from shadow.capture.store import open_store

    capture_dir = Path(capture_dir)
    show = progress_enabled(progress)
    # Open once before diffing: an empty or malformed capture is reported before any work.
    with open_store(capture_dir) as store:
        modes = ", ".join(f"'{m}'" for m in PAIRED_MODES)
        n_pairs = int(store.sql(f"SELECT count(*) FROM pairs WHERE mode IN ({modes})").fetchall()[0][0])
        if templater is None:
            templater = static_templater_if_outdated(store)
    has_pairs = n_pairs > 0
    diff_summary = None
    if run_diffs and has_pairs:
        diff_summary = _run_diffs(capture_dir, rules, show, n_pairs, templater)
    from shadow.engines import open_engine_store

    with open_engine_store(capture_dir, engine, spark_master=spark_master) as store, stage("reading samples", show):
        totals = pairs_per_endpoint(store)
        if templater is not None:
            register_endpoint_map(store, templater)
        samples = paired_samples(store, use_diffs=run_diffs) + split_samples(store)
        if not samples:
            raise NothingToJudge(nothing_to_judge(store, capture_dir))
        fields = field_diffs(store, totals)
        attribution = _span_attribution(store) if engine == "duckdb" else []
    from analyzers.verdict import judge  # scipy: imported only once there is something to judge

    with stage(f"judging {len(samples)} endpoint(s)", show):
        verdict = judge(samples, policy, sequential_state=sequential_state)
    pairs_by_endpoint = {(e if not s else f"{e} → {s}"): n for (e, s), n in totals.items()}
    return AnalysisResult(capture_dir=capture_dir, policy=policy, samples=tuple(samples), verdict=verdict,
                          fields=tuple(fields), pairs_by_endpoint=pairs_by_endpoint,
                          diff_summary=diff_summary, span_attribution=tuple(attribution), rules=rules)


def nothing_to_judge(store: Any, capture_dir: Path) -> str:
    """Why a capture has nothing to compare, with what would fix it (one line)."""
    split = store.sql(f"SELECT role, service, count(*) FROM exchanges WHERE mode = '{SPLIT_MODE}' "
                      "GROUP BY ALL ORDER BY role, service").fetchall()
    base = f"{capture_dir}: nothing to judge"
    if split and not any(role == "candidate" for role, _, _ in split):
        seen = ", ".join(f"{service} ({n:,} requests)" for _, service, n in split)
        return (f"{base}: split traffic went to {seen}, but no service is a declared candidate: list the new "
                "one(s) under shadow.split.candidates in the gateway config (docs/gateway.md) so their answers "
                "are captured as role=candidate")
    if split:
        return f"{base}: the split traffic reached only the candidate (no primary answered an endpoint it served)"
    modes = ", ".join(f"{m} {n:,}" for m, n in store.sql(
        "SELECT mode, count(*) FROM exchanges GROUP BY ALL ORDER BY mode").fetchall())
    return (f"{base}: no mirrored, replayed or split exchanges with both a primary and a candidate "
            f"(exchanges by mode: {modes or 'none'}); mirror a route to the candidate (docs/gateway.md) or "
            "shadow replay the traffic to it")


def static_templater_if_outdated(store: Any) -> Any:
    """A templater with today's static rules (slug-like segments included) when the captured
    endpoints predate them (a capture whose `endpoint` column still holds /etag/abc12), else None:
    every capture is analysed with the same default templating, at no cost for a current one."""
    from analyzers.endpoints import EndpointTemplater
    from shadow.capture.endpoints import template_path

    rows = store.sql("SELECT DISTINCT endpoint FROM exchanges WHERE endpoint IS NOT NULL").fetchall()
    if any(template_path(str(e)) != e for (e,) in rows):
        return EndpointTemplater()
    return None


def _span_attribution(store: Any) -> list[Any]:
    """Where a regressed endpoint's extra time sits, from the capture's spans (none: an empty list)."""
    if "spans" not in store.tables():
        return []
    from analyzers.spans import span_attribution

    return span_attribution(store.con)


def _run_diffs(capture_dir: Path, rules: Any, show: bool, pairs: int, templater: Any = None) -> Any:
    from analyzers.diffs_table import compute_diffs
    from analyzers.rules import DEFAULT_RULES

    bar = Progress("diffing pairs", None, show)
    try:
        # Worker processes pay off only on large captures (forkserver start-up costs about a second).
        workers = 1 if pairs < PARALLEL_DIFF_MIN_PAIRS else None
        return compute_diffs(capture_dir, rules if rules is not None else DEFAULT_RULES,
                             progress=_progress_callback(bar), workers=workers, templater=templater)
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
