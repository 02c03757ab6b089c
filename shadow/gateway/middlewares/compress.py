"""Traefik's `compress` (pkg/middlewares/compress): the encoding to answer with, and whether an
answer is compressed, as pure functions; the router addon encodes the body (mitmproxy's codecs:
gzip, br, zstd).

- Encoding: none for HEAD or a request whose own Content-Type is excluded (`application/grpc`
  always); no Accept-Encoding → `defaultEncoding` or none; else the highest q among the configured
  `encodings` (ties: their order; `*` → defaultEncoding or the first), `identity` or nothing
  acceptable → none.
- An answer is compressed when it has no Content-Encoding, its Content-Type is not excluded (or is
  included, with `includedContentTypes`), and its body is at least `minResponseBodyBytes` (1024).
  `Vary: Accept-Encoding` is added whenever an encoding was chosen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shadow.gateway.middlewares.request import first_header, header_values

__all__ = ["IDENTITY", "NOT_ACCEPTABLE", "SUPPORTED_ENCODINGS", "Compress", "choose_encoding", "compression_encoding",
           "parse_media_type", "should_compress"]

SUPPORTED_ENCODINGS = ("gzip", "br", "zstd")
DEFAULT_MIN_SIZE = 1024
IDENTITY = "identity"
NOT_ACCEPTABLE = "not_acceptable"


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Go's mime.ParseMediaType, leniently: ("text/html", {"charset": "utf-8"}); ValueError if empty."""
    media, _, rest = value.partition(";")
    media = media.strip().lower()
    if not media or "/" not in media:
        raise ValueError(f"bad media type {value!r}")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, eq, val = part.partition("=")
        if eq:
            params[key.strip().lower()] = val.strip().strip('"')
    return media, params


@dataclass(frozen=True)
class Compress:
    name: str
    encodings: tuple[str, ...] = SUPPORTED_ENCODINGS
    excluded: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    included: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    min_size: int = DEFAULT_MIN_SIZE
    default_encoding: str = ""

    def _rank(self, encoding: str) -> int:
        if encoding == "*":
            return -1
        if encoding == IDENTITY:
            return len(self.encodings)
        return self.encodings.index(encoding)


def choose_encoding(mw: Compress, method: str, headers: Iterable[tuple[str, str]]) -> str | None:
    headers = list(headers)
    if method == "HEAD":
        return None
    try:
        request_type = parse_media_type(first_header(headers, "Content-Type"))[0]
    except ValueError:
        request_type = ""
    if request_type == "application/grpc" or any(request_type == media for media, _p in mw.excluded):
        return None
    lines = header_values(headers, "Accept-Encoding")
    if not lines:
        return mw.default_encoding or None
    encoding = compression_encoding(mw, lines)
    return None if encoding in (IDENTITY, NOT_ACCEPTABLE) else encoding


def compression_encoding(mw: Compress, accept_encoding: list[str]) -> str:
    """Traefik's getCompressionEncoding over the Accept-Encoding lines: an encoding, IDENTITY or
    NOT_ACCEPTABLE."""
    if len(accept_encoding) == 1 and accept_encoding[0] == "":
        return IDENTITY
    supported = {*mw.encodings, "*", IDENTITY}
    acceptable: list[tuple[float, int, str]] = []
    for line in accept_encoding:
        for item in line.replace(" ", "").split(","):
            name, _, param = item.partition(";")
            if name not in supported:
                continue
            weight = 1.0
            if param.startswith("q="):
                try:
                    weight = float(param[2:])
                except ValueError:
                    weight = 0.0
                if weight == 0:
                    continue
            acceptable.append((-weight, mw._rank(name), name))
    if not acceptable:
        return NOT_ACCEPTABLE
    best = min(acceptable)[2]
    if best == "*":
        return mw.default_encoding or mw.encodings[0]
    return best


def _matches(media: str, params: dict[str, str], rule: tuple[str, tuple[tuple[str, str], ...]]) -> bool:
    return media == rule[0] and all(params.get(k) == v for k, v in rule[1])


def should_compress(mw: Compress, response_headers: Iterable[tuple[str, str]], body_size: int) -> bool:
    headers = list(response_headers)
    if first_header(headers, "Content-Encoding"):
        return False
    content_type = first_header(headers, "Content-Type")
    if content_type:
        try:
            media, params = parse_media_type(content_type)
        except ValueError:
            return False
        if mw.included:
            if not any(_matches(media, params, rule) for rule in mw.included):
                return False
        elif media == "application/grpc" or any(_matches(media, params, rule) for rule in mw.excluded):
            return False
    return body_size >= mw.min_size
