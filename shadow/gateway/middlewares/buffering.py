"""Traefik's `buffering` (pkg/middlewares/buffering, oxy's buffer). mitmproxy holds every request and
answer whole before passing it on, so the memory thresholds (`memRequestBodyBytes`,
`memResponseBodyBytes`) and the disable switches change nothing here; the limits do: a request body
above `maxRequestBodyBytes` → 413, an answer above `maxResponseBodyBytes` → 500 (0: no limit).
`retryExpression` is refused as not supported."""

from __future__ import annotations

from dataclasses import dataclass

from shadow.gateway.middlewares.request import LocalAnswer, text_answer

__all__ = ["Buffering"]


@dataclass(frozen=True)
class Buffering:
    name: str
    max_request_body_bytes: int = 0
    max_response_body_bytes: int = 0
    disable_request_buffer: bool = False
    disable_response_buffer: bool = False

    def check_request(self, body_size: int) -> LocalAnswer | None:
        if self.disable_request_buffer or self.max_request_body_bytes <= 0 or body_size <= self.max_request_body_bytes:
            return None
        return text_answer(413, "Request Entity Too Large")

    def check_response(self, body_size: int) -> LocalAnswer | None:
        if self.disable_response_buffer or self.max_response_body_bytes <= 0 or body_size <= self.max_response_body_bytes:
            return None
        return text_answer(500, "Internal Server Error")
