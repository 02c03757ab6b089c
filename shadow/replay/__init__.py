"""Offline shadow tests: replay recorded traffic (mitmproxy flows, HAR, a capture folder) against
primary/candidate/secondary targets and capture every exchange in the same `exchanges` format the
gateway writes, so the analyzers, report and gate work on a replay unchanged."""
