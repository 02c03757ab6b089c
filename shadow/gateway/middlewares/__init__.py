"""Traefik's HTTP middlewares as pure cores, one module per kind like Traefik's pkg/middlewares/<kind>/.

Each takes a `MiddlewareRequest` (what the gateway knows of the client's request) and returns a
decision: the request to forward (maybe modified), or a `LocalAnswer` the gateway sends instead;
response-side middlewares take and return response headers. No I/O, no mitmproxy: the gateway's
router addon adapts flows to these (addons/router.py).
"""
