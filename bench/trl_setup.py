"""TRL's ``SFTTrainer`` as shipped, set up in one place for both benchmarks.

The throughput benchmark (``bench/throughput/contenders/trl_sft.py``) and the quality benchmark
(``bench/quality/contenders.py``) compare tunelab against "TRL as shipped"; this module is what
that means, so the two cannot drift apart:

- the data: already tokenized rows, ``input_ids`` and a ``completion_mask`` marking the output
  tokens (``completion_rows``), so TRL trains on exactly the token sequences tunelab does, with
  the loss on the output only;
- the config (``shipped_config``): SFTConfig's own defaults for everything that decides how it
  trains (precision: bf16 autocast where supported; gradient checkpointing on; transformers'
  fused AdamW; linear decay; weight decay; clipping; maximum length). Set are only what every
  contender is given alike (epochs, batch size, learning rate, seed), the device when tunelab's
  is the CPU, ``completion_only_loss`` (TRL cannot infer it from a tokenized dataset), and
  output that is not training: no checkpoints, no reports, no progress bar, a loss logged every
  step. A benchmark that compares against other settings passes them as ``overrides``;
- the trainer (``shipped_trainer``): TRL loads the weights itself (in fp32, its default) and
  wraps them with the caller's PEFT config; the per-step printer is removed;
- what it ran with (``trained_with``): read back from the trainer's arguments, for the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def completion_rows(pairs: Iterable[tuple[Sequence[int], Sequence[int]]]) -> list[dict]:
    """``(prompt ids, output ids)`` pairs as TRL's tokenized rows: the whole sequence and a
    mask that is 1 on the output tokens (the ones the loss is on)."""
    return [{"input_ids": [*prompt, *output],
             "completion_mask": [0] * len(prompt) + [1] * len(output)}
            for prompt, output in pairs]


def shipped_config(output_dir: str | Path, *, epochs: int, batch_size: int,
                   learning_rate: float, seed: int, device: str, **overrides: Any) -> Any:
    """SFTConfig with TRL's defaults but for the settings every contender shares (see the
    module's docstring); ``overrides`` replace defaults for a benchmark that asks for them."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        completion_only_loss=True,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        **overrides,
    )


def shipped_trainer(model_path: str | Path, config: Any, rows: list[dict], tokenizer: Any,
                    peft_config: Any, callbacks: Sequence[Any] = ()) -> Any:
    """An ``SFTTrainer`` on ``rows`` (``completion_rows``) that loads ``model_path`` itself and
    wraps it with ``peft_config``; it prints nothing per step."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=str(model_path),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # it prints every step's log dict
    return trainer


def _word(value: Any) -> str:
    """An enum setting (``OptimizerNames.ADAMW_TORCH_FUSED``) as its plain value."""
    return str(getattr(value, "value", value))


def trained_with(args: Any) -> dict[str, Any]:
    """What an SFTTrainer trained with besides the shared settings, from its arguments."""
    return {
        "precision": "bf16 autocast" if args.bf16 else "fp16 autocast" if args.fp16 else "fp32",
        "optimizer": _word(args.optim),
        "gradient checkpointing": bool(args.gradient_checkpointing),
        "learning rate": _word(args.lr_scheduler_type),
        "weight decay": args.weight_decay,
        "max length": getattr(args, "max_length", None),
    }
