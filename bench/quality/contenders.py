"""The contenders: each trains an adapter on a cell's examples (or, the base model, none).

- ``base``: the base model, zero-shot, on the same prompts. Nothing is trained.
- ``tunelab``: tunelab as a user gets it when leaving every hyperparameter unset: the service's
  validation split (``data/split.py``: 10% held out from 40 examples on) and automatic settings
  (``training/auto.py``), the best-scoring epoch served.
- ``tunelab-gemini``: the same, with Gemini's fixed defaults given explicitly (5 epochs, batch 4,
  learning rate 0.001, constant): what automatic settings must never be worse than by more
  than a point from 100 examples on, nor take more than twice as long.
- ``trl``: TRL's ``SFTTrainer`` as shipped, with Gemini's defaults (5 epochs, batch 4, learning
  rate 0.001) and PEFT's LoRA rank 8 on all linear layers (PEFT's other defaults), a
  completion-only loss, trained on every example of the cell. Everything else (precision,
  gradient checkpointing, optimizer, learning-rate schedule, weight decay) is TRL's default:
  ``bench/trl_setup.py``'s config, the one the throughput benchmark's TRL contender runs.
  It is given the very token sequences tunelab trains on (tunelab's chat template, loss on the
  output tokens), so the two differ in how they train, not in what they see.

``--vary`` changes one part of the tunelab contenders' plan, to measure what that part is
worth (``VARIATIONS``): ``warmup=N`` warmup steps, ``decay=constant|cosine``, ``alpha=N`` the
LoRA alpha, ``validation=none`` every example trained on and none held out, ``dropout=P``
PEFT's LoRA dropout (its own forward: slower than tunelab's fused layers), ``neftune=A`` noise
of magnitude ``A / sqrt(L · d)`` added to the input embeddings while training (NEFTune; L an
example's mean length in tokens, d the width). It is applied to the resolved plan, after
tunelab's choices, so everything else stays as a user gets it.

Every contender's adapter is then answered by the same code (``one.py``: ``answer_all``), so
the scores differ by training alone.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.data.examples import Example

# name → what the table calls it; the driver runs them in this order
CONTENDERS: dict[str, str] = {
    "base": "base model, zero-shot",
    "tunelab": "tunelab, automatic settings",
    "tunelab-gemini": "tunelab, Gemini's fixed defaults (5 epochs, batch 4, lr 0.001)",
    "trl": "TRL SFTTrainer as shipped, Gemini's defaults, all-linear LoRA r8",
}
GEMINI_EPOCHS, GEMINI_BATCH, GEMINI_LR = 5, 4, 0.001
# the contenders tunelab trains, whose plan ``--vary`` changes
TUNELAB_CONTENDERS = ("tunelab", "tunelab-gemini")

# --vary's keys: the values each may take, in words; the check of a value given as text; how
# the checked text is read
VARIATIONS: dict[str, tuple[str, Any, Any]] = {
    "warmup": ("a whole number of steps, 0 or more", str.isdecimal, int),
    "epochs": ("a whole number, 1 to 100", lambda v: v.isdecimal() and 1 <= int(v) <= 100, int),
    "decay": ("constant or cosine", lambda v: v in ("constant", "cosine"), str),
    "alpha": ("a whole number, 1 or more", lambda v: v.isdecimal() and int(v) >= 1, int),
    "validation": ("none", lambda v: v == "none", str),
    "dropout": ("a number from 0 to 0.5", lambda v: _number_in(v, 0.0, 0.5), float),
    "neftune": ("a number from 0 to 20", lambda v: _number_in(v, 0.0, 20.0), float),
}


def _number_in(text: str, low: float, high: float) -> bool:
    try:
        return low <= float(text) <= high
    except ValueError:
        return False


def parse_vary(text: str) -> dict[str, Any]:
    """``KEY=VALUE,KEY=VALUE`` → a dict; ValueError naming what is wrong and the choices."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in VARIATIONS:
            raise ValueError(f"--vary takes KEY=VALUE with KEY one of "
                             f"{', '.join(VARIATIONS)}; got {part!r}")
        words, allowed, read = VARIATIONS[key]
        if not allowed(value):
            raise ValueError(f"--vary {key} must be {words}; got {value!r}")
        out[key] = read(value)
    return out


def vary_plan(plan: Any, vary: dict[str, Any]) -> Any:
    """The resolved plan with ``vary``'s parts changed (``validation`` is the split's)."""
    names = {"warmup": "warmup_steps", "decay": "decay", "alpha": "lora_alpha",
             "epochs": "epoch_count"}
    return dataclasses.replace(plan, **{names[k]: v for k, v in vary.items() if k in names})


def _embedding_noise(base: Any, examples: list[Example], alpha: float, seed: int) -> Any:
    """NEFTune: uniform noise of magnitude alpha / sqrt(L * d) added to the input embeddings
    while training (L an example's mean length in tokens, d the width); a hook to remove."""
    import math

    import torch

    embed = base.model.get_input_embeddings()
    width = embed.weight.shape[1]
    length = max(1.0, sum(len(ex.text_input) + len(ex.output) for ex in examples)
                 / len(examples) / 3.5)
    magnitude = alpha / math.sqrt(length * width)
    gen = torch.Generator().manual_seed(seed + 7919)

    def add_noise(module: Any, args: Any, output: Any) -> Any:
        if not module.training:
            return None
        noise = torch.rand(output.shape, generator=gen, dtype=torch.float32) * 2 - 1
        return output + (noise * magnitude).to(output.dtype)

    return embed.register_forward_hook(add_noise)


