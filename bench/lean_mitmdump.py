"""A mitmdump script with only addons/lean.py: bare mitmdump whose inert built-in addons leave the
event chain, as the gateway's do. bench/gateway.py's (a') mode: the gateway's own overhead is its
throughput against this, mitmproxy's pruning aside.

    mitmdump -s bench/lean_mitmdump.py --mode reverse:http://127.0.0.1:8080
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from addons.debugchecks import DebugChecksOff
from addons.lean import LeanDispatch

addons = [LeanDispatch(), DebugChecksOff()]
