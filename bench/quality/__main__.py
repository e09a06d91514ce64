"""The quality benchmark: ``python -m bench.quality`` prints, for every task and training-set
size, the held-out score of each contender and its training time.

Each (task, size, contender) runs in a process of its own (``bench/quality/one.py``), one after
another; the base model is scored once per task (it trains on nothing). See docs/quality.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.quality.contenders import CONTENDERS, TUNELAB_CONTENDERS, parse_vary
from bench.quality.tasks import (
    MAX_FILE_TESTS,
    POOL,
    SEED,
    TASKS,
    TESTS,
    FileTaskError,
    Task,
    file_task,
    make_task,
)

SIZES = (20, 50, 100, 500)
QUICK_MODEL = "tiny-random"
QUICK_TASKS = ("intent", "tickets")  # one exact-match task, the token-F1 one
QUICK_SIZES = (20,)
QUICK_TESTS = 5
QUICK_THREADS = 1  # a check runs beside other work: two threads on two busy cores crawl
LOG_TAIL_BYTES = 4_000  # of a failed run's output, shown to say why it failed

# The targets (points of exact match or token F1, as fractions)
BEAT_TRL_AT_20 = 0.05
EXTRACTION_AT_100 = 0.95
AUTO_LOSS_ALLOWED = 0.01
AUTO_TIME_ALLOWED = 2.0
MAX_SEEDS = 20
MAX_SIZE = 100_000  # training examples of a cell (a file task's; the suite's tasks hold POOL)


def _names(value: str, known: dict | tuple, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(known)}")
    return names


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(not 1 <= s <= MAX_SIZE for s in sizes):
        raise argparse.ArgumentTypeError(
            f"sizes must be whole numbers from 1 to {POOL} (a task of your files: to its "
            f"number of examples), comma-separated (got {value!r})")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quality",
                                description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=lambda v: _names(v, TASKS, "task"), default=None,
                   help=f"comma-separated, from {', '.join(TASKS)} (default: all, or none "
                   "when --data is given)")
    p.add_argument("--data", default=None, metavar="TRAIN",
                   help="a task of your own: its training examples (CSV, JSON or JSONL, as "
                   "tunelab tune reads them); a cell of size n trains on the first n")
    p.add_argument("--test-data", default=None, metavar="TEST",
                   help="with --data: the examples to score on (inputs also in TRAIN are left "
                   f"out; at most {MAX_FILE_TESTS:,})")
    p.add_argument("--metric", choices=("exact_match", "token_f1"), default=None,
                   help="with --data: how answers are scored (default: token_f1 where the "
                   "outputs look like summaries, else exact_match)")
    p.add_argument("--sizes", type=_sizes, default=None,
                   help="training examples per cell, comma-separated (default: 20,50,100,500)")
    p.add_argument("--contenders", type=lambda v: _names(v, CONTENDERS, "contender"),
                   default=None, help=f"comma-separated, from {', '.join(CONTENDERS)} "
                   "(default: all)")
    p.add_argument("--base-model", default=None,
                   help="tunelab's name of the base model (default: smollm2-135m-instruct)")
    p.add_argument("--tests", type=int, default=None,
                   help=f"score on the first N test inputs of each task (default: all: {TESTS} "
                   "for the suite's tasks)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of each run (default: tunelab's setting, else all cores)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="what the base model's weights are held in (default: tunelab's "
                   "setting, auto)")
    p.add_argument("--seed", type=int, default=0, help="the training seed")
    p.add_argument("--seeds", type=int, default=1,
                   help="run every cell with this many training seeds (--seed, --seed + 1, …) "
                   "and judge the means: one seed's score moves by more than the targets' "
                   "margins (default: 1)")
    p.add_argument("--vary", default="", metavar="KEY=VALUE,…",
                   help="change one part of the tunelab contenders' plan, to measure what it is "
                   "worth: warmup=N, epochs=N, decay=constant|cosine, alpha=N, validation=none "
                   "(every example trained on); applied after tunelab's choices")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="also write every result, with the machine's details, to OUT")
    p.add_argument("--work", type=Path, default=None,
                   help="keep each run's files (adapters, logs) here (default: a temporary "
                   "folder, removed)")
    p.add_argument("--quick", action="store_true",
                   help=f"a check that everything runs: {QUICK_MODEL}, tasks "
                   f"{','.join(QUICK_TASKS)}, {QUICK_SIZES[0]} examples, {QUICK_TESTS} test "
                   f"inputs, {QUICK_THREADS} thread (the scores mean nothing)")
    args = p.parse_args(argv)
    if args.tests is not None and not 1 <= args.tests <= MAX_FILE_TESTS:
        p.error(f"--tests must be from 1 to {MAX_FILE_TESTS:,}, got {args.tests}")
    if (args.data is None) != (args.test_data is None):
        p.error("a task of your own needs both --data TRAIN and --test-data TEST")
    if args.metric is not None and args.data is None:
        p.error("--metric applies to a task of your own: give --data and --test-data too")
    if not 1 <= args.seeds <= MAX_SEEDS:
        p.error(f"--seeds must be from 1 to {MAX_SEEDS}, got {args.seeds}")
    try:
        parse_vary(args.vary)
    except ValueError as e:
        p.error(str(e))
    if args.quick:
        args.base_model = args.base_model or QUICK_MODEL
        args.tasks = args.tasks or ([] if args.data else list(QUICK_TASKS))
        args.sizes = args.sizes or list(QUICK_SIZES)
        args.tests = args.tests or QUICK_TESTS
        args.threads = args.threads or QUICK_THREADS
    args.base_model = args.base_model or "smollm2-135m-instruct"
    args.tasks = args.tasks or ([] if args.data else list(TASKS))
    args.contenders = args.contenders or list(CONTENDERS)
    return args


def load_tasks(args: argparse.Namespace) -> dict[str, Task]:
    """Every task of the run by name: the suite's ``--tasks``, then the task of ``--data`` and
    ``--test-data``; sizes the run asks for that a task does not hold stop it here, before any
    training (``FileTaskError``)."""
    tasks = {name: make_task(name, SEED) for name in args.tasks}
    args.file_task = None
    if args.data is not None:
        own = file_task(args.data, args.test_data, args.metric)  # named apart from the suite's
        tasks[own.name] = own
        args.file_task = own.name
        if args.sizes is None:  # the suite's sizes the file holds, and the whole file
            n = len(own.train)
            args.sizes = [size for size in SIZES if size < n] + [n]
    args.sizes = args.sizes or list(SIZES)
    for task in tasks.values():
        too_many = [n for n in args.sizes if n > len(task.train)]
        if too_many:
            raise FileTaskError(
                f"Task {task.name} has {len(task.train)} training examples, fewer than the "
                f"--sizes {', '.join(map(str, too_many))} asked for; give sizes up to "
                f"{len(task.train)}.")
    return tasks


def machine() -> dict:
    """What the numbers depend on: the CPU, its bf16 features, torch's version and threads."""
    from tunelab.catalog.precision import cpu_flags, cpu_model

    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
            "python": platform.python_version()}


