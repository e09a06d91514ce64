"""Checkpoints and the output directory.

Layout of a tuning output directory::

    manifest.json                 base model, hyperparameters, dataset hash, snapshots, losses
    adapter/                      the adapter to serve (PEFT format, safetensors) + checksums.json
    checkpoints/epoch-N/          the adapter after epoch N, and the state to resume from:
        adapter_model.safetensors, adapter_config.json     (PEFT)
        state.safetensors         the state's tensors (optimizer moments, RNG states as uint8)
        state.json                the rest (epoch, step, snapshots, losses, fingerprint), with
                                  each tensor named by its key in state.safetensors
        checksums.json            SHA-256 and size of every file above, written last

Resume is state, not a flag: the state holds everything the loop needs to continue, and it is
written atomically (temp dir, fsync, rename), so a crash leaves either the old or the new
checkpoint, never half of one. Nothing loaded from these files can run code: tensors come
from safetensors and the rest from JSON; a pickle (the ``state.pt`` of earlier versions, or a
planted one) is never opened. A checkpoint whose files do not match their checksums (a disk
fault, a truncated copy) is skipped, and training resumes from the newest one that matches.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from tunelab.errors import DataLoss, InvalidArgument, NotFound
from tunelab.fsutil import atomic_dir, atomic_write_text, remove_leftovers

log = logging.getLogger("tunelab.training")

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
STATE_FILES = ("state.safetensors", "state.json")
CHECKSUMS = "checksums.json"
STATE_FORMAT = "tunelab-state/1"
CHECKSUMS_FORMAT = "tunelab-checksums/1"
# Bounds on the JSON read back (checked before reading): a manifest holds one snapshot per
# step (~150 bytes: 5,000 examples x 5 epochs / batch 4 = 6,250 steps, ~1 MB), the state the
# same plus a few numbers, so 64 MiB is far above any real run.
MAX_JSON_BYTES = 64 * 1024 * 1024
_RECOVER = (
    "Restore the data directory from a backup, or delete the model and tune it again."
)


def checkpoint_dir(output_dir: Path, epoch: int) -> Path:
    return output_dir / "checkpoints" / f"epoch-{epoch}"


def _epoch_dirs(output_dir: Path) -> list[int]:
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    epochs = []
    for d in root.iterdir():
        number = d.name.removeprefix("epoch-")
        if d.name.startswith("epoch-") and number.isdigit() and d.is_dir():
            epochs.append(int(number))
    return sorted(epochs)


def list_checkpoints(output_dir: Path) -> list[int]:
    """The epochs whose parameters can be served (their adapter files are there; whether
    they are intact is checked when one is chosen)."""
    return [
        e for e in _epoch_dirs(output_dir)
        if all((checkpoint_dir(output_dir, e) / name).is_file() for name in ADAPTER_FILES)
    ]


# ---- checksums --------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def seal(folder: Path) -> None:
    """Record the size and SHA-256 of every file in ``folder`` (called last, inside the
    temporary folder of an atomic write)."""
    files = {
        f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        for f in sorted(folder.iterdir()) if f.is_file() and f.name != CHECKSUMS
    }
    (folder / CHECKSUMS).write_text(json.dumps({"format": CHECKSUMS_FORMAT, "files": files}))


def _read_json(path: Path, what: str) -> Any:
    """A JSON file tunelab wrote, bounded before it is read; DataLoss if it is damaged."""
    if path.stat().st_size > MAX_JSON_BYTES:
        raise DataLoss(f"{what} is larger than any file tunelab writes; it is damaged.")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or absurdly nested
        raise DataLoss(f"{what} is damaged (it is not valid JSON).") from None


def damage(folder: Path, required: tuple[str, ...]) -> str | None:
    """Why ``folder``'s files are not the ones that were written (None: they are): a
    required file is missing, or a file's size or SHA-256 differs from ``checksums.json``."""
    sums = folder / CHECKSUMS
    if not sums.is_file():
        return f"{CHECKSUMS} is missing (the write did not finish)"
    try:
        doc = _read_json(sums, CHECKSUMS)
        files = doc["files"] if doc.get("format") == CHECKSUMS_FORMAT else None
        if not isinstance(files, dict):
            raise DataLoss(f"{CHECKSUMS} is not in a known format")
    except (DataLoss, AttributeError, KeyError, TypeError) as e:
        return e.message if isinstance(e, DataLoss) else f"{CHECKSUMS} is damaged"
    for name in required:
        if name not in files:
            return f"{name} is not listed in {CHECKSUMS}"
    for name, want in files.items():
        path = folder / Path(str(name)).name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(want, dict) or path.stat().st_size != want.get("bytes"):
            return f"{name} is {path.stat().st_size} bytes, not the {want.get('bytes')} written"
        if _sha256(path) != want.get("sha256"):
            return f"{name} does not match its checksum"
    return None


