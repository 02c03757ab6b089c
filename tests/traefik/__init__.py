"""Traefik's own table-driven tests, re-expressed as Python data and run against shadow's cores.

Each file names the Traefik source file it comes from and the version (TRAEFIK_VERSION below):
same inputs, same expected outputs. Cases that exercise Go plumbing only (handler wiring, Redis,
Go's http.Request fields without an equivalent) are skipped with the reason.
"""

TRAEFIK_VERSION = "v3.7.9-28-gfd5a576df2 (commit fd5a576df2e8aeb0bfc8a96b6ef6e60a61f7ec0a, 2026-07-24)"
