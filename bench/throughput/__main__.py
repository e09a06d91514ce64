"""The driver: ``python -m bench.throughput [--quick] [--json FILE]``.

Every contender trains in a process of its own, one after another (never side by side), on the
identical token sequences, and saves the adapter it trained; the driver then checks that they
all trained on the same tokens, scores every adapter on the same held-out sequences in one more
process (``heldout.py``), prints the machine, a table and tunelab's ratios to each, and warns
when other processes were using the CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.throughput import data, report
from bench.throughput.contenders import CONTENDERS
from bench.throughput.measure import Result
from tunelab.allocator import preload_env
from tunelab.catalog.precision import CHOICES as PRECISIONS

REPO = Path(__file__).resolve().parents[2]
MISSING_TRL = (
    "trl is not installed; this benchmark compares against TRL's SFTTrainer. "
    "Install it with: pip install 'tunelab[bench]'"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="LoRA training throughput of tunelab, TRL's SFTTrainer and a plain PEFT "
        "loop, each in its own process on identical token sequences.",
    )
    p.add_argument("--base-model", default="smollm2-135m-instruct",
                   help="catalog id or local path (default: %(default)s)")
    p.add_argument("--examples", type=int, default=200, help="synthetic examples (default 200)")
    p.add_argument("--heldout", type=int, default=40,
                   help="held-out examples every trained adapter is scored on (default 40)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4, help="examples per optimizer step")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1,
                   help="run the whole comparison for this many seeds (--seed, --seed + 1, ...), "
                   "each with its own examples and initialisation, and report the means: one "
                   "seed's held-out loss varies more than the 2%% the loss target allows "
                   "(default 1)")
    p.add_argument("--threads", type=int, default=report.cores(),
                   help="torch threads of every contender (default: all cores)")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help=f"comma-separated, run in this order (default: {','.join(CONTENDERS)})")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: --base-model tiny-random --examples 8 --heldout 8")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.base_model, args.examples, args.heldout = "tiny-random", 8, 8
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or not names:
        p.error(f"unknown contender(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(CONTENDERS)}")
    args.contenders = names
    for name in ("examples", "heldout", "epochs", "batch_size", "threads", "seeds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.learning_rate < 1:
        p.error("--learning-rate must be between 0 and 1")
    return args


def run_contender(name: str, args: argparse.Namespace, seed: int, workdir: Path
                  ) -> tuple[Result | None, report.Load, str]:
    """Run one contender's process; its result (None if it failed), how busy the machine was,
    and on failure one line saying why."""
    result_file, log_file = workdir / f"{name}.json", workdir / f"{name}.log"
    command = [
        sys.executable, "-m", "bench.throughput.one", "--contender", name,
        "--workload", str(workdir / "workload.json"), "--result", str(result_file),
        "--adapter", str(adapter_dir(workdir, name)),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.learning_rate), "--seed", str(seed),
        "--threads", str(args.threads),
    ]
    load_before, others_before = report.load_average(), report.others_busy_now()
    meter = report.CpuMeter()
    own_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log_file.open("w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        # tunelab's run allocates as tunelab's training processes do: with jemalloc where the
        # system has it (src/tunelab/allocator.py); the peers with the C library's, as shipped
        env = preload_env(os.environ) if name == "tunelab" else None
        proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              check=False, env=env)
    own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = meter.busy_core_seconds()
    own = (own_after.ru_utime + own_after.ru_stime) - (own_before.ru_utime + own_before.ru_stime)
    others_during = None if busy is None else max(0.0, busy - own) / meter.seconds()
    load = report.Load(load_before, report.load_average(), others_before, others_during)
    if proc.returncode != 0 or not result_file.is_file():
        lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
        return None, load, f"exit status {proc.returncode}: {lines[-1] if lines else 'no output'}"
    return Result.from_dict(json.loads(result_file.read_text())), load, ""


def adapter_dir(workdir: Path, name: str) -> Path:
    return workdir / "adapters" / name


def score_heldout(results: list[Result], args: argparse.Namespace, workdir: Path) -> str:
    """Score every contender's adapter on the held-out sequences in one process and set each
    result's ``heldout_loss``; on failure, one line saying why (empty when it worked)."""
    result_file, log_file = workdir / "heldout.json", workdir / "heldout.log"
    command = [
        sys.executable, "-m", "bench.throughput.heldout",
        "--workload", str(workdir / "workload.json"), "--result", str(result_file),
        "--threads", str(args.threads),
        *(f"{r.contender}={adapter_dir(workdir, r.contender)}" for r in results),
    ]
    with log_file.open("w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              check=False)
    if proc.returncode != 0 or not result_file.is_file():
        lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
        return (f"the held-out evaluation failed (exit status {proc.returncode}: "
                f"{lines[-1] if lines else 'no output'}); its whole output: {log_file}")
    losses = json.loads(result_file.read_text())["losses"]
    for r in results:
        r.heldout_loss = losses[r.contender]
    return ""


def check_identical(results: list[Result], workload: data.Workload, epochs: int,
                    batch_size: int, seed: int) -> list[str]:
    """Problems that make the comparison unfair: different token counts, sequences or steps."""
    expected_tokens = workload.tokens * epochs
    expected = workload.fingerprint(epochs, batch_size, seed)
    problems = []
    for r in results:
        if r.tokens != expected_tokens:
            problems.append(f"{r.contender} trained on {r.tokens:,} real tokens, the workload "
                            f"has {expected_tokens:,}: the contenders are not comparable")
        elif r.fingerprint != expected:
            problems.append(f"{r.contender} trained on other token sequences than the workload's "
                            "(or with the loss on other tokens, or in other batches): the "
                            "contenders are not comparable")
    return problems


def run_seed(args: argparse.Namespace, seed: int, workload: data.Workload, described: dict
             ) -> tuple[dict, list[Result], bool]:
    """Every contender on one seed's workload, then the held-out scores; prints the seed's
    summary and returns its record (the JSON's shape), the results and whether everything
    worked."""
    workdir = Path(tempfile.mkdtemp(prefix="tunelab-throughput-"))
    workload.save(workdir / "workload.json")
    results: list[Result] = []
    loads: dict[str, report.Load] = {}
    failures: list[str] = []
    for i, name in enumerate(args.contenders, 1):
        print(f"[{i}/{len(args.contenders)}] {CONTENDERS[name]} ...", file=sys.stderr, flush=True)
        result, load, why = run_contender(name, args, seed, workdir)
        loads[name] = load
        if result is None:
            failures.append(f"{name} failed ({why}); its whole output: {workdir / name}.log")
            continue
        results.append(result)
        print(f"    {result.tokens_per_second:,.1f} real tokens/s; {load.describe()}",
              file=sys.stderr, flush=True)

    if results:
        print(f"held-out loss of {len(results)} adapter(s) on {args.heldout} examples ...",
              file=sys.stderr, flush=True)
        why = score_heldout(results, args, workdir)
        failures += [why] if why else []
    problems = check_identical(results, workload, args.epochs, args.batch_size, seed)
    ratios, loss_ratios = report.ratios(results), report.loss_ratios(results)
    busy = [r.contender for r in results if loads[r.contender].busy]
    print(report.summary(results, ratios, loss_ratios, {n: loads[n] for n in busy},
                         problems + failures), flush=True)
    record = {
        "workload": described,
        "contenders": {r.contender: {**r.to_dict(), "load": loads[r.contender].to_dict()}
                       for r in results},
        "ratios_tokens_per_second": ratios,
        "ratios_heldout_loss": loss_ratios,
        "busy": busy,
        "problems": problems + failures,
    }
    ok = not (failures or problems)
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return record, results, ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    needs_trl = any(n.startswith("trl") for n in args.contenders)
    if needs_trl and importlib.util.find_spec("trl") is None:
        print(MISSING_TRL, file=sys.stderr)
        return 2
    precision = os.environ.get("TUNELAB_PRECISION", "auto")
    if precision not in PRECISIONS:
        print(f"TUNELAB_PRECISION is {precision!r}; set it to one of {', '.join(PRECISIONS)} "
              "or unset it (auto).", file=sys.stderr)
        return 2

    from bench.quiet import quiet_libraries
    from tunelab.catalog import pick_device
    from tunelab.config import Settings
    from tunelab.errors import TunelabError

    quiet_libraries()
    seeds = list(range(args.seed, args.seed + args.seeds))
    info = report.machine()
    records: list[dict] = []
    runs: list[list[Result]] = []
    all_ok = True
    for seed in seeds:
        try:
            workload = data.prepare(args.base_model, args.examples, seed, args.heldout)
        except TunelabError as e:  # an unknown base model, a GGUF file that cannot be converted
            print(e, file=sys.stderr)
            return 2
        described = {
            "base_model": args.base_model, "examples": args.examples,
            "tokens": workload.tokens, "heldout_examples": args.heldout,
            "heldout_output_tokens": workload.heldout_output_tokens,
            "epochs": args.epochs, "batch_size": args.batch_size,
            "learning_rate": args.learning_rate, "seed": seed, "threads": args.threads,
            "device": pick_device(Settings().device), "tunelab_precision_setting": precision,
        }
        if seed == seeds[0]:
            print(report.header(info, described), flush=True)
        if len(seeds) > 1:
            print(f"\n## seed {seed} ({seed - seeds[0] + 1} of {len(seeds)})", flush=True)
        record, results, ok = run_seed(args, seed, workload, described)
        records.append(record)
        runs.append(results)
        all_ok = all_ok and ok

    across = None
    if len(seeds) > 1:
        across = report.across_seeds(runs)
        print("\n" + report.across_seeds_summary(across, seeds))
    if args.json is not None:
        out = {"machine": info, **records[0]} if len(records) == 1 else {
            "machine": info, "seeds": seeds, "runs": records, "across_seeds": across}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