def run_folder(task: object, size: object, contender: object, seed: object,
               several_seeds: bool, vary: str = "") -> str:
    """The name of one run's folder under ``--work`` (also written with placeholders, to say
    where a failed run's output is). A varied plan is another run: its folder says how, so a
    second ``--vary`` into the same ``--work`` trains afresh instead of meeting the first one's
    checkpoints."""
    varied = "".join(c for c in vary.replace(",", "-").replace("=", "") if c.isalnum() or c in "-.")
    return (f"{task}-{size}-{contender}" + (f"-seed{seed}" if several_seeds else "")
            + (f"-vary-{varied}" if varied and (contender in TUNELAB_CONTENDERS
                                                  or contender == "<contender>") else ""))


def run_one(args: argparse.Namespace, task: str, size: int, contender: str, seed: int,
            work: Path) -> dict:
    """One contender on one cell with one training seed, in a new process; its result, or why
    it failed."""
    folder = work / run_folder(task, size, contender, seed, args.seeds > 1, args.vary)
    folder.mkdir(parents=True, exist_ok=True)
    result, log = folder / "result.json", folder / "log.txt"
    cmd = [sys.executable, "-m", "bench.quality.one", "--task", task, "--size", str(size),
           "--contender", contender, "--base-model", args.base_model,
           "--seed", str(seed), "--work", str(folder), "--result", str(result)]
    if args.tests:
        cmd += ["--tests", str(args.tests)]
    if task == args.file_task:
        cmd += ["--data", str(Path(args.data).resolve()),
                "--test-data", str(Path(args.test_data).resolve())]
        if args.metric:
            cmd += ["--metric", args.metric]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.precision:
        cmd += ["--precision", args.precision]
    if args.vary:
        cmd += ["--vary", args.vary]
    t0 = time.perf_counter()
    with log.open("wb") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[2]).returncode
    wall = time.perf_counter() - t0
    if rc == 0 and result.is_file():
        return {**json.loads(result.read_text()), "seed": seed, "process_seconds": wall}
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
        tail = f.read().decode(errors="replace").strip().splitlines()
    why = tail[-1] if tail else f"exit status {rc}"
    return {"task": task, "size": size, "contender": contender, "seed": seed, "error": why,
            "process_seconds": wall}


