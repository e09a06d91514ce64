"""TRL's ``SFTTrainer`` with PEFT LoRA, in three configurations.

* **as shipped** (``trl-shipped``): ``bench/trl_setup.py``'s config, the same one the
  quality benchmark's TRL contender runs: SFTConfig's own defaults for precision, gradient
  checkpointing, optimizer, schedule, weight decay, clipping and maximum length.
* **as shipped, bf16 off** (``trl-fp32``): the same with bf16 (and fp16) turned off and nothing
  else: how a user runs TRL on a CPU without native bf16, where its default bf16 autocast is
  many times slower than fp32. Gradient checkpointing stays on, as TRL ships it.
* **bench settings** (``trl-bench``): what this benchmark used to compare against: fp32
  (bf16 off), no gradient checkpointing, ``torch.optim.AdamW``, constant learning rate, no warmup,
  no weight decay, gradients clipped to 1.0, no truncation, no packing.

TRL receives the workload's token sequences already tokenized (``trl_setup.completion_rows``),
so it trains on exactly the tokens the others do, and in the batches the others train
(``data.batch_plan``: the trainer's sampler yields them in place of its own shuffle); a wrapper
around its data collator counts the real tokens and takes the fingerprint of every batch the
model is fed, so the driver can check that.

Timed: from ``on_train_begin`` to ``on_train_end`` (fetching and collating batches, forward,
backward, clipping, optimizer step, per-step logging), after one untimed forward + backward.
The adapter is saved (the PEFT model's ``save_pretrained``) after it.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from bench.throughput.contenders import Setup, lora_config
from bench.throughput.data import Workload, batch_plan, fingerprint
from bench.throughput.measure import Result, steps_per_epoch, warm_up

# the settings this benchmark compared against before TRL as shipped was added
BENCH_SETTINGS: dict[str, Any] = {
    "bf16": False,
    "fp16": False,
    "gradient_checkpointing": False,
    "optim": "adamw_torch",
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": None,
    "packing": False,
    "padding_free": False,
    "dataloader_num_workers": 0,
    "dataloader_pin_memory": False,
}

# what each configuration changes of TRL's defaults (besides what every contender shares)
OVERRIDES: dict[str, dict[str, Any]] = {
    "trl-shipped": {},
    "trl-fp32": {"bf16": False, "fp16": False},
    "trl-bench": BENCH_SETTINGS,
}


def run(workload: Workload, setup: Setup, name: str) -> Result:
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from bench import trl_setup

    torch.set_num_threads(setup.threads)
    tokenizer = AutoTokenizer.from_pretrained(workload.model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = trl_setup.completion_rows((s.prompt_ids, s.output_ids) for s in workload.sequences)

    class Clock(TrainerCallback):
        """Warms the model up, then times the training loop."""

        begin = end = 0.0
        threads = 0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            warm_up(model, setup.device)
            self.threads = torch.get_num_threads()
            self.begin = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="trl-bench-") as out:
        config = trl_setup.shipped_config(
            out, epochs=setup.epochs, batch_size=setup.batch_size,
            learning_rate=setup.learning_rate, seed=setup.seed, device=setup.device,
            **OVERRIDES[name])
        clock = Clock()
        trainer = trl_setup.shipped_trainer(workload.model_path, config, rows, tokenizer,
                                            lora_config(), callbacks=[clock])

        sampler = PlannedOrder([batch_plan(len(rows), setup.batch_size, setup.seed, epoch)
                                for epoch in range(setup.epochs)])
        trainer._get_train_sampler = lambda *args, **kwargs: sampler
        fed: list[list[tuple[list[int], int]]] = []  # the rows of each batch, batch by batch
        collate = trainer.data_collator

        def counting_collator(features):
            batch = collate(features)
            fed.append([
                (ids[mask].tolist(), _prompt_length((labels[mask] != -100).tolist()))
                for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"].bool(),
                                             batch["labels"], strict=True)])
            return batch

        trainer.data_collator = counting_collator
        trainer.train()
        trainer.model.save_pretrained(setup.adapter_dir)

    settings = trl_setup.trained_with(trainer.args)
    return Result(
        contender=name,
        precision=settings.pop("precision"),
        settings=settings,
        tokens=sum(len(ids) for step in fed for ids, _ in step),
        examples=sum(len(step) for step in fed),
        steps=trainer.state.global_step,
        steps_per_epoch=steps_per_epoch(len(workload.sequences), setup.batch_size),
        train_seconds=clock.end - clock.begin,
        step_losses=[h["loss"] for h in trainer.state.log_history if "loss" in h],
        fingerprint=fingerprint(fed),
        threads=clock.threads,
    )


class PlannedOrder:
    """A sampler whose every pass (the trainer makes one per epoch) yields the next epoch's
    planned batches, one after another; with the trainer's batch size they come back as those
    batches."""

    def __init__(self, plans: list[list[list[int]]]):
        self.plans, self.passes = plans, 0

    def __len__(self) -> int:
        return sum(len(batch) for batch in self.plans[0])

    def __iter__(self):
        plan = self.plans[min(self.passes, len(self.plans) - 1)]
        self.passes += 1
        return iter([i for batch in plan for i in batch])


def _prompt_length(is_target: list[bool]) -> int:
    """How many leading tokens carry no loss; -1 unless the loss is on exactly the tokens after
    them (then the fingerprint cannot match the workload's)."""
    n = is_target.index(True) if True in is_target else len(is_target)
    return n if all(is_target[n:]) else -1
