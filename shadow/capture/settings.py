"""Settings of the capture and its redaction (the `shadow.capture` and `shadow.redaction` config sections).

The gateway's config loader (shadow/gateway/config.py) builds these from YAML; replay, the OTLP
receiver and tests build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Always redacted, whatever the settings say (they carry credentials by definition).
DEFAULT_REDACTED_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")

# The default secret names, matched against header names, query and path parameters, form and
# multipart fields and JSON keys after normalisation: case folded, every character that is not a
# letter or digit removed, a header's leading "x-" dropped, a parameter's brackets resolved
# ("api_key[]" -> "apikey", "user[password]" -> "password"). So "API-Key", "apiKey", "api_key",
# "X-Api-Key" and "api.key" are one name.
# A name ending in one of these words is a secret (new_password, client_secret, X-Csrf-Token, githubToken):
DEFAULT_SECRET_SUFFIXES = (
    "password", "passwd", "passphrase", "secret", "token", "apikey", "secretkey", "accesskey", "privatekey",
    "cardnumber", "creditcard", "signature", "credentials",
)
# A name equal to one of these is a secret:
DEFAULT_SECRET_NAMES = (
    "pwd", "pass", "pin", "cvv", "cvc", "cvv2", "ssn", "iban", "otp", "auth", "authorization",
    "proxyauthorization", "cookie", "setcookie", "sessionid", "sid", "jsessionid", "phpsessid", "csrf", "xsrf",
    "cardno", "pan", "accountnumber",
)


@dataclass(frozen=True)
class RedactionSettings:
    # Header names (case-insensitive) always include DEFAULT_REDACTED_HEADERS.
    headers: tuple[str, ...] = DEFAULT_REDACTED_HEADERS
    # JSON body fields: a bare name matches that key at any depth; "/a/b" is an RFC 6901 pointer
    # ("*" matches any one key or index). Applied to request and response bodies.
    json_fields: tuple[str, ...] = ()
    # "hash": replace by "redacted:" + the 64 hex of HMAC-SHA256(key, value), so equality survives;
    # "remove": drop the header / field / parameter.
    mode: Literal["hash", "remove"] = "hash"
    # HMAC key. None: $SHADOW_REDACTION_KEY, else the key file (key_file, else
    # $SHADOW_REDACTION_KEY_FILE, else ~/.config/shadow/redaction.key, created once) — never inside the capture.
    key: bytes | None = None
    key_file: Path | None = None
    # Query parameter names redacted in the `query`, `path` and `url` columns (api_key, token...).
    query_params: tuple[str, ...] = ()
    # Names redacted everywhere (headers, query and path parameters, form fields, JSON keys), besides the defaults.
    names: tuple[str, ...] = ()
    # False: no DEFAULT_SECRET_SUFFIXES / DEFAULT_SECRET_NAMES (only DEFAULT_REDACTED_HEADERS and what is listed).
    defaults: bool = True
    # Names stored in clear even though a default matches them (e.g. "nextPageToken"); explicit reduction.
    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaptureSettings:
    dir: Path = Path("capture")
    enabled: bool = True
    max_body_bytes: int = 1_048_576  # bodies longer than this are cut and the row flagged `truncated`
    segment_rows: int = 100_000  # seal a Parquet segment after this many rows...
    segment_seconds: float = 60.0  # ...or this long after its first row
    max_queue: int = 20_000  # rows waiting for the writer thread; beyond it rows are shed and counted
    # "process": the gateway's rows are prepared and written by a child process (own GIL, see
    # shadow.capture.process); "thread": by a thread of the proxy's process (CaptureWriter).
    mode: Literal["process", "thread"] = "process"
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
    # An object store URI (s3://bucket/prefix...): sealed segments are uploaded there, then removed
    # from `dir` (shadow.capture.remote). None: the capture stays in `dir`.
    upload: str | None = None
