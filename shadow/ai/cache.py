"""Semantic cache (pure): an answer is reused for a sufficiently similar earlier request to the same
model with the same parameters (Chat Completions).

The key is the request without its conversation: model and every other field (temperature, tools,
response_format…) canonicalised, `stream` and `stream_options` left out (a streamed and a buffered
request share answers). Within a key, the conversation's text is embedded (the local hashing embedder
by default) and the most similar live entry is a hit when its cosine similarity is at least
`threshold`. Entries expire after `ttl_s`; beyond `max_entries` the oldest go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from shadow.ai.embed import Embedder, HashingEmbedder
from shadow.ai.protocol import Answer

__all__ = ["CachedAnswer", "SemanticCache", "SemanticCacheSettings", "cache_key", "chat_stream_from_answer"]

_NOT_KEYED = frozenset({"messages", "stream", "stream_options", "user", "metadata"})


@dataclass(frozen=True)
class SemanticCacheSettings:
    name: str
    threshold: float = 0.95
    ttl_s: float = 600.0
    max_entries: int = 1000

    def state_key(self) -> tuple[object, ...]:
        return (self.name,)


@dataclass(frozen=True)
class CachedAnswer:
    body: bytes  # a buffered chat.completion JSON
    answer: Answer
    expires: float


def cache_key(request: dict[str, Any]) -> tuple[str, str] | None:
    """(model, the rest of the request's parameters as canonical JSON), or None when not cacheable."""
    model = request.get("model")
    if not isinstance(model, str) or not isinstance(request.get("messages"), list):
        return None
    rest = {k: v for k, v in request.items() if k not in _NOT_KEYED and k != "model"}
    return model, orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode()


def conversation_text(request: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in request.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(f"{message.get('role', '')}: {content if isinstance(content, str) else ''}")
    return "\n".join(parts)


@dataclass
class _Slot:
    vectors: list[np.ndarray] = field(default_factory=list)
    entries: list[CachedAnswer] = field(default_factory=list)


class SemanticCache:
    def __init__(self, settings: SemanticCacheSettings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or HashingEmbedder()
        self._slots: OrderedDict[tuple[str, str], _Slot] = OrderedDict()
        self._count = 0
        self.hits = 0
        self.misses = 0
        self.tokens_saved = 0

    def embed(self, request: dict[str, Any]) -> np.ndarray:
        return self.embedder.embed([conversation_text(request)])[0]

    def lookup(self, key: tuple[str, str], vector: np.ndarray, now: float | None = None) -> CachedAnswer | None:
        now = time.time() if now is None else now
        slot = self._slots.get(key)
        best: CachedAnswer | None = None
        if slot is not None:
            live = [i for i, e in enumerate(slot.entries) if e.expires > now]
            if len(live) != len(slot.entries):
                self._count -= len(slot.entries) - len(live)
                slot.vectors = [slot.vectors[i] for i in live]
                slot.entries = [slot.entries[i] for i in live]
            if slot.entries:
                sims = np.stack(slot.vectors) @ vector
                i = int(np.argmax(sims))
                if sims[i] >= self.settings.threshold:
                    best = slot.entries[i]
        if best is None:
            self.misses += 1
            return None
        self.hits += 1
        self.tokens_saved += (best.answer.input_tokens or 0) + (best.answer.output_tokens or 0)
        return best

    def store(self, key: tuple[str, str], vector: np.ndarray, body: bytes, answer: Answer,
              now: float | None = None) -> None:
        now = time.time() if now is None else now
        slot = self._slots.setdefault(key, _Slot())
        self._slots.move_to_end(key)
        slot.vectors.append(vector)
        slot.entries.append(CachedAnswer(body, answer, now + self.settings.ttl_s))
        self._count += 1
        while self._count > self.settings.max_entries and self._slots:
            oldest_key, oldest = next(iter(self._slots.items()))
            oldest.vectors.pop(0)
            oldest.entries.pop(0)
            self._count -= 1
            if not oldest.entries:
                del self._slots[oldest_key]

    def __len__(self) -> int:
        return self._count


def chat_body_from_answer(answer: Answer, model: str) -> bytes:
    """A buffered chat.completion carrying `answer` (a streamed answer stored for later hits)."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.tool_calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}}
                                 for i, c in enumerate(answer.tool_calls)]
    usage = {"prompt_tokens": answer.input_tokens or 0, "completion_tokens": answer.output_tokens or 0,
             "total_tokens": (answer.input_tokens or 0) + (answer.output_tokens or 0)}
    return orjson.dumps({"id": "chatcmpl-cached", "object": "chat.completion", "created": int(time.time()),
                         "model": answer.model or model,
                         "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason or "stop"}],
                         "usage": usage})


def chat_stream_from_answer(answer: Answer, model: str, *, include_usage: bool) -> bytes:
    """The SSE stream of a cached answer, for a client that asked to stream."""
    base = {"id": "chatcmpl-cached", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": answer.model or model}

    def event(choices: list[Any], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n"

    out = [event([{"index": 0, "delta": {"role": "assistant", "content": answer.text or ""}, "finish_reason": None}])]
    for i, call in enumerate(answer.tool_calls):
        out.append(event([{"index": 0, "delta": {"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                                                 "function": {"name": call.name,
                                                                              "arguments": call.arguments}}]},
                           "finish_reason": None}]))
    out.append(event([{"index": 0, "delta": {}, "finish_reason": answer.finish_reason or "stop"}]))
    if include_usage:
        out.append(event([], usage={"prompt_tokens": answer.input_tokens or 0,
                                    "completion_tokens": answer.output_tokens or 0,
                                    "total_tokens": (answer.input_tokens or 0) + (answer.output_tokens or 0)}))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)
