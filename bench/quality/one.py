"""One contender on one cell, in a process of its own:
``python -m bench.quality.one --task T --size N --contender C --result OUT.json``.

The driver (``python -m bench.quality``) starts one such process per contender and cell, so no
contender inherits another's memory, threads or loaded weights. The process trains (see
``contenders.py``), answers the task's held-out test inputs greedily (``answer_all``) and scores
the answers with tunelab's own scoring (``training/evaluate.py``: exact match, or token F1 for
free text).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.quality.contenders import CONTENDERS, parse_vary, train
from bench.quality.tasks import SEED, TASKS, TOKEN_F1, Task, file_task, make_task
from bench.quiet import quiet_libraries

WRONG_SHOWN = 3  # wrong answers kept in the result, for a reader to see what goes wrong


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}, or a file task's "
                   "name (with --data and --test-data)")
    p.add_argument("--data", default=None, help="a file task's training file")
    p.add_argument("--test-data", default=None, help="a file task's test file")
    p.add_argument("--metric", default=None, help="a file task's metric")
    p.add_argument("--size", type=int, required=True, help="training examples (0 for base)")
    p.add_argument("--contender", required=True, choices=list(CONTENDERS))
    p.add_argument("--base-model", default="smollm2-135m-instruct")
    p.add_argument("--tests", type=int, default=None, help="the first N test inputs (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the training seed")
    p.add_argument("--data-seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default=None, help="fp32, bf16 or auto (tunelab's setting)")
    p.add_argument("--work", type=Path, required=True, help="a folder for the run's files")
    p.add_argument("--result", type=Path, required=True, help="where to write the result JSON")
    p.add_argument("--vary", type=parse_vary, default={},
                   help="KEY=VALUE,…: one part of the tunelab contenders' plan changed")
    args = p.parse_args(argv)
    if args.data is None and args.task not in TASKS:
        p.error(f"unknown task {args.task!r}; choose from {', '.join(TASKS)}, or give --data "
                "and --test-data")
    return args


def load_task(args: argparse.Namespace) -> Task:
    """The suite's task ``--task``, or the task of the files ``--data`` and ``--test-data``."""
    if args.data is not None:
        return file_task(args.data, args.test_data, args.metric)
    return make_task(args.task, args.data_seed)


def answer_all(base: Any, tests: list[Any], adapter: Path | None) -> list[str]:
    """The greedy answer to every test input, many at a time (``catalog/greedy.py``), as
    ``tunelab eval`` and ``:evaluate`` answer them (``Generator.answers``: one forward pass
    per token for all of them, each answer stopped as served answers are, at most the longest
    expected output plus ``ANSWER_MARGIN_TOKENS`` tokens, the adapter loaded on the base as the
    service loads it, and the system instruction a served request would get). Answering one
    input at a time through ``generate`` gave the very same answers on the 200 checked
    (``entities`` and ``orders`` at 100 examples, bf16 base, 2026-12-03) and took 5.7-6.9x as
    long, most of a run's time."""
    from tunelab.inference import Generator
    from tunelab.training.evaluate import generator_answerer

    return generator_answerer("", Generator(base), adapter, tests).many(tests, None, False)


def run(args: argparse.Namespace) -> dict:
    import torch

    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.config import Settings
    from tunelab.training.evaluate import score_answers

    settings = Settings()
    task = load_task(args)
    examples, tests = task.train[: args.size], task.test[: args.tests]
    spec = get_base_model(args.base_model, settings.extra_models)
    base = load_base_model(spec, settings.models_dir, settings.device,
                           args.threads or settings.threads, args.precision or settings.precision)
    args.work.mkdir(parents=True, exist_ok=True)
    trained = train(args.contender, base, examples, args.work, args.seed, args.vary)

    t0 = time.perf_counter()
    answers = answer_all(base, tests, trained.adapter)
    answer_seconds = time.perf_counter() - t0
    scores = score_answers([ex.output for ex in tests], answers, task.metric)
    score = scores.token_f1 if task.metric == TOKEN_F1 else scores.exact_match
    wrong = [{"input": ex.text_input, "expected": ex.output, "answer": a}
             for ex, a in zip(tests, answers, strict=True) if a.strip() != ex.output.strip()]
    return {
        "task": task.name, "kind": task.kind, "metric": task.metric,
        "size": len(examples), "contender": args.contender, "base_model": spec.id,
        "score": score, "exact_match": scores.exact_match, "token_f1": scores.token_f1,
        "test_count": len(tests),
        "train_seconds": trained.train_seconds, "answer_seconds": answer_seconds,
        "steps": trained.steps, "trained_examples": trained.trained_examples,
        "validation_examples": trained.validation_examples,
        "settings": trained.settings, "choices": trained.choices,
        "precision": base.precision.to_dict(), "device": base.device,
        "threads": torch.get_num_threads(),
        "wrong": wrong[:WRONG_SHOWN],
    }


def main(argv: list[str] | None = None) -> int:
    from bench.quality.tasks import FileTaskError
    from tunelab.errors import TunelabError

    args = parse_args(argv)
    quiet_libraries(uses_datasets=args.contender == "trl")
    try:
        result = run(args)
    except (TunelabError, FileTaskError) as e:  # words for users, no traceback
        print(e, file=sys.stderr)
        return 1
    args.result.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
