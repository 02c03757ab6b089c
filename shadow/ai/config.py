"""Options of the AI gateway's middlewares (hooked into shadow.gateway.config's middleware parser).

Names follow Traefik Hub's AI gateway (its `chat-completion` middleware: `token`, `model`,
`allowModelOverride`, `allowParamsOverride`, `params`), written camelCase like Traefik's file provider::

    http:
      middlewares:
        llm:
          chatCompletion:
            provider: openai                 # openai (Authorization: Bearer) | anthropic (x-api-key)
            token: {env: OPENAI_API_KEY}     # or {file: /run/secrets/openai}; never the key itself
            model: gpt-4o                    # the default model; locked when allowModelOverride: false
            allowModelOverride: true
            allowedModels: ["gpt-4o*", "gpt-4.1-mini"]   # glob patterns; others get 403
            params: {temperature: 0.2}       # defaults; forced when allowParamsOverride: false
            allowParamsOverride: true
            maxParams: {maxTokens: 1024, temperature: 1.0}   # caps (a larger value is lowered)
            prices:                          # USD per million tokens, by model glob (first match)
              "gpt-4o-mini*": {input: 0.15, output: 0.6}
            candidates:                      # mirror targets (service names) that are other models
              llm-next: {model: gpt-4o-mini, token: {env: NEXT_KEY}, provider: openai}
        tokens:
          tokenRateLimit:
            limits:
              - {tokens: 10000, period: 1m}                   # input + output tokens
              - {tokens: 1000000, period: 24h, count: output} # a daily quota of output tokens
            sourceCriterion: {requestHeaderName: X-Team}      # or {ipStrategy: {}} or {claim: sub}
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from shadow.ai.cache import SemanticCacheSettings
from shadow.ai.guard import (
    PII,
    SECRETS,
    ContentGuardSettings,
    GuardRule,
    GuardSide,
    keyword_rule,
    named_rule,
    regex_rule,
)

if TYPE_CHECKING:
    from shadow.yamlconfig import YamlReader

__all__ = [
    "AI_MIDDLEWARES",
    "CandidateModel",
    "ChatCompletionSettings",
    "Credential",
    "ModelPrice",
    "TokenLimit",
    "TokenRateLimitSettings",
    "parse_ai_middleware",
    "parse_content_guard",
]

AI_MIDDLEWARES = ("chatCompletion", "tokenRateLimit", "contentGuard", "semanticCache")

PROVIDERS = ("openai", "anthropic")

# YAML name → wire names per API (Chat Completions, Responses, Anthropic Messages).
PARAMS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "topP": ("top_p",),
    "maxTokens": ("max_tokens", "max_completion_tokens", "max_output_tokens"),
    "frequencyPenalty": ("frequency_penalty",),
    "presencePenalty": ("presence_penalty",),
    "seed": ("seed",),
}


@dataclass(frozen=True)
class Credential:
    """A provider key read from an environment variable or a file when the configuration loads (a
    reload re-reads it). The value never appears in repr, logs or the capture."""

    source: str  # "env:NAME" or "file:PATH", for messages
    value: str = field(repr=False)

    def headers(self, provider: str) -> tuple[tuple[str, str], ...]:
        if provider == "anthropic":
            return (("x-api-key", self.value),)
        return (("Authorization", f"Bearer {self.value}"),)


def credential_header_names(provider: str) -> tuple[str, ...]:
    return ("x-api-key",) if provider == "anthropic" else ("authorization",)


@dataclass(frozen=True)
class ModelPrice:
    pattern: str  # glob on the model name
    input_per_million: float
    output_per_million: float

    def matches(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.pattern)


@dataclass(frozen=True)
class CandidateModel:
    """A mirror target that is another model or provider: the copy's `model` and credentials."""

    service: str
    model: str | None = None
    provider: str = "openai"
    token: Credential | None = None


