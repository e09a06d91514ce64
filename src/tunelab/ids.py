"""Random ids for things the service names itself: API keys, permissions, operations, files,
datasets and the suffix of a tuned model's id. One generator, so every id is lowercase letters
and digits (safe in a URL path, a file name and a Gemini resource name) and drawn from the
operating system's secure random source (an id must not be guessable from another one)."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.ascii_lowercase + string.digits


def random_id(length: int) -> str:
    """``length`` random lowercase letters and digits (36**length ids: 12 give 62 bits)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))
