"""Checkpoints and the output directory.

Layout of a tuning output directory::

    manifest.json                 base model, hyperparameters, dataset hash, snapshots, losses
    adapter/                      the adapter to serve (PEFT format, safetensors)
    checkpoints/epoch-N/          adapter after epoch N + state.pt (optimizer, step, snapshots)

Resume is state, not a flag: ``state.pt`` holds everything the loop needs to continue, and it
is written atomically (temp dir, fsync, rename), so a crash leaves either the old or the new
checkpoint, never half of one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tunelab.errors import InvalidArgument, NotFound
from tunelab.fsutil import atomic_dir, atomic_write_text

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def checkpoint_dir(output_dir: Path, epoch: int) -> Path:
    return output_dir / "checkpoints" / f"epoch-{epoch}"


def list_checkpoints(output_dir: Path) -> list[int]:
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    epochs = []
    for d in root.iterdir():
        if d.name.startswith("epoch-") and (d / "state.pt").exists():
            try:
                epochs.append(int(d.name.removeprefix("epoch-")))
            except ValueError:
                continue
    return sorted(epochs)


def save_checkpoint(output_dir: Path, epoch: int, peft_model: Any, state: dict) -> Path:
    import torch

    def write(tmp: Path) -> None:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        torch.save(state, tmp / "state.pt")

    return atomic_dir(checkpoint_dir(output_dir, epoch), write)


def load_state(output_dir: Path, epoch: int) -> dict:
    import torch

    return torch.load(checkpoint_dir(output_dir, epoch) / "state.pt", weights_only=False)


def read_manifest(output_dir: Path) -> dict:
    path = Path(output_dir) / "manifest.json"
    if not path.exists():
        raise NotFound(f"{output_dir} is not a tuning output directory (no manifest.json in it).")
    return json.loads(path.read_text())


def write_manifest(output_dir: Path, manifest: dict) -> None:
    atomic_write_text(Path(output_dir) / "manifest.json", json.dumps(manifest, indent=2))


def adapter_path(output_dir: Path, epoch: int | None = None) -> Path:
    """The adapter to serve: the selected one, or a given epoch's checkpoint."""
    output_dir = Path(output_dir)
    if epoch is None:
        path = output_dir / "adapter"
        if not (path / "adapter_config.json").exists():
            raise NotFound(f"{output_dir} holds no adapter yet (is the tuning still running?).")
        return path
    path = checkpoint_dir(output_dir, epoch)
    if not (path / "adapter_config.json").exists():
        have = list_checkpoints(output_dir)
        raise InvalidArgument(
            f"There is no checkpoint for epoch {epoch} in {output_dir}; "
            f"available epochs: {', '.join(map(str, have)) or 'none'}."
        )
    return path


def select_epoch(output_dir: Path, epoch: int) -> dict:
    """Serve epoch ``epoch``'s checkpoint from now on, without re-tuning."""
    output_dir = Path(output_dir)
    src = adapter_path(output_dir, epoch)
    manifest = read_manifest(output_dir)

    def write(tmp: Path) -> None:
        for name in ADAPTER_FILES:
            shutil.copy2(src / name, tmp / name)

    atomic_dir(output_dir / "adapter", write)
    manifest["selected_epoch"] = epoch
    write_manifest(output_dir, manifest)
    return manifest
