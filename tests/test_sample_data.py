"""data/: the sample capture and recorded traffic stay small, `shadow replay` reads the recordings
(flow file and HAR) against a real demo orders service, and data/regenerate.py's recorder (a real
`mitmdump -w … --set hardump=…`) produces files replay accepts.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest

import shadow
from shadow.demo.processes import Supervisor, service_argv
from shadow.replay.sources import open_source

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
MAX_DATA_BYTES = 5_000_000


def load_regenerate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("data_regenerate", DATA / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def orders_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo's extracted orders service (the candidate), a real process on 127.0.0.1."""
    with Supervisor(tmp_path_factory.mktemp("orders-logs")) as sup:
        yield sup.start_service("orders", service_argv("orders")).url


def replay(source: Path, candidate: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadow.cli", "replay", str(source), "--primary", "recorded",
                           "--candidate", f"orders={candidate}", "-o", str(out), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_data_stays_small() -> None:
    tracked = subprocess.run(["git", "ls-files", "data"], capture_output=True, text=True, cwd=REPO,
                             check=True).stdout.split()
    files = [REPO / name for name in tracked] + [DATA / "traffic.flows", DATA / "traffic.har"]
    total = sum(p.stat().st_size for p in set(files) if p.exists())
    assert total < MAX_DATA_BYTES, f"data/ holds {total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", ["traffic.flows", "traffic.har"])
def test_replay_reads_the_recording(name: str, orders_url: str, tmp_path: Path) -> None:
    out = tmp_path / "capture"
    done = replay(DATA / name, orders_url, out, "--path", "^/api/orders")
    assert done.returncode == 0, done.stderr
    assert "sent" in done.stdout and "skipped" in done.stdout  # POSTs skipped: unsafe
    with shadow.open(out, progress=False) as cap:
        modes = cap.sql("SELECT DISTINCT mode FROM exchanges").fetchall()
        assert modes == [("replay",)]
        n_pairs = cap.pairs.count("*").fetchall()[0][0]
        assert n_pairs > 50
        # The recorded monolith answers against the orders service: the seeded rename shows up.
        top = cap.top_fields(10, endpoint="/api/orders/{id}")
        real = top[~top["noise"]]
        assert ("renamed", "/customer_id") in set(zip(real["op"], real["pointer_template"], strict=True))


def test_har_is_a_har_of_the_demo() -> None:
    log = json.loads((DATA / "traffic.har").read_text())["log"]
    entries = log["entries"]
    assert len(entries) >= 100
    paths = {urlsplit(e["request"]["url"]).path for e in entries}
    assert "/api/orders" in paths and any(p.startswith("/api/orders/") for p in paths)
    assert all(e["response"]["status"] for e in entries)
    assert {e["request"]["method"] for e in entries} >= {"GET", "POST"}


def test_regenerate_records_flows_and_har_with_mitmdump(tmp_path: Path) -> None:
    regen = load_regenerate()
    flows, har = tmp_path / "t.flows", tmp_path / "t.har"
    sent, summary = regen.record_traffic(flows, har, requests=25, seed=7, work=tmp_path)
    assert sent == 25 and "25 requests recorded" in summary
    for recording in (flows, har):  # what `shadow replay` reads them with
        entries = list(open_source(recording).entries())
        assert len(entries) == 25
        assert all(e.recorded is not None and e.recorded.status for e in entries)


def test_copy_sealed_keeps_only_the_sample_tables(tmp_path: Path) -> None:
    regen = load_regenerate()
    src, dst = tmp_path / "src", tmp_path / "dst"
    for rel in ("exchanges/dt=2026-01-01/hour=01/part-a.parquet", "exchanges/.tmp-part.parquet",
                "_journal/j.arrows", ".key", "_stats/g.json", "spans/part-s.parquet", "metrics/part-m.parquet",
                "spans/.part-unsealed.parquet"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"x")
    assert regen.copy_sealed(src, dst) == 3
    copied = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert copied == ["_stats/g.json", "exchanges/dt=2026-01-01/hour=01/part-a.parquet", "spans/part-s.parquet"]
    assert "1 sealed segment" in regen.collect_spans(src)
    assert "none" in regen.collect_spans(tmp_path / "no-capture")
