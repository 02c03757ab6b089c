"""Embedders for semantic similarity of answers: pluggable, with a local default that needs no model.

- `HashingEmbedder` (default): words and character 3-grams of the lower-cased text hashed (blake2b)
  into `dims` signed buckets, log-scaled counts, L2-normalised. No download, deterministic; it sees
  shared words and word pieces, not meaning: "Paris is the capital" and "the capital is Paris" are
  close, a paraphrase with no word in common is not. Good enough to tell "same content, other wording"
  from "other content" and to learn a model's own noise floor; use an embeddings endpoint for more.
- `EndpointEmbedder`: any OpenAI-compatible `POST {base_url}/embeddings` (key from an env variable).

`embedder_from_spec` builds one from the policy's `ai.embedder` mapping.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from shadow.errors import ShadowError

__all__ = ["Embedder", "EndpointEmbedder", "HashingEmbedder", "cosine", "embedder_from_spec"]

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text (a zero row for an empty text)."""
        ...


def _normalised(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class HashingEmbedder:
    def __init__(self, dims: int = 1024) -> None:
        self.dims = dims
        self.name = f"hashing-{dims}"

    def _features(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        grams = [f"#{w[i:i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
        return words + grams

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dims), dtype=np.float64)
        for row, text in enumerate(texts):
            for feature in self._features(text or ""):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dims] += 1.0 if (value >> 63) & 1 else -1.0
        return _normalised(np.sign(out) * np.log1p(np.abs(out)))


class EndpointEmbedder:
    """An OpenAI-compatible embeddings endpoint, batched."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, batch: int = 64,
                 timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.batch = batch
        self.timeout_s = timeout_s
        self.name = f"endpoint:{model}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        rows: list[list[float]] = []
        with httpx.Client(timeout=self.timeout_s) as client:
            for start in range(0, len(texts), self.batch):
                chunk = [t or " " for t in texts[start:start + self.batch]]
                try:
                    resp = client.post(f"{self.base_url}/embeddings", json={"model": self.model, "input": chunk},
                                       headers=headers)
                    resp.raise_for_status()
                    data = sorted(resp.json()["data"], key=lambda d: d["index"])
                except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
                    raise ShadowError(f"embeddings endpoint {self.base_url}: {exc}") from None
                rows.extend(d["embedding"] for d in data)
        if not rows:
            return np.zeros((0, 1))
        return _normalised(np.asarray(rows, dtype=np.float64))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two normalised matrices."""
    return np.einsum("ij,ij->i", a, b)


def embedder_from_spec(spec: Mapping[str, Any] | None) -> Embedder:
    """`{kind: hashing, dims: 1024}` (default) or `{kind: endpoint, url, model, keyEnv}`."""
    spec = spec or {}
    kind = spec.get("kind", "hashing")
    if kind == "hashing":
        return HashingEmbedder(int(spec.get("dims", 1024)))
    if kind == "endpoint":
        key_env = spec.get("keyEnv")
        return EndpointEmbedder(str(spec["url"]), str(spec.get("model", "text-embedding-3-small")),
                                api_key=os.environ.get(str(key_env)) if key_env else None)
    raise ShadowError(f"ai.embedder.kind must be hashing or endpoint, got {kind!r}")
