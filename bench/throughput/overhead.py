"""What of ``tunelab tune`` is not training: ``python -m bench.throughput.overhead``.

The issue's target: from the command to the first generated token of the tuned model, everything
that is not training (imports, loading the base, tokenising, scoring, checkpoint writes, the first
token) stays under 15% of the total on 100 examples x 5 epochs; the cached base loads in < 3 s.

Two processes, one after the other, as a user runs them:

1. **tune**: the calls ``tunelab tune DATA --epochs N`` makes, in its order (read and check the
   data, load the base, hold out validation examples, resolve the settings, ``train``), with a
   clock read in ``train``'s callbacks: before every step (``should_cancel``), after every step
   (``on_snapshot``) and around the scoring of each epoch (``on_evaluation_progress`` /
   ``on_evaluation``). What falls between them is set-up (tokenising, adding the LoRA layers),
   scoring, or the checkpoint written after each epoch (and after the last one the adapter and
   manifest).
2. **generate**: the real ``tunelab generate OUT PROMPT --max-output-tokens 1`` command, timed
   from its start to its exit (a new process: imports and the base's load again, the adapter,
   the first token).

Training is the sum of the steps' own times; everything else is overhead. Timings depend on how
busy the machine is: the report says how many cores other processes used.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("interpreter and imports", "load the base", "read and check the data (tokenising)",
          "set-up in train (tokenising, LoRA layers)", "scoring held-out examples",
          "checkpoints, adapter and manifest", "generate: start, imports, load, first token")


def child(data: Path, out: Path, epochs: int, result: Path) -> None:
    """The tune process: the calls of ``tunelab tune``, with the clock read in between."""
    marks = {"start": time.time()}
    from tunelab.catalog import get_base_model, load_base_model
    from tunelab.config import Settings
    from tunelab.data import read_file, validate
    from tunelab.data.batches import tokenize_example
    from tunelab.data.split import split_validation
    from tunelab.training import Hyperparameters, train

    marks["imported"] = time.time()
    settings = Settings()
    base = load_base_model(get_base_model(settings.default_base_model, settings.extra_models),
                           settings.models_dir, settings.device, settings.threads,
                           settings.precision)
    marks["loaded"] = time.time()
    examples = read_file(data)
    validate(examples, context_length=base.spec.context_length,
             count_tokens=lambda ex: tokenize_example(base.tokenizer, base.template, ex).length)
    split = split_validation(examples, None)
    hp = Hyperparameters(epoch_count=epochs).resolve(
        base.spec.recommended_learning_rate, split.train, validation=split.validation)
    marks["checked"] = time.time()
    events: list[tuple[str, float]] = []
    result_ = train(base, split.train, hp, out, should_cancel=lambda: bool(
        events.append(("step", time.time()))), on_snapshot=lambda s: events.append(
        ("stepped", time.time())), on_evaluation_progress=lambda *a: events.append(
        ("scoring", time.time())), on_evaluation=lambda e: events.append(("scored", time.time())),
        validation=split.validation, validation_record=split.record())
    marks["trained"] = time.time()
    result.write_text(json.dumps({
        "marks": marks, "events": events, "steps": len(result_.snapshots),
        "precision": base.precision.to_dict(), "threads": settings.threads,
        "validation": len(split.validation), "train_examples": len(split.train),
        "prompt": split.train[0].text_input}))


SETUP, SCORING = "set-up in train (tokenising, LoRA layers)", "scoring held-out examples"
CHECKPOINTS = "checkpoints, adapter and manifest"


def split_train(marks: dict, events: list) -> tuple[float, dict[str, float]]:
    """The time inside ``train``: (training steps, the rest by kind), from the clock readings
    of its callbacks. Each interval belongs to what began it: a step check starts a step;
    scoring progress is scoring; the end of a step or of a scoring starts the writes that follow
    (epoch checkpoints, evaluation.json; after the last epoch the adapter and manifest), or the
    next step at once (microseconds of bookkeeping)."""
    training, kinds = 0.0, dict.fromkeys((SETUP, SCORING, CHECKPOINTS), 0.0)
    timeline = [("checked", marks["checked"]), *events, ("end", marks["trained"])]
    for (kind, at), (after, until) in zip(timeline, timeline[1:], strict=False):
        if kind == "step":
            training += until - at
        elif kind == "checked":
            kinds[SETUP] += until - at
        elif kind == "scoring" or (kind == "stepped" and after == "scoring"):
            kinds[SCORING] += until - at
        else:
            kinds[CHECKPOINTS] += until - at
    return training, kinds


def split_scoring(events: list) -> dict[str, float]:
    """The scoring's seconds by part: each scoring reports its start (0 answered), then the
    answers its loss pass decided, then each batch decoded, then its end (``scored``)."""
    parts = dict.fromkeys(("loss passes", "the base model's answers",
                           "the epochs' answers"), 0.0)
    block: list[float] = []
    answers_of = "the base model's answers"  # the first scoring is the base model's
    for kind, at in events:
        if kind == "scoring":
            block.append(at)
        elif kind == "scored" and block:
            parts["loss passes"] += (block[1] if len(block) > 1 else at) - block[0]
            parts[answers_of] += at - block[min(1, len(block) - 1)]
            answers_of, block = "the epochs' answers", []
    return parts


def _cores(v: float | None) -> str:
    return "an unknown number of" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput.overhead", description=__doc__
                                .split("\n\n")[0])
    p.add_argument("--base-model", default=None, help="default: the service's default base model")
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="TUNELAB_THREADS (default 1)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--child", nargs=4, metavar=("DATA", "OUT", "EPOCHS", "RESULT"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        data, out, epochs, result = args.child
        child(Path(data), Path(out), int(epochs), Path(result))
        return 0
    from bench.throughput import report
    from bench.throughput.data import sentence_to_json_examples
    from tunelab.allocator import preload_env

    env = {**os.environ, "TUNELAB_THREADS": str(args.threads)}
    if args.base_model:
        env["TUNELAB_DEFAULT_BASE_MODEL"] = args.base_model
    with tempfile.TemporaryDirectory(prefix="tunelab-overhead-") as tmp:
        work = Path(tmp)
        with open(work / "data.jsonl", "w") as fh:
            for ex in sentence_to_json_examples(args.examples, 0):
                fh.write(json.dumps({"text_input": ex.text_input, "output": ex.output}) + "\n")
        others = report.others_busy_now()
        meter, started = report.CpuMeter(), time.time()
        subprocess.run([sys.executable, "-m", "bench.throughput.overhead", "--child",
                        str(work / "data.jsonl"), str(work / "out"), str(args.epochs),
                        str(work / "tune.json")], check=True,
                       env=preload_env(env) or env)  # allocates as `tunelab tune` does
        tune = json.loads((work / "tune.json").read_text())
        gen_started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tunelab.cli", "generate", str(work / "out"),
                        tune["prompt"], "--max-output-tokens", "1"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        gen_seconds = time.perf_counter() - gen_started
        own = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, busy = meter.seconds(), meter.busy_core_seconds()
        during = None if busy is None else max(0.0, (busy - own.ru_utime - own.ru_stime) / wall)
    marks = tune["marks"]
    training, inside = split_train(marks, tune["events"])
    stages = {
        "interpreter and imports": marks["imported"] - started,
        "load the base": marks["loaded"] - marks["imported"],
        "read and check the data (tokenising)": marks["checked"] - marks["loaded"],
        **inside,
        "generate: start, imports, load, first token": gen_seconds,
    }
    total = training + sum(stages.values())
    info = report.machine()
    lines = [f"CPU: {info['cpu']}; flags: {', '.join(info['cpu_flags']) or 'none of note'}; "
             f"{info['cores']} cores, {args.threads} torch thread(s); base held in "
             f"{tune['precision']['name']} ({tune['precision']['reason']})",
             f"{args.examples} examples ({tune['train_examples']} trained, "
             f"{tune['validation']} held out), {args.epochs} epochs, {tune['steps']} steps",
             "", "| stage | seconds | share of the total |", "|---|---:|---:|",
             f"| training steps | {training:.1f} | {training / total:.1%} |"]
    lines += [f"| {name} | {stages[name]:.1f} | {stages[name] / total:.1%} |" for name in STAGES]
    parts = split_scoring(tune["events"])
    lines += [f"| **everything but training** | **{total - training:.1f}** | "
              f"**{(total - training) / total:.1%}** |", f"| total | {total:.1f} | |", "",
              "Scoring: " + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()) + ".",
              f"Wall clock of both commands: {wall:.1f} s. Other processes used {_cores(others)} "
              f"cores just before and {_cores(during)} on average while they ran: timings "
              "taken while other work runs are indicative only."]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"stages": stages, "training": training, "total": total,
                                         "scoring": parts, "machine": info, "tune": tune},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
