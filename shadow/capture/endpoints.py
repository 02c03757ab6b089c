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
)


def template_segment(segment: str) -> str:
    for placeholder, pattern in _PATTERNS:
        if pattern.match(segment):
            return placeholder
    return segment


def template_path(path: str) -> str:
    """Replace numeric, UUID, date and long hex segments of `path` (no query) by placeholders."""
    return "/".join(template_segment(s) if s else s for s in path.split("/"))
