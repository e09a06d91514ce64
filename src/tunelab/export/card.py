"""The short model card (README.md) that every export carries: where the weights come from
and how they were made, so a file found on a disk months later still says what it is."""

from __future__ import annotations

import json
from typing import Any

USAGE = {
    "peft": (
        "```python\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        "base = AutoModelForCausalLM.from_pretrained(BASE_MODEL_FOLDER)\n"
        "model = PeftModel.from_pretrained(base, THIS_FOLDER)\n"
        "tokenizer = AutoTokenizer.from_pretrained(THIS_FOLDER)\n"
        "```\n"
        "BASE_MODEL_FOLDER is the base model's Hugging Face folder (tunelab keeps it under "
        "`$TUNELAB_HOME/models/{base}`)."
    ),
    "merged": (
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        "model = AutoModelForCausalLM.from_pretrained(THIS_FOLDER)\n"
        "tokenizer = AutoTokenizer.from_pretrained(THIS_FOLDER)\n"
        "```"
    ),
    "gguf": "```\nllama-cli -m {file} -cnv\n```\nThe chat template is in the file's metadata.",
}


def model_card(
    manifest: dict[str, Any], fmt: str, epoch: int | None, *, file: str = "", extra: str = ""
) -> str:
    """Markdown: base model, epoch, data hash, hyperparameters, scores, and how to load it."""
    base = manifest.get("base_model", "?")
    name = manifest.get("display_name") or manifest.get("model_id") or "a tunelab model"
    lines = [f"# {name}", "", f"A LoRA tuning of `{base}` made with tunelab "
             f"{manifest.get('tunelab_version', '')}, exported as **{fmt}**.".replace(" ,", ","),
             ""]
    imported = manifest.get("imported")
    facts: list[tuple[str, Any]] = [("base model", base)]
    if imported:
        facts.append(("origin", "imported PEFT adapter (trained elsewhere)"))
        facts.append(("adapter sha256", imported.get("sha256")))
    else:
        facts.append(("epoch", epoch if epoch is not None else _served_epoch(manifest)))
        facts.append(("epochs run", manifest.get("epochs_run")))
        facts.append(("status", manifest.get("status")))
        facts.append(("training examples", manifest.get("example_count")))
        facts.append(("training data sha256", manifest.get("dataset_hash")))
        facts.append(("seed", manifest.get("seed")))
    if manifest.get("system_instruction"):
        facts.append(("system prompt (tuned in)", manifest["system_instruction"]))
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in facts if v is not None]
    hp = manifest.get("hyperparameters")
    if hp:
        lines += ["", "Hyperparameters: `" + json.dumps(hp, sort_keys=True) + "`"]
    lora = manifest.get("lora")
    if lora:
        lines += ["", "LoRA: `" + json.dumps(lora, sort_keys=True) + "`"]
    losses = manifest.get("epoch_losses") or []
    if losses:
        lines += ["", "Mean training loss per epoch: "
                  + ", ".join(f"{i}: {x:.4f}" for i, x in enumerate(losses, 1))]
    scores = _scores(manifest)
    if scores:
        lines += ["", "Validation scores: `" + json.dumps(scores, sort_keys=True) + "`"]
    if extra:
        lines += ["", extra]
    usage = USAGE[fmt].replace("{file}", file or "model.gguf").replace("{base}", str(base))
    lines += ["", "## Use", "", usage, ""]
    return "\n".join(lines)


def _served_epoch(manifest: dict) -> Any:
    refit = manifest.get("refit") or {}
    if refit.get("served"):  # training/refit.py: a second run on every example is served
        return (f"a refit on all {refit.get('examples')} examples for {refit.get('steps')} "
                f"steps (as many as epoch {refit.get('from_epoch')})")
    return manifest.get("selected_epoch") or manifest.get("epochs_run")


def _scores(manifest: dict) -> Any:
    """Whatever evaluation the run recorded (per-epoch validation scores), if any."""
    for key in ("evaluation", "validation", "scores", "epoch_scores"):
        if manifest.get(key):
            return manifest[key]
    return None


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
