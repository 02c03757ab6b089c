"""shadow.ai.cache: keys, similarity threshold, expiry, eviction, tokens saved, cached streams."""

from __future__ import annotations

from shadow.ai.cache import SemanticCache, SemanticCacheSettings, cache_key, chat_stream_from_answer
from shadow.ai.protocol import Answer, parse_answer


def req(text: str, **kw: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **kw}


ANSWER = Answer(model="m", input_tokens=10, output_tokens=5, text="Lisbon.")


def test_key_ignores_streaming_but_not_parameters() -> None:
    assert cache_key(req("x", stream=True, stream_options={"include_usage": True})) == cache_key(req("x"))
    assert cache_key(req("x", temperature=0)) != cache_key(req("x", temperature=1))
    assert cache_key({"model": "m", "input": "x"}) is None  # Chat Completions only


def test_hit_above_threshold_miss_below_and_expiry() -> None:
    cache = SemanticCache(SemanticCacheSettings("c", threshold=0.9, ttl_s=60, max_entries=10))
    first = req("What is the capital of Portugal?")
    key = cache_key(first)
    assert key is not None
    cache.store(key, cache.embed(first), b"{}", ANSWER, now=100.0)
    assert cache.lookup(key, cache.embed(req("what is the capital of portugal")), now=101.0) is not None
    assert cache.lookup(key, cache.embed(req("How do volcanoes erupt?")), now=101.0) is None
    assert cache.lookup(key, cache.embed(first), now=161.0) is None  # expired
    assert (cache.hits, cache.misses, cache.tokens_saved, len(cache)) == (1, 2, 15, 0)


def test_oldest_entries_are_evicted() -> None:
    cache = SemanticCache(SemanticCacheSettings("c", threshold=0.99, max_entries=2))
    keys = []
    for i, text in enumerate(["alpha beta", "gamma delta", "epsilon zeta"]):
        r = req(text, seed=i)
        key = cache_key(r)
        assert key is not None
        keys.append((key, cache.embed(r)))
        cache.store(key, keys[-1][1], b"{}", ANSWER, now=1.0)
    assert len(cache) == 2 and cache.lookup(*keys[0], now=2.0) is None and cache.lookup(*keys[2], now=2.0) is not None


def test_cached_stream_reads_back_as_the_answer() -> None:
    body = chat_stream_from_answer(ANSWER, "m", include_usage=True)
    back = parse_answer(body)
    assert (back.text, back.input_tokens, back.output_tokens, back.streamed) == ("Lisbon.", 10, 5, True)
    assert b'"usage"' not in chat_stream_from_answer(ANSWER, "m", include_usage=False)
