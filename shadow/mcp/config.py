"""Options of the `mcp` middleware (hooked into shadow.gateway.config's middleware parser). Names
follow Traefik Hub's MCP middleware (`policies[].match`, `policies[].action`, `resourceMetadata`),
written camelCase like Traefik's file provider::

    http:
      middlewares:
        tools:
          mcp:
            policies:                          # ordered: the first match decides
              - match: Equals(`mcp.method`, `tools/call`) && Equals(`mcp.params.name`, `transfer_funds`) && LessThan(`mcp.params.arguments.amount`, `1000`)
                action: allow
              - match: Contains(`jwt.groups`, `support`) && Prefix(`mcp.params.name`, `read_`)
                action: allow
            defaultAction: deny                # default: deny when policies are given, else allow
            maxRequestBodySize: 1048576        # bytes (Traefik Hub's default: 1 MB)
            resourceMetadata:                  # RFC 9728, at /.well-known/oauth-protected-resource/<path>
              authorizationServers: [https://auth.example.com]
              scopesSupported: [mcp:tools]
              resource: https://mcp.example.com/mcp   # default: the URL the client called
            mirror:
              safeTools: [search, get_weather]   # tools/call copies to mirrors only for these
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shadow.auth.claims import ClaimSyntaxError, parse_claims
from shadow.mcp.policy import Action, Policy

if TYPE_CHECKING:
    from shadow.yamlconfig import YamlReader

__all__ = ["DEFAULT_MAX_BODY", "McpSettings", "ResourceMetadata", "parse_mcp_middleware"]

DEFAULT_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class ResourceMetadata:
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] = ()
    resource: str | None = None  # None: the URL the client called (scheme://host/path)
    resource_name: str | None = None


@dataclass(frozen=True)
class McpSettings:
    name: str
    policies: tuple[Policy, ...] = ()
    default_action: Action = "allow"
    max_request_body_bytes: int = DEFAULT_MAX_BODY
    resource_metadata: ResourceMetadata | None = None
    safe_tools: tuple[str, ...] = ()  # tools/call copies go to mirrors only for these


def _action(reader: YamlReader, node: dict[Any, Any], key: str, where: str, default: str) -> Literal["allow", "deny"]:
    value = reader.string(node, key, where, default=default)
    if value not in ("allow", "deny"):
        reader.fail(f"must be allow or deny, got {value!r}", f"{where}.{key}", reader.value_line(node, key))
    return "allow" if value == "allow" else "deny"


def _url(reader: YamlReader, value: str, where: str, line: int | None) -> str:
    if not value.startswith(("https://", "http://")):
        reader.fail(f"must be an http(s) URL, got {value!r}", where, line)
    return value


def parse_mcp_middleware(reader: YamlReader, name: str, body: dict[Any, Any], where: str) -> McpSettings:
    reader.check_keys(body, where, ("policies", "defaultAction", "maxRequestBodySize", "resourceMetadata", "mirror"))
    items = reader.sequence(body, "policies", where)
    policies = []
    for i, item in enumerate(items):
        item_field = f"{where}.policies[{i}]"
        node = reader.mapping(item, item_field, reader.item_line(items, i), allow_null=False)
        reader.check_keys(node, item_field, ("match", "action"))
        text = reader.required_string(node, "match", item_field)
        try:
            expr = parse_claims(text)
        except ClaimSyntaxError as exc:
            reader.fail(f"{exc.message} at column {exc.column} of {text!r}", f"{item_field}.match",
                        reader.value_line(node, "match"))
        if "action" not in node:
            reader.fail("required (allow or deny)", f"{item_field}.action", reader.node_line(node))
        policies.append(Policy(expr, _action(reader, node, "action", item_field, "allow"), text))
    default = _action(reader, body, "defaultAction", where, "deny" if policies else "allow")
    max_body = reader.integer(body, "maxRequestBodySize", where, DEFAULT_MAX_BODY, minimum=1)
    metadata = None
    if body.get("resourceMetadata") is not None:
        meta_field = f"{where}.resourceMetadata"
        meta = reader.mapping(body["resourceMetadata"], meta_field, reader.value_line(body, "resourceMetadata"))
        reader.check_keys(meta, meta_field, ("authorizationServers", "scopesSupported", "resource", "resourceName"))
        servers = reader.string_list(meta, "authorizationServers", meta_field)
        if not servers:
            reader.fail("needs at least one authorization server URL", f"{meta_field}.authorizationServers",
                        reader.value_line(meta, "authorizationServers"))
        seq = reader.sequence(meta, "authorizationServers", meta_field)
        for i, server in enumerate(servers):
            _url(reader, server, f"{meta_field}.authorizationServers[{i}]", reader.item_line(seq, i))
        resource = reader.string(meta, "resource", meta_field)
        if resource is not None:
            _url(reader, resource, f"{meta_field}.resource", reader.value_line(meta, "resource"))
        metadata = ResourceMetadata(servers, reader.string_list(meta, "scopesSupported", meta_field), resource,
                                    reader.string(meta, "resourceName", meta_field))
    mirror_field = f"{where}.mirror"
    mirror = reader.mapping(body.get("mirror"), mirror_field, reader.value_line(body, "mirror"))
    reader.check_keys(mirror, mirror_field, ("safeTools",))
    return McpSettings(name, tuple(policies), default, max_body, metadata,
                       reader.string_list(mirror, "safeTools", mirror_field))
