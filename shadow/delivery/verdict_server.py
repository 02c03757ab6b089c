"""`shadow serve-verdict CAPTURE`: the cutover verdict over HTTP, for progressive-delivery controllers.

    GET /verdict  -> 200 {"verdict": "pass"|"fail"|"inconclusive", "score": …, "results": […], …}
                     Argo Rollouts' web metric provider: jsonPath "{$.verdict}",
                     successCondition: result == "pass", failureCondition: result == "fail".
    GET|POST /gate -> 200 on pass, 412 on fail, 503 on inconclusive (same JSON body).
                     Flagger webhooks (pre-rollout / rollout) treat any non-2xx as "not yet/no".
    GET /metrics  -> the verdict and every guardrail's figures in Prometheus' text format
    GET /healthz  -> 200 "ok"
    HEAD on each: the same status and headers, no body.

/verdict, /gate and /metrics take `?since=` (an ISO 8601 time, or a duration: "30m" = the last 30
minutes), `?window=` (a duration, the same as `since=` one) and `?endpoint=` (a glob over the
templated endpoints, `/api/orders*`): the verdict of only those requests (shadow/capture/subset.py),
computed as one look (a sequential policy's state belongs to the whole capture). A bad value is
400 with the reason.

Argo Rollouts AnalysisTemplate (web provider):

    metrics:
      - name: shadow-verdict
        interval: 1m
        successCondition: result == "pass"
        failureCondition: result == "fail"      # neither: inconclusive, measured again
        inconclusiveLimit: 30
        provider:
          web:
            url: http://shadow-verdict:9464/verdict
            jsonPath: "{$.verdict}"

Flagger canary webhook: `- name: shadow-gate, type: rollout, url: http://shadow-verdict:9464/gate`.

The verdict is recomputed from the capture on request (the gateway keeps appending to it), at most
once per `--cache-seconds`: concurrent polls share one computation. A policy with `sequential: true`
makes every computation one look of an anytime-valid test (reference/statistics.md: a live canary
polled repeatedly), with the looks' state kept in CAPTURE/_verdict/sequential_state.json. When the capture cannot be
judged (empty, unreadable), /verdict still answers 200 with verdict "inconclusive" and the error,
so a controller sees "no evidence" rather than a scrape failure; /gate answers 503.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from shadow.capture.subset import SubsetSpec

GATE_STATUS = {"pass": 200, "fail": 412, "inconclusive": 503}
SUBSET_KEYS = ("since", "window", "endpoint")
MAX_SUBSETS = 32  # distinct (since, window, endpoint) queries cached at once


@dataclass(frozen=True)
class CachedVerdict:
    document: dict[str, Any]
    computed_at: float  # time.monotonic()


class VerdictService:
    """Computes the verdict document for a capture, caching it for `cache_seconds`.

    One computation at a time: concurrent polls of an empty cache wait for it; once a verdict exists,
    polls during a recomputation get the previous one (stale while revalidating), so a controller's
    short HTTP timeout is never spent waiting on a large capture's analysis."""

    def __init__(self, compute: Callable[[], dict[str, Any]], *, cache_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._compute = compute
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._cached: CachedVerdict | None = None
        self._computing = False
        self.computations = 0

    def current(self) -> dict[str, Any]:
        with self._cond:
            while True:
                cached = self._cached
                if cached is not None and self._clock() - cached.computed_at < self._cache_seconds:
                    return cached.document
                if not self._computing:
                    self._computing = True
                    self.computations += 1
                    break
                if cached is not None:
                    return cached.document
                self._cond.wait()
        try:
            document = self._compute()
            with self._cond:
                self._cached = CachedVerdict(document, self._clock())
            return document
        finally:
            with self._cond:
                self._computing = False
                self._cond.notify_all()

    def warm(self) -> threading.Thread:
        """Start the first computation in the background (at server start)."""
        thread = threading.Thread(target=self._warm, name="verdict-warm-up", daemon=True)
        thread.start()
        return thread

    def _warm(self) -> None:
        # On failure nothing is cached: the next poll computes again and reports the problem.
        with contextlib.suppress(Exception):
            self.current()


def parse_subset(query: Mapping[str, str], now: datetime | None = None) -> SubsetSpec:
    """?since= (ISO 8601 time or a duration back from now), ?window= (a duration back from now),
    ?endpoint= (a glob) → the part of the capture to judge. ValueError names the bad parameter."""
    from shadow.yamlconfig import parse_duration

    now = now or datetime.now(UTC)
    since: datetime | None = None
    for key in ("since", "window"):
        text = (query.get(key) or "").strip()
        if not text:
            continue
        try:
            start = now - timedelta(seconds=parse_duration(text))
        except ValueError:
            if key == "window":
                raise ValueError(f"window={text!r}: expected a duration like 30m, 1h or 90s") from None
            try:
                start = datetime.fromisoformat(text.replace(" ", "+"))  # a '+' in a URL query arrives as ' '
            except ValueError:
                raise ValueError(f"since={text!r}: expected an ISO 8601 time (2026-12-07T10:00:00Z) "
                                 "or a duration like 30m") from None
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
        since = start if since is None else max(since, start)  # both given: the later start wins
    endpoint = (query.get("endpoint") or "").strip() or None
    return SubsetSpec(since=since, endpoint=endpoint)


class WindowedVerdicts:
    """The verdicts of parts of the capture, one cached VerdictService per distinct query (the
    window moves with the clock: "30m" is recomputed, like the whole verdict, every cache period)."""

    def __init__(self, compute: Callable[[SubsetSpec], dict[str, Any]], *, cache_seconds: float = 5.0,
                 max_entries: int = MAX_SUBSETS) -> None:
        self._compute = compute
        self._cache_seconds = cache_seconds
        self._max = max_entries
        self._lock = threading.Lock()
        self._services: OrderedDict[tuple[str, ...], VerdictService] = OrderedDict()

    def current(self, query: Mapping[str, str]) -> dict[str, Any]:
        parse_subset(query)  # a bad value fails now, before anything is cached under it
        key = tuple((query.get(k) or "").strip() for k in SUBSET_KEYS)
        with self._lock:
            service = self._services.get(key)
            if service is None:
                service = VerdictService(lambda: self._compute(parse_subset(query)), cache_seconds=self._cache_seconds)
                self._services[key] = service
                while len(self._services) > self._max:
                    self._services.popitem(last=False)
            self._services.move_to_end(key)
        return service.current()


def state_path(capture: Path) -> Path:
    return capture / "_verdict" / "sequential_state.json"


def load_sequential_state(capture: Path) -> Any:
    """The anytime-valid monitoring state of earlier looks (policy `sequential: true`), so a restarted
    server keeps counting looks instead of starting over (which would spend alpha afresh)."""
    from analyzers.sequential import SequentialState
    from shadow.errors import ShadowError

    path = state_path(capture)
    if not path.is_file():
        return SequentialState()
    try:
        return SequentialState.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ShadowError(f"{path}: cannot read the sequential state: {exc}") from None


def save_sequential_state(capture: Path, state: Any) -> None:
    path = state_path(capture)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state.to_dict()), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash leaves the previous look's state, never half a file


