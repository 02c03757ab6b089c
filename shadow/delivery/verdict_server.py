"""`shadow serve-verdict CAPTURE`: the cutover verdict over HTTP, for progressive-delivery controllers.

    GET /verdict  -> 200 {"verdict": "pass"|"fail"|"inconclusive", "score": …, "results": […], …}
                     Argo Rollouts' web metric provider: jsonPath "{$.verdict}",
                     successCondition: result == "pass", failureCondition: result == "fail".
    GET|POST /gate -> 200 on pass, 412 on fail, 503 on inconclusive (same JSON body).
                     Flagger webhooks (pre-rollout / rollout) treat any non-2xx as "not yet/no".
    GET /healthz  -> 200 "ok"

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
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GATE_STATUS = {"pass": 200, "fail": 412, "inconclusive": 503}


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


def make_server(service: VerdictService, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "shadow-verdict"

        def log_message(self, format: str, *args: object) -> None:
            pass  # polled every few seconds: access logs would drown everything else

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _drain_body(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)  # Flagger POSTs its canary metadata; we do not need it

        def _route(self) -> None:
            self._drain_body()
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
                return
            if path not in ("/verdict", "/gate"):
                self._send(404, b'{"error": "not found; try /verdict or /gate"}\n', "application/json")
                return
            try:
                doc = service.current()
            except Exception as exc:  # the server must keep answering whatever one computation did
                doc = {"verdict": "inconclusive", "score": 0.0, "results": [],
                       "error": f"{type(exc).__name__}: {exc}"}
            body = (json.dumps(doc) + "\n").encode()
            status = 200 if path == "/verdict" else GATE_STATUS.get(str(doc.get("verdict")), 503)
            self._send(status, body, "application/json")

        do_GET = do_POST = _route

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
