"""A router's middlewares run in order over one request, Traefik-style (pure: no I/O, no clock).

Each kind's core is in its own module; this runs them in sequence: a middleware that answers
(redirect, 401, 403, 429) ends the chain; the others hand the next one a modified request. The kinds
that need the gateway's I/O are handed back as facts: a rate-limit delay to wait before forwarding,
the in-flight slots to release once the answer is done, the retry settings for the sender. The
circuit breaker (shadow.gateway.shifting) and jwt/oidc (addons/auth.py) run elsewhere and are
skipped here.

`MiddlewareRuntime` holds the state of the stateful kinds (rate-limit buckets, in-flight counts)
for one configuration; a reload keeps the state of every such middleware whose options did not change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shadow.gateway.config import HeadersMiddleware
from shadow.gateway.middlewares.basicauth import BasicAuth
from shadow.gateway.middlewares.buffering import Buffering
from shadow.gateway.middlewares.compress import Compress, choose_encoding
from shadow.gateway.middlewares.contenttype import ContentType
from shadow.gateway.middlewares.digestauth import DigestAuth, DigestAuthenticator
from shadow.gateway.middlewares.encodedcharacters import EncodedCharacters
from shadow.gateway.middlewares.headers import cors_preflight, security_request
from shadow.gateway.middlewares.httproute import ReplacePrefixMatch, RequestRedirect
from shadow.gateway.middlewares.inflightreq import InFlightLimiter, InFlightReq
from shadow.gateway.middlewares.ipallowlist import IPAllowList
from shadow.gateway.middlewares.paths import ReplacePath, ReplacePathRegex, StripPrefixRegex
from shadow.gateway.middlewares.ratelimit import Admit, RateLimit, RateLimiter
from shadow.gateway.middlewares.redirect import Redirect
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest
from shadow.gateway.middlewares.retry import Retry

__all__ = ["PIPELINE_KINDS", "MiddlewareRuntime", "RequestOutcome"]

# The kinds this pipeline runs (the older stripPrefix / addPrefix / headers run through
# shadow.gateway.routing, called from here when a route mixes them with these).
PIPELINE_KINDS = (DigestAuth, Compress, Buffering, ContentType, EncodedCharacters, RateLimit, Retry, Redirect, ReplacePath,
                  ReplacePathRegex, StripPrefixRegex, BasicAuth, IPAllowList, InFlightReq, RequestRedirect,
                  ReplacePrefixMatch)


@dataclass
class RequestOutcome:
    request: MiddlewareRequest
    answer: LocalAnswer | None = None  # set: send this, forward nothing
    delay_s: float = 0.0  # rateLimit: wait this long before forwarding
    in_flight: list[tuple[InFlightLimiter, str]] = field(default_factory=list)  # release after the answer
    retry: Retry | None = None  # the route retries failed connections
    basic_auth_user: str | None = None
    compress: list[tuple[Compress, str]] = field(default_factory=list)  # encode the answer with these
    response_limits: list[Buffering] = field(default_factory=list)  # buffering's maxResponseBodyBytes
    detect_content_type: bool = False  # contentType: sniff a missing Content-Type

    @property
    def needs_response_hook(self) -> bool:
        return bool(self.in_flight or self.retry is not None or self.compress or self.response_limits
                    or self.detect_content_type)

    def release(self) -> None:
        for limiter, key in self.in_flight:
            limiter.release(key)
        self.in_flight.clear()


class MiddlewareRuntime:
    def __init__(self, middlewares: Mapping[str, Any], previous: MiddlewareRuntime | None = None) -> None:
        self.rate_limiters: dict[str, RateLimiter] = {}
        self.in_flight: dict[str, InFlightLimiter] = {}
        self.digests: dict[str, DigestAuthenticator] = {}  # nonces issued, kept over reloads
        for name, mw in middlewares.items():
            if isinstance(mw, DigestAuth):
                known = previous.digests.get(name) if previous is not None else None
                self.digests[name] = known if known is not None and known.settings == mw else DigestAuthenticator(mw)
            if isinstance(mw, RateLimit):
                old = previous.rate_limiters.get(name) if previous is not None else None
                self.rate_limiters[name] = old if old is not None and old.settings == mw else RateLimiter(mw)
            elif isinstance(mw, InFlightReq):
                kept = previous.in_flight.get(name) if previous is not None else None
                self.in_flight[name] = kept if kept is not None and kept.settings == mw else InFlightLimiter(mw)

    @staticmethod
    def applies(middlewares: Sequence[Any]) -> bool:
        return any(isinstance(m, PIPELINE_KINDS) or (isinstance(m, HeadersMiddleware) and (m.cors or m.security))
                   for m in middlewares)

    def run(self, middlewares: Sequence[Any], req: MiddlewareRequest, now_ns: int,
            other: Any = None) -> RequestOutcome:
        """Run the request side of `middlewares` in order. `other(mw, req)` applies a kind this
        module does not know (stripPrefix, addPrefix, headers) and returns the new request."""
        outcome = RequestOutcome(req)
        for mw in middlewares:
            result: MiddlewareRequest | LocalAnswer
            if isinstance(mw, Redirect | ReplacePath | ReplacePathRegex | StripPrefixRegex | IPAllowList
                          | EncodedCharacters | RequestRedirect | ReplacePrefixMatch):  # the last two: Gateway API filters
                result = mw.check(req)
            elif isinstance(mw, Buffering):
                result = mw.check_request(req.body_size) or req
                if mw.max_response_body_bytes > 0 and not mw.disable_response_buffer:
                    outcome.response_limits.append(mw)
            elif isinstance(mw, ContentType):
                outcome.detect_content_type = outcome.detect_content_type or mw.auto_detect
                result = req
            elif isinstance(mw, DigestAuth):
                result = self.digests[mw.name].check(req)
            elif isinstance(mw, BasicAuth):
                result = mw.check(req)
                if not isinstance(result, LocalAnswer):
                    outcome.basic_auth_user = mw.user_of(req)
            elif isinstance(mw, RateLimit):
                decision = self.rate_limiters[mw.name].check(req, now_ns)
                if isinstance(decision, Admit):
                    outcome.delay_s += decision.delay_s
                    result = req
                else:
                    result = decision
            elif isinstance(mw, InFlightReq):
                limiter = self.in_flight[mw.name]
                slot = limiter.acquire(req)
                if isinstance(slot, LocalAnswer):
                    result = slot
                else:
                    outcome.in_flight.append((limiter, slot))
                    result = req
            elif isinstance(mw, HeadersMiddleware) and (mw.cors or mw.security):
                # unrolled/secure's host check, then the CORS preflight, then the custom headers
                answer = security_request(mw.security, req.host, req.headers) if mw.security else None
                if answer is None and mw.cors is not None:
                    answer = cors_preflight(mw.cors, req.method, req.headers)
                result = answer if answer is not None else (other(mw, req) if other is not None else req)
            elif isinstance(mw, Compress):
                encoding = choose_encoding(mw, req.method, req.headers)
                if encoding is not None:
                    outcome.compress.append((mw, encoding))
                result = req
            elif isinstance(mw, Retry):
                outcome.retry = outcome.retry or mw
                result = req
            elif other is not None:
                result = other(mw, req)
            else:
                result = req
            if isinstance(result, LocalAnswer):
                outcome.release()
                outcome.answer = result
                outcome.delay_s = 0.0
                return outcome
            req = result
        outcome.request = req
        return outcome
