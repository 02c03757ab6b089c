"""Regular expressions with Go's `regexp` semantics, on Google's RE2 engine (google-re2).

Traefik compiles `PathRegexp`, `HostRegexp`, `HeaderRegexp`, `QueryRegexp`, `redirectRegex` and
`replacePathRegex` with Go's `regexp`: RE2 syntax (no backreferences, no look-around), matching in
time linear in the input. Python's `re` backtracks: `^/(a+)+$` against `/aaaa…ab` takes time
doubling per character. `GoRegexp` gives Go's behaviour:

- `compile_go(pattern)` accepts what Go accepts (RE2 syntax, `(?P<name>…)` and `(?<name>…)`,
  `\\z`, `\\Q…\\E`, repetition up to 1000) and raises `GoRegexpError` for the rest (`\\1`, `(?=`,
  `\\Z`, `\\C`…), with Go's wording where it differs.
- `search(text)` is Go's `MatchString` (unanchored); `replace_all(text, template)` is Go's
  `ReplaceAllString`, with its `$1`, `${1}`, `$name`, `${name}` and `$$` expansion (a name runs as
  long as letters, digits and `_` follow: `$1x` is the group named `1x`, empty) and its handling of
  empty matches (an empty match right after a match is not replaced, unlike Python's `re.sub`).

Matching works on UTF-8 bytes: the binding's `str` path decodes every offset back to characters,
which costs ≈ 4× the match itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import re2

__all__ = ["GoRegexp", "GoRegexpError", "compile_go", "expand_template"]


class GoRegexpError(ValueError):
    """A pattern Go's regexp package rejects; the message follows Go's ("invalid escape sequence: `\\1`")."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 otherwise prints every rejected pattern on stderr
    return options


_OPTIONS = _options()


def _reject_non_go(pattern: str) -> None:
    """Syntax RE2 (C++) accepts and Go does not: `\\C` (any byte)."""
    i = 0
    in_quote = False
    while i < len(pattern):
        if pattern.startswith("\\E", i) and in_quote:
            in_quote, i = False, i + 2
            continue
        if in_quote:
            i += 1
            continue
        if pattern.startswith("\\Q", i):
            in_quote, i = True, i + 2
            continue
        if pattern[i] == "\\" and i + 1 < len(pattern):
            if pattern[i + 1] == "C":
                raise GoRegexpError("invalid escape sequence: \\C")
            i += 2
            continue
        i += 1


@dataclass(frozen=True, slots=True)
class GoMatch:
    """One match on the UTF-8 bytes of the subject: `spans[i]` is group i's (start, end), (-1, -1) if unset."""

    subject: bytes
    spans: tuple[tuple[int, int], ...]

    def group(self, index: int) -> str:
        start, end = self.spans[index]
        return "" if start < 0 else self.subject[start:end].decode("utf-8", "surrogateescape")


class GoRegexp:
    """A compiled Go-syntax regular expression."""

    __slots__ = ("_names", "_regexp", "pattern")

    def __init__(self, pattern: str) -> None:
        _reject_non_go(pattern)
        try:
            self._regexp = re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            message = exc.args[0] if exc.args else "invalid pattern"
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            raise GoRegexpError(str(message)) from None
        self.pattern = pattern
        self._names: dict[str, int] = dict(self._regexp.groupindex)

    def __repr__(self) -> str:
        return f"GoRegexp({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoRegexp) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    @property
    def group_count(self) -> int:
        return int(self._regexp.groups)

    def search(self, text: str) -> bool:
        """Go's MatchString: does the pattern match anywhere in `text`?"""
        return self._regexp.search(text.encode("utf-8", "surrogateescape")) is not None

    def find(self, text: str) -> GoMatch | None:
        """Go's FindStringSubmatchIndex: the leftmost match with its groups, or None."""
        subject = text.encode("utf-8", "surrogateescape")
        return self._find(subject, 0)

    def _find(self, subject: bytes, pos: int) -> GoMatch | None:
        m = self._regexp.search(subject, pos)
        if m is None:
            return None
        return GoMatch(subject, tuple(m.span(i) for i in range(self._regexp.groups + 1)))

    def replace_all(self, text: str, template: str) -> str:
        """Go's ReplaceAllString(text, template)."""
        src = text.encode("utf-8", "surrogateescape")
        out = bytearray()
        last_end = 0
        pos = 0
        while pos <= len(src):
            m = self._find(src, pos)
            if m is None:
                break
            start, end = m.spans[0]
            out += src[last_end:start]
            # No replacement for an empty match right after the previous match (Go's rule).
            if end > last_end or start == 0:
                out += expand_template(template, m, self._names).encode("utf-8", "surrogateescape")
            last_end = end
            width = _utf8_width(src, pos)
            if pos + width > end:
                pos += width
            elif pos + 1 > end:
                pos += 1
            else:
                pos = end
        out += src[last_end:]
        return out.decode("utf-8", "surrogateescape")


def _utf8_width(src: bytes, pos: int) -> int:
    if pos >= len(src):
        return 0
    lead = src[pos]
    width = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return min(width, len(src) - pos)


def _extract_name(template: str) -> tuple[str, int, str] | None:
    """Go's regexp.extract: (name, number or -1, rest) for the text after a '$', or None if malformed."""
    if not template:
        return None
    brace = template[0] == "{"
    body = template[1:] if brace else template
    i = 0
    while i < len(body) and (body[i].isalnum() or body[i] == "_"):
        i += 1
    if i == 0:
        return None
    name = body[:i]
    if brace:
        if i >= len(body) or body[i] != "}":
            return None
        i += 1
    num = -1
    if name.isascii() and name.isdigit() and not (name[0] == "0" and len(name) > 1) and len(name) <= 9:
        num = int(name)
    return name, num, body[i:]


def expand_template(template: str, match: GoMatch, names: dict[str, int]) -> str:
    """Go's Regexp.Expand: `$n`, `${n}`, `$name`, `${name}` replaced by the group, `$$` by `$`;
    an unknown group is empty; a malformed reference keeps its `$`."""
    out: list[str] = []
    while template:
        before, dollar, after = template.partition("$")
        if not dollar:
            break
        out.append(before)
        template = after
        if template.startswith("$"):
            out.append("$")
            template = template[1:]
            continue
        parsed = _extract_name(template)
        if parsed is None:
            out.append("$")
            continue
        name, num, template = parsed
        index = num if num >= 0 else names.get(name, -1)
        if 0 <= index < len(match.spans):
            out.append(match.group(index))
    out.append(template)
    return "".join(out)


def compile_go(pattern: str) -> GoRegexp:
    """Compile `pattern` as Go's regexp.Compile would; GoRegexpError if Go would refuse it."""
    return GoRegexp(pattern)
