"""The contenders, one module each, and what they all share.

Every contender trains a LoRA adapter of the same shape (``lora_config``) on the same token
sequences (``data.Workload``) with the same epochs, batch size, learning rate and seed
(``Setup``), in a process of its own (``bench/throughput/one.py``), returns a
``measure.Result`` and, after its timed loop, saves the adapter it trained (PEFT format) into
``Setup.adapter_dir`` for the held-out evaluation (``bench/throughput/heldout.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.throughput.data import Workload
from bench.throughput.measure import Result

# name → what the table calls it; the driver runs them in this order
CONTENDERS: dict[str, str] = {
    "tunelab": "tunelab",
    "trl-shipped": "TRL SFTTrainer as shipped",
    "trl-fp32": "TRL SFTTrainer as shipped, bf16 off",
    "trl-bench": "TRL SFTTrainer, bf16 off, no gradient checkpointing, adamw_torch",
    "plain-fp32": "plain PEFT loop, fp32",
    "plain-bf16": "plain PEFT loop, bf16 autocast",
}


@dataclass(frozen=True)
class Setup:
    """What every contender is given alike."""

    epochs: int
    batch_size: int  # examples per optimizer step, no gradient accumulation
    learning_rate: float
    seed: int
    threads: int  # torch threads
    device: str  # "cpu", "cuda", ... as tunelab picks it (TUNELAB_DEVICE)
    adapter_dir: Path  # where the trained adapter goes (PEFT's save_pretrained layout)


def lora_config() -> Any:
    """PEFT's config for tunelab's LoRA shape: rank 8, alpha 16, dropout 0, on q/k/v/o and
    gate/up/down projections (``tunelab.training.LoraSettings``'s defaults)."""
    from peft import LoraConfig

    from tunelab.training import LoraSettings

    lora = LoraSettings()
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def run(name: str, workload: Workload, setup: Setup) -> Result:
    """Train contender ``name`` (a key of ``CONTENDERS``) and measure it."""
    if name == "tunelab":
        from bench.throughput.contenders import tunelab_trainer

        return tunelab_trainer.run(workload, setup)
    if name in ("trl-shipped", "trl-fp32", "trl-bench"):
        from bench.throughput.contenders import trl_sft

        return trl_sft.run(workload, setup, name)
    if name in ("plain-fp32", "plain-bf16"):
        from bench.throughput.contenders import peft_loop

        return peft_loop.run(workload, setup, bf16=name == "plain-bf16")
    raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")
