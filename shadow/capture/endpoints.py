"""Endpoint templating: raw paths to templates such as /api/orders/{id}.

`template_path` is the cheap static form the gateway applies at capture time. The analyzers
(analyzers/endpoints.py) refine it with segments learned from the data and explicit templates.
"""

from __future__ import annotations

import re

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("{id}", re.compile(r"^\d+$")),
    ("{uuid}", re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    ("{date}", re.compile(r"^\d{4}-\d{2}-\d{2}$")),
    ("{hex}", re.compile(r"^(?=[^/]*\d)[0-9a-fA-F]{12,}$")),
    # Slugs and tokens: ids that mix letters and digits, which words do not (abc12, ORD-2024-0017,
    # ada-lovelace-17, a 22-character base64 id). A word with one digit stays (oauth2, md5, ipv6, s3),
    # and so do version segments (v2, v10, v1beta1).
    ("{slug}", re.compile(
        r"^(?!v\d+(?:[a-z]+\d+)?$)(?=[^/]*[A-Za-z])(?:"
        r"(?=(?:[^/]*\d){2})[A-Za-z0-9._~-]{4,}"  # letters and two or more digits
        r"|[A-Za-z0-9._~]+(?:[-_][A-Za-z0-9._~]+)*[-_]\d+(?:[-_][A-Za-z0-9._~]+)*"  # a word-dash-number slug
        r"|(?=[^/]*\d)[A-Za-z0-9_-]{16,}={0,2}"  # a long token with a digit (base64url ids)
        r")$")),
)


def template_segment(segment: str) -> str:
    for placeholder, pattern in _PATTERNS:
        if pattern.match(segment):
            return placeholder
    return segment


def template_path(path: str) -> str:
    """Replace numeric, UUID, date, long hex and slug-like segments of `path` (no query) by placeholders."""
    return "/".join(template_segment(s) if s else s for s in path.split("/"))
