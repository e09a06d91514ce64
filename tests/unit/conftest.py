"""Fixtures for fast unit tests: the tiny random model built in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.data import Example

# Python that defines mapped_on_its_own(size): whether glibc serves a block of `size` bytes by a
# mapping of its own (mallinfo2's hblks counts those) rather than from the heap. For probes run
# in a process of their own (test_allocator.py, test_memory.py): a fresh heap holds no freed
# block that could serve the request whatever the threshold.
MALLINFO_PROBE = """
import ctypes

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mapped_on_its_own(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblks > before
    libc.free(block)
    return mapped
"""


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


def scored_and_served(tiny_base, tiny_serving_base, adapter, examples, **evaluator_args):
    """The answers validation scoring gives ``examples`` with ``adapter`` on the training
    model (``Evaluator`` with ``evaluator_args``), and the ones the service gives them."""
    import torch
    from peft import PeftModel

    from tunelab.inference.generate import Generator
    from tunelab.training.evaluate import EXACT_MATCH, Evaluator
    from tunelab.training.loop import _private_model

    model = PeftModel.from_pretrained(_private_model(tiny_base.model), adapter).eval()
    evaluator = Evaluator(tiny_base, examples, EXACT_MATCH, **evaluator_args)
    with torch.no_grad():
        _, scored = evaluator.score(model)
    served = Generator(tiny_serving_base).answers(
        [([("user", ex.text_input)], None) for ex in examples], evaluator.max_new_tokens,
        adapter)
    return scored, served
