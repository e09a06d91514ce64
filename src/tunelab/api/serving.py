"""Base models loaded once per API process, each with a ``Generator`` (adapter LRU)."""

from __future__ import annotations

import threading

from tunelab.catalog import BaseModelSpec, get_base_model, load_base_model
from tunelab.config import Settings
from tunelab.data import Example


class ServingPool:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._generators: dict = {}
        self._lock = threading.Lock()

    def generator(self, base_model: str):
        """The Generator for ``models/{id}`` (loading the base model on first use)."""
        from tunelab.inference import Generator

        spec = get_base_model(base_model, self.settings.extra_models)
        with self._lock:
            gen = self._generators.get(spec.id)
            if gen is None:
                base = load_base_model(
                    spec, self.settings.models_dir, self.settings.device, self.settings.threads
                )
                gen = Generator(base, self.settings.adapter_cache_bytes)
                self._generators[spec.id] = gen
            return gen

    def example_token_counter(self, spec: BaseModelSpec):
        """Tokens of a whole formatted training example, for dataset validation."""
        from tunelab.data.batches import tokenize_example

        base = self.generator(spec.name).base

        def count(ex: Example) -> int:
            return tokenize_example(base.tokenizer, base.template, ex).length

        return count
