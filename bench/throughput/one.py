"""One contender in a process of its own: ``python -m bench.throughput.one --contender NAME``.

The driver (``python -m bench.throughput``) starts one such process per contender, one after
another, so no contender inherits another's memory, threads or warmed-up kernels, and each peak
RSS is that contender's alone. The result is written as JSON to ``--result``, the trained adapter
to ``--adapter``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.quiet import quiet_libraries
from bench.throughput.contenders import CONTENDERS, Setup, run
from bench.throughput.data import Workload
from bench.throughput.measure import peak_rss_bytes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contender", required=True, choices=list(CONTENDERS))
    p.add_argument("--workload", type=Path, required=True, help="the driver's workload.json")
    p.add_argument("--result", type=Path, required=True, help="where to write the result JSON")
    p.add_argument("--adapter", type=Path, required=True,
                   help="the folder to save the trained adapter in (PEFT format)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--learning-rate", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries(uses_datasets=args.contender.startswith("trl"))
    from tunelab.catalog import pick_device
    from tunelab.config import Settings

    setup = Setup(args.epochs, args.batch_size, args.learning_rate, args.seed, args.threads,
                  pick_device(Settings().device), args.adapter)
    result = run(args.contender, Workload.load(args.workload), setup)
    result.peak_rss_bytes = peak_rss_bytes()
    args.result.write_text(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
