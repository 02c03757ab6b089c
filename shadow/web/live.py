"""The analysis behind the live view, kept current while the gateway appends to the capture.

One background thread owns the work: every `interval` seconds it looks at the capture's sealed
Parquet files (names, sizes, modification times) and, when they changed, runs the analyzers'
pipeline (`analyzers.pipeline.analyze`: diffs, samples, verdict) and publishes the result as a
`Snapshot`. Requests only read the latest snapshot, so a page never waits for an analysis and an
idle capture costs one directory listing per interval. Statistics are never recomputed here.

Readers of the capture's derived tables (a pair view reads CAPTURE/diffs/) take `lock`: an
analysis rewrites those tables, and a reader must not see them half replaced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shadow.capture.store import open_store, sealed_parquet
from shadow.errors import ShadowError

if TYPE_CHECKING:
    from analyzers.pipeline import AnalysisResult

log = logging.getLogger("shadow.web")

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class CaptureCounts:
    exchanges: int  # sealed exchange rows (every role)
    pairs: int  # primaries with a candidate (mirrored, replayed)


@dataclass(frozen=True)
class Snapshot:
    """What the live view shows: the latest analysis (or why there is none yet) and when it ran."""

    result: AnalysisResult | None
    error: str | None  # why the capture cannot be judged yet (empty, nothing paired…), one line
    counts: CaptureCounts
    computed_at: float  # time.time() of the analysis
    analyses: int  # how many analyses this server ran (1 for the first)


def capture_fingerprint(capture: Path) -> Fingerprint:
    """The sealed exchange files as (name, size, mtime): it changes exactly when a segment is sealed."""
    out = []
    for path in sealed_parquet(capture / "exchanges"):
        try:
            st = path.stat()
        except OSError:  # removed between the listing and the stat (a compaction): the next look sees it
            continue
        out.append((str(path.relative_to(capture)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def capture_counts(capture: Path) -> CaptureCounts:
    with open_store(capture) as store:
        exchanges = int(store.sql("SELECT count(*) FROM exchanges").fetchall()[0][0])
        pairs = int(store.sql("SELECT count(*) FROM pairs WHERE c_exchange_id IS NOT NULL").fetchall()[0][0])
    return CaptureCounts(exchanges, pairs)


class LiveAnalysis:
    """Re-analyses `capture` whenever a new segment is sealed (checked every `interval` seconds).

    `analyze` is the pipeline call (capture → AnalysisResult); `policy_file` is kept for the views
    that load pairs with the same diff rules."""

    def __init__(self, capture: Path, analyze: Callable[[Path], AnalysisResult], *,
                 policy_file: Path | None = None, interval: float = 2.0) -> None:
        self.capture = capture
        self.policy_file = policy_file
        self.interval = interval
        self.lock = threading.Lock()  # held while the capture's derived tables are written or read
        self._analyze = analyze
        self._snapshot: Snapshot | None = None
        self._fingerprint: Fingerprint | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.analyses = 0

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def start(self) -> LiveAnalysis:
        self._thread = threading.Thread(target=self._run, name="shadow-live-analysis", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_for(self, predicate: Callable[[Snapshot], bool], timeout: float) -> Snapshot | None:
        """Block until a snapshot satisfies `predicate` (or `timeout` passes); the last snapshot."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                snap = self._snapshot
                if snap is not None and predicate(snap):
                    return snap
                left = deadline - time.monotonic()
                if left <= 0:
                    return snap
                self._changed.wait(left)

    def forget(self) -> None:
        """Analyse again at the next look even if nothing was sealed (e.g. after a policy change)."""
        with self._changed:
            self._fingerprint = None

    def refresh(self) -> Snapshot | None:
        """One look: analyse again if the capture changed since the last analysis."""
        try:
            fingerprint = capture_fingerprint(self.capture)
        except OSError as exc:
            fingerprint = ()
            log.debug("cannot list %s: %s", self.capture, exc)
        if fingerprint == self._fingerprint and self._snapshot is not None:
            return self._snapshot
        result, error = None, None
        counts = CaptureCounts(0, 0)
        with self.lock:
            try:
                counts = capture_counts(self.capture)
                result = self._analyze(self.capture)
            except ShadowError as exc:
                error = exc.format_message()
            except Exception as exc:  # the view must keep serving whatever one analysis did
                log.exception("live analysis of %s failed", self.capture)
                error = f"analysis failed: {type(exc).__name__}: {exc}"
        self.analyses += 1
        snapshot = Snapshot(result=result, error=error, counts=counts, computed_at=time.time(),
                            analyses=self.analyses)
        with self._changed:
            self._fingerprint = fingerprint
            self._snapshot = snapshot
            self._changed.notify_all()
        return snapshot

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.interval)


def pipeline_analyzer(policy_file: Path | None, *, learn_endpoints: bool = False) -> Callable[[Path], Any]:
    """capture → AnalysisResult with the policy file's margins and diff rules (as `shadow report`)."""
    from analyzers.pipeline import analyze, learn_templater, load_inputs

    policy, rules = load_inputs(policy_file)

    def run(capture: Path) -> Any:
        templater = learn_templater(capture) if learn_endpoints else None
        return analyze(capture, policy, rules=rules, progress=False, templater=templater)

    return run
