"""An OpenAI-compatible model server with no model in it: for tests, benchmarks and `shadow demo --ai`.

No weights can be loaded here, so answers are built from the prompt's words: deterministic at
temperature 0, with controlled randomness above (a seeded choice of openings), so the same model asked
twice disagrees a little, as real ones do. It speaks Chat Completions, the Responses API, Anthropic
Messages (buffered and SSE, with `usage`) and embeddings, makes tool calls when `tools` are offered,
answers JSON when `response_format` asks, and can be told to be slower, costlier or worse:

    with ModelServer(ModelBehaviour(style="alt", cost_factor=2.0)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k")

Run alone: `python -m shadow.demo.model_server --port 8000 [--style alt] [--broken-json 0.5] ...`
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["ModelBehaviour", "ModelServer", "answer_text"]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(["the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "what", "which", "who", "how", "is", "are", "was", "be", "do", "does", "about", "please", "tell", "me", "you", "your", "can", "could", "would", "this", "that", "it", "its", "from", "by", "at", "as"])
_OPENERS = {"plain": ("Here is what I found about", "Looking at", "Regarding", "About"),
            "alt": ("In short, on", "Briefly, concerning", "To sum up", "As for")}
REFUSAL = "I'm sorry, but I can't help with that."


@dataclass
class ModelBehaviour:
    """How the fake model answers. Rates are probabilities per request."""

    model: str | None = None  # answer with this model name (None: the requested one)
    style: str = "plain"  # plain | alt (same content, other wording) | offtopic (other content)
    ttft_s: float = 0.0  # delay before the first token
    chunk_delay_s: float = 0.0  # between streamed chunks
    cost_factor: float = 1.0  # output tokens reported × this (a wordier, costlier model)
    broken_json: float = 0.0  # JSON answers cut in the middle
    wrong_tools: float = 0.0  # another tool, or other arguments
    refusals: float = 0.0
    errors: float = 0.0  # 500 answers
    seed: int = 0


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2]


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def prompt_of(obj: dict[str, Any]) -> tuple[str, str]:
    """(last user text, all text) of a chat, responses or messages request."""
    texts: list[str] = []
    last = ""
    for message in obj.get("messages") or ():
        if isinstance(message, dict):
            text = _message_text(message.get("content"))
            texts.append(text)
            if message.get("role") == "user":
                last = text
    source = obj.get("input")
    if isinstance(source, str):
        last = source
        texts.append(source)
    elif isinstance(source, list):
        for item in source:
            if isinstance(item, dict):
                text = _message_text(item.get("content"))
                texts.append(text)
                last = text or last
    for extra in (obj.get("instructions"), obj.get("system")):
        if isinstance(extra, str):
            texts.append(extra)
    return last, " ".join(texts)


def answer_text(prompt: str, style: str, rng: random.Random, temperature: float) -> str:
    """The answer's sentence: the prompt's topic words, worded by `style`, the opening drawn at random
    when temperature > 0."""
    topics = list(dict.fromkeys(_words(prompt)))[:6] or ["nothing"]
    if style == "offtopic":
        return "The weather is usually pleasant in spring, and many people enjoy long walks outside."
    openers = _OPENERS["alt" if style == "alt" else "plain"]
    opener = openers[rng.randrange(len(openers))] if temperature > 0 else openers[0]
    head, tail = topics[:3], topics[3:]
    if style == "alt":
        listed = ", ".join(head)
        more = f" It also touches on {' and '.join(tail)}." if tail else ""
        return f"{opener} {listed}: those are the main points.{more}"
    listed = ", ".join(head[:-1]) + (f" and {head[-1]}" if len(head) > 1 else head[0])
    more = f" It also covers {' and '.join(tail)}." if tail else ""
    return f"{opener} {listed}, the main points are clear.{more}"


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, arguments JSON)
    input_tokens: int = 0
    output_tokens: int = 0
    refused: bool = False


def build_reply(obj: dict[str, Any], behaviour: ModelBehaviour, rng: random.Random) -> Reply:
    last, everything = prompt_of(obj)
    input_tokens = max(1, len(everything.split()) + 3 * len(obj.get("messages") or ()))
    temperature = float(obj.get("temperature", 1.0) or 0.0)
    tools = [t for t in obj.get("tools") or () if isinstance(t, dict)]
    reply = Reply(input_tokens=input_tokens)
    if rng.random() < behaviour.refusals:
        reply.text, reply.refused = REFUSAL, True
    elif tools and obj.get("tool_choice") != "none":
        names = [str((t.get("function") or t).get("name")) for t in tools]
        topics = _words(last) or ["x"]
        name, arguments = names[0], {"query": topics[0], "limit": 3}
        if rng.random() < behaviour.wrong_tools:
            name, arguments = (names[-1], arguments) if len(names) > 1 else (name, {"query": topics[-1] + "s", "limit": 30})
        reply.tool_calls.append((f"call_{uuid.uuid4().hex[:12]}", name, json.dumps(arguments)))
    else:
        text = answer_text(last, behaviour.style, rng, temperature)
        fmt = obj.get("response_format") or (obj.get("text") or {}).get("format")
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            text = json.dumps({"answer": text, "topics": _words(last)[:3]})
            if rng.random() < behaviour.broken_json:
                text = text[: len(text) // 2]
        reply.text = text
    out = len(reply.text.split()) + sum(len(args) // 4 + 2 for _, _, args in reply.tool_calls)
    reply.output_tokens = max(1, round(out * behaviour.cost_factor))
    return reply


def _pieces(text: str) -> list[str]:
    """The text cut into word-sized stream chunks (each keeps its leading space)."""
    return re.findall(r"\s*\S+", text) or [text]


class ModelServer:
    """The fake model on 127.0.0.1 (threaded; `requests` records each request's path, headers and JSON)."""

    def __init__(self, behaviour: ModelBehaviour | None = None, *, port: int = 0) -> None:
        self.behaviour = behaviour or ModelBehaviour()
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._count = 0
        self.streams_done = 0  # streams whose last byte was sent (tests: did the client see a chunk before?)
        self._port = port
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def received(self) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        with self._lock:
            return list(self.requests)

    def _rng(self, obj: dict[str, Any]) -> random.Random:
        with self._lock:
            self._count += 1
            count = self._count
        seed = obj.get("seed")
        basis = f"{self.behaviour.seed}:{seed}" if isinstance(seed, int) else f"{self.behaviour.seed}:{count}"
        return random.Random(int(hashlib.sha256(basis.encode()).hexdigest()[:16], 16))

    def start(self) -> ModelServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    obj = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    obj = None
                if not isinstance(obj, dict):
                    self._json(400, {"error": {"message": "body is not a JSON object", "type": "invalid_request"}})
                    return
                with server._lock:
                    server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, obj))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.handle(self, self.path.partition("?")[0], obj)

            def _json(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="model-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- answers ---------------------------------------------------------------------------------------
    def handle(self, h: Any, path: str, obj: dict[str, Any]) -> None:
        b = self.behaviour
        rng = self._rng(obj)
        if path.endswith("/embeddings"):
            h._json(200, embeddings_payload(obj))
            return
        if rng.random() < b.errors:
            h._json(500, {"error": {"message": "the model is overloaded", "type": "server_error"}})
            return
        reply = build_reply(obj, b, rng)
        model = b.model or str(obj.get("model") or "fake-model")
        if b.ttft_s:
            time.sleep(b.ttft_s)
        stream = obj.get("stream") is True
        if path.endswith("/chat/completions"):
            include_usage = bool((obj.get("stream_options") or {}).get("include_usage"))
            if stream:
                self._sse(h, chat_events(reply, model, include_usage))
            else:
                h._json(200, chat_payload(reply, model))
        elif path.endswith("/responses"):
            if stream:
                self._sse(h, responses_events(reply, model))
            else:
                h._json(200, responses_payload(reply, model))
        elif path.endswith("/messages"):
            if stream:
                self._sse(h, messages_events(reply, model))
            else:
                h._json(200, messages_payload(reply, model))
        else:
            h._json(404, {"error": {"message": f"no such endpoint {path}", "type": "not_found"}})

    def _sse(self, h: Any, events: list[tuple[str | None, Any]]) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i, (name, data) in enumerate(events):
            if i and self.behaviour.chunk_delay_s:
                time.sleep(self.behaviour.chunk_delay_s)
            text = data if isinstance(data, str) else json.dumps(data)
            event = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            payload = event.encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
        with self._lock:
            self.streams_done += 1


# -- wire formats ------------------------------------------------------------------------------------------
def chat_payload(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                 for i, n, a in reply.tool_calls]
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message,
                                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": {"prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
                      "total_tokens": reply.input_tokens + reply.output_tokens}}


