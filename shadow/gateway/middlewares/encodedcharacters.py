"""Traefik's `encodedCharacters` (pkg/middlewares/encodedcharacters, v3.6+): a request whose path holds
a percent-encoded character that is not allowed (by default none of `%2F %5C %00 %3B %25 %3F %23`,
either case) is answered 400 with an empty body; so is a `%` without two characters after it."""

from __future__ import annotations

from dataclasses import dataclass

from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

__all__ = ["EncodedCharacters"]


@dataclass(frozen=True)
class EncodedCharacters:
    name: str
    allow_slash: bool = False
    allow_back_slash: bool = False
    allow_null: bool = False
    allow_semicolon: bool = False
    allow_percent: bool = False
    allow_question_mark: bool = False
    allow_hash: bool = False

    def denied(self) -> frozenset[str]:
        out: set[str] = set()
        for allowed, escapes in ((self.allow_slash, ("%2F", "%2f")), (self.allow_back_slash, ("%5C", "%5c")),
                                 (self.allow_null, ("%00",)), (self.allow_semicolon, ("%3B", "%3b")),
                                 (self.allow_percent, ("%25",)), (self.allow_question_mark, ("%3F", "%3f")),
                                 (self.allow_hash, ("%23",))):
            if not allowed:
                out.update(escapes)
        return frozenset(out)

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest | LocalAnswer:
        denied = self.denied()
        if not denied:
            return req
        path = req.path
        i = path.find("%")
        while i >= 0:
            if i + 2 >= len(path):
                return LocalAnswer(400)
            if path[i:i + 3] in denied:
                return LocalAnswer(400)
            i = path.find("%", i + 3)
        return req