# ---- resume state: safetensors + JSON, never pickle -------------------------------------------
def _pack(obj: Any, tensors: dict) -> Any:
    """``obj`` as JSON, each tensor replaced by ``{"$tensor": key}`` (stored in ``tensors``).
    Dicts with non-string keys (an optimizer's state is keyed by parameter number) and
    tuples are spelled out, so what comes back is equal to what went in."""
    import torch

    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"$tensor": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _pack(v, tensors) for k, v in obj.items()}
        return {"$items": [[_pack(k, tensors), _pack(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"$tuple": [_pack(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_pack(v, tensors) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"a checkpoint state cannot hold a {type(obj).__name__}")


def _unpack(obj: Any, tensors: dict) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == "$tensor":
            if value not in tensors:
                raise DataLoss(f"state.json names a tensor '{value}' that is not stored")
            return tensors[value]
        if tag == "$tuple":
            return tuple(_unpack(v, tensors) for v in value)
        if tag == "$items":
            return {_unpack(k, tensors): _unpack(v, tensors) for k, v in value}
    return {k: _unpack(v, tensors) for k, v in obj.items()}


def capture_rng() -> dict:
    """The random number generators' states (uint8 tensors), saved with each checkpoint so a
    resumed run draws the same numbers (LoRA dropout) as an uninterrupted one."""
    import torch

    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict | None) -> None:
    import torch

    if not rng:
        return
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(output_dir: Path, epoch: int, peft_model: Any, state: dict) -> Path:
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        tensors: dict = {}
        doc = {"format": STATE_FORMAT, "state": _pack(state, tensors)}
        save_file(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(doc))
        seal(tmp)

    return atomic_dir(checkpoint_dir(output_dir, epoch), write)


_STATE_KEYS = ("fingerprint", "epochs_run", "step", "adapter", "optimizer", "snapshots",
               "epoch_losses")


def load_state(output_dir: Path, epoch: int) -> dict:
    """Epoch ``epoch``'s resume state, after checking its files against their checksums;
    DataLoss saying why when it cannot be used. Never unpickles anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = checkpoint_dir(output_dir, epoch)
    if (folder / "state.pt").exists() and not (folder / "state.json").exists():
        raise DataLoss(f"epoch {epoch}'s checkpoint is in the old pickle format (state.pt), "
                       "which tunelab never loads because unpickling can run code")
    why = damage(folder, ADAPTER_FILES + STATE_FILES)
    if why:
        raise DataLoss(f"epoch {epoch}'s checkpoint is damaged: {why}")
    doc = _read_json(folder / "state.json", "state.json")
    try:
        tensors = load_file(folder / "state.safetensors")
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise DataLoss("state.json is not in a known format")
        state = _unpack(doc["state"], tensors)
        if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
            raise DataLoss("state.json lacks part of the state")
        if state["epochs_run"] != epoch:
            raise DataLoss(f"state.json is the state after epoch {state['epochs_run']}")
    except (SafetensorError, ValueError, TypeError, KeyError, RecursionError) as e:
        raise DataLoss(f"epoch {epoch}'s checkpoint is damaged: {type(e).__name__}") from None
    except DataLoss as e:
        raise DataLoss(f"epoch {epoch}'s checkpoint is damaged: {e.message}") from None
    return state


def remove_partial_writes(output_dir: Path) -> None:
    """Remove the temporary folders and files of checkpoint, adapter, manifest and evaluation
    writes that a crash interrupted (a checkpoint's size each). Only while holding the run's
    lease."""
    freed = remove_leftovers(output_dir / "checkpoints", ["epoch"])
    freed += remove_leftovers(output_dir, ["adapter", "manifest.json", "evaluation.json"])
    if freed:
        log.info("removed %d bytes left by interrupted writes", freed)


def load_resume_state(output_dir: Path) -> dict | None:
    """The state to resume from: the newest checkpoint whose files match their checksums
    (a damaged or old-format one is skipped, with the reason logged), or None to start
    from the beginning. Interrupted writes are removed first."""
    remove_partial_writes(output_dir)
    for epoch in reversed(_epoch_dirs(output_dir)):
        try:
            return load_state(output_dir, epoch)
        except DataLoss as e:
            log.warning("not resuming from %s; trying an earlier one", e.message)
    return None


# ---- the served adapter and the manifest ------------------------------------------------------
def save_adapter(output_dir: Path, peft_model: Any) -> Path:
    """Write the adapter to serve, with its checksums."""

    def write(tmp: Path) -> None:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        seal(tmp)

    return atomic_dir(output_dir / "adapter", write)


def read_manifest(output_dir: Path) -> dict:
    path = Path(output_dir) / "manifest.json"
    if not path.exists():
        raise NotFound("This is not a tuning output directory (it holds no manifest.json).")
    manifest = _read_json(path, "The tuning run's manifest.json")
    if not isinstance(manifest, dict):
        raise DataLoss("The tuning run's manifest.json is damaged (it is not a JSON object).")
    return manifest


def write_manifest(output_dir: Path, manifest: dict) -> None:
    atomic_write_text(Path(output_dir) / "manifest.json", json.dumps(manifest, indent=2))


def adapter_path(output_dir: Path, epoch: int | None = None) -> Path:
    """The adapter to serve: the selected one, or a given epoch's checkpoint."""
    output_dir = Path(output_dir)
    if epoch is None:
        path = output_dir / "adapter"
        if not (path / "adapter_config.json").exists():
            raise NotFound("The tuning run holds no adapter yet (is the tuning still running?).")
        return path
    path = checkpoint_dir(output_dir, epoch)
    if not (path / "adapter_config.json").exists():
        have = list_checkpoints(output_dir)
        raise InvalidArgument(
            f"There is no checkpoint for epoch {epoch}; "
            f"available epochs: {', '.join(map(str, have)) or 'none'}."
        )
    return path


def adapter_damage(path: Path) -> str | None:
    """Why the adapter folder ``path`` cannot be served (None: it can). Checked against its
    checksums when it has them (adapters written before checksums existed: the config must
    be JSON and the weights a complete safetensors file). Remembered per version of the
    files, so a served adapter is hashed once, not on every request."""
    version = []
    for name in (*ADAPTER_FILES, CHECKSUMS):
        with contextlib.suppress(OSError):
            st = (path / name).stat()
            version.append((name, st.st_size, st.st_mtime_ns))
    return _adapter_damage(str(path), tuple(version))


@functools.lru_cache(maxsize=256)
def _adapter_damage(path: str, _version: tuple) -> str | None:
    from safetensors import SafetensorError, safe_open

    folder = Path(path)
    if (folder / CHECKSUMS).exists():
        return damage(folder, ADAPTER_FILES)
    for name in ADAPTER_FILES:
        if not (folder / name).is_file():
            return f"{name} is missing"
    try:
        _read_json(folder / "adapter_config.json", "adapter_config.json")
        with safe_open(folder / "adapter_model.safetensors", "pt"):
            pass  # opening checks the header and that every tensor's bytes are there
    except DataLoss as e:
        return e.message
    except (SafetensorError, OSError):
        return "adapter_model.safetensors is truncated or not a safetensors file"
    return None


def serve_adapter(output_dir: Path, src: Path) -> None:
    """Make the adapter in ``src`` (a checkpoint's, a refit's) the one the run serves: its
    files copied and sealed with checksums, atomically."""

    def write(tmp: Path) -> None:
        for name in ADAPTER_FILES:
            shutil.copy2(src / name, tmp / name)
        seal(tmp)

    atomic_dir(Path(output_dir) / "adapter", write)


def select_epoch(output_dir: Path, epoch: int) -> dict:
    """Serve epoch ``epoch``'s checkpoint from now on, without re-tuning (after checking that
    its adapter files are the ones written)."""
    output_dir = Path(output_dir)
    src = adapter_path(output_dir, epoch)
    why = adapter_damage(src)
    if why:
        others = [e for e in list_checkpoints(output_dir)
                  if e != epoch and adapter_damage(checkpoint_dir(output_dir, e)) is None]
        raise DataLoss(
            f"Epoch {epoch}'s checkpoint is damaged ({why}), so it cannot be served. "
            + (f"Choose another epoch: {', '.join(map(str, others))}."
               if others else _RECOVER))
    manifest = read_manifest(output_dir)
    serve_adapter(output_dir, src)
    manifest["selected_epoch"] = epoch
    write_manifest(output_dir, manifest)
    return manifest
