"""Noise cancellation: which differences would appear between two correct answers anyway.

Three sources, and every difference they explain stays in the diffs table, marked `noise=True`
with the reason (never dropped):

1. A secondary (a second copy of the primary's code answering the same request):
   * per request (Diferencia): a candidate difference at a pointer where the secondary also differs
     from the primary on *this* request — or under a node where it does — is noise,
     reason "secondary differs on this request";
   * per field (endpoint, candidate service, kind, pointer template), over the requests that had a
     secondary: the candidate's and the secondary's difference indicators are paired on the same
     requests, so the test is an exact one-sided McNemar test on the discordant requests (candidate
     differs & secondary not: b; secondary differs & candidate not: c; p = P[Binom(b+c, ½) ≥ b]),
     Holm-corrected across all tested fields. A field is real only if the candidate differs
     significantly more often than the secondary; otherwise its differences are noise,
     reason "secondary rate not lower (p=0.41)". A field on which the secondary never differed has
     no noise evidence and stays real (so few requests can never turn a real change into noise).
     A secondary that failed to answer (transport error) is left out for that request.
     Diffy's count rule is reported beside it (raw > noise, |raw−noise|/(raw+noise) > 20 %,
     |raw−noise|/n > 0.03 %) for comparison; it decides nothing.
2. Without a secondary, the noise probe: re-send a few safe (GET/HEAD) captured requests to the
   primary twice and learn which pointer templates differ between two of its own answers
   (`probe_noise`, persisted to CAPTURE/noise/probe.parquet, used by compute_diffs when present),
   reason "probe: differs between two primary answers (14/20)".
3. With no set-up at all, repeated identical requests already in the capture (same method, path,
   query, body and the request headers that choose an answer: Authorization, Cookie, Accept,
   Accept-Language; two or more primary answers of the same status) are the same evidence as the
   probe, for free (`repeat_evidence`), reason "differs between the primary's own answers to
   identical requests (9/10)".
4. User rules (analyzers/rules.py), reason "rule: ignore **/requestId" etc., set by the diff engine.

An endpoint with at least MIN_EVIDENCE primary-vs-primary comparisons (secondary requests, probed
requests, repeated requests) has noise evidence: a field stable between the primary's own answers
that the candidate changes is real. Without it, a field whose every difference looks volatile
(analyzers/volatility.py) is *unproven*: it can neither fail nor pass the mismatch guardrail.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from analyzers.diff import Difference, ExchangeSide, diff_pair
from analyzers.rules import RuleSet
from shadow.errors import CaptureError

SECONDARY_REASON = "secondary differs on this request"
DEFAULT_ALPHA = 0.05
PROBE_FILE = Path("noise") / "probe.parquet"
MIN_EVIDENCE = 5  # primary-vs-primary comparisons on an endpoint before a stable field counts as proven stable
REPEAT_GROUPS_PER_ENDPOINT = 50  # repeated requests compared per endpoint (bounds the work)
REPEAT_SOURCE = "repeats"
MAX_REPEAT_PATHS = 400  # and at most this many distinct paths' worth of them in all
CHOOSING_HEADERS = ("authorization", "cookie", "accept", "accept-language")  # same answer needs the same ones

FieldKey = tuple[str, str, str, str]  # endpoint, c_service, kind, pointer_template
ProbeKey = tuple[str, str, str]  # endpoint, kind, pointer_template


# ---------------------------------------------------------------------------------------------------
# 1. Secondary, per request


def _ancestors(pointer: str) -> Iterable[str]:
    yield pointer
    while pointer:
        pointer = pointer[: pointer.rfind("/")]
        yield pointer


def mark_secondary_noise(candidate: Sequence[Difference], secondary: Sequence[Difference]) -> list[Difference]:
    """Candidate differences at a pointer (or under a node) where the secondary differs from the
    primary on the same request become noise. Already-noise rows keep their first reason."""
    if not secondary:
        return list(candidate)
    differing = {(d.kind, d.pointer) for d in secondary}
    out = []
    for d in candidate:
        if not d.noise and any((d.kind, p) in differing for p in _ancestors(d.pointer)):
            d = d._replace(noise=True, noise_reason=SECONDARY_REASON)
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------------
# 1. Secondary, per field: counts, the paired test, Holm, Diffy's rule


@dataclass
class FieldCounts:
    """Per field: requests (with a secondary) where only the candidate, only the secondary, or both
    differed from the primary; and per (endpoint, c_service) the number of such requests."""

    fields: dict[FieldKey, list[int]] = field(default_factory=dict)  # [c_only, s_only, both]
    requests: dict[tuple[str, str], int] = field(default_factory=dict)

    def add_request(self, endpoint: str, c_service: str, c_templates: set[tuple[str, str]],
                    s_templates: set[tuple[str, str]], *, count_request: bool = True) -> None:
        if count_request:
            key = (endpoint, c_service)
            self.requests[key] = self.requests.get(key, 0) + 1
        for kind, tpl in c_templates | s_templates:
            counts = self.fields.setdefault((endpoint, c_service, kind, tpl), [0, 0, 0])
            in_c, in_s = (kind, tpl) in c_templates, (kind, tpl) in s_templates
            counts[2 if in_c and in_s else 0 if in_c else 1] += 1

    def merge(self, other: FieldCounts) -> None:
        for k, v in other.fields.items():
            mine = self.fields.setdefault(k, [0, 0, 0])
            for i in range(3):
                mine[i] += v[i]
        for rk, n in other.requests.items():
            self.requests[rk] = self.requests.get(rk, 0) + n


@dataclass(frozen=True)
class FieldNoise:
    endpoint: str
    c_service: str
    kind: str
    pointer_template: str
    requests: int  # requests with a secondary on this endpoint
    candidate_diffs: int  # requests where the candidate differed here (Diffy's "raw")
    secondary_diffs: int  # requests where the secondary differed here (Diffy's "noise")
    candidate_only: int  # discordant: candidate differs, secondary not
    secondary_only: int
    p_value: float | None  # exact one-sided McNemar; None when untested (secondary never differed)
    p_holm: float | None
    diffy_real: bool  # Diffy's count thresholds say "real"
    real: bool  # our rule: significant (Holm) — or no noise evidence at all
    reason: str | None  # the noise_reason given to this field's differences when not real


def diffy_real(raw: int, noise: int, requests: int, *, rel: float = 0.20, abs_: float = 0.0003) -> bool:
    if raw <= noise or raw + noise == 0 or requests == 0:
        return False
    return (raw - noise) / (raw + noise) > rel and (raw - noise) / requests > abs_


def mcnemar_one_sided(b: int, c: int) -> float:
    """P[X ≥ b] for X ~ Binomial(b + c, ½): evidence that b (candidate-only) exceeds c."""
    if b + c == 0:
        return 1.0
    from scipy.stats import binom

    return float(binom.sf(b - 1, b + c, 0.5))


def holm(p_values: Sequence[float]) -> list[float]:
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def classify_fields(counts: FieldCounts, *, alpha: float = DEFAULT_ALPHA) -> list[FieldNoise]:
    """One FieldNoise per field where the candidate differed on a request with a secondary."""
    keys = [k for k, v in counts.fields.items() if v[0] + v[2] > 0]
    tested = [k for k in keys if counts.fields[k][1] + counts.fields[k][2] > 0]
    raw_p = [mcnemar_one_sided(counts.fields[k][0], counts.fields[k][1]) for k in tested]
    adjusted = dict(zip(tested, holm(raw_p), strict=True))
    p_by_key = dict(zip(tested, raw_p, strict=True))
    out = []
    for k in sorted(keys):
        c_only, s_only, both = counts.fields[k]
        n = counts.requests.get((k[0], k[1]), 0)
        p, ph = p_by_key.get(k), adjusted.get(k)
        real = ph is None or ph < alpha
        reason = None if real else f"secondary rate not lower (p={ph:.2g})"
        out.append(FieldNoise(k[0], k[1], k[2], k[3], n, c_only + both, s_only + both, c_only, s_only, p, ph,
                              diffy_real(c_only + both, s_only + both, n), real, reason))
    return out


FIELD_NOISE_SCHEMA = pa.schema([
    ("endpoint", pa.string()), ("c_service", pa.string()), ("kind", pa.string()),
    ("pointer_template", pa.string()), ("requests", pa.int64()), ("candidate_diffs", pa.int64()),
    ("secondary_diffs", pa.int64()), ("candidate_only", pa.int64()), ("secondary_only", pa.int64()),
    ("p_value", pa.float64()), ("p_holm", pa.float64()), ("diffy_real", pa.bool_()), ("real", pa.bool_()),
    ("reason", pa.string()),
])


def field_noise_table(fields: Sequence[FieldNoise]) -> pa.Table:
    cols = {name: [getattr(f, name) for f in fields] for name in FIELD_NOISE_SCHEMA.names}
    return pa.table(cols, schema=FIELD_NOISE_SCHEMA)


# ---------------------------------------------------------------------------------------------------
# 2. The probe: the primary against itself


@dataclass(frozen=True)
class ProbeResult:
    """Per (endpoint, kind, pointer_template): on how many probed requests two primary answers
    differed, out of how many probed on that endpoint."""

    differing: dict[ProbeKey, tuple[int, int]]
    probed: int  # requests probed in all
    failed: int  # requests whose re-send failed (not counted)
    endpoints: dict[str, int] = field(default_factory=dict)  # requests compared per endpoint
    source: str = "probe"  # "probe" (shadow probe) | REPEAT_SOURCE (repeated requests in the capture)

    def reason(self, endpoint: str, kind: str, pointer_template: str) -> str | None:
        for tpl in _ancestors(pointer_template):
            hit = self.differing.get((endpoint, kind, tpl))
            if hit:
                if self.source == REPEAT_SOURCE:
                    return f"differs between the primary's own answers to identical requests ({hit[0]}/{hit[1]})"
                return f"probe: differs between two primary answers ({hit[0]}/{hit[1]})"
        return None

    def compared(self, endpoint: str) -> int:
        """Primary-vs-primary comparisons made on `endpoint` (older probe files: the most seen on a field)."""
        if endpoint in self.endpoints:
            return self.endpoints[endpoint]
        return max((of for (ep, _k, _t), (_n, of) in self.differing.items() if ep == endpoint), default=0)


PROBE_SCHEMA = pa.schema([("endpoint", pa.string()), ("kind", pa.string()), ("pointer_template", pa.string()),
                          ("differing", pa.int64()), ("probed", pa.int64())])

_HOP_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
                          "trailer", "upgrade", "proxy-connection", "accept-encoding"})


def probe_noise(capture_dir: str | Path, *, base_url: str | None = None, sample: int = 20, per_endpoint: int = 5,
                templater: Any = None, timeout: float = 5.0, seed: int = 0, save: bool = True,
                client: Any = None) -> ProbeResult:
    """Re-send up to `sample` safe primary requests (≤ `per_endpoint` per endpoint) twice each to the
    primary (`base_url`, else the captured `upstream`) and count, per pointer template, the requests
    whose two answers differed. Saved to CAPTURE/noise/probe.parquet unless `save=False`.

    Requests are re-sent with their captured headers, minus hop-by-hop ones and values the capture
    redacted (a redacted Authorization cannot be replayed; such endpoints may answer 401 twice,
    which then shows no noise)."""
    import httpx

    from shadow.capture.store import open_store

    root = Path(capture_dir)
    with open_store(root) as store:
        table = store.con.sql(
            "SELECT endpoint, path, query, method, upstream, req_headers FROM exchanges "
            "WHERE role = 'primary' AND upper(method) IN ('GET', 'HEAD') AND status IS NOT NULL "
            "QUALIFY row_number() OVER (PARTITION BY endpoint, path, query ORDER BY ts) = 1"
        ).to_arrow_table()
    assert table is not None
    rows = table.to_pylist()
    rng = random.Random(seed)
    rng.shuffle(rows)
    chosen: list[dict[str, Any]] = []
    per: dict[str, int] = {}
    for r in rows:
        ep = _endpoint_of(r, templater)
        if per.get(ep, 0) >= per_endpoint:
            continue
        per[ep] = per.get(ep, 0) + 1
        r["endpoint"] = ep
        chosen.append(r)
        if len(chosen) >= sample:
            break
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    differing: dict[ProbeKey, int] = {}
    probed: dict[str, int] = {}
    failed = 0
    empty = RuleSet()
    try:
        for r in chosen:
            base = (base_url or r.get("upstream") or "").rstrip("/")
            if not base:
                failed += 1
                continue
            url = base + (r["path"] or "/") + (f"?{r['query']}" if r.get("query") else "")
            headers = [(h["name"], h["value"]) for h in (r.get("req_headers") or [])
                       if h["name"].lower() not in _HOP_HEADERS and not str(h["value"]).startswith("redacted:")]
            try:
                first, second = (_fetch(http, r["method"], url, headers) for _ in range(2))
            except httpx.HTTPError:
                failed += 1
                continue
            ep = r["endpoint"]
            probed[ep] = probed.get(ep, 0) + 1
            for kind, tpl in {(d.kind, d.pointer_template) for d in diff_pair(first, second, empty, endpoint=ep)}:
                differing[(ep, kind, tpl)] = differing.get((ep, kind, tpl), 0) + 1
    finally:
        if own_client:
            http.close()
    result = ProbeResult({k: (n, probed[k[0]]) for k, n in differing.items()}, sum(probed.values()), failed,
                         dict(probed))
    if save:
        save_probe(root, result)
    return result


def _fetch(http: Any, method: str, url: str, headers: list[tuple[str, str]]) -> ExchangeSide:
    resp = http.request(method.upper(), url, headers=headers)
    return ExchangeSide(resp.status_code, list(resp.headers.multi_items()), resp.content,
                        resp.headers.get("content-type"))


def _endpoint_of(row: Mapping[str, Any], templater: Any) -> str:
    if templater is not None:
        return str(templater.template(row["path"] or "/"))
    if row.get("endpoint"):
        return str(row["endpoint"])
    from shadow.capture.endpoints import template_path

    return template_path(row["path"] or "/")


def save_probe(capture_dir: str | Path, result: ProbeResult) -> Path:
    target = Path(capture_dir) / PROBE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(result.differing)
    table = pa.table({"endpoint": [k[0] for k in keys], "kind": [k[1] for k in keys],
                      "pointer_template": [k[2] for k in keys],
                      "differing": [result.differing[k][0] for k in keys],
                      "probed": [result.differing[k][1] for k in keys]}, schema=PROBE_SCHEMA)
    table = table.replace_schema_metadata({"probed": str(result.probed), "failed": str(result.failed),
                                           "endpoints": json.dumps(result.endpoints)})
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target


def load_probe(capture_dir: str | Path) -> ProbeResult | None:
    path = Path(capture_dir) / PROBE_FILE
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
    except Exception as e:
        raise CaptureError(f"{path}: cannot read the noise probe: {str(e).splitlines()[0]}") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    rows = table.to_pylist()
    return ProbeResult({(r["endpoint"], r["kind"], r["pointer_template"]): (r["differing"], r["probed"])
                        for r in rows}, int(meta.get("probed", 0)), int(meta.get("failed", 0)),
                       {str(k): int(v) for k, v in json.loads(meta.get("endpoints", "{}")).items()})


# ---------------------------------------------------------------------------------------------------
# 3. Repeated identical requests: the primary against itself, for free


def _safe_primary(x: str) -> str:
    """SQL: row `x` is a primary's answer to a GET/HEAD, complete (the bodies that can be compared)."""
    return (f"{x}.role = 'primary' AND {x}.status IS NOT NULL AND upper({x}.method) IN ('GET', 'HEAD') "
            f"AND NOT coalesce({x}.truncated, false)")