def verdict_document(capture: Path, policy: Any, rules: Any, *, sequential_state: Any = None,
                     learn_endpoints: bool = False) -> dict[str, Any]:
    """The JSON served at /verdict; judging errors become an "inconclusive" document.

    With `sequential_state` (policy `sequential: true`) every computation is one look of an
    anytime-valid test, and the state is saved under CAPTURE/_verdict/ after it."""
    from analyzers.pipeline import analyze, learn_templater
    from analyzers.report import overall_name, verdict_json
    from shadow.errors import ShadowError

    try:
        templater = learn_templater(capture) if learn_endpoints else None
        result = analyze(capture, policy, rules=rules, progress=False, sequential_state=sequential_state,
                         templater=templater)
        if sequential_state is not None:
            save_sequential_state(capture, sequential_state)
    except ShadowError as exc:
        return {"verdict": "inconclusive", "score": 0.0, "results": [], "error": exc.format_message(),
                "computed_at": time.time()}
    doc: dict[str, Any] = json.loads(verdict_json(result))
    for field in doc.get("diff_fields", []):
        field.pop("examples", None)  # polled every few seconds: keep the answer small (the report has them)
    doc["verdict"] = overall_name(result.verdict).lower()
    doc.setdefault("score", float(getattr(result.verdict, "score", 0.0)))
    doc.setdefault("results", [])
    doc["computed_at"] = time.time()
    return doc


def subset_verdict_document(capture: Path, spec: SubsetSpec, policy: Any, rules: Any, *,
                            learn_endpoints: bool = False) -> dict[str, Any]:
    """The verdict of the requests `spec` selects: written as a capture of their own in a temporary
    folder and judged by the same pipeline (one look: no sequential state)."""
    import tempfile

    from shadow.capture.subset import write_subset
    from shadow.errors import ShadowError

    subset = {"since": spec.since.isoformat() if spec.since else None, "endpoint": spec.endpoint}
    with tempfile.TemporaryDirectory(prefix="shadow-verdict-subset-") as tmp:
        try:
            rows = write_subset(capture, Path(tmp), spec)
        except ShadowError as exc:
            rows, error = 0, exc.format_message()
        else:
            error = f"{capture}: no exchanges ({spec.describe()})"
        if rows == 0:
            return {"verdict": "inconclusive", "score": 0.0, "results": [], "error": error,
                    "subset": {**subset, "exchanges": 0}, "computed_at": time.time()}
        doc = verdict_document(Path(tmp), policy, rules, learn_endpoints=learn_endpoints)
    doc["capture"] = str(capture)
    doc["subset"] = {**subset, "exchanges": rows}
    return doc


