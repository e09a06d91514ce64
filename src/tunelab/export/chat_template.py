"""The chat template of an exported model, as the Jinja text ``tokenizer.apply_chat_template``
and llama.cpp read.

tunelab renders prompts with its own templates (catalog/templates.py), not the tokenizer's, so
an export must carry a Jinja template that renders exactly the same text, or the model would
be called in another format than the one it was tuned on. The tuned-in default system prompt
(the one every training example shared, else the base template's) is written into it, so a
request without a system message gets what tunelab's own serving gives it. A test renders
each template both ways and compares.
"""

from __future__ import annotations

import json

from tunelab.catalog.templates import Template

# Jinja string literal of a system prompt (JSON string syntax is valid Jinja syntax).
_LIT = json.dumps

_SYSTEM = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = DEFAULT -%}{%- endif -%}"
)

_BODY = {
    "chatml": (
        "{%- if system -%}{{ '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}{%- endif -%}"
        "{%- for m in messages -%}"
        "{{ '<|im_start|>' + ('user' if m['role'] == 'user' else 'assistant') + '\\n' "
        "+ m['content'] + '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    ),
    "gemma": (
        "{{ bos_token }}"
        "{%- for m in messages -%}"
        "{%- set text = (system + '\\n\\n' + m['content']) if (loop.first and system) "
        "else m['content'] -%}"
        "{{ '<start_of_turn>' + ('user' if m['role'] == 'user' else 'model') + '\\n' "
        "+ text + '<end_of_turn>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
    ),
    "plain": (
        "{%- if system -%}{{ system + '\\n\\n' }}{%- endif -%}"
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'user' -%}{{ m['content'] + '\\n' }}"
        "{%- else -%}{{ m['content'] + END + '\\n' }}{%- endif -%}"
        "{%- endfor -%}"
    ),
}


def jinja_template(template: Template, default_system: str | None) -> str:
    """A Jinja chat template rendering like ``template.render`` with ``default_system`` as the
    system prompt when the conversation brings none (``None``: the base template's)."""
    system = default_system if default_system is not None else template.default_system
    head = (
        f"{{%- set DEFAULT = {_LIT(system or '')} -%}}"
        f"{{%- set END = {_LIT(template.end)} -%}}"
    )
    body = _BODY[template.name]
    if template.name == "gemma" and not template.bos:
        body = body.removeprefix("{{ bos_token }}")
    return head + _SYSTEM + body
