"""shadow.ai.measures and shadow.ai.embed: JSON validity, tool-call agreement, refusals, embedders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shadow.ai.embed import EndpointEmbedder, HashingEmbedder, cosine, embedder_from_spec
from shadow.ai.measures import json_request, json_valid, looks_refused, tools_agree, wants_tools
from shadow.ai.protocol import Answer, ToolCall
from shadow.demo.model_server import ModelServer
from shadow.errors import ShadowError

SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"},
                                                                  "n": {"type": "integer"}}}


def test_json_requests_and_validity() -> None:
    asked = json.dumps({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}})
    assert json_request(asked.encode()) == (True, SCHEMA)
    assert json_request(b'{"text": {"format": {"type": "json_object"}}}') == (True, None)
    assert json_request(b'{"messages": []}') == (False, None)
    assert json_valid(Answer(text='{"answer": "x", "n": 2}'), SCHEMA)
    assert not json_valid(Answer(text='{"answer": "x", "n": true}'), SCHEMA)  # a boolean is no integer
    assert not json_valid(Answer(text='{"n": 2}'), SCHEMA)
    assert not json_valid(Answer(text='{"answer": "x"'), None) and not json_valid(Answer(text='"x"'), None)


def test_tool_agreement_compares_arguments_as_values() -> None:
    a = Answer(tool_calls=(ToolCall("search", '{"q": "x", "limit": 3}'),))
    assert tools_agree(a, Answer(tool_calls=(ToolCall("search", '{"limit":3,"q":"x"}'),)))
    assert not tools_agree(a, Answer(tool_calls=(ToolCall("search", '{"q": "y", "limit": 3}'),)))
    assert not tools_agree(a, Answer(tool_calls=(ToolCall("delete", '{"q": "x", "limit": 3}'),)))
    assert not tools_agree(a, Answer()) and tools_agree(Answer(), Answer())
    assert wants_tools(b'{"tools": [{"type": "function"}]}') and not wants_tools(b'{"tools": []}')


def test_refusals() -> None:
    assert looks_refused(Answer(text="I'm sorry, but I can't help with that."))
    assert looks_refused(Answer(refusal=True))
    assert not looks_refused(Answer(text="Sorry for the wait: Paris is the capital."))


def test_hashing_embedder_orders_paraphrase_above_other_content() -> None:
    e = HashingEmbedder()
    v = e.embed(["Paris is the capital of France.", "The capital of France is Paris.",
                 "Bananas are rich in potassium.", ""])
    assert np.allclose(np.linalg.norm(v[:3], axis=1), 1.0) and not v[3].any()
    same, other = cosine(v[[0]], v[[1]])[0], cosine(v[[0]], v[[2]])[0]
    assert same > 0.8 > 0.3 > other
    assert np.array_equal(e.embed(["x y"]), HashingEmbedder().embed(["x y"]))  # deterministic


def test_endpoint_embedder_against_an_openai_compatible_server() -> None:
    with ModelServer() as server:
        e = embedder_from_spec({"kind": "endpoint", "url": server.url + "/v1", "model": "emb"})
        assert isinstance(e, EndpointEmbedder)
        v = e.embed(["Paris is the capital of France.", "The capital of France is Paris."])
        assert v.shape[0] == 2 and cosine(v[[0]], v[[1]])[0] > 0.8
    with pytest.raises(ShadowError, match="embeddings endpoint"):
        EndpointEmbedder("http://127.0.0.1:9/v1", "m", timeout_s=1).embed(["x"])
    with pytest.raises(ShadowError, match="hashing or endpoint"):
        embedder_from_spec({"kind": "magic"})
