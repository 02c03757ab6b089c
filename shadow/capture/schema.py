"""The capture's table schemas: the contract between the gateway, replay and the analyzers.

Columns may only be added (nullable) — readers use DuckDB's union_by_name so old segments stay readable.
"""

from __future__ import annotations

import pyarrow as pa

HEADER_LIST = pa.list_(pa.struct([("name", pa.string()), ("value", pa.string())]))

ROLES = ("primary", "candidate", "secondary")
MODES = ("serve", "mirror", "split", "replay")

EXCHANGES = pa.schema(
    [
        ("request_id", pa.string()),  # shared by every copy of one client request
        ("exchange_id", pa.string()),  # unique per row
        ("role", pa.string()),  # primary | candidate | secondary
        ("mode", pa.string()),  # serve | mirror | split | replay
        ("service", pa.string()),  # the configured service that answered
        ("router", pa.string()),  # the router that matched (null for replay)
        ("endpoint", pa.string()),  # templated path, e.g. /api/orders/{id}
        ("ts", pa.timestamp("ns", tz="UTC")),  # when the request was sent upstream
        ("latency_ms", pa.float64()),  # upstream request sent → response complete
        ("method", pa.string()),
        ("url", pa.string()),  # full URL sent upstream
        ("host", pa.string()),  # the client's Host
        ("path", pa.string()),  # path without query
        ("query", pa.string()),  # raw query string, "" when none
        ("upstream", pa.string()),  # base URL of the server that was called
        ("req_headers", HEADER_LIST),
        ("req_body", pa.binary()),
        ("status", pa.int32()),  # null when a transport error happened
        ("resp_headers", HEADER_LIST),
        ("resp_body", pa.binary()),  # decoded (no content-encoding), possibly truncated
        ("resp_content_type", pa.string()),
        ("body_hash", pa.string()),  # canonical hash of the full decoded response body
        ("body_size", pa.int64()),  # decoded response body size before truncation
        ("error", pa.string()),  # transport error text; null when a response came
        ("trace_id", pa.string()),  # W3C trace id, 32 hex
        ("span_id", pa.string()),  # 16 hex
        ("client_key", pa.string()),  # unit of assignment for clustered statistics
        ("gateway", pa.string()),  # gateway instance id
        ("truncated", pa.bool_()),  # a body was cut at the configured limit
        ("capture_note", pa.string()),  # why capture kept something as-is (e.g. a body that failed to decode)
        # true: the answer was replayed from a recording (`shadow replay --primary recorded`), not sent
        # live; its latency was measured elsewhere. Null (older captures, live rows): sent live.
        ("recorded", pa.bool_()),
        # The AI gateway (shadow/ai): what a model call said, read from the answer's `usage` (buffered or
        # streamed). Null for anything that is not a model call.
        ("ai_operation", pa.string()),  # chat | responses | messages | embeddings | completions
        ("ai_model", pa.string()),  # the model that answered (the answer's `model`, else the request's)
        ("ai_input_tokens", pa.int64()),
        ("ai_output_tokens", pa.int64()),
        ("ai_cost_usd", pa.float64()),  # from the chatCompletion middleware's price table; null: no price
        ("ai_ttft_ms", pa.float64()),  # request sent → first answer content (streamed answers only)
        ("ai_streamed", pa.bool_()),
        ("ai_cache", pa.string()),  # semantic cache: hit (answered from the cache) | miss; null: no cache
        ("ai_guard", pa.string()),  # what the content guard did: "request blocked: pii.credit_card", "answer masked: …"
        # The MCP gateway (shadow/mcp): what a JSON-RPC exchange on a route with an `mcp` middleware was about.
        ("mcp_method", pa.string()),  # the (first) JSON-RPC method: tools/call, tools/list, initialize…
        ("mcp_name", pa.string()),  # the tool or prompt name (params.name) or the resource URI (params.uri)
        ("mcp_session", pa.string()),  # the request's Mcp-Session-Id
        ("mcp_error", pa.string()),  # the JSON-RPC error code of the answer (or of the gateway's refusal)
    ]
)

EXCHANGE_COLUMNS = tuple(EXCHANGES.names)

