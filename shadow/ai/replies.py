"""A model answer written back in its protocol's own format, buffered or streamed (pure).

The semantic cache answers a hit with what the model said the first time, in the format the client
asked for: a Chat Completions `chat.completion` (or its chunks), a Responses API `response` (or its
typed events: response.created … response.completed), an Anthropic `message` (or message_start …
message_stop). Streams carry one text delta: the client's parser sees the same events a provider
sends, usage included where the protocol always carries it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from shadow.ai.protocol import CHAT, MESSAGES, RESPONSES, Answer

__all__ = ["body_from_answer", "stream_from_answer"]


def _usage_chat(answer: Answer) -> dict[str, int]:
    i, o = answer.input_tokens or 0, answer.output_tokens or 0
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def _chat_body(answer: Answer, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.tool_calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}}
                                 for i, c in enumerate(answer.tool_calls)]
    return {"id": "chatcmpl-cached", "object": "chat.completion", "created": int(time.time()),
            "model": answer.model or model,
            "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason or "stop"}],
            "usage": _usage_chat(answer)}


def _chat_stream(answer: Answer, model: str, include_usage: bool) -> bytes:
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
        out.append(event([], usage=_usage_chat(answer)))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _responses_body(answer: Answer, model: str, status: str = "completed") -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if answer.text or not answer.tool_calls:
        output.append({"type": "message", "id": "msg_cached", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": answer.text, "annotations": []}]})
    for i, call in enumerate(answer.tool_calls):
        output.append({"type": "function_call", "id": f"fc_cached_{i}", "call_id": f"call_{i}",
                       "name": call.name, "arguments": call.arguments, "status": "completed"})
    i, o = answer.input_tokens or 0, answer.output_tokens or 0
    return {"id": "resp_cached", "object": "response", "created_at": int(time.time()), "status": status,
            "model": answer.model or model, "output": output if status == "completed" else [],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
            "incomplete_details": None, "instructions": None,
            "usage": {"input_tokens": i, "output_tokens": o, "total_tokens": i + o,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}} if status == "completed" else None}


def _responses_stream(answer: Answer, model: str) -> bytes:
    events: list[dict[str, Any]] = [{"type": "response.created", "response": _responses_body(answer, model,
                                                                                                 "in_progress")}]
    body = _responses_body(answer, model)
    for index, item in enumerate(body["output"]):
        if item["type"] == "message":
            empty = {**item, "status": "in_progress", "content": []}
            part = {"type": "output_text", "text": "", "annotations": []}
            events += [
                {"type": "response.output_item.added", "output_index": index, "item": empty},
                {"type": "response.content_part.added", "item_id": item["id"], "output_index": index,
                 "content_index": 0, "part": part},
                {"type": "response.output_text.delta", "item_id": item["id"], "output_index": index,
                 "content_index": 0, "delta": answer.text, "logprobs": []},
                {"type": "response.output_text.done", "item_id": item["id"], "output_index": index,
                 "content_index": 0, "text": answer.text, "logprobs": []},
                {"type": "response.content_part.done", "item_id": item["id"], "output_index": index,
                 "content_index": 0, "part": {**part, "text": answer.text}},
                {"type": "response.output_item.done", "output_index": index, "item": item}]
        else:
            events += [
                {"type": "response.output_item.added", "output_index": index,
                 "item": {**item, "arguments": "", "status": "in_progress"}},
                {"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": index,
                 "delta": item["arguments"]},
                {"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": index,
                 "arguments": item["arguments"]},
                {"type": "response.output_item.done", "output_index": index, "item": item}]
    events.append({"type": "response.completed", "response": body})
    return b"".join(f"event: {e['type']}\n".encode() + b"data: " + orjson.dumps({**e, "sequence_number": n})
                    + b"\n\n" for n, e in enumerate(events))


def _messages_content(answer: Answer) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if answer.text or not answer.tool_calls:
        content.append({"type": "text", "text": answer.text})
    for i, call in enumerate(answer.tool_calls):
        content.append({"type": "tool_use", "id": f"toolu_cached_{i}", "name": call.name,
                        "input": call.parsed_arguments() or {}})
    return content


def _messages_body(answer: Answer, model: str) -> dict[str, Any]:
    return {"id": "msg_cached", "type": "message", "role": "assistant", "model": answer.model or model,
            "content": _messages_content(answer), "stop_reason": answer.finish_reason or "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens or 0, "output_tokens": answer.output_tokens or 0}}


def _messages_stream(answer: Answer, model: str) -> bytes:
    body = _messages_body(answer, model)
    start = {**body, "content": [], "stop_reason": None,
             "usage": {"input_tokens": answer.input_tokens or 0, "output_tokens": 0}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(body["content"]):
        if block["type"] == "text":
            events += [{"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                       {"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": block["text"]}}]
        else:
            events += [{"type": "content_block_start", "index": index,
                        "content_block": {**block, "input": {}}},
                       {"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}}]
        events.append({"type": "content_block_stop", "index": index})
    events += [{"type": "message_delta", "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": answer.output_tokens or 0}},
               {"type": "message_stop"}]
    return b"".join(f"event: {e['type']}\n".encode() + b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


def body_from_answer(operation: str, answer: Answer, model: str) -> bytes:
    """The buffered answer of `operation` (chat, responses or messages) carrying `answer`."""
    if operation == RESPONSES:
        return orjson.dumps(_responses_body(answer, model))
    if operation == MESSAGES:
        return orjson.dumps(_messages_body(answer, model))
    if operation == CHAT:
        return orjson.dumps(_chat_body(answer, model))
    raise ValueError(f"no answer format for {operation!r}")


def stream_from_answer(operation: str, answer: Answer, model: str, *, include_usage: bool = False) -> bytes:
    """The SSE stream of `operation` carrying `answer` (`include_usage`: Chat Completions' usage chunk,
    which a client asks for; the other protocols always stream their usage)."""
    if operation == RESPONSES:
        return _responses_stream(answer, model)
    if operation == MESSAGES:
        return _messages_stream(answer, model)
    if operation == CHAT:
        return _chat_stream(answer, model, include_usage)
    raise ValueError(f"no answer format for {operation!r}")
