"""OAuth scopes, with the Gemini API's names, and what each endpoint needs.

Tokens carry full scope URLs; short aliases are accepted wherever a scope is requested
(``tunelab`` CLI, ``/oauth2/token``). ``cloud-platform`` is a superset of all of them, as at
Google.
"""

from __future__ import annotations

from tunelab.errors import InvalidArgument

_BASE = "https://www.googleapis.com/auth/"
GL = _BASE + "generative-language"
TUNING = _BASE + "generative-language.tuning"
TUNING_RO = _BASE + "generative-language.tuning.readonly"
RETRIEVER = _BASE + "generative-language.retriever"
RETRIEVER_RO = _BASE + "generative-language.retriever.readonly"
CLOUD = _BASE + "cloud-platform"

ALL = (GL, TUNING, TUNING_RO, RETRIEVER, RETRIEVER_RO, CLOUD)
ALIASES = {
    "tuning": TUNING,
    "tuning.readonly": TUNING_RO,
    "generative-language": GL,
    "gl": GL,
    "retriever": RETRIEVER,
    "retriever.readonly": RETRIEVER_RO,
    "cloud-platform": CLOUD,
    "all": CLOUD,
}
# What a token gets when its request names no scope: everything the user may do.
DEFAULT = (CLOUD,)


def parse(text: str | None, default: tuple[str, ...] = DEFAULT) -> tuple[str, ...]:
    """Space- or comma-separated scopes (full URLs or aliases) → canonical URLs, in order."""
    words = [w for w in (text or "").replace(",", " ").split() if w]
    if not words:
        return default
    out: list[str] = []
    bad = []
    for w in words:
        full = ALIASES.get(w.lower()) or (w if w in ALL else None)
        if full is None and w.startswith(_BASE) and w[len(_BASE):] in ALIASES:
            full = ALIASES[w[len(_BASE):]]
        if full is None:
            bad.append(w)
        elif full not in out:
            out.append(full)
    if bad:
        raise InvalidArgument(
            f"Unknown scope {', '.join(repr(b) for b in bad)}. Known scopes: "
            + ", ".join(ALL) + " (or the short names " + ", ".join(ALIASES) + ")."
        )
    return tuple(out)


def satisfies(granted: frozenset[str], accepted: frozenset[str]) -> bool:
    """True when a token with ``granted`` scopes may call an endpoint accepting ``accepted``."""
    return CLOUD in granted or bool(granted & accepted)

