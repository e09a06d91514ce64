"""Training throughput: tunelab's LoRA trainer against TRL's ``SFTTrainer`` + PEFT LoRA.

Both contenders tune the same base model folder on the same synthetic examples with the same
LoRA shape (rank 8, alpha 16, dropout 0, q/k/v/o/gate/up/down projections) and the same
hyperparameters (AdamW, constant learning rate, no warmup, no weight decay, gradient norm
clipped to 1.0, ``batch_size`` examples per optimizer step, fp32, loss = mean cross-entropy
over the *output* tokens of a batch). They run back to back in one process, with the same
number of torch threads, and the script prints the ratio of their throughputs: timings on a
shared machine are noisy, a ratio from one run much less so.

What is counted and timed (the same for both):

* **tokens**: the real (unpadded) prompt + output tokens of every example processed, summed
  over all steps. For TRL they are counted in its data collator (attention-mask ones), for
  tunelab ``TrainResult.tokens``; both are printed so any tokenization difference shows.
* **train seconds**: the training loop only. tunelab: ``TrainResult.train_seconds``, the sum
  of its optimizer steps (collate, forward, backward, clip, AdamW step); its per-epoch
  checkpoint and adapter writes are not included (TRL here saves nothing). TRL: wall time
  from ``on_train_begin`` to ``on_train_end`` (data loading and collating, forward, backward,
  clip, AdamW step, per-step logging). Model loading is excluded for both.
* **CPU seconds**: process CPU time over the same span. With ``--threads 1`` it is the work
  done, nearly independent of what else the machine runs, so ``tokens per CPU second`` is the
  steadier figure on a busy machine; with more threads it also counts threads spinning while
  they wait for each other.
* **setup + train seconds** (for information): tunelab's whole ``train()`` call (tokenizing,
  adding the LoRA layers, checkpoints, adapter save); TRL's ``SFTTrainer(...)`` construction
  (dataset tokenization, LoRA layers) plus ``trainer.train()``.
* **final loss**: the plain mean of the per-step losses of the last epoch.

Before timing, one untimed forward + backward warms the process up, so that the contender
that goes first does not pay one-off costs; ``--repeats N`` alternates which one goes first
(tunelab, TRL, TRL, tunelab, ...) and sums the figures; it also prints each step's best
time over the repeats, summed, which filters out interference from other processes (every
repeat takes the same steps on the same batches).

Run:  python bench/train_throughput.py                 (smollm2-135m-instruct, 64 examples)
      python bench/train_throughput.py --base-model tiny-random --examples 8   (smoke run)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunelab.data import Example

MISSING_TRL = (
    "trl is not installed; this benchmark compares against TRL's SFTTrainer. "
    "Install it with: pip install 'tunelab[bench]'"
)


@dataclass
class ContenderResult:
    """One contender's figures; ``tokens_per_second`` = tokens / train_seconds."""

    name: str
    tokens: int
    train_seconds: float
    setup_and_train_seconds: float
    steps: int
    final_loss: float
    step_losses: list[float]
    padded_tokens: int = 0  # batch rows × padded width, summed over steps
    step_seconds: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # process CPU time over the same span as train_seconds
    threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def tokens_per_cpu_second(self) -> float:
        return self.tokens / self.cpu_seconds if self.cpu_seconds else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_second"] = self.tokens_per_second
        d["tokens_per_cpu_second"] = self.tokens_per_cpu_second
        return d


# --- synthetic data ---------------------------------------------------------------------------

