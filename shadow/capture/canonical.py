"""Body decoding and the canonical body hash: one definition shared by capture and the analyzers.

`body_hash` is a stable contract (captures written today are compared with captures written later):

* JSON (a content type containing "json", or no content type and a body that parses as a JSON
  object or array): ``"j:" + sha256(canonical)[:32 hex]`` where ``canonical`` is the orjson
  serialisation with sorted keys and no whitespace. Key order and formatting do not change the
  hash; values, types and array order do (``1`` and ``1.0`` differ, as they do on the wire).
* Anything else, and JSON that does not parse: ``"b:" + sha256(body)[:32 hex]``.

128 bits of SHA-256 make accidental collisions negligible at any capture size we will see, while
keeping the column small. Capture hashes the full decoded body *after* redaction, so no digest of a
secret reaches disk; `body_hash(resp_body, resp_content_type)` over a stored, non-truncated body
reproduces the stored `body_hash`.

`decode_body` undoes a Content-Encoding chain (gzip, x-gzip, deflate — zlib or raw —, br, zstd when
the `backports.zstd` or stdlib module is present, identity). It raises `BodyDecodeError` on an
unknown coding or corrupt data; callers decide whether to keep the raw bytes.
"""

from __future__ import annotations

import hashlib
import zlib
from types import ModuleType
from typing import Any

import orjson

__all__ = ["DEFAULT_DECODE_LIMIT", "BodyDecodeError", "body_hash", "canonical_json", "decode_body", "is_json_type",
           "json_value_hash"]

DEFAULT_DECODE_LIMIT = 256 * 1024 * 1024  # a decompression bomb stops here (BodyDecodeError)
HASH_HEX = 32


class BodyDecodeError(ValueError):
    """A body could not be decoded per its Content-Encoding (message says which coding and why)."""


def _load_zstd() -> ModuleType | None:
    try:
        from compression import zstd  # type: ignore[import-not-found,unused-ignore]  # Python >= 3.14

        return zstd  # type: ignore[no-any-return,unused-ignore]
    except ImportError:
        pass
    try:
        from backports import zstd as backport  # type: ignore[import-not-found,unused-ignore]

        return backport  # type: ignore[no-any-return,unused-ignore]
    except ImportError:
        return None


_zstd = _load_zstd()


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, limit + 1)
    if len(out) > limit:
        raise BodyDecodeError(f"decoded body exceeds {limit} bytes")
    if not d.eof:
        raise BodyDecodeError("truncated compressed stream")
    return out


def _decode_one(data: bytes, coding: str, limit: int) -> bytes:
    if coding in ("", "identity"):
        return data
    try:
        if coding in ("gzip", "x-gzip"):
            return _inflate(data, 16 + zlib.MAX_WBITS, limit)
        if coding == "deflate":
            # RFC 9110 says zlib-wrapped; some servers send raw deflate. Try both.
            try:
                return _inflate(data, zlib.MAX_WBITS, limit)
            except zlib.error:
                return _inflate(data, -zlib.MAX_WBITS, limit)
        if coding == "br":
            import brotli

            dec = brotli.Decompressor()
            out = dec.process(data, output_buffer_limit=limit + 1)
            if len(out) > limit:
                raise BodyDecodeError(f"decoded body exceeds {limit} bytes")
            if not dec.is_finished():
                raise BodyDecodeError("truncated brotli stream")
            return bytes(out)
        if coding == "zstd" and _zstd is not None:
            out = _zstd.decompress(data)
            if len(out) > limit:
                raise BodyDecodeError(f"decoded body exceeds {limit} bytes")
            return bytes(out)
    except BodyDecodeError as e:
        raise BodyDecodeError(f"{coding}: {e}") from None
    except Exception as e:  # zlib.error, brotli.error, zstd errors: all mean "corrupt data"
        raise BodyDecodeError(f"{coding}: {e}") from None
    raise BodyDecodeError(f"unsupported content-encoding {coding!r}")


def decode_body(body: bytes, content_encoding: str | None, *, limit: int = DEFAULT_DECODE_LIMIT) -> bytes:
    """Undo `content_encoding` (e.g. "gzip", "br", "gzip, br"); codings are undone last-applied first."""
    if not content_encoding or not body:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    for coding in reversed(codings):
        body = _decode_one(body, coding, limit)
    return body


def is_json_type(content_type: str | None) -> bool:
    """application/json, application/problem+json, text/json, application/vnd.api+json, ..."""
    return content_type is not None and "json" in content_type.lower()


def canonical_json(body: bytes) -> bytes | None:
    """The canonical serialisation (sorted keys, compact) of a JSON body, or None if it does not parse."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _looks_like_json_document(body: bytes) -> bool:
    head = body[:64].lstrip()
    return head[:1] in (b"{", b"[")


def body_hash(body: bytes, content_type: str | None) -> str:
    """Canonical hash of a (decoded) body: "j:<32 hex>" for JSON, "b:<32 hex>" for everything else."""
    if is_json_type(content_type) or (not content_type and _looks_like_json_document(body)):
        canonical = canonical_json(body)
        if canonical is not None:
            return "j:" + hashlib.sha256(canonical).hexdigest()[:HASH_HEX]
    return "b:" + hashlib.sha256(body).hexdigest()[:HASH_HEX]


def json_value_hash(value: Any) -> str:
    """`body_hash` of a JSON body that is already parsed (`value` as orjson.loads returned it).

    Equal to body_hash(body, "application/json") for any body that parses to `value`."""
    return "j:" + hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:HASH_HEX]
