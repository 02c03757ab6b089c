"""Semantic cache (pure): an answer is reused for a sufficiently similar earlier request to the same
model with the same parameters, for Chat Completions, the Responses API and Anthropic Messages.

The key is the protocol and the request without its conversation: model and every other field
(temperature, tools, response_format, instructions, system…) canonicalised, `stream` and
`stream_options` left out (a streamed and a buffered request share answers). The conversation is
`messages` (Chat Completions, Messages) or `input` (Responses: a string or a list of items). Within a key, the conversation's text is embedded (the local hashing embedder
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
from shadow.ai.protocol import CHAT, MESSAGES, RESPONSES, Answer

__all__ = ["CachedAnswer", "SemanticCache", "SemanticCacheSettings", "cache_key", "conversation_text"]

_NOT_KEYED = frozenset({"messages", "input", "stream", "stream_options", "user", "metadata"})
_CONVERSATION = {CHAT: "messages", MESSAGES: "messages", RESPONSES: "input"}


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
    body: bytes  # the buffered answer in its protocol's format
    answer: Answer
    expires: float


def cache_key(request: dict[str, Any], operation: str = CHAT) -> tuple[str, str] | None:
    """(model, the protocol and the rest of the request's parameters as canonical JSON), or None
    when not cacheable (another operation, no model, no conversation)."""
    model = request.get("model")
    field = _CONVERSATION.get(operation)
    conversation = request.get(field) if field is not None else None
    if not isinstance(model, str) or not (isinstance(conversation, list)
                                          or (operation == RESPONSES and isinstance(conversation, str))):
        return None
    rest = {k: v for k, v in request.items() if k not in _NOT_KEYED and k != "model"}
    return model, operation + " " + orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode()


def conversation_text(request: dict[str, Any]) -> str:
    """The conversation's words, role by role: what is embedded."""
    items = request.get("messages", request.get("input"))
    if isinstance(items, str):
        return f"user: {items}"
    parts: list[str] = []
    for message in items if isinstance(items, list) else ():
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
