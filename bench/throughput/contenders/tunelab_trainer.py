"""tunelab's own trainer, ``tunelab.training.train``, as a tuning job runs it.

The base model is loaded by ``load_base_model`` with ``TUNELAB_PRECISION`` (default ``auto``:
bf16 frozen weights where a short probe finds bf16 matmuls clearly faster on this CPU, fp32
otherwise), so the run uses what a user of this machine gets. The epochs, batch size and learning
rate are given, so tunelab's automatic choices (the warmed-up, decaying schedule) stay
off and the learning rate is constant. The adapter ``train`` writes for serving (the last epoch's,
as no validation set is given) is copied to ``Setup.adapter_dir``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.throughput.contenders import Setup
from bench.throughput.data import Workload, fingerprint, planned_steps
from bench.throughput.measure import Result, steps_per_epoch, warm_up


def run(workload: Workload, setup: Setup) -> Result:
    import torch

    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.config import Settings
    from tunelab.data.batches import tokenize_example
    from tunelab.training import Hyperparameters, LoraSettings, train

    settings = Settings()
    spec = get_base_model(workload.base_model, settings.extra_models)
    base = load_base_model(spec, settings.models_dir, setup.device, threads=setup.threads,
                           precision=settings.precision)
    # what train() feeds the model: it tokenizes with this same function
    tokenized = [tokenize_example(base.tokenizer, base.template, ex) for ex in workload.examples]
    warm_up(base.model, base.device)

    # The loop's wall time: from the first step's start (the cancel check comes before every
    # step) to the last step's end (a snapshot follows every step). Unlike tunelab's own
    # train_seconds (the sum of its steps) this includes anything between steps, such as the
    # checkpoint written after every epoch but the last.
    marks: list[float] = []

    def before_step() -> bool:
        if not marks:
            marks.append(time.perf_counter())
        return False

    def after_step(_snapshot: object) -> None:
        del marks[1:]
        marks.append(time.perf_counter())

    hp = Hyperparameters(epoch_count=setup.epochs, batch_size=setup.batch_size,
                         learning_rate=setup.learning_rate)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as out:
        result = train(base, workload.examples, hp, Path(out), seed=setup.seed,
                       lora=LoraSettings(), resume=False, should_cancel=before_step,
                       on_snapshot=after_step, train_memory_mb=settings.train_memory_mb)
        shutil.copytree(result.adapter_dir, setup.adapter_dir)
    rows = [(t.prompt_ids + t.output_ids, len(t.prompt_ids)) for t in tokenized]
    return Result(
        contender="tunelab",
        precision=("bf16-stored frozen base, fp32 products" if base.precision.stored
                   else f"{base.precision.name} frozen base"),
        settings={
            "precision": base.precision.reason,
            "learning rate": "constant",
        },
        tokens=result.tokens,
        examples=len(workload.examples) * setup.epochs,
        steps=len(result.snapshots),
        steps_per_epoch=steps_per_epoch(len(workload.examples), setup.batch_size),
        train_seconds=marks[-1] - marks[0],
        step_losses=[s.mean_loss for s in result.snapshots],
        # train() draws its batches with plan_batches, which batch_plan is
        fingerprint=fingerprint(planned_steps(rows, setup.epochs, setup.batch_size,
                                              setup.seed)),
        threads=torch.get_num_threads(),
        extra={"tunelab_train_seconds": result.train_seconds},
    )
