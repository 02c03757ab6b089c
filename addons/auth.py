"""Auth addon: the `jwt` middleware at the edge, before the router forwards anything.

Adapts a flow to `shadow.auth.jwt`: walks the routing layers like the router does (top-level
router, then, for a parent router, its children matched against the request as the parent's
middlewares left it), and for every `jwt` middleware on the way verifies the bearer token and
rewrites the headers (claims forwarded, Authorization stripped). A failure answers 401 (403 for a
claims condition) locally, so the request never reaches an upstream nor a mirror.

JWKS are fetched with one pooled aiohttp session inside the proxy's event loop (the hook is
async: the loop never blocks), one fetch at a time per URL, bounded by `jwksTimeout`; when no
keys can be had, the answer is 401 (fail closed) and `auth_jwks_unavailable` is counted.
The router refuses, again with 401, any route whose middlewares include a `jwt` this addon did not
pass (defence in depth: a route can never skip authentication by a mismatch between the two walks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from joserfc.jwk import KeySet
from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState
from shadow.auth.claims import claim_at
from shadow.auth.jwt import (
    JwksCache,
    JwtSettings,
    TokenRejected,
    VerifiedTokens,
    bearer_token,
    check_claims,
    claim_header_value,
    static_key_set,
    token_header,
    upstream_headers,
    verify_token,
)
from shadow.mirror import RateLimitedLog, describe_error
from shadow.routing import apply_request_middlewares, child_view, select_child, select_router
from shadow.rules import RequestView

logger = logging.getLogger(__name__)

AUTH_METADATA = "shadow.auth"  # flow.metadata key: an AuthPass


@dataclass(frozen=True)
class AuthPass:
    """What the auth addon established for a flow (read by the router and the capture)."""

    generation: int  # ActiveConfig.generation it was computed for
    verified: frozenset[str]  # names of the jwt middlewares passed
    claims: dict[str, Any] = field(default_factory=dict)  # of the last jwt middleware passed
    client_key: str | None = None  # shadow.identity.clientKeyClaim's value


def _decoded(fields: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields]


def has_auth(config: Any) -> bool:
    return any(isinstance(m, JwtSettings) for m in config.middlewares.values())


def unauthorized(exc: TokenRejected) -> http.Response:
    body = f"{exc.status} {'Forbidden' if exc.status == 403 else 'Unauthorized'}: {exc.description}\n"
    return http.Response.make(exc.status, body.encode(), {
        "Content-Type": "text/plain; charset=utf-8", "WWW-Authenticate": exc.www_authenticate()})


class Auth:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.counts: Counter[str] = Counter()
        self._jwks: dict[str, JwksCache] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._jwks_uri: dict[str, str] = {}  # issuer → jwks_uri from its discovery document
        self._static: dict[JwtSettings, KeySet | None] = {}
        self._verified = VerifiedTokens()
        self._generation = -1
        self._session: Any = None
        self._auth_configs: dict[int, bool] = {}
        self._warn = RateLimitedLog(logger.warning)
        state.extra_counters.append(self.counters)

    def counters(self) -> dict[str, int]:
        return {f"auth_{k}": v for k, v in self.counts.items()}

    def _needs_auth(self, active: ActiveConfig) -> bool:
        known = self._auth_configs.get(active.generation)
        if known is None:
            if active.generation != self._generation:  # a reload may change a middleware under its name
                self._verified.clear()
                self._generation = active.generation
            known = self._auth_configs[active.generation] = has_auth(active.config)
        return known

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        active = self.state.active
        if active is None or not self._needs_auth(active):
            return
        try:
            await self._authenticate(flow, active)
        except TokenRejected as exc:
            self.counts[f"rejected_{exc.reason}"] += 1
            flow.response = unauthorized(exc)
        except Exception as exc:  # fail closed: an unexpected error never lets a request through
            self.counts["errors"] += 1
            self._warn(f"shadow gateway: auth failed unexpectedly: {describe_error(exc)}")
            flow.response = unauthorized(TokenRejected("authentication failed", reason="error"))

    async def _authenticate(self, flow: http.HTTPFlow, active: ActiveConfig) -> None:
        config = active.config
        req = flow.request
        headers = _decoded(req.headers.fields)
        path, _, query = req.path.partition("?")
        peer = flow.client_conn.peername
        host = req.authority if (req.is_http2 or req.is_http3) and req.authority else (req.host_header or "")
        view = RequestView(method=req.method, host=host, path=path, query=query, headers=tuple(headers),
                           client_ip=str(peer[0]) if peer else "")
        router = select_router(config, view)
        verified: set[str] = set()
        claims: dict[str, Any] = {}
        inherited: tuple[Any, ...] = ()
        depth = 0
        while router is not None and depth < 32:
            for name in router.middlewares:
                mw = config.middlewares[name]
                if isinstance(mw, JwtSettings):
                    claims = await self._verify(mw, headers, query)
                    headers = upstream_headers(headers, claims, mw)
                    verified.add(name)
            if router.service:
                break
            inherited += tuple(config.middlewares[m] for m in router.middlewares)
            current = RequestView(method=view.method, host=view.host, path=path, query=query,
                                  headers=tuple(headers), client_ip=view.client_ip)
            router = select_child(config, router, child_view(current, apply_request_middlewares(
                inherited, path, headers)))
            depth += 1
        if not verified:
            return
        self.counts["passed"] += 1
        req.headers.fields = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)
        key_claim = config.shadow.identity_client_key_claim
        client_key = None
        if key_claim:
            value = claim_at(claims, key_claim)
            client_key = claim_header_value(value) if value is not None else None
        flow.metadata[AUTH_METADATA] = AuthPass(active.generation, frozenset(verified), claims, client_key)

    async def _verify(self, mw: JwtSettings, headers: list[tuple[str, str]], query: str) -> dict[str, Any]:
        params = dict(parse_qsl(query)) if mw.token_query_key and query else None
        token = bearer_token(headers, params, mw)
        if mw.remote_keys:
            jwks = self._jwks.get(mw.jwks_url or f"discovery:{mw.issuer}")
            current = jwks.fresh_keys() if jwks is not None else None
        else:
            current = self._static.get(mw)
        cached = self._verified.get(mw, token, current)
        if cached is not None:  # signature already checked against this very key set
            check_claims(cached, mw, now=time.time())
            return cached
        header = token_header(token, mw)  # size, shape and algorithm before any key work or fetch
        if mw.remote_keys:
            keys = await self._remote_keys(mw, header.get("kid"))
        else:
            if mw not in self._static:
                self._static[mw] = static_key_set(mw)
            keys = self._static[mw]
        if keys is None:
            raise TokenRejected("signing keys unavailable (JWKS fetch failed)", reason="jwks_unavailable")
        claims = verify_token(token, keys, mw)
        self._verified.put(mw, token, keys, claims)
        return claims

    async def _remote_keys(self, mw: JwtSettings, kid: str | None) -> KeySet | None:
        source = mw.jwks_url or f"discovery:{mw.issuer}"
        cache = self._jwks.get(source)
        if cache is None:
            cache = self._jwks[source] = JwksCache(refresh_floor_s=mw.jwks_refresh_floor_s,
                                                   max_age_s=mw.jwks_max_age_s)
        if cache.fetch_due(kid):
            lock = self._locks.setdefault(source, asyncio.Lock())
            async with lock:
                if cache.fetch_due(kid):  # a request ahead of us in the lock may have fetched already
                    cache.attempt()
                    self.counts["jwks_fetches"] += 1
                    try:
                        async with asyncio.timeout(mw.jwks_timeout_s):
                            url = mw.jwks_url or await self._discover(mw)
                            cache.store(await self._get_json(url))
                    except Exception as exc:
                        cache.failed()
                        self.counts["jwks_failures"] += 1
                        reason = "timed out" if isinstance(exc, TimeoutError) else describe_error(exc)
                        self._warn(f"shadow gateway: jwt {mw.name}: fetching keys from {source}: {reason}")
        return cache.keys

    async def _discover(self, mw: JwtSettings) -> str:
        issuer = mw.issuer or ""
        uri = self._jwks_uri.get(issuer)
        if uri is None:
            doc = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
            if not isinstance(doc, dict) or not isinstance(doc.get("jwks_uri"), str):
                raise ValueError("the discovery document has no jwks_uri")
            if doc.get("issuer") != issuer:  # OpenID Connect Discovery §4.3
                raise ValueError(f"the discovery document names issuer {doc.get('issuer')!r}")
            uri = self._jwks_uri[issuer] = doc["jwks_uri"]
        return uri

    async def _get_json(self, url: str) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8), cookie_jar=aiohttp.DummyCookieJar())
        async with self._session.get(url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status} from {url}")
            body = await resp.content.read(1 << 20)  # a key set is small: cap what we read
            return json.loads(body)

    async def done(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
