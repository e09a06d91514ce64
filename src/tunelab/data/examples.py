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
    # A system prompt, from chat-format data (OpenAI "messages" with a system message, or
    # Gemini "contents" with a "systemInstruction"); rendered by the base model's template.
    system: str | None = None


def dataset_hash(examples: Iterable[Example]) -> str:
    """A stable fingerprint of the examples (order matters), recorded in manifests."""
    h = hashlib.sha256()
    for ex in examples:
        fields = [ex.text_input, ex.output] + ([ex.system] if ex.system is not None else [])
        h.update(json.dumps(fields, ensure_ascii=False).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()