# One row per difference between a primary's and a candidate's answer (analyzers/diffs_table.py writes
# CAPTURE/diffs/; noise rows are kept, flagged, with the reason).
DIFFS = pa.schema(
    [
        ("request_id", pa.string()),
        ("endpoint", pa.string()),  # templated path
        ("c_service", pa.string()),  # the candidate service that answered
        ("kind", pa.string()),  # status | header | body
        ("op", pa.string()),  # added | removed | changed | type_changed | truncated
        ("pointer", pa.string()),  # RFC 6901 pointer ("" = whole body / status; /name for a header)
        ("pointer_template", pa.string()),  # pointer with array indices as *
        ("old", pa.string()),  # primary's value as JSON text, truncated; null when added
        ("new", pa.string()),  # candidate's value as JSON text, truncated; null when removed
        ("noise", pa.bool_()),
        ("noise_reason", pa.string()),
        # real, but every difference of this field looks volatile (a timestamp, an id) and the endpoint
        # has no noise evidence (no secondary, probe or repeated request): it cannot fail the gate alone
        ("unproven", pa.bool_()),
    ]
)

# One row per pair (CAPTURE/diffs_summary/): what the statistics use for body-mismatch rates.
DIFFS_SUMMARY = pa.schema(
    [
        ("request_id", pa.string()),
        ("endpoint", pa.string()),
        ("c_service", pa.string()),
        ("mode", pa.string()),
        ("method", pa.string()),
        ("equal", pa.bool_()),  # no real (non-noise) difference of any kind
        ("status_equal", pa.bool_()),
        ("real_diff_count", pa.int32()),
        ("noise_diff_count", pa.int32()),
        ("truncated", pa.bool_()),  # a body was truncated, so the body was not compared
        ("has_secondary", pa.bool_()),
        ("unproven_diff_count", pa.int32()),  # real differences in unproven (volatile-looking) fields
    ]
)

# One row per OTLP span (CAPTURE/spans/, written by the OTLP receiver). Ids are lower-case hex, as in
# the exchanges' trace_id/span_id columns, so spans join exchanges on trace_id.
SPANS = pa.schema(
    [
        ("trace_id", pa.string()),  # 32 hex
        ("span_id", pa.string()),  # 16 hex
        ("parent_span_id", pa.string()),  # 16 hex; null for a root span
        ("name", pa.string()),
        ("kind", pa.string()),  # internal | server | client | producer | consumer | unspecified
        ("service_name", pa.string()),  # resource attribute service.name
        ("start_ts", pa.timestamp("ns", tz="UTC")),
        ("end_ts", pa.timestamp("ns", tz="UTC")),
        ("duration_ms", pa.float64()),
        ("status_code", pa.string()),  # unset | ok | error
        ("status_message", pa.string()),
        ("attributes", pa.string()),  # JSON object text
        ("resource_attributes", pa.string()),  # JSON object text
        ("scope_name", pa.string()),
        ("ts", pa.timestamp("ns", tz="UTC")),  # = start_ts; partitions the files by hour
        ("received_ts", pa.timestamp("ns", tz="UTC")),
    ]
)

# One row per OTLP metric data point (CAPTURE/metrics/): gauges and sums carry `value`; histograms carry
# count, sum and their bucket counts.
METRICS = pa.schema(
    [
        ("name", pa.string()),
        ("kind", pa.string()),  # gauge | sum | histogram | exponential_histogram | summary
        ("unit", pa.string()),
        ("service_name", pa.string()),
        ("attributes", pa.string()),  # JSON object text
        ("ts", pa.timestamp("ns", tz="UTC")),  # time_unix_nano of the point
        ("value", pa.float64()),
        ("count", pa.int64()),
        ("sum", pa.float64()),
        ("bucket_counts", pa.list_(pa.int64())),
        ("explicit_bounds", pa.list_(pa.float64())),
    ]
)


# SQL type names, per engine, of a NULL column standing in for a schema field a file lacks.
_SQL_TYPES: dict[str, tuple[str, ...]] = {
    # string, binary, int32, int64, floating, boolean, timestamp, list of name/value pairs
    "duckdb": ("VARCHAR", "BLOB", "INTEGER", "BIGINT", "DOUBLE", "BOOLEAN", "TIMESTAMPTZ",
               "STRUCT(name VARCHAR, value VARCHAR)[]"),
    "spark": ("STRING", "BINARY", "INT", "BIGINT", "DOUBLE", "BOOLEAN", "TIMESTAMP",
              "ARRAY<STRUCT<name: STRING, value: STRING>>"),
}
_TYPE_TESTS = (pa.types.is_string, pa.types.is_binary, pa.types.is_int32, pa.types.is_int64, pa.types.is_floating,
               pa.types.is_boolean, pa.types.is_timestamp, pa.types.is_list)


def sql_type(t: pa.DataType, engine: str) -> str:
    """`engine`'s type name for a capture field of type `t` (the string type for anything else)."""
    names = _SQL_TYPES[engine]
    return next((name for test, name in zip(_TYPE_TESTS, names, strict=True) if test(t)), names[0])
