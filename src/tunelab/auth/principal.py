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


@dataclass(frozen=True)
class Caller:
    """A verified credential: the user, what the credential allows and what it is (``key``
    or ``token``); ``auth.authenticate`` turns it into a ``Principal`` once the endpoint's
    rule allows it."""

    user: str
    scopes: frozenset[str]
    via: str
