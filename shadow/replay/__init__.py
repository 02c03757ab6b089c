"""Offline shadow tests: replay recorded traffic (mitmproxy flows, HAR, a capture folder) against
primary/candidate/secondary targets and capture every exchange in the same `exchanges` format the
gateway writes, so the analyzers, report and gate work on a replay unchanged. Writes through
shadow.capture, sends with shadow.gateway.http1; flow files are parsed by addons/flowfile.py, the one
mitmproxy adapter it uses (lazily), so nothing here imports mitmproxy itself."""
