"""Traefik's `contentType` (pkg/middlewares/contenttype): Traefik v3 leaves an answer without
Content-Type as it is unless this middleware is on the route; with it, the type is sniffed from the
body as Go's http.DetectContentType does (its signature table, first 512 bytes). `autoDetect: false`
(deprecated) turns the middleware off."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ContentType", "detect_content_type"]

_HTML_TAGS = (b"<!DOCTYPE HTML", b"<HTML", b"<HEAD", b"<SCRIPT", b"<IFRAME", b"<H1", b"<DIV", b"<FONT", b"<TABLE",
              b"<A", b"<STYLE", b"<TITLE", b"<B", b"<BODY", b"<BR", b"<P", b"<!--")
_EXACT = (
    (b"%PDF-", "application/pdf"),
    (b"%!PS-Adobe-", "application/postscript"),
    (b"\xfe\xff", "text/plain; charset=utf-16be"),
    (b"\xff\xfe", "text/plain; charset=utf-16le"),
    (b"\xef\xbb\xbf", "text/plain; charset=utf-8"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\x00\x00\x02\x00", "image/x-icon"),
    (b"BM", "image/bmp"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x89PNG\x0d\x0a\x1a\x0a", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x1aE\xdf\xa3", "video/webm"),
    (b"\x1f\x8b\x08", "application/x-gzip"),
    (b"PK\x03\x04", "application/zip"),
    (b"Rar!\x1a\x07\x00", "application/x-rar-compressed"),
    (b"Rar!\x1a\x07\x01\x00", "application/x-rar-compressed"),
    (b"\x00asm", "application/wasm"),
    (b"OggS\x00", "application/ogg"),
    (b"MThd\x00\x00\x00\x06", "audio/midi"),
    (b"ID3", "audio/mpeg"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
)
_WHITESPACE = b"\t\n\x0c\r "


def _binary(byte: int) -> bool:
    return byte <= 0x08 or byte == 0x0B or 0x0E <= byte <= 0x1A or 0x1C <= byte <= 0x1F


def detect_content_type(data: bytes) -> str:
    """Go's http.DetectContentType (the common signatures; the rarer media ones fall to the
    text/binary rule)."""
    data = data[:512]
    stripped = data.lstrip(_WHITESPACE)
    upper = stripped[:16].upper()
    for tag in _HTML_TAGS:
        if upper.startswith(tag) and len(stripped) > len(tag) and stripped[len(tag)] in b" >":
            return "text/html; charset=utf-8"
    if stripped.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    for magic, kind in _EXACT:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:14] == b"WEBPVP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wave"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/avi"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        box = int.from_bytes(data[:4], "big")
        if box % 4 == 0 and len(data) >= box and any(data[i:i + 3] == b"mp4" for i in range(8, box, 4)):
            return "video/mp4"
    if any(_binary(b) for b in data):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


@dataclass(frozen=True)
class ContentType:
    name: str
    auto_detect: bool = True
