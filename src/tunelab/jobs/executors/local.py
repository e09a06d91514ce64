"""Run training in this (worker) process."""

from __future__ import annotations

import time
from collections.abc import Callable

from tunelab.catalog import get_base_model, load_base_model
from tunelab.config import Settings
from tunelab.jobs.executors.base import ExecutionResult, JobSpec
from tunelab.training import Hyperparameters, ResolvedHyperparameters, Snapshot, train


class LocalExecutor:
    """Loads the base model once per worker process (``train`` unloads its LoRA layers when
    it returns, so the same weights serve the next job)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._bases: dict = {}

    def _base(self, name: str):
        if name not in self._bases:
            spec = get_base_model(name, self.settings.extra_models)
            self._bases[name] = load_base_model(
                spec, self.settings.models_dir, self.settings.device, self.settings.threads,
                self.settings.precision,
            )
        return self._bases[name]

    def run(
        self,
        spec: JobSpec,
        on_snapshot: Callable[[Snapshot], None],
        should_cancel: Callable[[], bool],
    ) -> ExecutionResult:
        from tunelab.data.split import rejoin
        from tunelab.jobs.files import read_examples

        root = self.settings.artifacts_dir
        examples = read_examples(root / spec.dataset)
        base = self._base(spec.base_model)
        hp = ResolvedHyperparameters.from_plan(spec.plan) if spec.plan else Hyperparameters(
            spec.epoch_count, spec.batch_size, spec.learning_rate)
        delay = self.settings.step_delay_seconds

        def report(snapshot: Snapshot) -> None:
            on_snapshot(snapshot)
            if delay:  # testing knob: slow a tiny model's steps down to stop jobs mid-epoch
                time.sleep(delay)

        validation = read_examples(root / spec.validation_dataset) if (
            spec.validation_dataset) else None
        # a refit trains on every example, the held-out ones back in their places (refit.py)
        everything = rejoin(examples, validation or [], (spec.validation or {}).get(
            "held_out") or []) if isinstance(hp, ResolvedHyperparameters) and hp.refit else None
        result = train(
            base,
            examples,
            hp,
            root / spec.output_dir,
            on_snapshot=report,
            should_cancel=should_cancel,
            seed=spec.seed,
            validation=validation,
            validation_record=spec.validation,
            train_memory_mb=self.settings.train_memory_mb,
            refit_examples=everything,
        )
        steps = result.snapshots[-1].step if result.snapshots else 0
        adapter = result.adapter_dir if steps > 0 else None
        # cancelled during the refit: the first run's served epoch remains, complete
        note = result.refit["message"] if result.refit and result.status == "cancelled" else None
        return ExecutionResult(result.status, adapter, steps, note=note)
