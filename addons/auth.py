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
import secrets
import time
from collections import Counter
from collections.abc import Coroutine
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
from shadow.auth.oidc import (
    CookieCodec,
    OidcSettings,
    SessionTooLarge,
    authorization_url,
    local_path,
    pkce_pair,
    request_cookies,
    session_cookie_names,
    session_set_cookies,
    session_value,
    set_cookie,
    without_cookies,
)
from shadow.gateway.entrypoints import select_entry_point, strip_untrusted_forwarded
from shadow.gateway.http1 import PASSTHROUGH_SKIPPED_HEADERS, passthrough_session
from shadow.gateway.middlewares.forwardauth import ForwardAuth, auth_call, auth_decision, merge_auth_cookies
from shadow.gateway.middlewares.request import LocalAnswer
from shadow.gateway.mirror import RateLimitedLog, describe_error
from shadow.gateway.routing import (
    apply_request_middlewares,
    child_view,
    config_for_listener,
    select_child,
    select_router,
)
from shadow.gateway.rules import RequestView

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
    return any(isinstance(m, JwtSettings | OidcSettings | ForwardAuth) for m in config.middlewares.values())


TOKEN_ENDPOINT_MAX_BYTES = 1 << 20  # what is read of the token endpoint's answer
FORWARD_AUTH_COOKIES = "shadow.auth.forward_auth_cookies"  # forwardAuth's addAuthCookiesToResponse
SET_COOKIE_METADATA = "shadow.auth.set_cookie"  # a refreshed session's Set-Cookie lines for the client's answer
STATE_TTL_S = 600  # a login must come back within 10 minutes


