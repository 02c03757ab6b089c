"""shadow.ai.protocol: answers read whole or in pieces cut anywhere, for the three wire formats."""

from __future__ import annotations

import json
import random

import pytest

from shadow.ai.protocol import AnswerParser, UsageChunkFilter, operation_for_path, parse_answer, request_model
from shadow.demo.model_server import (
    Reply,
    chat_events,
    chat_payload,
    messages_events,
    messages_payload,
    responses_events,
    responses_payload,
)

TEXT = Reply(text="Paris is the capital of France.", input_tokens=12, output_tokens=7)
TOOL = Reply(tool_calls=[("call_1", "lookup", '{"query": "paris", "limit": 3}')], input_tokens=20, output_tokens=9)


def sse(events: list[tuple[str | None, object]]) -> bytes:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out).encode()


def in_pieces(body: bytes, seed: int) -> AnswerParser:
    """Fed in random cuts (SSE lines split anywhere, even inside \\r\\n)."""
    rng = random.Random(seed)
    parser = AnswerParser()
    i = 0
    while i < len(body):
        n = rng.randint(1, 40)
        parser.feed(body[i:i + n])
        i += n
    return parser


@pytest.mark.parametrize("reply", [TEXT, TOOL], ids=["text", "tool"])
@pytest.mark.parametrize("fmt", ["chat", "responses", "messages"])
def test_streamed_and_buffered_agree(fmt: str, reply: Reply) -> None:
    if fmt == "chat":
        buffered, streamed = chat_payload(reply, "m"), sse(chat_events(reply, "m", include_usage=True))
    elif fmt == "responses":
        buffered, streamed = responses_payload(reply, "m"), sse(responses_events(reply, "m"))
    else:
        buffered, streamed = messages_payload(reply, "m"), sse(messages_events(reply, "m"))
    whole = parse_answer(json.dumps(buffered).encode())
    for seed in range(5):
        crlf = streamed.replace(b"\n", b"\r\n") if seed % 2 else streamed
        pieces = in_pieces(crlf, seed).finish()
        assert (pieces.model, pieces.input_tokens, pieces.output_tokens, pieces.text) == \
            ("m", reply.input_tokens, reply.output_tokens, reply.text)
        assert pieces.streamed and not whole.streamed
        assert [(c.name, c.parsed_arguments()) for c in pieces.tool_calls] == \
            [(c.name, c.parsed_arguments()) for c in whole.tool_calls]
    assert (whole.input_tokens, whole.output_tokens, whole.text) == (reply.input_tokens, reply.output_tokens, reply.text)
    assert [c.name for c in whole.tool_calls] == [n for _, n, _ in reply.tool_calls]


def test_feed_reports_content_only_when_an_answer_piece_arrives() -> None:
    parser = AnswerParser()
    events = chat_events(TEXT, "m", include_usage=True)
    flags = [parser.feed(sse([e])) for e in events]
    assert flags[0] is False  # the role chunk: no content yet (time to first token starts later)
    assert flags[1] is True and flags[-1] is False and flags[-2] is False  # [DONE] and the usage chunk


def test_errors_refusals_and_junk() -> None:
    assert parse_answer(b'{"error": {"message": "overloaded", "type": "server_error"}}').error == "overloaded"
    refusal = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": "no"}}]}
    assert parse_answer(json.dumps(refusal).encode()).refusal
    assert parse_answer(b"<html>bad gateway</html>").input_tokens is None
    assert parse_answer(b"").text == "" and parse_answer(None).model is None
    assert parse_answer(b"data: {not json}\n\ndata: [DONE]\n\n").events == 0


def test_usage_chunk_filter_drops_only_the_usage_chunk_whatever_the_cuts() -> None:
    body = sse(chat_events(TEXT, "m", include_usage=True))
    expected = sse(chat_events(TEXT, "m", include_usage=False))
    for seed in range(5):
        rng, flt, out, i = random.Random(seed), UsageChunkFilter(), bytearray(), 0
        while i < len(body):
            n = rng.randint(1, 50)
            out += flt.feed(body[i:i + n])
            i += n
        out += flt.feed(b"")
        got = [json.loads(line[5:]) for line in bytes(out).splitlines() if line.startswith(b"data: {")]
        want = [json.loads(line[5:]) for line in expected.splitlines() if line.startswith(b"data: {")]
        assert [g["choices"] for g in got] == [w["choices"] for w in want]
        assert bytes(out).endswith(b"data: [DONE]\n\n")


def test_paths_and_request_model() -> None:
    assert operation_for_path("/v1/chat/completions?x=1") == "chat"
    assert operation_for_path("/openai/v1/responses") == "responses"
    assert operation_for_path("/v1/messages") == "messages"
    assert operation_for_path("/v1/completions") == "completions"
    assert operation_for_path("/v1/models") is None
    assert request_model(b'{"model": "gpt-4o"}') == "gpt-4o"
    assert request_model(b'{"model": 3}') is None and request_model(b"[1]") is None and request_model(b"x") is None