_FIRST = ["Alice", "Bruno", "Chen", "Dara", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
_CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Pune", "Quito", "Porto", "Accra", "Hanoi"]
_FIELDS = {
    "name": lambda r: r.choice(_FIRST),
    "age": lambda r: str(r.randint(18, 90)),
    "city": lambda r: r.choice(_CITIES),
    "email": lambda r: f"{r.choice(_FIRST).lower()}{r.randint(1, 999)}@example.org",
    "score": lambda r: f"{r.uniform(0, 100):.1f}",
    "active": lambda r: r.choice(["yes", "no"]),
    "team": lambda r: r.choice(["red", "blue", "green", "ops", "research"]),
    "joined": lambda r: f"20{r.randint(10, 25)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "phone": lambda r: f"+{r.randint(1, 99)} {r.randint(100, 999)} {r.randint(1000, 9999)}",
    "notes": lambda r: " ".join(
        r.choice(["fast", "careful", "new", "remote", "lead"]) for _ in range(r.randint(1, 6))
    ),
}


def synthetic_examples(n: int, seed: int) -> list[Example]:
    """A format-conversion task (``key=value`` records → JSON) with 1 to 10 fields, so that
    examples range from ~50 to ~210 tokens and batches need padding unless sorted by length."""
    r = random.Random(seed)
    keys = list(_FIELDS)
    out = []
    for _ in range(n):
        chosen = r.sample(keys, r.randint(1, len(keys)))
        record = {k: _FIELDS[k](r) for k in chosen}
        text = "Convert this record to JSON: " + "; ".join(f"{k}={v}" for k, v in record.items())
        out.append(Example(text, json.dumps(record, ensure_ascii=False)))
    return out


# --- contenders -------------------------------------------------------------------------------


def _last_epoch_mean(step_losses: list[float], steps_per_epoch: int) -> float:
    last = step_losses[-steps_per_epoch:]
    return sum(last) / len(last) if last else float("nan")


def run_tunelab(base: Any, examples: list[Example], args: argparse.Namespace) -> ContenderResult:
    import torch

    from tunelab.training import Hyperparameters, LoraSettings, train

    torch.set_num_threads(args.threads)
    hp = Hyperparameters(
        epoch_count=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate
    )
    # CPU time of the loop: from the first cancel check (made before every step) to the last
    # snapshot (made after every step).
    cpu_marks: list[float] = []

    def before_step() -> bool:
        if not cpu_marks:
            cpu_marks.append(time.process_time())
        return False

    def after_step(_snapshot: Any) -> None:
        del cpu_marks[1:]
        cpu_marks.append(time.process_time())

    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as out:
        t0 = time.perf_counter()
        result = train(
            base,
            examples,
            hp,
            Path(out),
            seed=args.seed,
            lora=LoraSettings(),
            resume=False,
            should_cancel=before_step,
            on_snapshot=after_step,
        )
        total = time.perf_counter() - t0
    step_losses = [s.mean_loss for s in result.snapshots]
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)

    # Padding tunelab's length-bucketed batches carry (same plan the trainer followed).
    from tunelab.data.batches import tokenize_example
    from tunelab.training import plan_batches

    tokenized = [tokenize_example(base.tokenizer, base.template, ex) for ex in examples]
    lengths = [t.length for t in tokenized]
    padded = sum(
        len(b) * max(lengths[i] for i in b)
        for epoch in range(args.epochs)
        for b in plan_batches(lengths, args.batch_size, args.seed, epoch)
    )
    return ContenderResult(
        name="tunelab",
        tokens=result.tokens,
        train_seconds=result.train_seconds,
        setup_and_train_seconds=total,
        steps=len(result.snapshots),
        final_loss=_last_epoch_mean(step_losses, steps_per_epoch),
        step_losses=step_losses,
        padded_tokens=padded,
        step_seconds=[s.seconds for s in result.snapshots],
        cpu_seconds=cpu_marks[-1] - cpu_marks[0],
        threads=torch.get_num_threads(),
        extra={
            "epoch_losses_token_weighted": result.epoch_losses,
            "loss_tokens": args.epochs * sum(len(t.output_ids) for t in tokenized),
        },
    )


