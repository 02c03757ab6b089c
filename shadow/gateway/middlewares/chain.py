"""Traefik's `chain` (pkg/middlewares/chain): a named list of middlewares applied in order, as if the
router listed them itself. The loader expands chains in routers' middleware lists (nested chains
too; a chain that contains itself is a config error)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Chain"]


@dataclass(frozen=True)
class Chain:
    name: str
    middlewares: tuple[str, ...]
