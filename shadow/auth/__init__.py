"""Edge authentication: the jwt and oidc middlewares (token verification, JWKS, OIDC discovery and
login), claim conditions and forwarded claims, and their config parsing. Imports no mitmproxy
(addons/auth.py adapts) and nothing of shadow.gateway: the gateway's config loader calls into it."""