def run_trl(base: Any, examples: list[Example], args: argparse.Namespace) -> ContenderResult:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunelab.training import LoraSettings

    torch.set_num_threads(args.threads)
    lora = LoraSettings()
    template = base.template

    # Its own tokenizer and model, loaded from the same Hugging Face folder tunelab uses.
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)

    # Prompt/completion form: TRL computes the loss on completion tokens only. The prompt is
    # tunelab's rendered template prompt (with BOS if the template wants one, as tunelab adds
    # it), the completion ends with the template's end-of-turn marker, as in tunelab.
    bos = tokenizer.bos_token if template.bos and tokenizer.bos_token else ""
    dataset = Dataset.from_list(
        [
            {
                "prompt": bos + template.render([("user", ex.text_input)]),
                "completion": ex.output + template.end,
            }
            for ex in examples
        ]
    )
    # TRL appends the tokenizer's EOS to completions lacking it; telling it that the
    # template's end marker is the EOS keeps the token sequences identical to tunelab's.
    eos = template.end if template.end in tokenizer.get_vocab() else None

    lora_config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    on_cpu = base.device == "cpu"
    with tempfile.TemporaryDirectory(prefix="trl-bench-") as out:
        config = SFTConfig(
            output_dir=out,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",  # torch.optim.AdamW, as tunelab (default would be the fused one)
            bf16=False,  # SFTConfig defaults to bf16; both run fp32
            fp16=False,
            gradient_checkpointing=False,  # SFTConfig defaults to True; tunelab does not recompute
            completion_only_loss=True,
            packing=False,
            padding_free=False,
            max_length=None,  # no truncation (tunelab's examples are within its context)
            eos_token=eos,
            seed=args.seed,
            data_seed=args.seed,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            use_cpu=on_cpu,
        )

        class Clock(TrainerCallback):
            begin = end = cpu_begin = cpu_end = 0.0
            threads = 0

            def __init__(self) -> None:
                self.marks: list[float] = []

            def on_train_begin(self, args, state, control, **kwargs):
                self.threads = torch.get_num_threads()
                self.cpu_begin = time.process_time()
                self.begin = time.perf_counter()
                self.marks.append(self.begin)

            def on_step_end(self, args, state, control, **kwargs):
                # Step to step, so each interval includes fetching and collating its batch.
                self.marks.append(time.perf_counter())

            def on_train_end(self, args, state, control, **kwargs):
                self.end = time.perf_counter()
                self.cpu_end = time.process_time()

        clock = Clock()
        t0 = time.perf_counter()
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config,
            callbacks=[clock],
        )

        # Count what TRL actually feeds the model: real tokens and padded cells per batch.
        counts = {"tokens": 0, "padded": 0, "targets": 0}
        collate = trainer.data_collator

        def counting_collator(features):
            batch = collate(features)
            counts["tokens"] += int(batch["attention_mask"].sum())
            counts["padded"] += int(batch["input_ids"].numel())
            counts["targets"] += int((batch["labels"] != -100).sum())
            return batch

        trainer.data_collator = counting_collator
        trainer.remove_callback(PrinterCallback)  # it prints every step's log dict
        trainer.train()
        total = time.perf_counter() - t0

    step_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "step" in h]
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)
    return ContenderResult(
        name="TRL",
        tokens=counts["tokens"],
        train_seconds=clock.end - clock.begin,
        setup_and_train_seconds=total,
        steps=trainer.state.global_step,
        final_loss=_last_epoch_mean(step_losses, steps_per_epoch),
        step_losses=step_losses,
        padded_tokens=counts["padded"],
        step_seconds=[b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)],
        cpu_seconds=clock.cpu_end - clock.cpu_begin,
        threads=clock.threads,
        extra={"loss_tokens": counts["targets"]},
    )


# --- CLI --------------------------------------------------------------------------------------


def warm_up(base: Any) -> None:
    """One untimed forward + backward of the base model, so that whichever contender runs
    first does not pay the process's one-off costs (thread pool start, kernel selection)."""
    import torch

    ids = torch.tensor([base.encode("warm up " * 16)], device=base.device)
    # Gradients flow from the embeddings, so this works whether or not the weights are frozen.
    embeds = base.model.get_input_embeddings()(ids).detach().requires_grad_()
    with torch.enable_grad():
        base.model(inputs_embeds=embeds, labels=ids).loss.backward()
    base.model.zero_grad(set_to_none=True)


@dataclass
class Summary:
    """A contender over all repeats: tokens and seconds summed, losses from the first run
    (runs are seeded, so every repeat learns the same thing)."""

    name: str
    runs: list[ContenderResult]

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.runs)

    @property
    def train_seconds(self) -> float:
        return sum(r.train_seconds for r in self.runs)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def best_of_seconds(self) -> float:
        """Each step's fastest time over the repeats, summed. Every repeat takes the same steps
        on the same batches (seeded), so a slow step in one repeat is interference from
        elsewhere on the machine, and the minimum filters it out."""
        return sum(min(times) for times in zip(*(r.step_seconds for r in self.runs), strict=False))

    @property
    def best_of_tokens_per_second(self) -> float:
        best = self.best_of_seconds
        return self.runs[0].tokens / best if best else 0.0

    @property
    def cpu_seconds(self) -> float:
        return sum(r.cpu_seconds for r in self.runs)

    @property
    def tokens_per_cpu_second(self) -> float:
        return self.tokens / self.cpu_seconds if self.cpu_seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "train_seconds": self.train_seconds,
            "tokens_per_second": self.tokens_per_second,
            "cpu_seconds": self.cpu_seconds,
            "tokens_per_cpu_second": self.tokens_per_cpu_second,
            "best_of_step_seconds": self.best_of_seconds,
            "best_of_tokens_per_second": self.best_of_tokens_per_second,
            "final_loss": self.runs[0].final_loss,
            "runs": [r.to_dict() for r in self.runs],
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="tunelab vs TRL SFTTrainer: LoRA training tokens/s on the same data and model."
    )
    p.add_argument(
        "--base-model",
        default="smollm2-135m-instruct",
        help="catalog id or local path; 'tiny-random' for a fast smoke run",
    )
    p.add_argument("--examples", type=int, default=64, help="number of synthetic examples")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4, help="examples per optimizer step")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads for both contenders (default: all cores)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="train each contender this many times, alternating which goes first "
        "(tunelab, TRL, TRL, tunelab, ...); figures are summed over repeats",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return p.parse_args(argv)