@dataclass
class Trained:
    """What a contender's training produced, and what it took."""

    adapter: Path | None  # None: the base model answers
    train_seconds: float = 0.0  # wall time of the whole training call
    steps: int = 0
    trained_examples: int = 0
    validation_examples: int = 0
    settings: dict = field(default_factory=dict)
    choices: list[str] = field(default_factory=list)  # tunelab's one line per choice


def train(name: str, base: Any, examples: list[Example], work: Path, seed: int,
          vary: dict[str, Any] | None = None) -> Trained:
    """Train contender ``name`` (a key of ``CONTENDERS``) on ``examples``; files under
    ``work``; ``vary`` (``parse_vary``) changes the tunelab contenders' plan."""
    if name == "base":
        return Trained(None)
    if name in TUNELAB_CONTENDERS:
        return _tunelab(base, examples, work, seed, gemini=name == "tunelab-gemini",
                        vary=vary or {})
    if name == "trl":
        return _trl(base, examples, work, seed)
    raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")


def _tunelab(base: Any, examples: list[Example], work: Path, seed: int,
             gemini: bool, vary: dict[str, Any]) -> Trained:
    """What the service does with a tuning request (jobs/service.py, executors/local.py):
    split off validation examples, resolve the hyperparameters from the training examples,
    train, serve the selected epoch."""
    from tunelab.data.split import NONE, Split, split_validation
    from tunelab.training import Hyperparameters, adapter_path
    from tunelab.training import train as tunelab_train
    from tunelab.training.hyperparameters import LoraSettings

    given = Hyperparameters(GEMINI_EPOCHS, GEMINI_BATCH, GEMINI_LR) if gemini else (
        Hyperparameters())
    split = (Split(list(examples), [], NONE) if vary.get("validation") == "none"
             else split_validation(examples, for_refit=given.plans_refit(len(examples), False)))
    plan = given.resolve(base.spec.recommended_learning_rate, split.train,
                         validation=split.validation, held_out=len(split.held_out))
    plan = vary_plan(plan, vary)
    lora = (LoraSettings(rank=plan.lora_rank, alpha=plan.lora_alpha, dropout=vary["dropout"])
            if "dropout" in vary else None)
    hook = (_embedding_noise(base, split.train, vary["neftune"], seed)
            if vary.get("neftune") else None)
    t0 = time.perf_counter()
    try:
        result = tunelab_train(base, split.train, plan, work / "run", seed=seed,
                               validation=split.validation, validation_record=split.record(),
                               refit_examples=split.examples, lora=lora)
    finally:
        if hook is not None:
            hook.remove()
    seconds = time.perf_counter() - t0
    manifest = result.manifest
    # the validation examples' score after each epoch (of the first run, where it was refitted):
    # whether they can tell a run that will do badly on the test set from one that will not
    scored = [round(e["score"], 4) for e in (result.evaluation or {}).get("epochs", [])]
    return Trained(
        adapter_path(work / "run"), seconds, len(result.snapshots), len(split.train),
        len(split.validation),
        settings={**plan.to_dict(), "warmup_steps": plan.warmup_steps, "decay": plan.decay,
                  "lora_rank": plan.lora_rank, "lora_alpha": plan.lora_alpha,
                  "served_epoch": manifest.get("selected_epoch"),
                  "epochs_run": manifest.get("epochs_run"), "validation_scores": scored,
                  **({"vary": vary} if vary else {}),
                  **({"refit_steps": result.refit["steps"]} if result.refit else {})},
        choices=list(plan.reasons))


def _trl(base: Any, examples: list[Example], work: Path, seed: int) -> Trained:
    from peft import LoraConfig

    from bench import trl_setup
    from tunelab.data.batches import tokenize_example

    tokenized = (tokenize_example(base.tokenizer, base.template, ex) for ex in examples)
    rows = trl_setup.completion_rows((t.prompt_ids, t.output_ids) for t in tokenized)
    with tempfile.TemporaryDirectory(prefix="trl-quality-", dir=work) as out:
        config = trl_setup.shipped_config(out, epochs=GEMINI_EPOCHS, batch_size=GEMINI_BATCH,
                                          learning_rate=GEMINI_LR, seed=seed, device=base.device)
        trainer = trl_setup.shipped_trainer(
            base.path, config, rows, base.tokenizer,
            LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        adapter = work / "trl-adapter"
        trainer.model.save_pretrained(str(adapter))
    settings = {"epoch_count": GEMINI_EPOCHS, "batch_size": GEMINI_BATCH,
                "learning_rate": GEMINI_LR, **trl_setup.trained_with(trainer.args),
                "lora": "r 8, alpha 8, all-linear (PEFT's defaults)"}
    steps = trainer.state.global_step
    del trainer
    return Trained(adapter, seconds, steps, len(examples), 0, settings)
