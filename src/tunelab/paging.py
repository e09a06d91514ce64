"""Page tokens: the one encoding of "where the next page starts", shared by the store's queries
and the lists assembled in memory (base models, permissions), so every protocol's
``nextPageToken`` means the same."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from tunelab.errors import InvalidArgument


@dataclass
class Page:
    items: list
    next_token: str | None


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not raw.startswith("o:"):
            raise ValueError(raw)
        return max(0, int(raw[2:]))
    except Exception as e:  # noqa: BLE001
        raise InvalidArgument(
            f"pageToken '{token}' is not valid; pass the nextPageToken of the previous page."
        ) from e