def cells_of(results: list[dict]) -> dict[tuple[str, int, str], dict]:
    """The results by (task, size, contender), each cell's seeds taken together: its mean
    score and training seconds, with every seed's score in ``scores``. A cell any seed of which
    failed is failed (a mean of the seeds that ran would not be the same measurement)."""
    runs: dict[tuple[str, int, str], list[dict]] = {}
    for r in results:
        runs.setdefault((r["task"], r["size"], r["contender"]), []).append(r)
    cells = {}
    for key, rs in runs.items():
        failed = [r for r in rs if "error" in r]
        if failed:
            cells[key] = failed[0]
            continue
        scores = [r["score"] for r in rs]
        cells[key] = {**rs[0], "score": sum(scores) / len(scores), "scores": scores,
                      "train_seconds": sum(r["train_seconds"] for r in rs) / len(rs)}
    return cells


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    if "error" in r:
        return "failed"
    scores = r.get("scores", [])
    if len(scores) > 1:  # the mean, then each seed's score
        return f"{r['score']:.2f} ({' / '.join(f'{s:.2f}' for s in scores)})"
    return f"{r['score']:.2f}"


def _seconds(r: dict | None) -> str:
    return "–" if r is None or "error" in r else f"{r['train_seconds']:.0f}"


def table(results: list[dict], tasks: list[str], sizes: list[int],
          contenders: list[str]) -> list[str]:
    """The results as a Markdown table: a row per (task, size), a score column per contender
    (the mean over seeds, then each seed's), the differences of the means the targets speak of,
    and the mean training seconds."""
    by = cells_of(results)
    trained = [c for c in contenders if c != "base"]
    head = ["task", "examples", *contenders]
    if {"tunelab", "trl"} <= set(contenders):
        head.append("tunelab − TRL")
    if {"tunelab", "tunelab-gemini"} <= set(contenders):
        head.append("auto − Gemini")
    if trained:
        head.append("train s (" + " / ".join(trained) + ")")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in tasks:
        for size in sizes:
            row = [task, str(size)]
            for c in contenders:
                row.append(_cell(by.get((task, 0 if c == "base" else size, c))))
            for a, b in (("tunelab", "trl"), ("tunelab", "tunelab-gemini")):
                if {a, b} <= set(contenders):
                    ra, rb = by.get((task, size, a)), by.get((task, size, b))
                    ok = ra and rb and "error" not in ra and "error" not in rb
                    row.append(f"{ra['score'] - rb['score']:+.2f}" if ok else "–")
            if trained:
                row.append(" / ".join(_seconds(by.get((task, size, c))) for c in trained))
            lines.append("| " + " | ".join(row) + " |")
    return lines