def _local_answer(answer: LocalAnswer) -> http.Response:
    resp = http.Response.make(answer.status, b"", ())
    resp.headers.fields = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers
                                if k.lower() != "content-length")
    resp.raw_content = answer.body
    resp.headers["Content-Length"] = str(len(answer.body))
    return resp


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
        self._redactors: dict[int, Any] = {}
        self._oidc_docs: dict[str, dict[str, Any]] = {}
        self._codecs: dict[OidcSettings, CookieCodec] = {}
        self._generation = -1
        self._session: Any = None
        self._forward: Any = None  # forwardAuth's calls: no redirects followed, bodies as sent
        self._auth_configs: dict[int, bool] = {}
        self._warn = RateLimitedLog(logger.warning)
        state.extra_counters.append(self.counters)

    def counters(self) -> dict[str, int]:
        return {f"auth_{k}": v for k, v in self.counts.items()}

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        """`request` for configurations with a jwt/oidc middleware; `response` for oidc's session cookie."""
        middlewares = active.config.middlewares.values()
        hooks = {"request"} if has_auth(active.config) else set()
        if any(isinstance(m, OidcSettings) or (isinstance(m, ForwardAuth) and m.add_auth_cookies_to_response)
               for m in middlewares):
            hooks.add("response")
        return frozenset(hooks)

    def _needs_auth(self, active: ActiveConfig) -> bool:
        known = self._auth_configs.get(active.generation)
        if known is None:
            if active.generation != self._generation:  # a reload may change a middleware under its name
                self._verified.clear()
                self._generation = active.generation
            known = self._auth_configs[active.generation] = has_auth(active.config)
        return known

    def request(self, flow: http.HTTPFlow) -> Coroutine[Any, Any, None] | None:
        # A plain function: configurations without auth pay no coroutine per flow. mitmproxy awaits
        # what a hook returns when it is awaitable, so auth work still runs in the event loop.
        if flow.response or flow.error or not flow.live:
            return None
        active = self.state.active
        if active is None or not self._needs_auth(active):
            return None
        return self._request(flow, active)

    async def _request(self, flow: http.HTTPFlow, active: ActiveConfig) -> None:
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
        client_ip = str(peer[0]) if peer else ""
        # Traefik's entry point first: an untrusted client's X-Forwarded-* never reach forwardAuth.
        sockname = flow.client_conn.sockname
        entry_point = select_entry_point(config.entry_points, sockname[1] if sockname else None)
        headers = strip_untrusted_forwarded(headers, entry_point, client_ip)
        config = config_for_listener(config, entry_point, flow.client_conn.tls_established)  # as the router sees it
        view = RequestView(method=req.method, host=host, path=path, query=query, headers=tuple(headers),
                           client_ip=client_ip, body=req.raw_content or b"")
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
                elif isinstance(mw, OidcSettings):
                    session_claims = await self._oidc(flow, mw, headers, path, query, host)
                    if session_claims is None:  # answered here: login redirect, callback or logout
                        return
                    claims = session_claims
                    session_cookies = session_cookie_names(request_cookies(headers), mw.session_name)
                    headers = upstream_headers(without_cookies(headers, session_cookies | {mw.state_cookie}),
                                               claims, mw)
                    verified.add(name)
                elif isinstance(mw, ForwardAuth):
                    allowed = await self._forward_auth(flow, mw, headers, host, client_ip)
                    if allowed is None:  # answered here: the auth server's refusal
                        return
                    headers = allowed
                    verified.add(name)
            if router.service:
                break
            inherited += tuple(config.middlewares[m] for m in router.middlewares)
            current = RequestView(method=view.method, host=view.host, path=path, query=query,
                                  headers=tuple(headers), client_ip=view.client_ip, body=view.body)
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
            client_key = self._client_key(active, claim_header_value(value)) if value is not None else None
        flow.metadata[AUTH_METADATA] = AuthPass(active.generation, frozenset(verified), claims, client_key)

    def _client_key(self, active: ActiveConfig, value: str) -> str:
        """The claim as the capture's client_key: with `hashClientKey` and redaction mode hash, the
        capture's own keyed hash ("redacted:" + 16 hex of HMAC-SHA256), so equal users still cluster
        and the same user hashes the same in headers and in client_key."""
        shadow = active.config.shadow
        redaction = shadow.capture.redaction
        if not shadow.identity_hash_client_key or redaction.mode != "hash" or not shadow.capture.enabled:
            return value
        redactor = self._redactors.get(active.generation)
        if redactor is None:
            from shadow.capture.redact import Redactor, load_redaction_key

            # Once per configuration: the same key file the capture writer uses (created if absent).
            redactor = Redactor(redaction, load_redaction_key(shadow.capture.dir, redaction))
            self._redactors = {active.generation: redactor}
        return redactor.token(value)

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

    async def _get_json_session(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8), cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def _get_json(self, url: str) -> Any:
        await self._get_json_session()
        async with self._session.get(url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status} from {url}")
            body = await resp.content.read(1 << 20)  # a key set is small: cap what we read
            return json.loads(body)

    # -- OIDC (browser sessions) -----------------------------------------------------------------

    async def _forward_auth(self, flow: http.HTTPFlow, mw: ForwardAuth, headers: list[tuple[str, str]],
                            host: str, client_ip: str) -> list[tuple[str, str]] | None:
        """Traefik's forwardAuth: the request's headers to go on with, or None when the client was
        answered (refused, a redirect to sign in, a failed call → 500)."""
        import aiohttp

        req = flow.request
        call = auth_call(mw, method=req.method, host=host, uri=req.path, headers=headers, client_ip=client_ip,
                         tls=flow.client_conn.tls_established, body=req.raw_content)
        if isinstance(call, LocalAnswer):
            self.counts["forward_auth_denied"] += 1
            flow.response = _local_answer(call)
            return None
        try:
            async with asyncio.timeout(mw.timeout_s):
                session = await self._forward_session()
                async with session.request(call.method, call.url, headers=list(call.headers), data=call.body,
                                           allow_redirects=False) as resp:
                    body = await resp.read()
                    auth_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
                    status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.counts["forward_auth_errors"] += 1
            self._warn(f"shadow gateway: forwardAuth {mw.name}: {mw.address} failed: {describe_error(exc)}")
            flow.response = http.Response.make(500, b"", ())
            return None
        outcome = auth_decision(mw, headers, status, auth_headers, body)
        if outcome.answer is not None:
            self.counts["forward_auth_denied"] += 1
            flow.response = _local_answer(outcome.answer)
            return None
        if mw.add_auth_cookies_to_response and outcome.auth_cookies:
            flow.metadata.setdefault(FORWARD_AUTH_COOKIES, []).append((mw, outcome.auth_cookies))
        self.counts["forward_auth_passed"] += 1
        return outcome.headers

    async def _forward_session(self) -> Any:
        if self._forward is None:
            self._forward = passthrough_session(skip_headers=(*PASSTHROUGH_SKIPPED_HEADERS, "Content-Type"))
        return self._forward

    def response(self, flow: http.HTTPFlow) -> None:
        auth_cookies = flow.metadata.get(FORWARD_AUTH_COOKIES)
        if auth_cookies and flow.response is not None:
            merged = _decoded(flow.response.headers.fields)
            for mw, cookies in auth_cookies:
                merged = merge_auth_cookies(mw, cookies, merged)
            flow.response.headers.fields = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in merged)
        lines = flow.metadata.get(SET_COOKIE_METADATA)
        if lines and flow.response is not None:
            for line in lines:
                flow.response.headers.add("Set-Cookie", line)

    async def _discovery(self, mw: OidcSettings) -> dict[str, Any]:
        doc = self._oidc_docs.get(mw.issuer)
        if doc is None:
            async with asyncio.timeout(mw.jwks_timeout_s):
                doc = await self._get_json(mw.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if not isinstance(doc, dict) or doc.get("issuer") != mw.issuer:
                raise TokenRejected("the identity provider's discovery document is unusable", reason="oidc_discovery")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(key), str):
                    raise TokenRejected(f"the discovery document has no {key}", reason="oidc_discovery")
            self._oidc_docs[mw.issuer] = doc
        return doc

    async def _token_request(self, mw: OidcSettings, doc: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
        if self._session is None:
            await self._get_json_session()
        form = {**form, "client_id": mw.client_id}
        if mw.client_secret:
            form["client_secret"] = mw.client_secret
        try:
            async with asyncio.timeout(mw.jwks_timeout_s):
                async with self._session.post(doc["token_endpoint"], data=form,
                                              headers={"Accept": "application/json"}) as resp:
                    body = await resp.content.read(TOKEN_ENDPOINT_MAX_BYTES)
                    if resp.status != 200:
                        raise TokenRejected(f"the token endpoint answered {resp.status}", reason="oidc_token")
            tokens = json.loads(body)
        except TokenRejected:
            raise
        except Exception as exc:
            raise TokenRejected(f"token request failed: {describe_error(exc)}", reason="oidc_token") from None
        if not isinstance(tokens, dict) or not isinstance(tokens.get("id_token"), str):
            raise TokenRejected("the token endpoint returned no id_token", reason="oidc_token")
        return tokens

    async def _id_token_claims(self, mw: OidcSettings, doc: dict[str, Any], id_token: str,
                               nonce: str | None) -> dict[str, Any]:
        # The id token comes in the token endpoint's answer (read up to 1 MiB), not in a request
        # header: the bearer-token size cap does not apply; the session cookies bound what is kept.
        check = JwtSettings(name=f"{mw.name}#id_token", jwks_url=doc["jwks_uri"], issuer=mw.issuer,
                            audience=(mw.client_id,), leeway_s=mw.leeway_s, jwks_timeout_s=mw.jwks_timeout_s,
                            claims=mw.claims, max_token_bytes=TOKEN_ENDPOINT_MAX_BYTES)
        header = token_header(id_token, check)
        keys = await self._remote_keys(check, header.get("kid"))
        if keys is None:
            raise TokenRejected("signing keys unavailable (JWKS fetch failed)", reason="jwks_unavailable")
        claims = verify_token(id_token, keys, check)
        if nonce is not None and claims.get("nonce") != nonce:
            raise TokenRejected("the id token's nonce does not match the login", reason="oidc_nonce")
        return claims

    def _codec(self, mw: OidcSettings) -> CookieCodec:
        codec = self._codecs.get(mw)
        if codec is None:
            codec = self._codecs[mw] = CookieCodec(mw.session_secret)
        return codec

    async def _oidc(self, flow: http.HTTPFlow, mw: OidcSettings, headers: list[tuple[str, str]], path: str,
                    query: str, host: str) -> dict[str, Any] | None:
        """The session's claims, or None when this request was answered here."""
        codec = self._codec(mw)
        cookies = request_cookies(headers)
        present = session_cookie_names(cookies, mw.session_name)
        secure = flow.client_conn.tls_established
        now = time.time()
        if path == mw.logout_path:
            doc = self._oidc_docs.get(mw.issuer) or {}
            response = http.Response.make(302, b"", {"Location": doc.get("end_session_endpoint") or "/"})
            for name in sorted(present | {mw.session_name}):
                response.headers.add("Set-Cookie", set_cookie(name, "", max_age=0, secure=secure))
            flow.response = response
            self.counts["oidc_logouts"] += 1
            return None
        doc = await self._discovery(mw)
        redirect_uri = f"{'https' if secure else 'http'}://{host}{mw.redirect_path}"
        if path == mw.redirect_path:
            login = codec.decode(cookies.get(mw.state_cookie, ""), now=now)
            params = dict(parse_qsl(query))
            if login is None or not params.get("code") or params.get("state") != login.get("state"):
                raise TokenRejected("invalid or expired login state", reason="oidc_state")
            tokens = await self._token_request(mw, doc, {
                "grant_type": "authorization_code", "code": params["code"], "redirect_uri": redirect_uri,
                "code_verifier": str(login["verifier"])})
            claims: dict[str, Any] = await self._id_token_claims(mw, doc, tokens["id_token"], str(login["nonce"]))
            new_session = {"claims": claims, "rt": tokens.get("refresh_token")}
            response = http.Response.make(302, b"", {"Location": local_path(str(login.get("return_to") or "/"))})
            for line in self._session_cookies(mw, codec.encode(new_session, expires_at=now + mw.session_expiry_s),
                                              secure=secure, present=present):
                response.headers.add("Set-Cookie", line)
            response.headers.add("Set-Cookie", set_cookie(mw.state_cookie, "", max_age=0, secure=secure))
            flow.response = response
            self.counts["oidc_logins"] += 1
            return None
        session = codec.decode(session_value(cookies, mw.session_name), now=now)
        if session is not None and isinstance(session.get("claims"), dict):
            claims = session["claims"]
            if claims.get("exp", 0) > now - mw.leeway_s:
                if mw.claims is not None and not mw.claims.evaluate(claims):
                    raise TokenRejected("the session's claims do not satisfy the condition",
                                        reason="condition", status=403)
                return claims
            if session.get("rt"):  # the id token expired: refresh it with the refresh token
                tokens = await self._token_request(mw, doc, {"grant_type": "refresh_token",
                                                              "refresh_token": str(session["rt"])})
                claims = await self._id_token_claims(mw, doc, tokens["id_token"], None)
                fresh = {"claims": claims, "rt": tokens.get("refresh_token") or session["rt"]}
                flow.metadata[SET_COOKIE_METADATA] = self._session_cookies(
                    mw, codec.encode(fresh, expires_at=now + mw.session_expiry_s), secure=secure, present=present)
                self.counts["oidc_refreshes"] += 1
                return claims
        if flow.request.method not in ("GET", "HEAD"):
            raise TokenRejected("login required", reason="no_session")
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        login_cookie = codec.encode({"state": state, "nonce": nonce, "verifier": verifier,
                                     "return_to": local_path(flow.request.path)}, expires_at=now + STATE_TTL_S)
        flow.response = http.Response.make(302, b"", {
            "Location": authorization_url(doc["authorization_endpoint"], mw, redirect_uri=redirect_uri,
                                          state=state, nonce=nonce, challenge=challenge),
            "Set-Cookie": set_cookie(mw.state_cookie, login_cookie, max_age=STATE_TTL_S, secure=secure)})
        self.counts["oidc_login_redirects"] += 1
        return None

    def _session_cookies(self, mw: OidcSettings, sealed: str, *, secure: bool, present: set[str]) -> list[str]:
        try:
            return session_set_cookies(mw.session_name, sealed, max_age=int(mw.session_expiry_s), secure=secure,
                                       present=present)
        except SessionTooLarge as exc:
            self._warn(f"shadow gateway: oidc middleware {mw.name}: {exc}")
            raise TokenRejected(str(exc), reason="oidc_session_too_large") from exc

    async def done(self) -> None:
        if self._forward is not None:
            with contextlib.suppress(Exception):
                await self._forward.close()
            self._forward = None
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
