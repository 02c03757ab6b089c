"""Claim conditions of the JWT middleware (Traefik Hub's `claims:` option), parsed once at load.

Grammar (whitespace between tokens is free)::

    expr    := or
    or      := and ("||" and)*
    and     := unary ("&&" unary)*
    unary   := "!" unary | "(" expr ")" | call
    call    := Equals(claim, value) | Prefix(claim, value) | Contains(claim, value)
             | SplitContains(claim, separator, value) | OneOf(claim, value, value...)
             | LessThan(claim, number) | GreaterThan(claim, number)

Arguments are double-quoted strings (backslash escapes `\\"` and `\\\\`) or back-quoted raw strings.
`claim` is a dotted path into nested objects (`realm_access.roles`). Semantics:

- Equals: the claim (a string, number or boolean, compared as its JSON text for non-strings) equals
  the value; for a list claim, any element equals it.
- Prefix: the string claim (or any element of a list claim) starts with the value.
- Contains: a string claim contains the value as a substring; a list claim has an element equal to it.
- SplitContains: the string claim split on `separator` has an element equal to the value (for
  space-separated `scope` claims: `SplitContains("scope", " ", "orders:write")`).
- OneOf: Equals against any of the values.
- LessThan / GreaterThan: the claim is a number (or a string holding one; for a list claim, every
  element) below / above the value
  (the MCP gateway's argument limits: `LessThan(`mcp.params.arguments.amount`, `1000`)`).

A missing claim makes every function false (so `!Equals(...)` is true for it).
Syntax errors raise `ClaimSyntaxError` with a 1-based column, like the router rules' parser.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shadow.yamlconfig import MAX_EXPRESSION_NESTING

__all__ = ["ClaimExpr", "ClaimSyntaxError", "claim_at", "parse_claims"]

_FUNCTIONS = {"Equals": 2, "Prefix": 2, "Contains": 2, "SplitContains": 3, "OneOf": -2,  # -2: at least 2
              "LessThan": 2, "GreaterThan": 2}
_NUMERIC = ("LessThan", "GreaterThan")


class ClaimSyntaxError(ValueError):
    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} at column {column}")
        self.message = message
        self.column = column


_MISSING = object()


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (a top-level key containing dots wins), or None when absent."""
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if number == number else None  # NaN compares false anyway: not a number
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class ClaimExpr:
    """A node: op is one of the function names, "and", "or", "not"."""

    op: str
    args: tuple[str, ...] = ()
    children: tuple[ClaimExpr, ...] = ()

    def evaluate(self, claims: Mapping[str, Any]) -> bool:
        if self.op == "and":
            return all(c.evaluate(claims) for c in self.children)
        if self.op == "or":
            return any(c.evaluate(claims) for c in self.children)
        if self.op == "not":
            return not self.children[0].evaluate(claims)
        value = claim_at(claims, self.args[0])
        if value is None:
            return False
        items = value if isinstance(value, list) else [value]
        if self.op == "Equals":
            return any(_text(v) == self.args[1] for v in items)
        if self.op == "OneOf":
            wanted = set(self.args[1:])
            return any(_text(v) in wanted for v in items)
        if self.op == "Prefix":
            return any(isinstance(v, str) and v.startswith(self.args[1]) for v in items)
        if self.op in _NUMERIC:
            limit = float(self.args[1])
            numbers = [n for n in map(_number, items) if n is not None]
            if self.op == "LessThan":
                return bool(numbers) and all(n < limit for n in numbers)
            return bool(numbers) and all(n > limit for n in numbers)
        if self.op == "Contains":
            if isinstance(value, list):
                return any(_text(v) == self.args[1] for v in value)
            return isinstance(value, str) and self.args[1] in value
        # SplitContains
        return isinstance(value, str) and self.args[2] in value.split(self.args[1])


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0  # '(' and '!' open around the current position: bounded, the parser recurses

    def fail(self, message: str, pos: int | None = None) -> ClaimSyntaxError:
        return ClaimSyntaxError(message, (self.pos if pos is None else pos) + 1)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip()
        return self.text.startswith(token, self.pos)

    def expect(self, token: str) -> None:
        if not self.peek(token):
            found = self.text[self.pos] if self.pos < len(self.text) else "end of expression"
            raise self.fail(f"expected {token!r}, found {found!r}")
        self.pos += len(token)

    def parse(self) -> ClaimExpr:
        self.skip()
        if self.pos == len(self.text):
            raise self.fail("empty claims expression")
        expr = self.parse_or()
        self.skip()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r}")
        return expr

    def parse_or(self) -> ClaimExpr:
        items = [self.parse_and()]
        while self.peek("||"):
            self.pos += 2
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else ClaimExpr("or", children=tuple(items))

    def parse_and(self) -> ClaimExpr:
        items = [self.parse_unary()]
        while self.peek("&&"):
            self.pos += 2
            items.append(self.parse_unary())
        return items[0] if len(items) == 1 else ClaimExpr("and", children=tuple(items))

    def parse_unary(self) -> ClaimExpr:
        self.skip()
        if not (self.peek("!") or self.peek("(")):
            return self.parse_call()
        self.depth += 1
        if self.depth > MAX_EXPRESSION_NESTING:
            raise self.fail(f"nested deeper than {MAX_EXPRESSION_NESTING} levels of parentheses and '!'")
        if self.peek("!"):
            self.pos += 1
            expr = ClaimExpr("not", children=(self.parse_unary(),))
        else:
            self.pos += 1
            expr = self.parse_or()
            self.expect(")")
        self.depth -= 1
        return expr

    def parse_call(self) -> ClaimExpr:
        self.skip()
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        name = self.text[start:self.pos]
        if not name:
            found = self.text[self.pos] if self.pos < len(self.text) else "end of expression"
            raise self.fail(f"expected a function such as Equals, found {found!r}")
        if name not in _FUNCTIONS:
            raise self.fail(f"unknown function {name!r} ({', '.join(_FUNCTIONS)})", start)
        self.expect("(")
        args = [self.parse_string()]
        while self.peek(","):
            self.pos += 1
            args.append(self.parse_string())
        self.expect(")")
        arity = _FUNCTIONS[name]
        if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
            want = f"{arity}" if arity > 0 else f"at least {-arity}"
            raise self.fail(f"{name} takes {want} arguments, got {len(args)}", start)
        if not args[0]:
            raise self.fail(f"{name}: the claim name is empty", start)
        if name in _NUMERIC and _number(args[1]) is None:
            raise self.fail(f"{name}: {args[1]!r} is not a number", start)
        return ClaimExpr(name, tuple(args))

    def parse_string(self) -> str:
        self.skip()
        if self.pos >= len(self.text) or self.text[self.pos] not in "\"`":
            found = self.text[self.pos] if self.pos < len(self.text) else "end of expression"
            raise self.fail(f"expected a quoted string, found {found!r}")
        quote, start = self.text[self.pos], self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\" and quote == '"' and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            out.append(ch)
            self.pos += 1
        raise self.fail("unterminated string", start)


def parse_claims(text: str) -> ClaimExpr:
    """Parse a claims expression; raises ClaimSyntaxError (with a column) on bad syntax."""
    return _Parser(text).parse()