def chat_events(reply: Reply, model: str, include_usage: bool) -> list[tuple[str | None, Any]]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    events: list[tuple[str | None, Any]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    for piece in (_pieces(reply.text) if reply.text else []):
        events.append((None, {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}))
    for k, (call_id, name, args) in enumerate(reply.tool_calls):
        events.append((None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": k, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]},
            "finish_reason": None}]}))
        half = len(args) // 2
        for part in (args[:half], args[half:]):
            events.append((None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": k, "function": {"arguments": part}}]}, "finish_reason": None}]}))
    events.append((None, {**base, "choices": [{"index": 0, "delta": {},
                                               "finish_reason": "tool_calls" if reply.tool_calls else "stop"}]}))
    if include_usage:
        events.append((None, {**base, "choices": [], "usage": chat_payload(reply, model)["usage"]}))
    events.append((None, "[DONE]"))
    return events


def responses_payload(reply: Reply, model: str) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reply.text:
        output.append({"type": "message", "id": f"msg_{uuid.uuid4().hex[:12]}", "role": "assistant",
                       "status": "completed",
                       "content": [{"type": "output_text", "text": reply.text, "annotations": []}]})
    for call_id, name, args in reply.tool_calls:
        output.append({"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
                       "arguments": args, "status": "completed"})
    return {"id": f"resp_{uuid.uuid4().hex[:12]}", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": model, "output": output,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                      "total_tokens": reply.input_tokens + reply.output_tokens,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def responses_events(reply: Reply, model: str) -> list[tuple[str | None, Any]]:
    final = responses_payload(reply, model)
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str | None, Any]] = [("response.created", {"type": "response.created", "sequence_number": 0,
                                                                  "response": start})]
    seq = 1
    for index, item in enumerate(final["output"]):
        shell = {**item, "status": "in_progress"}
        if item["type"] == "message":
            shell["content"] = []
        else:
            shell["arguments"] = ""
        events.append(("response.output_item.added", {"type": "response.output_item.added", "sequence_number": seq,
                                                      "output_index": index, "item": shell}))
        seq += 1
        if item["type"] == "message":
            for piece in _pieces(reply.text):
                events.append(("response.output_text.delta", {
                    "type": "response.output_text.delta", "sequence_number": seq, "item_id": item["id"],
                    "output_index": index, "content_index": 0, "delta": piece, "logprobs": []}))
                seq += 1
        else:
            events.append(("response.function_call_arguments.delta", {
                "type": "response.function_call_arguments.delta", "sequence_number": seq, "item_id": item["id"],
                "output_index": index, "delta": item["arguments"]}))
            seq += 1
        events.append(("response.output_item.done", {"type": "response.output_item.done", "sequence_number": seq,
                                                     "output_index": index, "item": item}))
        seq += 1
    events.append(("response.completed", {"type": "response.completed", "sequence_number": seq, "response": final}))
    return events


def messages_payload(reply: Reply, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for call_id, name, args in reply.tool_calls:
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": json.loads(args)})
    return {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens}}


def messages_events(reply: Reply, model: str) -> list[tuple[str | None, Any]]:
    final = messages_payload(reply, model)
    start = {**final, "content": [], "stop_reason": None,
             "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1}}
    events: list[tuple[str | None, Any]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(final["content"]):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            for piece in _pieces(block["text"]):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": piece}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": final["stop_reason"],
                                                                         "stop_sequence": None},
                                     "usage": {"output_tokens": reply.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def embeddings_payload(obj: dict[str, Any]) -> dict[str, Any]:
    from shadow.ai.embed import HashingEmbedder

    source = obj.get("input")
    texts = [source] if isinstance(source, str) else [str(t) for t in source or ()]
    vectors = HashingEmbedder().embed(texts)
    return {"object": "list", "model": str(obj.get("model") or "fake-embedding"),
            "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": sum(len(t.split()) for t in texts),
                      "total_tokens": sum(len(t.split()) for t in texts)}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model")
    parser.add_argument("--style", default="plain", choices=("plain", "alt", "offtopic"))
    parser.add_argument("--ttft", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--cost-factor", type=float, default=1.0)
    parser.add_argument("--broken-json", type=float, default=0.0)
    parser.add_argument("--wrong-tools", type=float, default=0.0)
    parser.add_argument("--refusals", type=float, default=0.0)
    parser.add_argument("--errors", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    behaviour = ModelBehaviour(model=a.model, style=a.style, ttft_s=a.ttft, chunk_delay_s=a.chunk_delay,
                               cost_factor=a.cost_factor, broken_json=a.broken_json, wrong_tools=a.wrong_tools,
                               refusals=a.refusals, errors=a.errors, seed=a.seed)
    server = ModelServer(behaviour, port=a.port).start()
    print(f"LISTENING {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
