"""Prompt templates: how a conversation becomes the text a base model was trained on.

Training and inference render prompts with the same template, so a tuned model sees at
serving time exactly the format it was tuned on. Templates are written here in code (not
taken from a tokenizer's Jinja template) because tuning needs the prompt and the output as
separate pieces: the loss is computed on the output tokens only.

A template also knows which of the text it writes are control tokens (``<|im_start|>``,
``<|im_end|>``, …) and which is the user's: ``pieces`` keeps them apart, so tokenization can
encode the user's text as plain text. A prompt or a training example that contains
``<|im_end|>`` can then never close its turn or open a new one (prompt injection into the
chat format); the model reads it as the characters it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A turn of a conversation: ("user" | "model", text). Gemini calls the assistant "model".
Turn = tuple[str, str]
# A piece of rendered text and whether it is one of the template's control tokens.
Piece = tuple[str, bool]


def _c(marker: str) -> Piece:
    return (marker, True)


def _t(text: str) -> Piece:
    return (text, False)


def merged(pieces: list[Piece]) -> list[Piece]:
    """Adjacent plain pieces joined (``"user\n"`` and the user's text are tokenized together,
    exactly as in the whole rendered string)."""
    out: list[Piece] = []
    for text, control in pieces:
        if out and not control and not out[-1][1]:
            out[-1] = (out[-1][0] + text, False)
        elif text:
            out.append((text, control))
    return out


@dataclass(frozen=True)
class Template:
    """A chat format. ``end`` closes a model turn: appended to training outputs, and a stop
    string at generation time."""

    name: str
    end: str
    default_system: str | None = None
    bos: bool = False  # prepend the tokenizer's BOS token to every prompt

    end_is_control: bool = True  # ``end`` is a control token (not so for the plain format)

    def render(self, turns: list[Turn], system: str | None = None) -> str:
        """Render the conversation so far, ending where the model's next answer begins."""
        return "".join(text for text, _ in self.pieces(turns, system))

    def pieces(self, turns: list[Turn], system: str | None = None) -> list[Piece]:
        """``render`` as (text, is_control) pieces, adjacent plain text joined."""
        if not turns or turns[-1][0] != "user":
            raise ValueError("a prompt must end with a user turn")
        system = system if system is not None else self.default_system
        return merged(getattr(self, f"_render_{self.name}")(turns, system))

    def output_pieces(self, output: str) -> list[Piece]:
        """A training output and the ``end`` that closes the model's turn."""
        return merged([_t(output), (self.end, self.end_is_control)])

    def _render_chatml(self, turns: list[Turn], system: str | None) -> list[Piece]:
        parts = []
        if system:
            parts += [_c("<|im_start|>"), _t(f"system\n{system}"), _c("<|im_end|>"), _t("\n")]
        for role, text in turns:
            name = "user" if role == "user" else "assistant"
            parts += [_c("<|im_start|>"), _t(f"{name}\n{text}"), _c("<|im_end|>"), _t("\n")]
        parts += [_c("<|im_start|>"), _t("assistant\n")]
        return parts

    def _render_gemma(self, turns: list[Turn], system: str | None) -> list[Piece]:
        parts = []
        for i, (role, text) in enumerate(turns):
            name = "user" if role == "user" else "model"
            if i == 0 and system:
                text = f"{system}\n\n{text}"
            parts += [_c("<start_of_turn>"), _t(f"{name}\n{text}"), _c("<end_of_turn>"),
                      _t("\n")]
        parts += [_c("<start_of_turn>"), _t("model\n")]
        return parts

    def _render_plain(self, turns: list[Turn], system: str | None) -> list[Piece]:
        parts = [_t(f"{system}\n\n")] if system else []
        for role, text in turns:
            parts.append(_t(f"{text}\n" if role == "user" else f"{text}{self.end}\n"))
        return parts


CHATML = Template(
    "chatml",
    end="<|im_end|>",
)
GEMMA = Template("gemma", end="<end_of_turn>", bos=True)
PLAIN = Template("plain", end="\n\n", end_is_control=False)

TEMPLATES = {t.name: t for t in (CHATML, GEMMA, PLAIN)}


# What control tokens of chat formats look like: the templates' own, and the ``<|...|>`` kind
# most other formats use (``<|endoftext|>``, ``<|eot_id|>``, ``<|start_header_id|>``, …).
CONTROL_MARKER = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|<(?:start|end)_of_turn>")


def template_for_vocab(vocab: set[str] | dict) -> Template:
    """Guess the template of a model from the special tokens its tokenizer knows."""
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return CHATML
    if "<start_of_turn>" in vocab and "<end_of_turn>" in vocab:
        return GEMMA
    return PLAIN
