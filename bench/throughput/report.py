"""What the benchmark prints: the machine, how busy it was, the table and tunelab's ratios."""

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
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": cores(), "versions": versions}


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


def table(results: list[Result]) -> str:
    """A Markdown table (ready for docs/performance.md), one row per contender."""
    ours = next((r for r in results if r.contender == "tunelab"), None)
    lines = [
        "| contender | precision | real tokens | real tokens/s | examples/s | train s | peak RSS "
        "| final loss | tunelab's ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        x = ratio(ours, r) if ours is not None and r is not ours else None
        lines.append(
            f"| {CONTENDERS[r.contender]} | {r.precision} | {r.tokens:,} "
            f"| {r.tokens_per_second:,.1f} | {r.examples_per_second:.2f} | {r.train_seconds:.1f} "
            f"| {_mb(r.peak_rss_bytes)} | {r.final_loss:.4f} "
            f"| {'—' if x is None else f'{x:.2f}×'} |"
        )
    return "\n".join(lines)


def header(info: dict, workload: dict) -> str:
    flags = " ".join(info["cpu_flags"]) or "none of amx_bf16, avx512_bf16, avx2"
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return "\n".join([
        f"CPU: {info['cpu']}; flags: {flags}; {info['cores']} cores",
        f"{versions}; device {workload['device']}, {workload['threads']} torch thread(s)",
        f"workload: {workload['base_model']}, {workload['examples']} \"sentence → JSON\" examples "
        f"({workload['tokens']:,} tokens), {workload['epochs']} epoch(s), batch "
        f"{workload['batch_size']}, lr {workload['learning_rate']:g}, seed {workload['seed']}; "
        "LoRA r8 alpha16 dropout0 on q/k/v/o/gate/up/down for every contender",
    ])


def settings_lines(results: list[Result]) -> str:
    """What each contender ran with besides the shared settings."""
    return "\n".join(
        f"{r.contender} — " + "; ".join(f"{k}: {v}" for k, v in r.settings.items())
        for r in results
    )


def ratios(results: list[Result]) -> dict[str, float | None]:
    """tunelab's ratio to every other contender that ran (none if tunelab did not)."""
    ours = next((r for r in results if r.contender == "tunelab"), None)
    return {r.contender: ratio(ours, r) for r in results if ours is not None and r is not ours}


def summary(results: list[Result], ratios: dict[str, float | None], busy: dict[str, Load],
            problems: list[str]) -> str:
    """The table, each contender's settings, tunelab's ratios (one plain line each, greppable
    whatever the terminal), then the warnings and errors."""
    lines = ["", table(results), "", settings_lines(results)] if results else []
    lines += [f"ratio tunelab/{name} real tokens/s: {'n/a' if x is None else f'{x:.2f}'}"
              for name, x in ratios.items()]
    lines += [f"warning: the machine was busy around {name}: {load.describe()}. Its figures are "
              "not worth recording; run again on a quiet machine." for name, load in busy.items()]
    lines += [f"error: {problem}" for problem in problems]
    return "\n".join(lines)
