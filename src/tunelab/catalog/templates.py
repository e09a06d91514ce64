"""Prompt templates: how a conversation becomes the text a base model was trained on.

Training and inference render prompts with the same template, so a tuned model sees at
serving time exactly the format it was tuned on. Templates are written here in code (not
taken from a tokenizer's Jinja template) because tuning needs the prompt and the output as
separate pieces: the loss is computed on the output tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

# A turn of a conversation: ("user" | "model", text). Gemini calls the assistant "model".
Turn = tuple[str, str]


@dataclass(frozen=True)
class Template:
    """A chat format. ``end`` closes a model turn: appended to training outputs, and a stop
    string at generation time."""

    name: str
    end: str
    default_system: str | None = None
    bos: bool = False  # prepend the tokenizer's BOS token to every prompt

    def render(self, turns: list[Turn], system: str | None = None) -> str:
        """Render the conversation so far, ending where the model's next answer begins."""
        if not turns or turns[-1][0] != "user":
            raise ValueError("a prompt must end with a user turn")
        system = system if system is not None else self.default_system
        return getattr(self, f"_render_{self.name}")(turns, system)

    def _render_chatml(self, turns: list[Turn], system: str | None) -> str:
        parts = []
        if system:
            parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
        for role, text in turns:
            name = "user" if role == "user" else "assistant"
            parts.append(f"<|im_start|>{name}\n{text}<|im_end|>\n")
        parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    def _render_gemma(self, turns: list[Turn], system: str | None) -> str:
        parts = []
        for i, (role, text) in enumerate(turns):
            name = "user" if role == "user" else "model"
            if i == 0 and system:
                text = f"{system}\n\n{text}"
            parts.append(f"<start_of_turn>{name}\n{text}<end_of_turn>\n")
        parts.append("<start_of_turn>model\n")
        return "".join(parts)

    def _render_plain(self, turns: list[Turn], system: str | None) -> str:
        parts = [f"{system}\n\n"] if system else []
        for role, text in turns:
            parts.append(f"{text}\n" if role == "user" else f"{text}{self.end}\n")
        return "".join(parts)


CHATML = Template(
    "chatml",
    end="<|im_end|>",
)
GEMMA = Template("gemma", end="<end_of_turn>", bos=True)
PLAIN = Template("plain", end="\n\n")

TEMPLATES = {t.name: t for t in (CHATML, GEMMA, PLAIN)}


def template_for_vocab(vocab: set[str] | dict) -> Template:
    """Guess the template of a model from the special tokens its tokenizer knows."""
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return CHATML
    if "<start_of_turn>" in vocab and "<end_of_turn>" in vocab:
        return GEMMA
    return PLAIN