def targets(results: list[dict]) -> list[str]:
    """The issue's targets, checked on the cells that were run, on each cell's mean over seeds
    (a target whose cells were not run is not reported)."""
    by = {key: r for key, r in cells_of(results).items() if "error" not in r}
    tasks = sorted({r["task"] for r in by.values()})
    out = []

    def report(what: str, checks: list[tuple[str, bool]]) -> None:
        if checks:
            misses = [name for name, ok in checks if not ok]
            out.append(f"{what}: {len(checks) - len(misses)} of {len(checks)}"
                       + (f" (missed: {', '.join(misses)})" if misses else ""))

    pairs = [(t, by.get((t, 20, "tunelab")), by.get((t, 20, "trl"))) for t in tasks]
    report(f"tunelab beats TRL by ≥ {BEAT_TRL_AT_20:.2f} at 20 examples",
           [(t, a["score"] >= b["score"] + BEAT_TRL_AT_20) for t, a, b in pairs if a and b])
    at100 = [(t, by.get((t, 100, "tunelab"))) for t in tasks]
    report(f"tunelab ≥ {EXTRACTION_AT_100} at 100 examples on extraction/normalisation",
           [(t, a["score"] >= EXTRACTION_AT_100) for t, a in at100
            if a and a["kind"] in ("extraction", "normalisation")])
    pairs = [(t, by.get((t, 100, "tunelab")), by.get((t, 100, "trl"))) for t in tasks]
    report("tunelab ≥ TRL at 100 examples",
           [(t, a["score"] >= b["score"]) for t, a, b in pairs if a and b])
    big = [(f"{t}/{n}", a, b) for (t, n, c), a in by.items() if c == "tunelab" and n >= 100
           for b in [by.get((t, n, "tunelab-gemini"))] if b]
    report(f"automatic settings within {AUTO_LOSS_ALLOWED:.2f} of Gemini's defaults "
           "(≥ 100 examples)",
           [(name, a["score"] >= b["score"] - AUTO_LOSS_ALLOWED) for name, a, b in big])
    report(f"automatic settings train in ≤ {AUTO_TIME_ALLOWED:g}× Gemini defaults' time "
           "(≥ 100 examples)",
           [(name, a["train_seconds"] <= AUTO_TIME_ALLOWED * b["train_seconds"])
            for name, a, b in big])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "trl" in args.contenders and importlib.util.find_spec("trl") is None:
        print("TRL is not installed, so the trl contender cannot run: install it with "
              "pip install 'tunelab[bench]', or leave it out with --contenders "
              "base,tunelab,tunelab-gemini.", file=sys.stderr)
        return 2
    from tunelab.catalog import get_base_model
    from tunelab.config import Settings
    from tunelab.errors import TunelabError

    try:  # an unknown base model is said once, not by every run
        get_base_model(args.base_model, Settings().extra_models)
    except TunelabError as e:
        print(e, file=sys.stderr)
        return 2
    try:  # fail before any training if a task's data is not as stated or too small
        tasks = load_tasks(args)
    except FileTaskError as e:
        print(e, file=sys.stderr)
        return 2
    args.tasks = list(tasks)
    info = machine()
    seeds = list(range(args.seed, args.seed + args.seeds))
    tested = (f"the first {args.tests} test inputs of each task" if args.tests else
              "test inputs: " + ", ".join(f"{len(t.test)} for {t.name}" for t in tasks.values()))
    print(f"Quality benchmark: {args.base_model}; tasks {', '.join(args.tasks)}; sizes "
          f"{', '.join(map(str, args.sizes))}; {tested}; "
          f"training seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
          + (f"; tunelab's plan varied: {args.vary}" if args.vary else ""))
    print(f"CPU: {info['cpu']}, {info['cores']} cores; flags: "
          f"{', '.join(info['cpu_flags']) or 'none of amx/avx512_bf16/avx512f/avx2'}")
    # the base trains on nothing: scored once per task, whatever the seeds
    cells = [(t, 0, "base", args.seed) for t in args.tasks if "base" in args.contenders]
    cells += [(t, n, c, s) for t in args.tasks for n in args.sizes for s in seeds
              for c in args.contenders if c != "base"]
    cells.sort(key=lambda cell: (args.tasks.index(cell[0]), cell[1]))
    results: list[dict] = []
    shown = False
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        work = args.work or Path(tmp)
        for task, size, contender, seed in cells:
            r = run_one(args, task, size, contender, seed, work)
            results.append(r)
            if "precision" in r and not shown:  # the same in every run: shown once
                shown, p = True, r["precision"]
                print(f"Precision of the base weights: {p['name']} ({p['reason']}); "
                      f"{r['threads']} torch threads; device {r['device']}")
            where = f"{task} n={size} {contender}" if contender != "base" else f"{task} base"
            if len(seeds) > 1 and contender != "base":
                where += f" seed {seed}"
            if "error" in r:
                print(f"  {where}: FAILED: {r['error']}")
            else:
                print(f"  {where}: {r['metric']} {r['score']:.3f} (train {r['train_seconds']:.1f} "
                      f"s, {r['steps']} steps; answers {r['answer_seconds']:.1f} s)")
    total = time.perf_counter() - t0
    print()
    print("\n".join(table(results, args.tasks, args.sizes, args.contenders)))
    print()
    trl = next((r for r in results if r["contender"] == "trl" and "error" not in r), None)
    if trl is not None:
        s = trl["settings"]
        print(f"TRL as shipped trained with {s['precision']}, {s['optimizer']}, "
              f"{s['learning rate']} schedule, gradient checkpointing "
              f"{'on' if s['gradient checkpointing'] else 'off'}.")
    for line in targets(results):
        print(line)
    print(f"Total: {total:.0f} s for {len(cells)} runs.")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "machine": info, "base_model": args.base_model, "tasks": args.tasks,
            "sizes": args.sizes, "contenders": args.contenders, "tests": args.tests,
            "seed": args.seed, "seeds": seeds, "data_seed": SEED, "total_seconds": total,
            "task_files": ({"name": args.file_task, "data": args.data,
                            "test_data": args.test_data} if args.file_task else None),
            "vary": parse_vary(args.vary),
            "results": results}, indent=1))
    failed = [r for r in results if "error" in r]
    if failed:
        where = args.work or "DIR (rerun with --work DIR to keep them)"
        name = run_folder("<task>", "<size>", "<contender>", "<seed>", args.seeds > 1, args.vary)
        print(f"{len(failed)} run(s) failed; each run's output is in {where}/{name}/log.txt.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