@dataclass(frozen=True)
class ChatCompletionSettings:
    name: str
    provider: Literal["openai", "anthropic"] = "openai"
    token: Credential | None = None
    model: str | None = None
    allow_model_override: bool = True
    allowed_models: tuple[str, ...] = ()  # globs; empty: any
    params: Mapping[str, float] = field(default_factory=dict)  # YAML names → value
    allow_params_override: bool = True
    max_params: Mapping[str, float] = field(default_factory=dict)
    prices: tuple[ModelPrice, ...] = ()
    candidates: Mapping[str, CandidateModel] = field(default_factory=dict)

    def price(self, model: str | None) -> ModelPrice | None:
        if model is None:
            return None
        return next((p for p in self.prices if p.matches(model)), None)


@dataclass(frozen=True)
class TokenLimit:
    tokens: int
    period_s: float
    count: Literal["total", "input", "output"] = "total"


@dataclass(frozen=True)
class TokenRateLimitSettings:
    name: str
    limits: tuple[TokenLimit, ...]
    key_header: str | None = None  # sourceCriterion.requestHeaderName
    key_claim: str | None = None  # sourceCriterion.claim (a jwt middleware before this one)
    # neither: the client's IP (sourceCriterion.ipStrategy, Traefik's default)

    def state_key(self) -> tuple[object, ...]:
        """What identifies this limiter's counters across reloads: same name, same key source."""
        return (self.name, self.key_header, self.key_claim)


AiMiddleware = ChatCompletionSettings | TokenRateLimitSettings | ContentGuardSettings | SemanticCacheSettings

_PARAM_FIELD = re.compile(r"^[A-Za-z]+$")


def _credential(reader: YamlReader, node: Any, where: str, line: int | None, base_dir: Path) -> Credential:
    body = reader.mapping(node, where, line, allow_null=False)
    reader.check_keys(body, where, ("env", "file"))
    env, path = reader.string(body, "env", where), reader.string(body, "file", where)
    if (env is None) == (path is None):
        reader.fail("name exactly one of env or file (the key itself never goes in this file)", where, line)
    if env is not None:
        value = os.environ.get(env, "")
        if not value:
            reader.fail(f"environment variable {env} is not set", f"{where}.env", reader.value_line(body, "env"))
        return Credential(f"env:{env}", value)
    assert path is not None
    file = (base_dir / Path(path).expanduser())
    try:
        value = file.read_text().strip()
    except OSError as exc:
        reader.fail(f"cannot read {file}: {exc.strerror or exc}", f"{where}.file", reader.value_line(body, "file"))
    if not value:
        reader.fail(f"{file} is empty", f"{where}.file", reader.value_line(body, "file"))
    return Credential(f"file:{file}", value)


def _provider(reader: YamlReader, body: dict[Any, Any], where: str) -> Literal["openai", "anthropic"]:
    provider = reader.string(body, "provider", where, default="openai")
    if provider not in PROVIDERS:
        reader.fail(f"must be one of {', '.join(PROVIDERS)}, got {provider!r}", f"{where}.provider",
                    reader.value_line(body, "provider"))
    return "anthropic" if provider == "anthropic" else "openai"


def _params(reader: YamlReader, body: dict[Any, Any], key: str, where: str) -> Mapping[str, float]:
    field_name = f"{where}.{key}"
    node = reader.mapping(body.get(key), field_name, reader.value_line(body, key))
    reader.check_keys(node, field_name, tuple(PARAMS))
    return MappingProxyType({k: reader.number(node, k, field_name, 0.0, minimum=0.0) for k in node})


def _prices(reader: YamlReader, body: dict[Any, Any], where: str) -> tuple[ModelPrice, ...]:
    field_name = f"{where}.prices"
    node = reader.mapping(body.get("prices"), field_name, reader.value_line(body, "prices"))
    out = []
    for pattern in node:
        item_field = f"{field_name}.{pattern}"
        item = reader.mapping(node[pattern], item_field, reader.value_line(node, pattern), allow_null=False)
        reader.check_keys(item, item_field, ("input", "output"))
        out.append(ModelPrice(str(pattern), reader.number(item, "input", item_field, 0.0, minimum=0.0),
                              reader.number(item, "output", item_field, 0.0, minimum=0.0)))
    return tuple(out)


