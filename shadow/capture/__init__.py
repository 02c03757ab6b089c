"""The capture: the exchanges/spans schema, the crash-safe Parquet writer (thread or child process),
redaction, canonical bodies, endpoint templates, and the DuckDB store that reads it back.
Imports only shadow.errors and its own modules (no gateway, no mitmproxy): the gateway, replay and
the OTLP receiver all write through it."""
