"""Go's httptest.NewRequest, as shadow's middleware request: what Traefik's tests build their
requests with (Host and RequestURI from the target; TLS when the target is https://)."""

from __future__ import annotations

from urllib.parse import urlsplit

from shadow.gateway.middlewares.request import MiddlewareRequest
from shadow.gateway.rules import RequestView


def new_request(method: str, target: str, headers: dict[str, str] | None = None, *,
                remote_addr: str = "192.0.2.1:1234", tls: bool | None = None) -> MiddlewareRequest:
    """httptest.NewRequest(method, target, nil): `target` is absolute ("http://foo:80/p") or a path
    ("/p", Host example.com); RemoteAddr defaults to 192.0.2.1:1234 as in Go."""
    if target.startswith("/"):
        host, scheme, path, query = "example.com", "http", *target.partition("?")[::2]
    else:
        parts = urlsplit(target)
        host, scheme, path, query = parts.netloc, parts.scheme, parts.path, parts.query
    if tls is not None:
        scheme = "https" if tls else "http"
    elif scheme not in ("http", "https"):
        scheme = "http"
    if remote_addr.startswith("["):
        ip = remote_addr[1:].split("]", 1)[0]
    elif remote_addr.count(":") == 1:
        ip = remote_addr.split(":", 1)[0]
    else:
        ip = remote_addr
    return MiddlewareRequest(method=method, scheme=scheme, host=host, path=path, query=query,
                             headers=tuple((headers or {}).items()), remote_ip=ip, request_uri=target)


def url_view(url: str, method: str = "GET") -> RequestView:
    """What a rule sees of httptest.NewRequest(method, url): Host from the URL (example.com for a
    path), the raw path and query as written."""
    if url.startswith("/"):
        path, _, query = url.partition("?")
        return RequestView(method=method, host="example.com", path=path, query=query)
    parts = urlsplit(url)
    path = url[len(parts.scheme) + 3 + len(parts.netloc):].split("?", 1)[0].split("#", 1)[0]
    return RequestView(method=method, host=parts.netloc, path=path, query=parts.query)