def parse_chat_completion(reader: YamlReader, name: str, body: dict[Any, Any], where: str,
                          base_dir: Path) -> ChatCompletionSettings:
    reader.check_keys(body, where, ("provider", "token", "model", "allowModelOverride", "allowedModels", "params",
                                    "allowParamsOverride", "maxParams", "prices", "candidates"))
    provider = _provider(reader, body, where)
    token = (_credential(reader, body["token"], f"{where}.token", reader.value_line(body, "token"), base_dir)
             if body.get("token") is not None else None)
    model = reader.string(body, "model", where)
    allow_override = reader.boolean(body, "allowModelOverride", where, True)
    if not allow_override and model is None:
        reader.fail("allowModelOverride: false needs a model to lock to", f"{where}.allowModelOverride",
                    reader.value_line(body, "allowModelOverride"))
    allowed = reader.string_list(body, "allowedModels", where)
    if model is not None and allowed and not any(fnmatch.fnmatchcase(model, p) for p in allowed):
        reader.fail(f"the model {model!r} is not in allowedModels", f"{where}.model", reader.value_line(body, "model"))
    cand_field = f"{where}.candidates"
    cand_node = reader.mapping(body.get("candidates"), cand_field, reader.value_line(body, "candidates"))
    candidates: dict[str, CandidateModel] = {}
    for service in cand_node:
        item_field = f"{cand_field}.{service}"
        item = reader.mapping(cand_node[service], item_field, reader.value_line(cand_node, service))
        reader.check_keys(item, item_field, ("model", "provider", "token"))
        cand_token = (_credential(reader, item["token"], f"{item_field}.token", reader.value_line(item, "token"),
                                  base_dir) if item.get("token") is not None else None)
        candidates[str(service)] = CandidateModel(str(service), reader.string(item, "model", item_field),
                                                  _provider(reader, item, item_field), cand_token)
    return ChatCompletionSettings(
        name=name, provider=provider, token=token, model=model, allow_model_override=allow_override,
        allowed_models=allowed, params=_params(reader, body, "params", where),
        allow_params_override=reader.boolean(body, "allowParamsOverride", where, True),
        max_params=_params(reader, body, "maxParams", where), prices=_prices(reader, body, where),
        candidates=MappingProxyType(candidates))


def parse_token_rate_limit(reader: YamlReader, name: str, body: dict[Any, Any], where: str) -> TokenRateLimitSettings:
    reader.check_keys(body, where, ("limits", "sourceCriterion"))
    items = reader.sequence(body, "limits", where)
    if not items:
        reader.fail("needs at least one limit ({tokens: N, period: 1m})", f"{where}.limits", reader.node_line(body))
    limits = []
    for i, item in enumerate(items):
        item_field = f"{where}.limits[{i}]"
        node = reader.mapping(item, item_field, reader.item_line(items, i), allow_null=False)
        reader.check_keys(node, item_field, ("tokens", "period", "count"))
        if "tokens" not in node:
            reader.fail("required", f"{item_field}.tokens", reader.node_line(node))
        tokens = reader.integer(node, "tokens", item_field, 0, minimum=1)
        period = reader.duration(node, "period", item_field, 60.0)
        if period <= 0:
            reader.fail("must be positive", f"{item_field}.period", reader.value_line(node, "period"))
        count = reader.string(node, "count", item_field, default="total")
        if count not in ("total", "input", "output"):
            reader.fail(f"must be total, input or output, got {count!r}", f"{item_field}.count",
                        reader.value_line(node, "count"))
        limits.append(TokenLimit(tokens, period, "input" if count == "input" else "output" if count == "output"
                                 else "total"))
    crit_field = f"{where}.sourceCriterion"
    crit = reader.mapping(body.get("sourceCriterion"), crit_field, reader.value_line(body, "sourceCriterion"))
    reader.check_keys(crit, crit_field, ("requestHeaderName", "claim", "ipStrategy"))
    header, claim = reader.string(crit, "requestHeaderName", crit_field), reader.string(crit, "claim", crit_field)
    if len([k for k in ("requestHeaderName", "claim", "ipStrategy") if crit.get(k) is not None]) > 1:
        reader.fail("name one of requestHeaderName, claim or ipStrategy", crit_field,
                    reader.value_line(body, "sourceCriterion"))
    return TokenRateLimitSettings(name, tuple(limits), key_header=header, key_claim=claim)


