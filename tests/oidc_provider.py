"""A minimal OpenID provider for tests, built from authlib's server side (AuthorizationServer with
the authorization-code grant + PKCE (RFC 7636) + OpenID Connect id tokens, and the refresh-token
grant), served by tests/upstream.py's threaded HTTP server on 127.0.0.1. The test user (`alice`)
is logged in at once: the authorization endpoint grants without a login page."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.models import AuthorizationCodeMixin, TokenMixin
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode, OpenIDToken
from joserfc.jwk import KeySet, RSAKey

from tests.upstream import ReceivedRequest, Response

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # http:// on 127.0.0.1 only


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "profile", "email"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri.startswith("http://127.0.0.1:") and redirect_uri.endswith("/oidc/callback")

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user: str

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(time.time())

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class Token(TokenMixin):
    client: Client
    scope: str
    user: str
    refresh_token: str

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 3600

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Client:
        return self.client


@dataclass
class ProviderState:
    issuer: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "op1"}))
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    grants: list[str] = field(default_factory=list)  # grant types served, in order
    id_token_lifetime: int = 300
    extra_claims: dict[str, Any] = field(default_factory=dict)  # added to every id token (e.g. many groups)


class _Request(OAuth2Request):
    def __init__(self, method: str, uri: str, headers: dict[str, str], form: dict[str, str],
                 args: dict[str, str]) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self._form, self._args = form, args
        self.payload = BasicOAuth2Payload({**args, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


def _id_token_extension(state: ProviderState, base: type[OpenIDToken]) -> OpenIDToken:
    class Extension(base):  # type: ignore[valid-type,misc]
        def resolve_client_private_key(self, client: Client) -> RSAKey:
            return state.key

        def get_client_algorithm(self, client: Client) -> str:
            return "RS256"

        def get_encode_header(self, client: Client) -> dict[str, str]:
            return {"alg": "RS256", "kid": "op1"}

        def get_client_claims(self, client: Client) -> dict[str, Any]:
            now = int(time.time())
            return {"iss": state.issuer, "aud": [client.client_id], "iat": now, "exp": now + state.id_token_lifetime}

        def exists_nonce(self, nonce: str, request: Any) -> bool:
            return any(c.nonce == nonce for c in state.codes.values())

        def generate_user_info(self, user: str, scope: str) -> UserInfo:
            info = UserInfo(sub=user)
            if "email" in scope or "profile" in scope:
                info["email"] = f"{user}@example.com"
            info.update(state.extra_claims)
            return info

    return Extension() if base is OpenIDToken else Extension(require_nonce=True)


def _random_token(**_: Any) -> str:
    return secrets.token_urlsafe(24)


class OpenIDProvider:
    """authlib's AuthorizationServer behind a tests.upstream.Upstream handler."""

    def __init__(self) -> None:
        self.state = ProviderState()
        self._lock = threading.Lock()  # the Upstream serves requests on several threads
        state = self.state

        class Server(AuthorizationServer):
            def query_client(self, client_id: str) -> Client | None:
                return state.clients.get(client_id)

            def save_token(self, token: dict[str, Any], request: Any) -> None:
                state.tokens[token["refresh_token"]] = Token(request.client, token["scope"], request.user,
                                                             token["refresh_token"])

            def create_oauth2_request(self, request: Any) -> OAuth2Request:
                return request  # type: ignore[no-any-return]

            def handle_response(self, status: int, body: Any, headers: Any) -> Response:
                if isinstance(body, dict):
                    return status, {**dict(headers), "Content-Type": "application/json"}, json.dumps(body).encode()
                return status, dict(headers), (body or "").encode()

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                pass

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_post", "client_secret_basic"]

            def save_authorization_code(self, code: str, request: Any) -> None:
                p = request.payload
                state.codes[code] = Code(code, p.client_id, p.redirect_uri, p.scope, p.data.get("nonce"),
                                         p.data.get("code_challenge"), p.data.get("code_challenge_method"),
                                         request.user)

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = state.codes.get(code)
                return found if found is not None and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                state.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> str:
                return authorization_code.user

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_post", "client_secret_basic"]
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                return state.tokens.get(refresh_token)

            def authenticate_user(self, refresh_token: Token) -> str:
                return refresh_token.user

            def revoke_old_credential(self, refresh_token: Token) -> None:
                state.tokens.pop(refresh_token.refresh_token, None)

        self.server = Server()
        self.server.register_token_generator("default", BearerTokenGenerator(_random_token, _random_token))
        self.server.register_grant(CodeGrant, [CodeChallenge(required=True), _id_token_extension(state, OpenIDCode)])
        self.server.register_grant(RefreshGrant, [_id_token_extension(state, OpenIDToken)])

    def add_client(self, client_id: str, client_secret: str) -> None:
        self.state.clients[client_id] = Client(client_id, client_secret)

    def handle(self, req: ReceivedRequest) -> Response:
        path, _, query = req.path.partition("?")
        base = self.state.issuer
        json_headers = {"Content-Type": "application/json"}
        if path == "/.well-known/openid-configuration":
            return 200, json_headers, json.dumps({
                "issuer": base, "authorization_endpoint": f"{base}/authorize", "token_endpoint": f"{base}/token",
                "jwks_uri": f"{base}/jwks", "end_session_endpoint": f"{base}/logout",
                "code_challenge_methods_supported": ["S256"]}).encode()
        if path == "/jwks":
            return 200, json_headers, json.dumps(KeySet([self.state.key]).as_dict(private=False)).encode()
        args = dict(parse_qsl(query))
        form = dict(parse_qsl(req.body.decode())) if req.method == "POST" else {}
        request = _Request(req.method, f"{base}{req.path}", req.headers, form, args)
        with self._lock:
            if path == "/authorize":
                return self.server.create_authorization_response(request, grant_user="alice")  # type: ignore[no-any-return]
            if path == "/token":
                self.state.grants.append(form.get("grant_type", ""))
                return self.server.create_token_response(request)  # type: ignore[no-any-return]
        return 404, {}, b""
