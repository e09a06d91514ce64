"""The refit: choose the stopping epoch on held-out examples, then train on all of them.

Holding a tenth of a small dataset out to score the epochs costs the tuned model that tenth of
its examples: on the quality benchmark at 100 examples, 10 held out, ``intent`` scored 0.79
(three seeds) where training on all 100 scored 0.86, and ``qa`` 0.95 where all 100 scored 0.99
(docs/quality.md). When the plan asks for it (``auto.py``: automatic epochs, 40 to 249
examples, some held out), the run that held them out only chooses how long to train: its served
epoch ``E`` (``advice.py``). A second run then trains a fresh adapter, from the same seed, on
every example (the held-out ones back in their places) for ``E`` epochs, on the plan's
learning-rate schedule laid over the plan's epochs of every example (the warmup recomputed for
that length), and is served: when ``E`` is the last epoch, exactly the run the plan makes on
all the examples with nothing held out. As the first run only chooses, it holds a third of
the examples out (``data/split.py``, ``for_refit``): more examples to score on, a shorter run.

An earlier version trained the refit for as many *steps* as epoch ``E`` took (115 at 100
examples: 4.6 epochs of 100), to keep the job within twice the first run's steps; it scored
``intent`` 0.86 / 0.77 / 0.85 (seeds 0-2) and ``qa`` 0.95 (seed 0), where whole epochs score
0.84 / 0.84 / 0.89 and 0.98 (docs/quality.md). With a tenth held out the whole job took 2.09×
the steps of Gemini's fixed defaults at 100 examples (115 + 125 against 115); with a quarter,
1.91× (95 + 125), which the scoring of each epoch took above 2× in time on one task
(docs/quality.md); with a third, 1.83× (85 + 125).

Its own quality is not measured -- its validation examples are now training examples -- and
every surface says the scores are the first run's.

Layout: the second run lives in ``refit/`` inside the output directory, a tuning output
directory of its own (checkpoints, adapter, manifest), so it resumes as any run does; its
adapter is copied to the output directory's ``adapter/`` when it completes. Its steps are
reported after the first run's (steps ``S1 + 1`` on, epochs after the first run's last), and
the job's total steps become ``S1 + S``. Cancelled during the refit, the job keeps the first
run's served epoch: a complete model with scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.data.examples import Example
from tunelab.errors import FailedPrecondition
from tunelab.training import checkpoint
from tunelab.training.auto import warmup_steps
from tunelab.training.checkpoint import (
    adapter_damage,
    read_manifest,
    serve_adapter,
    write_manifest,
)
from tunelab.training.evaluate import metric_words
from tunelab.training.hyperparameters import LoraSettings, ResolvedHyperparameters
from tunelab.training.loop import TrainResult, read_evaluation, train, write_evaluation

REFIT_DIR = "refit"


def refit_dir(output_dir: Path) -> Path:
    return Path(output_dir) / REFIT_DIR


def refit(first: TrainResult, base: Any, examples: list[Example], hp: ResolvedHyperparameters,
          lora: LoraSettings, seed: int, *, on_snapshot: Callable | None,
          should_cancel: Callable[[], bool] | None, train_memory_mb: int | None) -> TrainResult:
    """Run the refit after ``first`` (a completed ``TrainResult`` of the held-out run) and
    return the job's result: the first run's scores, both runs' steps, the refit served."""
    output_dir = first.output_dir
    served = first.manifest.get("selected_epoch") or len(first.epoch_losses)
    first_total = first.manifest["total_steps"]
    first_epochs = len(first.epoch_losses)
    held_out = len(examples) - first.manifest["example_count"]
    per_epoch = hp.steps_per_epoch(len(examples))
    steps, schedule = served * per_epoch, hp.epoch_count * per_epoch
    planned = dataclasses.replace(
        hp, epoch_count=served, refit=False,
        warmup_steps=warmup_steps(schedule) if hp.warmup_steps else 0)
    job_total = first_total + steps
    record = {"examples": len(examples), "held_out": held_out, "steps": steps,
              "from_epoch": served, "status": "running", "served": False}
    _record(output_dir, record)

    def after_first(s: Any, **more: Any) -> Any:
        """A refit step as the job counts it: after the first run's steps and epochs."""
        return dataclasses.replace(s, step=first_total + s.step, epoch=first_epochs + s.epoch,
                                   **more)

    def report(s: Any) -> None:
        if on_snapshot is not None:
            on_snapshot(after_first(s, total_steps=job_total))

    second = train(base, examples, planned, refit_dir(output_dir), on_snapshot=report,
                   should_cancel=should_cancel, seed=seed, lora=lora, schedule_steps=schedule,
                   train_memory_mb=train_memory_mb)
    done = second.snapshots[-1].step if second.snapshots else 0
    record.update(status=second.status, completed_steps=done,
                  epoch_losses=second.epoch_losses, tokens=second.tokens,
                  train_seconds=second.train_seconds)
    if second.status == "completed":
        _serve(output_dir)
        record["served"] = True
    manifest = _record(output_dir, record)
    return TrainResult(
        status=second.status,
        output_dir=output_dir,
        snapshots=first.snapshots + [after_first(s) for s in second.snapshots],
        epoch_losses=first.epoch_losses,
        advice=first.advice,
        tokens=first.tokens + second.tokens,
        train_seconds=first.train_seconds + second.train_seconds,
        resumed_from_epoch=first.resumed_from_epoch,
        manifest=manifest,
        evaluation=first.evaluation,
        refit=record,
    )


