"""Traefik's path middlewares: `replacePath` (pkg/middlewares/replacepath), `replacePathRegex`
(replacepathregex) and `stripPrefixRegex` (stripprefixregex).

Paths here are raw (percent-escapes as sent). Like Traefik: replacePath(Regex) records the old path in
`X-Replaced-Path`; stripPrefixRegex records the stripped prefix in `X-Forwarded-Prefix` and
answers 400 when the stripped path is not clean (`..`, `//`: Go's URL.JoinPath would change it).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import unquote

from shadow.gateway.goregex import GoRegexp
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest, text_answer

__all__ = ["ReplacePath", "ReplacePathRegex", "StripPrefixRegex", "go_path_unescape"]

REPLACED_PATH_HEADER = "X-Replaced-Path"
FORWARDED_PREFIX_HEADER = "X-Forwarded-Prefix"


def go_path_unescape(raw: str) -> str:
    """Go's url.PathUnescape; ValueError on a malformed escape (`%zz`, a trailing `%`)."""
    i = raw.find("%")
    while i >= 0:
        pair = raw[i + 1:i + 3]
        if len(pair) < 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
            raise ValueError(f'invalid URL escape "{raw[i:i + 3]}"')
        i = raw.find("%", i + 3)
    return unquote(raw, errors="surrogateescape")


def go_clean_join(path: str) -> str:
    """What Go's URL.JoinPath() (no elements) makes of a path: path.Clean, trailing slash kept."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/") and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned


def _internal_error(message: str) -> LocalAnswer:
    return text_answer(500, message)


@dataclass(frozen=True)
class ReplacePath:
    name: str
    path: str

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest | LocalAnswer:
        try:
            go_path_unescape(self.path)
        except ValueError as exc:
            return _internal_error(str(exc))
        return req.with_headers((*req.headers, (REPLACED_PATH_HEADER, req.path))).with_path(self.path)


@dataclass(frozen=True)
class ReplacePathRegex:
    name: str
    regex: GoRegexp
    replacement: str

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest | LocalAnswer:
        current = req.path
        if not self.regex.search(current):
            return req
        new_raw = self.regex.replace_all(current, self.replacement)
        try:
            decoded = go_path_unescape(new_raw)
        except ValueError as exc:
            return _internal_error(str(exc))
        if decoded and go_clean_join(decoded) != decoded:
            return text_answer(400, "Bad Request")
        return req.with_headers((*req.headers, (REPLACED_PATH_HEADER, current))).with_path(new_raw)


def _encoded_prefix_len(raw: str, decoded_prefix: str) -> int:
    decoded = i = 0
    while i < len(raw) and decoded < len(decoded_prefix):
        i += 3 if raw[i] == "%" and i + 2 < len(raw) else 1
        decoded += 1
    return i


def _leading_slash(text: str) -> str:
    return text if not text or text.startswith("/") else "/" + text


@dataclass(frozen=True)
class StripPrefixRegex:
    name: str
    regexes: tuple[GoRegexp, ...]

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest | LocalAnswer:
        try:
            decoded = go_path_unescape(req.path)
        except ValueError:
            decoded = req.path
        for regex in self.regexes:
            m = regex.find(decoded)
            if m is None:
                continue
            prefix = m.group(0)
            if not prefix or not decoded.startswith(prefix):
                continue
            new_decoded = _leading_slash(decoded.replace(prefix, "", 1))
            new_raw = _leading_slash(req.path[_encoded_prefix_len(req.path, prefix):]) if req.path != decoded \
                else new_decoded
            if new_decoded and go_clean_join(new_decoded) != new_decoded:
                return text_answer(400, "Bad Request")
            # Go leaves URL.Path "" for a path stripped to nothing; the request line then says "/".
            return req.with_headers((*req.headers, (FORWARDED_PREFIX_HEADER, prefix))).with_path(new_raw or "/")
        return req
