"""Task-based access control for MCP (Traefik Hub's MCP middleware): an ordered list of policies, each a
match expression over the caller's JWT claims (`jwt.<claim>`) and the MCP request (`mcp.method`,
`mcp.params.name`, `mcp.params.uri`, `mcp.params.arguments.<arg>`), with an action; the first policy
that matches decides, the default decides the rest.

- The session's plumbing is never refused: `initialize`, `ping`, `server/discover`, notifications and
  the client's answers to the server's requests.
- The list methods (`tools/list`, `prompts/list`, `resources/list`) are not refused either: their
  answers are filtered to what the caller may call (`visible`).
- `visible` asks "could some call of this tool be allowed?": the arguments are unknown, so a condition
  on them is neither true nor false (Kleene's three-valued logic); a policy whose match is unknown and
  allows makes the tool visible, one that is unknown and denies is passed over.

Pure: claims and messages in, decisions out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shadow.auth.claims import ClaimExpr
from shadow.mcp.jsonrpc import LISTINGS, McpMessage

__all__ = ["ALWAYS_ALLOWED", "READ_ONLY", "Decision", "Policy", "decide", "match_context", "safe_to_repeat", "visible"]

Action = Literal["allow", "deny"]
ALWAYS_ALLOWED = frozenset({"initialize", "ping", "server/discover"})
ARGUMENTS = "mcp.params.arguments"
# list method → the method whose policy decides what it lists
# Calls a mirror may repeat on a candidate server: they read, they change nothing.
READ_ONLY = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list",
                       "resources/read", "prompts/get"})
LISTED_BY: dict[str, str] = {"tools/list": "tools/call", "prompts/list": "prompts/get",
                             "resources/list": "resources/read"}


@dataclass(frozen=True)
class Policy:
    match: ClaimExpr
    action: Action
    text: str  # the match expression as written (for messages)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "policy 2" | "default" | "session" | "listing"


def match_context(claims: Mapping[str, Any], method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """What match expressions see: `jwt.<claim>` and `mcp.method`, `mcp.params.*`."""
    return {"jwt": dict(claims), "mcp": {"method": method, "params": dict(params)}}


def decide(policies: tuple[Policy, ...], default: Action, claims: Mapping[str, Any],
           message: McpMessage) -> Decision:
    """Whether the message may go to the server."""
    method = message.method
    if message.kind != "request" or method is None:
        return Decision(True, "session")  # notifications and the client's answers
    if method in ALWAYS_ALLOWED:
        return Decision(True, "session")
    if method in LISTINGS:
        return Decision(True, "listing")
    context = match_context(claims, method, message.params)
    for i, policy in enumerate(policies):
        if policy.match.evaluate(context):
            return Decision(policy.action == "allow", f"policy {i + 1}")
    return Decision(default == "allow", "default")


def _maybe(expr: ClaimExpr, context: Mapping[str, Any]) -> bool | None:
    """`expr` in three-valued logic: None where it depends on the (unknown) arguments."""
    if expr.op == "and":
        values = [_maybe(c, context) for c in expr.children]
        return False if False in values else None if None in values else True
    if expr.op == "or":
        values = [_maybe(c, context) for c in expr.children]
        return True if True in values else None if None in values else False
    if expr.op == "not":
        value = _maybe(expr.children[0], context)
        return None if value is None else not value
    if expr.args and (expr.args[0] == ARGUMENTS or expr.args[0].startswith(ARGUMENTS + ".")):
        return None
    return expr.evaluate(context)


def visible(policies: tuple[Policy, ...], default: Action, claims: Mapping[str, Any], list_method: str,
            name: str) -> bool:
    """Whether an item a list method returned (a tool, prompt or resource) is shown to the caller."""
    method = LISTED_BY[list_method]
    params = {"uri": name} if method == "resources/read" else {"name": name}
    context = match_context(claims, method, params)
    for policy in policies:
        value = _maybe(policy.match, context)
        if value is True:
            return policy.action == "allow"
        if value is None and policy.action == "allow":
            return True
    return default == "allow"


def safe_to_repeat(message: McpMessage, safe_tools: tuple[str, ...]) -> bool:
    """Whether a copy of this request may go to a candidate server: a read-only method, or a
    `tools/call` of a tool the middleware's `mirror.safeTools` names."""
    if message.kind != "request" or message.method is None:
        return False
    if message.method == "tools/call":
        return message.target is not None and message.target in safe_tools
    return message.method in READ_ONLY