# First the cheap question (no body or header read): is any URL asked twice at all?
_REPEATED_URLS = (f"SELECT upper(x.method) AS m, x.path, coalesce(x.query, '') AS q FROM exchanges x "
                  f"WHERE {_safe_primary('x')} GROUP BY ALL HAVING count(*) >= 2")


def _repeats_query(per_endpoint: int) -> str:
    chosen = ", ".join(f"'{h}'" for h in CHOOSING_HEADERS)
    return f"""
    WITH urls AS ({_REPEATED_URLS}), prim AS (
      SELECT x.exchange_id, x.endpoint, x.path, x.ts, x.status,
        hash(upper(x.method), x.path, coalesce(x.query, ''), coalesce(x.req_body, ''::BLOB),
             list_sort(list_transform(list_filter(coalesce(x.req_headers, []), lambda h: lower(h.name) IN ({chosen})),
                                      lambda h: lower(h.name) || ':' || h.value))) AS grp
      FROM exchanges x JOIN urls u ON u.m = upper(x.method) AND u.path = x.path AND u.q = coalesce(x.query, '')
      WHERE {_safe_primary('x')}
    ), repeated AS (
      SELECT grp FROM prim GROUP BY grp HAVING count(*) >= 2
    ), firsts AS (
      SELECT p.*, row_number() OVER (PARTITION BY p.grp ORDER BY p.ts, p.exchange_id) AS k
      FROM prim p SEMI JOIN repeated r ON p.grp = r.grp
    ), groups AS (
      SELECT grp, row_number() OVER (PARTITION BY min(path) ORDER BY grp) AS g FROM firsts GROUP BY grp
    )
    SELECT f.grp, f.k, f.endpoint, f.path, x.status, x.resp_headers, x.resp_body, x.resp_content_type, x.body_hash,
           x.truncated, x.error
    FROM firsts f JOIN groups USING (grp) JOIN exchanges x ON x.exchange_id = f.exchange_id
    WHERE f.k <= 2 AND groups.g <= {int(per_endpoint)}
    ORDER BY f.grp, f.k
    LIMIT {int(per_endpoint) * 2 * MAX_REPEAT_PATHS}
    """


