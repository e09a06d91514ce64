"""The held-out loss: every contender's trained adapter scored the same way, in one process.

``python -m bench.throughput.heldout --workload W --result R --threads T NAME=ADAPTER ...``

The contenders batch their training steps differently (each draws, orders and pads its own
batches), so the means of their step losses weigh the same tokens
differently and cannot be compared. This scores each saved adapter (PEFT format) on the
workload's held-out sequences, identically for all: the base model loaded afresh in fp32 from
the workload's folder, the adapter put on it with ``PeftModel.from_pretrained``, eval mode, no
gradients, one sequence at a time (no padding, so no attention-mask or position effects), and the
loss is the sum of the cross-entropy over every output token of every sequence divided by the
number of those tokens (token-weighted over the whole set). The driver runs this after every
contender has finished, in a process of its own, so no contender's peak RSS includes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.throughput.data import TokenSequence, Workload


@dataclass(frozen=True)
class Score:
    """Cross-entropy summed over output tokens, and how many there were."""

    loss_sum: float
    tokens: int

    @property
    def loss(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else float("nan")


def load_adapted(model_path: str | Path, adapter_dir: str | Path, device: str) -> Any:
    """The base in fp32 with the adapter on it, ready to score (a fresh base every time, so
    one adapter's layers never stay on the model another is scored with)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base.to(device), str(adapter_dir))
    return model.eval()


def score(model: Any, sequences: Sequence[TokenSequence]) -> Score:
    """The summed cross-entropy of ``model``'s prediction of every output token (each token
    predicted from all the tokens before it), one sequence at a time."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for s in sequences:
            ids = torch.tensor([s.ids], device=device)
            first = max(len(s.prompt_ids), 1)  # the first token of a sequence has no prediction
            logits = model(input_ids=ids).logits[0, first - 1:-1].float()
            loss_sum += F.cross_entropy(logits, ids[0, first:], reduction="sum").item()
            tokens += len(s.ids) - first
    return Score(loss_sum, tokens)


def heldout_loss(workload: Workload, adapter_dir: str | Path, device: str = "cpu") -> float:
    """The adapter's token-weighted loss on ``workload``'s held-out sequences."""
    return score(load_adapted(workload.model_path, adapter_dir, device), workload.heldout).loss


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", type=Path, required=True, help="the driver's workload.json")
    p.add_argument("--result", type=Path, required=True, help="where to write the losses (JSON)")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("adapters", nargs="+", metavar="NAME=ADAPTER",
                   help="a contender's name and the folder its adapter was saved in")
    args = p.parse_args(argv)

    import torch

    from bench.quiet import quiet_libraries
    from tunelab.catalog import pick_device
    from tunelab.config import Settings

    quiet_libraries()
    torch.set_num_threads(args.threads)
    device = pick_device(Settings().device)
    workload = Workload.load(args.workload)
    losses = {}
    for item in args.adapters:
        name, _, folder = item.partition("=")
        losses[name] = heldout_loss(workload, folder, device)
    args.result.write_text(json.dumps({
        "losses": losses,
        "examples": len(workload.heldout),
        "output_tokens": workload.heldout_output_tokens,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