def _label(value: Any) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return str("" if value is None else value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample_value(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return repr(number) if number == number and abs(number) != float("inf") else None


METRICS_HELP = (
    ("shadow_verdict", "The cutover verdict: 1 on the current state (pass, fail, inconclusive), 0 on the others."),
    ("shadow_verdict_score", "Share of traffic on endpoints proven non-inferior, 0-100 (display only)."),
    ("shadow_verdict_computed_timestamp_seconds", "When the verdict was computed (Unix time)."),
    ("shadow_guardrail_class", "1 on a guardrail's class (PASS, FAIL, INCONCLUSIVE, INSUFFICIENT_DATA)."),
    ("shadow_guardrail_estimate", "The guardrail's estimate: a candidate/primary ratio, or a rate (difference)."),
    ("shadow_guardrail_interval_upper", "Upper end of the estimate's interval (the non-inferiority bound)."),
    ("shadow_guardrail_margin", "The margin the upper bound must stay under to pass."),
    ("shadow_guardrail_samples", "Requests per arm the guardrail was judged on."),
    ("shadow_guardrail_needed_samples", "Requests per arm that would settle an open guardrail."),
    ("shadow_guardrail_harm_p_adjusted", "The harm test's p-value after Holm (small: significantly worse)."),
)


def metrics_text(doc: Mapping[str, Any]) -> str:
    """A verdict document (/verdict's JSON) in Prometheus' text exposition format (version 0.0.4)."""
    samples: dict[str, list[str]] = {name: [] for name, _ in METRICS_HELP}
    state = str(doc.get("verdict") or "inconclusive")
    for s in ("pass", "fail", "inconclusive"):
        samples["shadow_verdict"].append(f'shadow_verdict{{state="{s}"}} {1 if s == state else 0}')
    score = _sample_value(doc.get("score"))
    if score is not None:
        samples["shadow_verdict_score"].append(f"shadow_verdict_score {score}")
    when = _sample_value(doc.get("computed_at"))
    if when is not None:
        samples["shadow_verdict_computed_timestamp_seconds"].append(f"shadow_verdict_computed_timestamp_seconds {when}")
    for r in doc.get("results") or ():
        labels = (f'endpoint="{_label(r.get("endpoint"))}",candidate="{_label(r.get("candidate"))}",'
                  f'metric="{_label(r.get("metric"))}"')
        for cls in ("PASS", "FAIL", "INCONCLUSIVE", "INSUFFICIENT_DATA"):
            samples["shadow_guardrail_class"].append(
                f'shadow_guardrail_class{{{labels},class="{cls}"}} {1 if r.get("class") == cls else 0}')
        interval = r.get("interval") or (None, None)
        for name, value in (("shadow_guardrail_estimate", r.get("estimate")),
                            ("shadow_guardrail_interval_upper", interval[1]),
                            ("shadow_guardrail_margin", r.get("margin")),
                            ("shadow_guardrail_needed_samples", r.get("needed_n")),
                            ("shadow_guardrail_harm_p_adjusted", r.get("p_harm_adjusted"))):
            text = _sample_value(value)
            if text is not None:
                samples[name].append(f"{name}{{{labels}}} {text}")
        for arm in ("primary", "candidate"):
            n = _sample_value(r.get(f"n_{arm}"))
            if n is not None:
                samples["shadow_guardrail_samples"].append(f'shadow_guardrail_samples{{{labels},arm="{arm}"}} {n}')
    lines = []
    for name, help_text in METRICS_HELP:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples[name]]
    return "\n".join(lines) + "\n"


def make_server(service: VerdictService, host: str, port: int, *,
                subsets: WindowedVerdicts | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "shadow-verdict"

        def log_message(self, format: str, *args: object) -> None:
            pass  # polled every few seconds: access logs would drown everything else

        def _send(self, status: int, body: bytes, content_type: str, head: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _drain_body(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)  # Flagger POSTs its canary metadata; we do not need it

        def _route(self, head: bool = False) -> None:
            self._drain_body()
            path, _, query_text = self.path.partition("?")
            path = path.rstrip("/") or "/"
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain", head)
                return
            if path not in ("/verdict", "/gate", "/metrics"):
                self._send(404, b'{"error": "not found; try /verdict, /gate or /metrics"}\n', "application/json", head)
                return
            query = {k: v[-1] for k, v in parse_qs(query_text).items()}
            try:
                subset = any(query.get(k) for k in SUBSET_KEYS)
                if subset and subsets is None:
                    raise ValueError("this server judges the whole capture only")
                doc = subsets.current(query) if subset and subsets is not None else service.current()
            except ValueError as exc:
                self._send(400, (json.dumps({"error": str(exc)}) + "\n").encode(), "application/json", head)
                return
            except Exception as exc:  # the server must keep answering whatever one computation did
                doc = {"verdict": "inconclusive", "score": 0.0, "results": [],
                       "error": f"{type(exc).__name__}: {exc}"}
            if path == "/metrics":
                self._send(200, metrics_text(doc).encode(), "text/plain; version=0.0.4; charset=utf-8", head)
                return
            body = (json.dumps(doc) + "\n").encode()
            status = 200 if path == "/verdict" else GATE_STATUS.get(str(doc.get("verdict")), 503)
            self._send(status, body, "application/json", head)

        def do_GET(self) -> None:
            self._route()

        def do_POST(self) -> None:
            self._route()

        def do_HEAD(self) -> None:
            self._route(head=True)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
