"""Fixtures for fast unit tests: the tiny random model built in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.data import Example


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_base(models_dir):
    """A tiny model for tuning tests (training mutates it only temporarily: LoRA layers are
    removed after each run)."""
    from tunelab.catalog import get_base_model, load_base_model

    return load_base_model(get_base_model("tiny-random"), models_dir, "cpu", threads=2)


@pytest.fixture(scope="session")
def tiny_serving_base(models_dir):
    """A separate copy of the tiny model for inference (an inference Generator wraps its model
    in PEFT for good, so it must not share weights with the trainer's copy)."""
    from tunelab.catalog import get_base_model, load_base_model

    return load_base_model(get_base_model("tiny-random"), models_dir, "cpu", threads=2)


def arithmetic_examples(n: int = 24) -> list[Example]:
    return [Example(f"add {i} and {i + 1}", f"{2 * i + 1}") for i in range(n)]


@pytest.fixture
def examples() -> list[Example]:
    return arithmetic_examples()
