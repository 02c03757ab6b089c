"""Resuming an interrupted replay without sending any request twice.

A replay run has a random `run_id`; every request id is derived from (run_id, source identity,
entry index, loop), so a resumed run recomputes the same ids, and a fresh run into the same capture
never collides with an earlier one. What is done is the union of two records:
- the checkpoint `CAPTURE/_replay/state.json` (written atomically after the writer flushed), and
- the request ids already present in the capture's sealed segments (the ground truth: it also
  covers rows sealed after the last checkpoint, e.g. after a SIGKILL and journal recovery).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadow.capture.atomic import replace_text
from shadow.errors import CaptureError

STATE_FILE = Path("_replay") / "state.json"


def request_id(run_id: str, identity: str, index: int, loop: int) -> str:
    return hashlib.sha256(f"{run_id}:{identity}:{index}:{loop}".encode()).hexdigest()[:32]


_ROLE_DIGIT = {"primary": "0", "candidate": "1", "secondary": "2"}


def exchange_id(request_id: str, role: str) -> str:
    """32 hex like the request id, unique per (request, role), and free to compute."""
    return request_id[:31] + _ROLE_DIGIT.get(role, "f")


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted inclusive [start, end] ranges: a million finished entries stay a few bytes."""
    out: list[list[int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def from_ranges(ranges: Iterable[Iterable[int]]) -> set[int]:
    out: set[int] = set()
    for r in ranges:
        lo, hi = list(r)
        out.update(range(int(lo), int(hi) + 1))
    return out


class RangeSet:
    """A set of ints kept as sorted disjoint inclusive ranges. Completions arrive nearly in order,
    so adding is O(log n) and usually extends the last range; a checkpoint of a million finished
    entries serialises a handful of ranges instead of sorting a million ints."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for lo, hi in sorted((int(a), int(b)) for a, b in (list(r) for r in ranges)):
            if self.ends and lo <= self.ends[-1] + 1:
                self.ends[-1] = max(self.ends[-1], hi)
            else:
                self.starts.append(lo)
                self.ends.append(hi)

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int):
            return False
        k = bisect.bisect_right(self.starts, i) - 1
        return k >= 0 and self.ends[k] >= i

    def add(self, i: int) -> None:
        starts, ends = self.starts, self.ends
        k = bisect.bisect_right(starts, i) - 1
        if k >= 0 and ends[k] >= i:
            return
        joins_left = k >= 0 and ends[k] == i - 1
        joins_right = k + 1 < len(starts) and starts[k + 1] == i + 1
        if joins_left and joins_right:
            ends[k] = ends[k + 1]
            del starts[k + 1], ends[k + 1]
        elif joins_left:
            ends[k] = i
        elif joins_right:
            starts[k + 1] = i
        else:
            starts.insert(k + 1, i)
            ends.insert(k + 1, i)

    def ranges(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self.starts, self.ends, strict=True)]

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in zip(self.starts, self.ends, strict=True))


@dataclass
class SourceProgress:
    path: str
    identity: str
    done: dict[int, RangeSet] = field(default_factory=dict)  # loop -> finished entry indices


@dataclass
class ReplayState:
    run_id: str
    sources: dict[str, SourceProgress] = field(default_factory=dict)  # by identity
    finished: bool = False

    @classmethod
    def new(cls) -> ReplayState:
        return cls(run_id=secrets.token_hex(8))

    def mark(self, identity: str, loop: int, index: int) -> None:
        done = self.sources[identity].done
        if loop not in done:
            done[loop] = RangeSet()
        done[loop].add(index)

    def is_done(self, identity: str, loop: int, index: int) -> bool:
        src = self.sources.get(identity)
        if src is None or loop not in src.done:
            return False
        return index in src.done[loop]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "run_id": self.run_id,
            "finished": self.finished,
            "sources": [
                {"path": s.path, "identity": s.identity,
                 "done": {str(loop): idx.ranges() for loop, idx in sorted(s.done.items())}}
                for s in self.sources.values()
            ],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ReplayState:
        state = cls(run_id=str(doc["run_id"]), finished=bool(doc.get("finished", False)))
        for s in doc.get("sources", []):
            state.sources[s["identity"]] = SourceProgress(
                path=s["path"], identity=s["identity"],
                done={int(loop): RangeSet(r) for loop, r in s.get("done", {}).items()})
        return state


def state_path(capture: Path) -> Path:
    return capture / STATE_FILE


def load_state(capture: Path) -> ReplayState | None:
    path = state_path(capture)
    if not path.exists():
        return None
    try:
        return ReplayState.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise CaptureError(f"{path}: unreadable replay checkpoint: {e}") from None


def save_state(capture: Path, state: ReplayState) -> None:
    write_state_json(capture, state.to_json())


def write_state_json(capture: Path, doc: dict[str, Any]) -> None:
    """Write-temp, fsync, rename: a crash leaves the old checkpoint or the new one, never half."""
    path = state_path(capture)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, lambda out: json.dump(doc, out))


def captured_roles(capture: Path) -> dict[str, frozenset[str]]:
    """Roles of the replay rows already sealed in the capture, by request id."""
    root = capture / "exchanges"
    if not root.is_dir():
        return {}
    files = [str(p) for p in root.rglob("*.parquet") if not p.name.startswith((".", "_"))]
    if not files:
        return {}
    import duckdb

    try:
        con = duckdb.connect()
        rows = con.execute(
            "SELECT request_id, list(DISTINCT role) FROM read_parquet(?, hive_partitioning=true, "
            "union_by_name=true) WHERE mode = 'replay' GROUP BY request_id", [files]).fetchall()
    except duckdb.Error as e:
        raise CaptureError(f"{capture}: cannot read the capture to resume: {str(e).splitlines()[0]}") from None
    return {rid: frozenset(roles) for rid, roles in rows}
