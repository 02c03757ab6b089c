"""AI gateway addon: the `chatCompletion` and `tokenRateLimit` middlewares on model traffic.

Adapts flows to `shadow.ai` (pure): on `request` (after routing) the route's token limits are checked
(429 + Retry-After), the body governed (model, allow list, parameters) and the provider's credentials
put in place of the client's; on `responseheaders` an SSE answer is streamed to the client chunk by
chunk (`flow.response.stream`), each chunk also fed to an `AnswerParser` that keeps the usage; on
`response` the tokens are added to the limits' counters and the row's `ai_*` columns set. Mirror
copies to a candidate model get that model's name and credentials (`rewrite_copy`).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from mitmproxy import http

from addons.auth import AUTH_METADATA
from addons.reload import ActiveConfig, CopyRewrite, GatewayState, RouteContext
from shadow.ai.cache import SemanticCache, SemanticCacheSettings, cache_key
from shadow.ai.config import (
    ChatCompletionSettings,
    TokenRateLimitSettings,
    credential_header_names,
)
from shadow.ai.governance import ensure_stream_usage, govern_request, set_model
from shadow.ai.guard import ContentGuardSettings, guard_body
from shadow.ai.protocol import (
    CHAT,
    MESSAGES,
    RESPONSES,
    Answer,
    AnswerParser,
    UsageChunkFilter,
    operation_for_path,
    parse_answer,
)
from shadow.ai.ratelimit import TokenLimiter, TokenLimiters
from shadow.ai.replies import body_from_answer, stream_from_answer
from shadow.ai.semconv import genai_attributes, genai_span_name
from shadow.ai.usage import ai_columns
from shadow.gateway.exchange import EXTRA_COLUMNS_METADATA, GENAI_SPAN_METADATA
from shadow.gateway.mirror import MirrorResult

logger = logging.getLogger(__name__)

JSON = {"Content-Type": "application/json"}
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})
_CACHED_OPERATIONS = (CHAT, RESPONSES, MESSAGES)  # what the semantic cache can answer in kind
AI_MIDDLEWARE_TYPES = (ChatCompletionSettings, TokenRateLimitSettings, ContentGuardSettings, SemanticCacheSettings)


def error_response(status: int, message: str, code: str, *, extra_headers: dict[str, str] | None = None) -> http.Response:
    """An OpenAI-style error answer (the SDKs read `error.message`)."""
    body = orjson.dumps({"error": {"message": message, "type": "shadow_gateway", "code": code}})
    return http.Response.make(status, body, {**JSON, **(extra_headers or {})})


@dataclass
class AiFlow:
    """What the AI concern keeps for one flow between its hooks."""

    operation: str | None
    chat: ChatCompletionSettings | None
    limiters: list[tuple[TokenLimiter, str]]  # (limiter, key)
    requested_model: str | None
    parser: AnswerParser | None = None  # set when the answer is streamed
    first_content_at: float | None = None
    usage_injected: bool = False  # the gateway asked for stream usage: the usage chunk is not the client's
    guards: list[ContentGuardSettings] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the content guard did (the ai_guard column)
    cache_slot: tuple[SemanticCache, tuple[str, str], Any] | None = None  # a miss: store the answer here
    streamed_body: bytearray = field(default_factory=bytearray)
    body_cap: int = 0


class AiGateway:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.limiters = TokenLimiters()
        self._by_name: dict[str, TokenLimiter] = {}
        self.caches: dict[str, SemanticCache] = {}
        self.flows: weakref.WeakKeyDictionary[http.HTTPFlow, AiFlow] = weakref.WeakKeyDictionary()
        self.counts: Counter[str] = Counter()
        state.on_activate.append(self._on_activate)
        state.extra_counters.append(self.counters)

    def counters(self) -> dict[str, int]:
        out = {f"ai_{k}": v for k, v in self.counts.items()}
        for key in ("hits", "misses", "tokens_saved"):
            out[f"ai_cache_{key}"] = sum(getattr(c, key) for c in self.caches.values())
        return out

    def _on_activate(self, active: ActiveConfig, _previous: ActiveConfig | None) -> None:
        middlewares = active.config.middlewares.values()
        self._by_name = self.limiters.configure([m for m in middlewares if isinstance(m, TokenRateLimitSettings)])
        caches: dict[str, SemanticCache] = {}
        for m in middlewares:
            if isinstance(m, SemanticCacheSettings):  # an unchanged cache keeps its entries over a reload
                kept = self.caches.get(m.name)
                caches[m.name] = kept if kept is not None and kept.settings == m else SemanticCache(m)
        self.caches = caches
        if any(isinstance(m, AI_MIDDLEWARE_TYPES) for m in middlewares) and self not in self.state.mirror_rewriters:
            self.state.mirror_rewriters.append(self)

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        uses_ai = any(isinstance(m, AI_MIDDLEWARE_TYPES) for m in active.config.middlewares.values())
        return frozenset({"request", "responseheaders", "response", "error"} if uses_ai else ())

    # -- request -------------------------------------------------------------------------------------
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        route = self.state.routes.get(flow)
        if route is None or route.plan is None:
            return
        chat = next((m for m in route.plan.middlewares if isinstance(m, ChatCompletionSettings)), None)
        limits = [m for m in route.plan.middlewares if isinstance(m, TokenRateLimitSettings)]
        guards = [m for m in route.plan.middlewares if isinstance(m, ContentGuardSettings)]
        cache_mw = next((m for m in route.plan.middlewares if isinstance(m, SemanticCacheSettings)), None)
        if chat is None and not limits and not guards and cache_mw is None:
            return
        req = flow.request
        operation = operation_for_path(route.path)
        now = time.time()
        keyed = [(self._by_name[m.name], self._limit_key(flow, m)) for m in limits if m.name in self._by_name]
        for limiter, key in keyed:
            decision = limiter.check(key, now)
            if not decision.allowed:
                self.counts["rate_limited"] += 1
                limit = decision.limit
                assert limit is not None
                flow.response = error_response(
                    429, f"token limit reached: {decision.used} of {limit.tokens} {limit.count} tokens per "
                         f"{limit.period_s:g}s used; retry in {decision.retry_after_s}s",
                    "token_rate_limit_exceeded", extra_headers={"Retry-After": str(decision.retry_after_s)})
                return
        notes: list[str] = []
        for guard in guards:
            outcome = guard_body(guard.request, req.content)
            note = outcome.note("request")
            if outcome.blocked_by is not None:
                self.counts["guard_blocked"] += 1
                flow.response = error_response(403, f"content guard: the request was blocked ({outcome.blocked_by})",
                                               "content_blocked")
                flow.metadata[EXTRA_COLUMNS_METADATA] = {"ai_operation": operation, "ai_guard": note}
                return
            if outcome.body is not None:
                self.counts["guard_masked"] += 1
                req.content = outcome.body
                notes.append(note or "")
        requested, injected = None, False
        slot = None
        if cache_mw is not None and operation in _CACHED_OPERATIONS and req.method == "POST":
            slot = self._cache_lookup(flow, self.caches.get(cache_mw.name), operation)
            if flow.response is not None:
                return
        if operation == CHAT and req.method == "POST":
            with_usage = ensure_stream_usage(req.content)
            if with_usage is not None:
                req.content, injected = with_usage, True
        if chat is not None and req.method == "POST" and operation is not None:
            governed = govern_request(chat, req.content, operation)
            if governed.status:
                self.counts["refused_" + governed.code] += 1
                flow.response = error_response(governed.status, governed.message, governed.code)
                return
            if governed.body is not None:
                req.content = governed.body
            requested = governed.model
            if chat.token is not None:
                fields = [(k, v) for k, v in req.headers.fields if k.decode("latin-1").lower() not in _CREDENTIAL_HEADERS]
                fields += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in chat.token.headers(chat.provider)]
                req.headers.fields = tuple(fields)
        self.counts["requests"] += 1
        self.flows[flow] = AiFlow(operation, chat, keyed, requested, usage_injected=injected, guards=guards,
                                  notes=notes, cache_slot=slot)

    def _cache_lookup(self, flow: http.HTTPFlow, cache: SemanticCache | None,
                      operation: str) -> tuple[SemanticCache, tuple[str, str], Any] | None:
        """Answer from the cache (flow.response set), or the slot where the answer is to be stored."""
        if cache is None:
            return None
        try:
            obj = orjson.loads(flow.request.content or b"")
        except orjson.JSONDecodeError:
            return None
        key = cache_key(obj, operation) if isinstance(obj, dict) else None
        if key is None:
            return None
        vector = cache.embed(obj)
        hit = cache.lookup(key, vector)
        if hit is None:
            return cache, key, vector
        if obj.get("stream") is True:
            options = obj.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            flow.response = http.Response.make(200, stream_from_answer(operation, hit.answer, key[0],
                                                                        include_usage=include_usage),
                                               {"Content-Type": "text/event-stream", "X-Shadow-Cache": "hit"})
        else:
            flow.response = http.Response.make(200, hit.body, {**JSON, "X-Shadow-Cache": "hit"})
        columns = ai_columns(hit.answer, operation, key[0], None, ttft_ms=None)
        columns.update(ai_cache="hit", ai_cost_usd=0.0)
        flow.metadata[EXTRA_COLUMNS_METADATA] = columns
        return None

    def _limit_key(self, flow: http.HTTPFlow, settings: TokenRateLimitSettings) -> str:
        if settings.key_header is not None:
            return flow.request.headers.get(settings.key_header, "")
        if settings.key_claim is not None:
            passed = flow.metadata.get(AUTH_METADATA)
            value = passed.claims.get(settings.key_claim) if passed is not None else None
            return "" if value is None else str(value)
        peer = flow.client_conn.peername
        return str(peer[0]) if peer else ""

    # -- answer --------------------------------------------------------------------------------------
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ai = self.flows.get(flow)
        resp = flow.response
        if ai is None or resp is None:
            return
        if "text/event-stream" not in resp.headers.get("content-type", ""):
            return  # a buffered answer is read whole in `response`
        ai.parser = AnswerParser()
        capture = self.state.capture
        ai.body_cap = (self._capture_limit() + 1) if capture is not None else 0
        resp.stream = self._streamer(ai)
        self.counts["streams"] += 1

    def _capture_limit(self) -> int:
        active = self.state.active
        return active.config.shadow.capture.max_body_bytes if active is not None else 0

    @staticmethod
    def _streamer(ai: AiFlow) -> Callable[[bytes], list[bytes]]:
        parser = ai.parser
        assert parser is not None
        drop_usage = UsageChunkFilter().feed if ai.usage_injected else None

        def stream(chunk: bytes) -> list[bytes]:
            # Runs inline for each chunk, which then goes to the client at once (unchanged, unless it
            # holds the usage chunk the gateway asked for on the client's behalf). Never an empty chunk:
            # on a chunked HTTP/1.1 answer that would be the end of the body.
            if chunk:
                if parser.feed(chunk) and ai.first_content_at is None:
                    ai.first_content_at = time.time()
                room = ai.body_cap - len(ai.streamed_body)
                if room > 0:
                    ai.streamed_body += chunk[:room]
            out = drop_usage(chunk) if drop_usage is not None else chunk
            return [out] if out else []

        return stream

    def response(self, flow: http.HTTPFlow) -> None:
        ai = self.flows.pop(flow, None)
        resp = flow.response
        if ai is None or resp is None:
            return
        if ai.parser is not None:
            answer = ai.parser.finish()
            if ai.body_cap:
                resp.data.content = bytes(ai.streamed_body)  # for the capture (already sent to the client)
            if any(g.response for g in ai.guards):
                ai.notes.append("answer not guarded: streamed")
        else:
            try:
                content = resp.content
            except ValueError:  # an unknown content-encoding
                content = None
            answer = parse_answer(content)
            self._guard_answer(flow, ai, content)
        self._account(flow, ai, answer, self.state.routes.get(flow))

    def _guard_answer(self, flow: http.HTTPFlow, ai: AiFlow, content: bytes | None) -> None:
        for guard in ai.guards:
            outcome = guard_body(guard.response, content)
            note = outcome.note("answer")
            if outcome.blocked_by is not None:
                self.counts["guard_blocked"] += 1
                ai.notes.append(note or "")
                flow.response = error_response(403, f"content guard: the answer was blocked ({outcome.blocked_by})",
                                               "content_blocked")
                return
            if outcome.body is not None and flow.response is not None:
                self.counts["guard_masked"] += 1
                ai.notes.append(note or "")
                flow.response.content = content = outcome.body

    def error(self, flow: http.HTTPFlow) -> None:
        # A stream cut short: the tokens seen so far still count.
        ai = self.flows.pop(flow, None)
        if ai is not None and ai.parser is not None:
            self._account(flow, ai, ai.parser.finish(), self.state.routes.get(flow))

    def _account(self, flow: http.HTTPFlow, ai: AiFlow, answer: Answer, route: RouteContext | None) -> None:
        now = time.time()
        tokens_in, tokens_out = answer.input_tokens or 0, answer.output_tokens or 0
        for limiter, key in ai.limiters:
            limiter.record(key, tokens_in, tokens_out, now)
        self.counts["input_tokens"] += tokens_in
        self.counts["output_tokens"] += tokens_out
        sent_at = route.sent_at if route is not None else 0.0
        ttft = (ai.first_content_at - sent_at) * 1000.0 if ai.first_content_at and sent_at else None
        columns = ai_columns(answer, ai.operation, ai.requested_model, ai.chat, ttft_ms=ttft)
        columns["ai_guard"] = "; ".join(ai.notes) or None
        if ai.cache_slot is not None:
            columns["ai_cache"] = "miss"
            resp = flow.response
            if resp is not None and resp.status_code == 200 and answer.error is None:
                cache, slot_key, vector = ai.cache_slot
                body = resp.content if ai.parser is None else None
                if body is None and ai.operation is not None:
                    body = body_from_answer(ai.operation, answer, slot_key[0])
                if body is not None:
                    cache.store(slot_key, vector, body, answer)
        flow.metadata[EXTRA_COLUMNS_METADATA] = columns
        flow.metadata[GENAI_SPAN_METADATA] = self._genai_span(flow, ai, answer)

    @staticmethod
    def _genai_span(flow: http.HTTPFlow, ai: AiFlow, answer: Answer) -> tuple[str, tuple[tuple[str, Any], ...]]:
        try:
            request = orjson.loads(flow.request.content or b"{}")
        except orjson.JSONDecodeError:
            request = None
        body = request if isinstance(request, dict) else None
        model = ai.requested_model or (body.get("model") if body is not None else None)
        provider = ai.chat.provider if ai.chat is not None else ("anthropic" if ai.operation == "messages" else "openai")
        return (genai_span_name(ai.operation, model if isinstance(model, str) else None),
                genai_attributes(operation=ai.operation, provider=provider, request=body,
                                 requested_model=ai.requested_model, answer=answer))

    # -- mirror copies ---------------------------------------------------------------------------------
    def rewrite_copy(self, flow: http.HTTPFlow, target: str, headers: tuple[tuple[str, str], ...],
                     body: bytes | None) -> CopyRewrite | None:
        route = self.state.routes.get(flow)
        if route is None or route.plan is None:
            return None
        chat = next((m for m in route.plan.middlewares if isinstance(m, ChatCompletionSettings)), None)
        operation = operation_for_path(route.path)
        if chat is None or operation is None:
            return None
        candidate = chat.candidates.get(target)
        requested: str | None = None
        if candidate is not None:
            # Never the primary provider's key to another provider: its own key, or none.
            drop = _CREDENTIAL_HEADERS | set(credential_header_names(candidate.provider))
            kept = tuple((k, v) for k, v in headers if k.lower() not in drop)
            headers = kept + (candidate.token.headers(candidate.provider) if candidate.token is not None else ())
            if candidate.model is not None and body is not None:
                body = set_model(body, candidate.model) or body
                requested = candidate.model

        def columns(result: MirrorResult) -> dict[str, object]:
            answer = parse_answer(result.body) if result.error is None else Answer()
            return ai_columns(answer, operation, requested, chat, ttft_ms=None)

        return CopyRewrite(headers, body, columns)
