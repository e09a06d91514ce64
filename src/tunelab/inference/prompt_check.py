"""Whether a prompt to a tuned model follows the format it was tuned on.

The trainer records the format its training prompts share (``prompt_format`` in the manifest;
see ``data/prompt_format.py``). A prompt to the tuned model that lacks that preamble or those
field labels gets a worse answer -- the most common reason a tuned model that scored well
fails in production -- so the answer carries a note saying so (``promptFormat`` in the
generateContent response, an extension field SDKs ignore), and the server counts such prompts
(``PromptFormatStats``, shown by ``GET /healthz``).
"""

from __future__ import annotations

import threading
from pathlib import Path

from tunelab.catalog.templates import Turn
from tunelab.data.prompt_format import PromptFormat
from tunelab.inference.manifest import served_facts


def trained_format(adapter: Path | None) -> PromptFormat:
    """The format recorded for the tuned model whose adapter is ``adapter`` (empty for a base
    model, or a model tuned before formats were recorded)."""
    return served_facts(adapter).prompt_format


def format_note(adapter: Path | None, turns: list[Turn]) -> str | None:
    """Why the last user message of ``turns`` does not follow the tuned model's training
    format, or None when it does (or there is no format to follow)."""
    users = [text for role, text in turns if role == "user"]
    if not users:
        return None
    return trained_format(adapter).check(users[-1])


class PromptFormatStats:
    """Counts, since the server started, the prompts to tuned models and those that did not
    follow their model's training format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.checked = 0
        self.mismatched = 0

    def record(self, mismatched: bool) -> None:
        with self._lock:
            self.checked += 1
            self.mismatched += int(mismatched)

    def to_dict(self) -> dict:
        with self._lock:
            return {"tunedModelPrompts": self.checked,
                    "promptsNotInTrainingFormat": self.mismatched}
