"""Query engines over a capture beyond the embedded DuckDB (shadow.capture.store): Spark."""
