"""The unit of tuning data: one input and the output the model should give for it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    text_input: str
    output: str


def dataset_hash(examples: Iterable[Example]) -> str:
    """A stable fingerprint of the examples (order matters), recorded in manifests."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.text_input, ex.output], ensure_ascii=False).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()