def _record(output_dir: Path, record: dict) -> dict:
    """Keep the refit's record in the manifest and beside the scores (the API reads both)."""
    evaluation = read_evaluation(output_dir)
    record["message"] = _message(record, evaluation)
    manifest = read_manifest(output_dir)
    manifest["refit"] = record
    if record["served"]:
        manifest["selected_epoch"] = None  # the refit is served, not an epoch of the first run
    elif "served_epoch" in record:  # an epoch of the first run was chosen instead
        manifest["selected_epoch"] = record["served_epoch"]
    write_manifest(output_dir, manifest)
    if evaluation is not None:
        evaluation["refit"] = record
        write_evaluation(output_dir, evaluation)
    return manifest


def select_epoch(output_dir: Path, epoch: int) -> dict:
    """Serve epoch ``epoch`` of the (first) run from now on, instead of the refit if one ran."""
    manifest = checkpoint.select_epoch(output_dir, epoch)
    if manifest.get("refit"):
        manifest = _record(output_dir, {**manifest["refit"], "served": False,
                                        "served_epoch": epoch})
    return manifest


def select_refit(output_dir: Path) -> dict:
    """Serve the refit again (after an epoch was chosen instead)."""
    manifest = read_manifest(output_dir)
    record = manifest.get("refit")
    if not record or record.get("status") != "completed":
        raise FailedPrecondition(
            "This tuning run has no completed refit on all its examples to serve: a refit runs "
            "only for 40 to 249 examples with automatic epochs, and only to the end.")
    _serve(output_dir)
    record = {k: v for k, v in record.items() if k != "served_epoch"}
    return _record(output_dir, {**record, "served": True})


def _message(record: dict, evaluation: dict | None) -> str:
    """One sentence for every surface on what is served and where the scores come from."""
    n, k, steps, epoch = (record["examples"], record["held_out"], record["steps"],
                          record["from_epoch"])
    score = ""
    for e in (evaluation or {}).get("epochs") or []:
        if e.get("epoch") == epoch:
            metric = metric_words(evaluation["metric"])
            score = f", validation {metric} {e['score']:.3f}"
    first = f"the run that held {k} of them out served (epoch {epoch}{score})"
    epochs = f"{epoch} epoch{'s' if epoch != 1 else ''} ({steps} steps)"
    if record["status"] == "running":
        return (f"A refit on all {n} examples runs for {epochs}, as many epochs as {first}; "
                "it is served when it completes.")
    if record["status"] == "cancelled":
        return (f"The refit on all {n} examples was cancelled after step "
                f"{record.get('completed_steps', 0)} of {steps}; the model serves epoch {epoch} "
                f"of the run that held {k} of them out ({score[2:] or 'complete'}), which "
                "completed.")
    if not record["served"]:
        return (f"Epoch {record.get('served_epoch', epoch)} of the run that held {k} examples "
                f"out is served, as chosen, instead of the refit on all {n} examples.")
    return (f"The served model is a refit: it trained on all {n} examples for {epochs}, as "
            f"many epochs as {first}. The scores are that run's: the refit trained on the "
            "held-out examples, so they cannot score it.")


def _serve(output_dir: Path) -> None:
    """Copy the refit's adapter to the adapter the model serves (after checking its files)."""
    src = refit_dir(output_dir) / "adapter"
    why = adapter_damage(src)
    if why:  # written and sealed a moment ago: a disk fault
        raise OSError(f"the refit's adapter is damaged ({why})")
    serve_adapter(output_dir, src)