def repeat_evidence(con: Any, *, templater: Any = None, per_endpoint: int = REPEAT_GROUPS_PER_ENDPOINT) -> ProbeResult:
    """Per (endpoint, kind, pointer template): on how many repeated identical requests (see module
    doc) the primary's first two answers differed, out of how many compared on the endpoint. `con`
    is a DuckDB connection with the capture's `exchanges` view."""
    if not con.sql(f"SELECT 1 FROM ({_REPEATED_URLS}) LIMIT 1").fetchall():
        return ProbeResult({}, 0, 0, {}, REPEAT_SOURCE)
    rows = con.sql(_repeats_query(per_endpoint)).to_arrow_table().to_pylist()
    differing: dict[ProbeKey, int] = {}
    compared: dict[str, int] = {}
    empty = RuleSet()
    for first, second in zip(rows[::2], rows[1::2], strict=False):
        if first["grp"] != second["grp"] or first["status"] != second["status"]:
            continue  # a status change between two answers says nothing about body fields
        ep = _endpoint_of(first, templater)
        per_ep = compared.get(ep, 0)
        if per_ep >= per_endpoint:
            continue
        compared[ep] = per_ep + 1
        a, b = ExchangeSide.from_row(first), ExchangeSide.from_row(second)
        for kind, tpl in {(d.kind, d.pointer_template) for d in diff_pair(a, b, empty, endpoint=ep)}:
            differing[(ep, kind, tpl)] = differing.get((ep, kind, tpl), 0) + 1
    return ProbeResult({k: (n, compared[k[0]]) for k, n in differing.items()}, sum(compared.values()), 0,
                       compared, REPEAT_SOURCE)
