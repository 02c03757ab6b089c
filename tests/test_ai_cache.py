"""shadow.ai.cache and shadow.ai.replies: keys per protocol, similarity threshold, expiry, eviction,
tokens saved, and cached answers written back in each protocol (read back by our parser and by the
official `openai` SDK's own types)."""

from __future__ import annotations

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from shadow.ai.cache import SemanticCache, SemanticCacheSettings, cache_key, conversation_text
from shadow.ai.protocol import Answer, ToolCall, parse_answer
from shadow.ai.replies import body_from_answer, stream_from_answer


def req(text: str, **kw: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **kw}


ANSWER = Answer(model="m", input_tokens=10, output_tokens=5, text="Lisbon.")


def test_key_ignores_streaming_but_not_parameters() -> None:
    assert cache_key(req("x", stream=True, stream_options={"include_usage": True})) == cache_key(req("x"))
    assert cache_key(req("x", temperature=0)) != cache_key(req("x", temperature=1))
    assert cache_key({"model": "m", "input": "x"}) is None  # not a Chat Completions request


def test_keys_per_protocol() -> None:
    responses = {"model": "m", "input": "What is the capital of Portugal?", "instructions": "be brief"}
    key = cache_key(responses, "responses")
    assert key is not None and key[1].startswith("responses ")
    assert cache_key({**responses, "instructions": "be long"}, "responses") != key  # instructions are a parameter
    assert cache_key({**responses, "stream": True}, "responses") == key
    messages = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    assert cache_key(messages, "messages") != cache_key(messages, "chat")  # never answered across protocols
    assert cache_key({"model": "m", "input": "x"}, "embeddings") is None
    assert conversation_text(responses) == "user: What is the capital of Portugal?"
    items = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "hello"}]}]}
    assert conversation_text(items) == "user: hello"


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
    body = stream_from_answer("chat", ANSWER, "m", include_usage=True)
    back = parse_answer(body)
    assert (back.text, back.input_tokens, back.output_tokens, back.streamed) == ("Lisbon.", 10, 5, True)
    assert b'"usage"' not in stream_from_answer("chat", ANSWER, "m", include_usage=False)


TOOL_ANSWER = Answer(model="m", input_tokens=7, output_tokens=3, text="",
                     tool_calls=(ToolCall("get_weather", '{"city": "Lisbon"}'),))


@pytest.mark.parametrize("operation", ["chat", "responses", "messages"])
@pytest.mark.parametrize("answer", [ANSWER, TOOL_ANSWER], ids=["text", "tool call"])
def test_every_protocol_reads_back_as_the_answer_buffered_and_streamed(operation: str, answer: Answer) -> None:
    for body, streamed in ((body_from_answer(operation, answer, "m"), False),
                           (stream_from_answer(operation, answer, "m", include_usage=True), True)):
        back = parse_answer(body)
        assert (back.text, back.input_tokens, back.output_tokens, back.streamed) == (
            answer.text, answer.input_tokens, answer.output_tokens, streamed), (operation, body[:300])
        assert [(c.name, c.parsed_arguments()) for c in back.tool_calls] == [
            (c.name, c.parsed_arguments()) for c in answer.tool_calls], operation


def _events(stream: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line[6:]) for line in stream.splitlines() if line.startswith(b"data: {")]


@pytest.mark.parametrize("answer", [ANSWER, TOOL_ANSWER], ids=["text", "tool call"])
def test_the_openai_sdk_types_accept_the_cached_answers(answer: Answer) -> None:
    ChatCompletion.model_validate(orjson.loads(body_from_answer("chat", answer, "m")))
    for event in _events(stream_from_answer("chat", answer, "m", include_usage=True)):
        ChatCompletionChunk.model_validate(event)
    response = Response.model_validate(orjson.loads(body_from_answer("responses", answer, "m")))
    assert response.output_text == answer.text and response.usage is not None
    adapter: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
    kinds = [adapter.validate_python(e).type for e in _events(stream_from_answer("responses", answer, "m"))]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
