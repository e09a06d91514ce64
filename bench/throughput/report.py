"""What the benchmark prints: the machine, how busy it was, the table, tunelab's ratios and
whether its held-out loss is within the target of the best other contender's."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from bench.throughput.contenders import CONTENDERS
from bench.throughput.measure import Result

# Other processes using more than this many cores, before or during a contender, make its
# figures not worth recording (with every core given to torch, threads then wait on each other).
BUSY_CORES = 0.25
# issue 18's quality target: tunelab's held-out loss at most 2% above the best other contender's
LOSS_TARGET = 1.02


def cores() -> int:
    return os.cpu_count() or 1


def machine() -> dict:
    """The CPU (its model, and the flags that decide bf16's speed), cores and library versions."""
    from tunelab.catalog.precision import cpu_flags, cpu_model

    versions = {}
    for package in ("torch", "transformers", "peft", "trl", "tunelab"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    from tunelab.allocator import preload_env, using_jemalloc

    tunelab_allocator = ("jemalloc" if using_jemalloc() or preload_env(os.environ) is not None
                         else "the C library's")
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": cores(), "versions": versions,
            "tunelab_allocator": tunelab_allocator}


def _busy_and_total_ticks() -> tuple[int, int] | None:
    """Clock ticks all CPUs spent busy and in total since boot (Linux ``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks[:8]) - idle, sum(ticks[:8])  # guest time is already counted in user


class CpuMeter:
    """Cores kept busy machine-wide over an interval, from ``/proc/stat`` (None elsewhere)."""

    def __init__(self) -> None:
        self.start = _busy_and_total_ticks()
        self.wall = time.perf_counter()

    def busy_core_seconds(self) -> float | None:
        end = _busy_and_total_ticks()
        if self.start is None or end is None:
            return None
        return (end[0] - self.start[0]) / os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        return time.perf_counter() - self.wall


def others_busy_now(seconds: float = 1.0) -> float | None:
    """Cores other processes keep busy, sampled over ``seconds`` while the benchmark idles."""
    meter = CpuMeter()
    time.sleep(seconds)
    busy = meter.busy_core_seconds()
    return None if busy is None else busy / meter.seconds()


@dataclass
class Load:
    """How busy the machine was around one contender."""

    load_before: float  # 1-minute load average
    load_after: float
    others_before: float | None  # cores used by other processes just before it started
    others_during: float | None  # ... on average while it ran (machine-wide minus its own CPU)

    @property
    def busy(self) -> bool:
        return any(v is not None and v > BUSY_CORES for v in (self.others_before,
                                                              self.others_during))

    def describe(self) -> str:
        def cores_of(v: float | None) -> str:
            return "unknown" if v is None else f"{v:.2f}"

        return (f"load average {self.load_before:.2f} before, {self.load_after:.2f} after "
                f"({cores()} cores); other processes used {cores_of(self.others_before)} cores "
                f"before it and {cores_of(self.others_during)} while it ran")

    def to_dict(self) -> dict:
        return {**asdict(self), "busy": self.busy}


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def ratio(tunelab: Result, other: Result) -> float | None:
    """tunelab's real tokens per second over the other's."""
    return tunelab.tokens_per_second / other.tokens_per_second if other.tokens_per_second else None


def loss_ratio(tunelab: Result, other: Result) -> float | None:
    """tunelab's held-out loss over the other's (below 1: tunelab's adapter predicts better)."""
    if tunelab.heldout_loss is None or not other.heldout_loss:
        return None
    return tunelab.heldout_loss / other.heldout_loss


def _tunelab(results: list[Result]) -> Result | None:
    return next((r for r in results if r.contender == "tunelab"), None)


def _times(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}×"


def table(results: list[Result]) -> str:
    """A Markdown table (ready for docs/performance.md), one row per contender."""
    ours = _tunelab(results)
    lines = [
        "| contender | precision | real tokens | real tokens/s | examples/s | train s | peak RSS "
        "| last-epoch train loss | held-out loss | tunelab's speed ratio "
        "| tunelab's held-out loss ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        others = ours is not None and r is not ours
        heldout = "—" if r.heldout_loss is None else f"{r.heldout_loss:.4f}"
        lines.append(
            f"| {CONTENDERS[r.contender]} | {r.precision} | {r.tokens:,} "
            f"| {r.tokens_per_second:,.1f} | {r.examples_per_second:.2f} | {r.train_seconds:.1f} "
            f"| {_mb(r.peak_rss_bytes)} | {r.last_epoch_train_loss:.4f} | {heldout} "
            f"| {_times(ratio(ours, r) if others else None, 2)} "
            f"| {_times(loss_ratio(ours, r) if others else None, 3)} |"
        )
    return "\n".join(lines)


def header(info: dict, workload: dict) -> str:
    flags = " ".join(info["cpu_flags"]) or "none of amx_bf16, avx512_bf16, avx2"
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return "\n".join([
        f"CPU: {info['cpu']}; flags: {flags}; {info['cores']} cores",
        f"{versions}; device {workload['device']}, {workload['threads']} torch thread(s); "
        + ("tunelab allocates with jemalloc, the others with the C library's allocator"
           if info.get("tunelab_allocator") == "jemalloc"
           else "every contender allocates with the C library's allocator"),
        f"workload: {workload['base_model']}, {workload['examples']} \"sentence → JSON\" examples "
        f"({workload['tokens']:,} tokens), {workload['epochs']} epoch(s), batch "
        f"{workload['batch_size']}, lr {workload['learning_rate']:g}, seed {workload['seed']}; "
        "LoRA r8 alpha16 dropout0 on q/k/v/o/gate/up/down for every contender",
        f"held-out loss: every trained adapter on the same {workload['heldout_examples']} other "
        f"examples ({workload['heldout_output_tokens']:,} output tokens), fp32 base, one at a "
        "time, token-weighted cross-entropy of the outputs",
    ])


def settings_lines(results: list[Result]) -> str:
    """What each contender ran with besides the shared settings."""
    return "\n".join(
        f"{r.contender} — " + "; ".join(f"{k}: {v}" for k, v in r.settings.items())
        for r in results
    )


def ratios(results: list[Result]) -> dict[str, float | None]:
    """tunelab's speed ratio to every other contender that ran (none if tunelab did not)."""
    ours = _tunelab(results)
    return {r.contender: ratio(ours, r) for r in results if ours is not None and r is not ours}


def loss_ratios(results: list[Result]) -> dict[str, float | None]:
    """tunelab's held-out loss ratio to every other contender that ran."""
    ours = _tunelab(results)
    return {r.contender: loss_ratio(ours, r) for r in results if ours is not None and r is not ours}


def loss_verdict(results: list[Result]) -> str | None:
    """tunelab's held-out loss against the best (lowest) of the others', and whether it is
    within the target; None without tunelab's or any other contender's held-out loss."""
    ours = _tunelab(results)
    others = [(r.heldout_loss, r.contender) for r in results if r is not ours and r.heldout_loss]
    return _verdict("held-out loss", ours.heldout_loss if ours else None, others)


def _verdict(label: str, ours: float | None, others: list[tuple[float, str]]) -> str | None:
    """tunelab's loss ``ours`` against the lowest of ``others`` ((loss, contender) pairs) and
    the target; None when either is missing."""
    if ours is None or not others:
        return None
    best_loss, best = min(others)
    x = ours / best_loss
    met = "met" if x <= LOSS_TARGET else "NOT met"
    return (f"{label}: tunelab {ours:.4f}, best other {best} {best_loss:.4f}, "
            f"ratio {x:.3f} (target ≤ {LOSS_TARGET:.2f}: {met})")


def summary(results: list[Result], ratios: dict[str, float | None],
            loss_ratios: dict[str, float | None], busy: dict[str, Load],
            problems: list[str]) -> str:
    """The table, each contender's settings, tunelab's ratios (one plain line each, greppable
    whatever the terminal), the held-out loss against its target, then the warnings and
    errors."""
    lines = ["", table(results), "", settings_lines(results)] if results else []
    lines += [f"ratio tunelab/{name} real tokens/s: {'n/a' if x is None else f'{x:.2f}'}"
              for name, x in ratios.items()]
    lines += [f"ratio tunelab/{name} held-out loss: {'n/a' if x is None else f'{x:.3f}'}"
              for name, x in loss_ratios.items()]
    verdict = loss_verdict(results)
    lines += [verdict] if verdict else []
    lines += [f"warning: the machine was busy around {name}: {load.describe()}. Its figures are "
              "not worth recording; run again on a quiet machine." for name, load in busy.items()]
    lines += [f"error: {problem}" for problem in problems]
    return "\n".join(lines)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def across_seeds(runs: list[list[Result]]) -> dict:
    """Each contender's figures over several seeds' runs (one list of results per seed): its
    speed and held-out loss per seed and their means, and tunelab's ratios of the means. A
    contender that failed on a seed counts on the seeds where it ran."""
    names = list(dict.fromkeys(r.contender for results in runs for r in results))
    per: dict[str, dict] = {}
    for name in names:
        rows = [r for results in runs for r in results if r.contender == name]
        speeds = [r.tokens_per_second for r in rows]
        losses = [r.heldout_loss for r in rows if r.heldout_loss is not None]
        per[name] = {"runs": len(rows), "tokens_per_second": speeds,
                     "tokens_per_second_mean": _mean(speeds), "heldout_losses": losses,
                     "heldout_loss_mean": _mean(losses)}
    ours = per.get("tunelab")
    speed_ratios: dict[str, float | None] = {}
    loss_ratios_: dict[str, float | None] = {}
    for name, d in per.items():
        if ours is None or name == "tunelab":
            continue
        speed_ratios[name] = (ours["tokens_per_second_mean"] / d["tokens_per_second_mean"]
                              if d["tokens_per_second_mean"] else None)
        loss_ratios_[name] = (ours["heldout_loss_mean"] / d["heldout_loss_mean"]
                              if ours["heldout_loss_mean"] and d["heldout_loss_mean"] else None)
    return {"contenders": per, "ratios_tokens_per_second": speed_ratios,
            "ratios_heldout_loss": loss_ratios_}


def across_seeds_summary(across: dict, seeds: list[int]) -> str:
    """The means over the seeds: one line per contender, tunelab's ratios of the means, and the
    held-out loss target judged on the means (one seed's held-out loss varies more than 2%)."""
    lines = [f"## across {len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
             "| contender | runs | real tokens/s (mean) | held-out loss (mean) "
             "| held-out loss per seed |", "|---|---:|---:|---:|---|"]
    for name, d in across["contenders"].items():
        mean = d["heldout_loss_mean"]
        lines.append(f"| {CONTENDERS[name]} | {d['runs']} | {d['tokens_per_second_mean']:,.1f} "
                     f"| {'—' if mean is None else f'{mean:.4f}'} "
                     f"| {', '.join(f'{x:.4f}' for x in d['heldout_losses']) or '—'} |")
    lines.append("")
    lines += [f"mean ratio tunelab/{name} real tokens/s: {'n/a' if x is None else f'{x:.2f}'}"
              for name, x in across["ratios_tokens_per_second"].items()]
    lines += [f"mean ratio tunelab/{name} held-out loss: {'n/a' if x is None else f'{x:.3f}'}"
              for name, x in across["ratios_heldout_loss"].items()]
    ours = across["contenders"].get("tunelab")
    others = [(d["heldout_loss_mean"], name) for name, d in across["contenders"].items()
              if name != "tunelab" and d["heldout_loss_mean"]]
    verdict = _verdict("mean held-out loss", ours and ours["heldout_loss_mean"], others)
    return "\n".join([*lines, verdict] if verdict else lines)
