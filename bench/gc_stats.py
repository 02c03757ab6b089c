"""A mitmdump script that measures the proxy's garbage collections: how many per generation, the
CPU they took (the collecting thread's CPU time) and the objects they freed. bench/gateway.py
`--gc-stats` adds it to every mode and prints the figures per request.

    mitmdump -s bench/gc_stats.py --set gc_stats_file=/tmp/gc.json ...

The JSON is written at `done` (mitmdump's clean shutdown).
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

from mitmproxy import ctx


class GcStats:
    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.cpu_ns = [0, 0, 0]
        self.collected = [0, 0, 0]
        self._started = 0
        gc.callbacks.append(self._callback)

    def load(self, loader: Any) -> None:
        loader.add_option("gc_stats_file", str, "", "where to write the GC figures at shutdown")

    def running(self) -> None:  # start-up's collections (imports, configuration) are not the load's
        self.collections, self.cpu_ns, self.collected = [0, 0, 0], [0, 0, 0], [0, 0, 0]

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time_ns()
            return
        generation = info["generation"]
        self.collections[generation] += 1
        self.cpu_ns[generation] += time.thread_time_ns() - self._started
        self.collected[generation] += info["collected"]

    def done(self) -> None:
        gc.callbacks.remove(self._callback)
        if ctx.options.gc_stats_file:
            Path(ctx.options.gc_stats_file).write_text(json.dumps({
                "collections": self.collections, "cpu_ns": self.cpu_ns, "collected": self.collected,
                "objects": len(gc.get_objects()), "thresholds": gc.get_threshold()}))


addons = [GcStats()]