def print_table(summaries: list[Summary], ratio: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="LoRA training throughput (same data, model, LoRA, hyperparameters)")
    columns = (
        "contender",
        "tokens",
        "train s",
        "tokens/s",
        "CPU s",
        "tokens/CPU s",
        "setup+train s",
        "steps",
        "padding",
        "final loss",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "contender" else "right")
    for s in summaries:
        padded = sum(r.padded_tokens for r in s.runs)
        table.add_row(
            s.name,
            str(s.tokens),
            f"{s.train_seconds:.2f}",
            f"{s.tokens_per_second:.1f}",
            f"{s.cpu_seconds:.2f}",
            f"{s.tokens_per_cpu_second:.1f}",
            f"{sum(r.setup_and_train_seconds for r in s.runs):.2f}",
            str(sum(r.steps for r in s.runs)),
            f"{1 - s.tokens / padded:.0%}" if padded else "-",
            f"{s.runs[0].final_loss:.4f}",
        )
    Console(width=130).print(table)
    ours, theirs = summaries
    repeats = len(ours.runs)
    if repeats > 1:
        for s in summaries:
            per_run = ", ".join(f"{r.tokens_per_second:.1f}" for r in s.runs)
            print(
                f"{s.name} tokens/s per run: {per_run}; per-step best of {repeats}: "
                f"{s.best_of_tokens_per_second:.1f}"
            )
        if theirs.best_of_tokens_per_second:
            best_ratio = ours.best_of_tokens_per_second / theirs.best_of_tokens_per_second
            print(f"ratio tunelab/TRL tokens/s, per-step best of {repeats}: {best_ratio:.2f}")
    if theirs.tokens_per_cpu_second:
        cpu_ratio = ours.tokens_per_cpu_second / theirs.tokens_per_cpu_second
        print(f"ratio tunelab/TRL tokens per CPU second: {cpu_ratio:.2f}")
    # Plain print, so the line is greppable whatever the terminal.
    print(f"ratio tunelab/TRL tokens/s: {ratio:.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("trl") is None:
        print(MISSING_TRL, file=sys.stderr)
        return 2

    import warnings

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.config import Settings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)

    settings = Settings()
    spec = get_base_model(args.base_model, settings.extra_models)
    base = load_base_model(spec, settings.models_dir, settings.device, threads=args.threads)
    examples = synthetic_examples(args.examples, args.seed)
    print(
        f"base model {spec.id} on {base.device}, {args.examples} examples, {args.epochs} epoch(s), "
        f"batch {args.batch_size}, lr {args.learning_rate}, {args.threads} threads, fp32, "
        f"{args.repeats} repeat(s)",
        file=sys.stderr,
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        # With every core given to torch, another busy process makes the OpenMP threads wait on
        # each other and both contenders slow down many times over: the ratio is still taken
        # in one run, but absolute figures are not worth recording.
        print(
            f"warning: load average {load:.1f} before the run; the machine is not idle",
            file=sys.stderr,
        )
    warm_up(base)

    ours, theirs = Summary("tunelab", []), Summary("TRL", [])
    for i in range(args.repeats):
        order = [(ours, run_tunelab), (theirs, run_trl)]
        for summary, run in order if i % 2 == 0 else reversed(order):
            summary.runs.append(run(base, examples, args))
    ratio = ours.tokens_per_second / theirs.tokens_per_second if theirs.tokens_per_second else 0.0

    print_table([ours, theirs], ratio)
    if ours.tokens != theirs.tokens:
        print(
            f"note: token counts differ (tunelab {ours.tokens}, TRL {theirs.tokens})",
            file=sys.stderr,
        )

    if args.json is not None:
        payload = {
            "base_model": spec.id,
            "device": base.device,
            "examples": args.examples,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "threads": args.threads,
            "repeats": args.repeats,
            "cpu_count": os.cpu_count(),
            "load_average_before": load,
            "torch": torch.__version__,
            "trl": importlib.import_module("trl").__version__,
            "tunelab": ours.to_dict(),
            "trl_sft": theirs.to_dict(),
            "ratio_tokens_per_second": ratio,
            "ratio_best_of_tokens_per_second": (
                ours.best_of_tokens_per_second / theirs.best_of_tokens_per_second
                if theirs.best_of_tokens_per_second
                else 0.0
            ),
            "ratio_tokens_per_cpu_second": (
                ours.tokens_per_cpu_second / theirs.tokens_per_cpu_second
                if theirs.tokens_per_cpu_second
                else 0.0
            ),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