def _guard_rules(reader: YamlReader, node: Any, where: str, line: int | None) -> tuple[GuardRule, ...]:
    body = reader.mapping(node, where, line)
    reader.check_keys(body, where, ("pii", "secrets", "keywords", "regex"))
    rules: list[GuardRule] = []
    for key, kind, table in (("pii", "pii", PII), ("secrets", "secret", SECRETS)):
        names = reader.string_list(body, key, where)
        items = reader.sequence(body, key, where)
        for i, name in enumerate(names):
            if name == "all":
                rules.extend(named_rule(kind, n) for n in table)
            elif name in table:
                rules.append(named_rule(kind, name))
            else:
                reader.fail(f"unknown {kind} rule {name!r} (known: all, {', '.join(table)})", f"{where}.{key}[{i}]",
                            reader.item_line(items, i))
    rules.extend(keyword_rule(word) for word in reader.string_list(body, "keywords", where))
    patterns = reader.sequence(body, "regex", where)
    for i, pattern in enumerate(reader.string_list(body, "regex", where)):
        try:
            rules.append(regex_rule(i, pattern))
        except ValueError as exc:
            reader.fail(f"invalid regular expression {pattern!r}: {exc}", f"{where}.regex[{i}]",
                        reader.item_line(patterns, i))
    return tuple(rules)


def parse_content_guard(reader: YamlReader, name: str, body: dict[Any, Any], where: str) -> ContentGuardSettings:
    reader.check_keys(body, where, ("request", "response"))
    sides = []
    for side in ("request", "response"):
        field_name = f"{where}.{side}"
        node = reader.mapping(body.get(side), field_name, reader.value_line(body, side))
        reader.check_keys(node, field_name, ("block", "mask"))
        sides.append(GuardSide(
            block=_guard_rules(reader, node.get("block"), f"{field_name}.block", reader.value_line(node, "block")),
            mask=_guard_rules(reader, node.get("mask"), f"{field_name}.mask", reader.value_line(node, "mask"))))
    if not (sides[0] or sides[1]):
        reader.fail("needs at least one block or mask rule", where, reader.node_line(body))
    return ContentGuardSettings(name, sides[0], sides[1])


def parse_semantic_cache(reader: YamlReader, name: str, body: dict[Any, Any], where: str) -> SemanticCacheSettings:
    reader.check_keys(body, where, ("threshold", "ttl", "maxEntries"))
    threshold = reader.number(body, "threshold", where, 0.95, minimum=0.0)
    if threshold > 1.0:
        reader.fail(f"must be at most 1 (a cosine similarity), got {threshold}", f"{where}.threshold",
                    reader.value_line(body, "threshold"))
    ttl = reader.duration(body, "ttl", where, 600.0)
    if ttl <= 0:
        reader.fail("must be positive", f"{where}.ttl", reader.value_line(body, "ttl"))
    return SemanticCacheSettings(name, threshold, ttl, reader.integer(body, "maxEntries", where, 1000, minimum=1))


def parse_ai_middleware(reader: YamlReader, kind: str, name: str, body: dict[Any, Any], where: str,
                        base_dir: Path) -> AiMiddleware:
    """One of AI_MIDDLEWARES (`kind`), already checked to be a mapping at `where`. A token `file` is
    relative to `base_dir` (the configuration file's folder)."""
    if kind == "chatCompletion":
        return parse_chat_completion(reader, name, body, where, base_dir)
    if kind == "contentGuard":
        return parse_content_guard(reader, name, body, where)
    if kind == "semanticCache":
        return parse_semantic_cache(reader, name, body, where)
    return parse_token_rate_limit(reader, name, body, where)
