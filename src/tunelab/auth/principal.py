"""Who is calling, as established by ``auth.authenticate``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """``owner`` is the user's name, stored on everything they create. ``via`` says how they
    proved it: ``key`` (API key), ``token`` (OAuth bearer) or ``local`` (the CLI on the
    server's own store)."""

    owner: str
    scopes: frozenset[str] = frozenset({"*"})
    via: str = "local"
