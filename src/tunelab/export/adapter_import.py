"""Bringing in a PEFT LoRA adapter trained elsewhere on a catalog base model.

The adapter is checked before anything of it is loaded, and every problem is reported at once:
``adapter_config.json`` must describe a LoRA adapter for a causal language model, the weights
must be safetensors (a pickled ``adapter_model.bin`` can run code when loaded, so it is
refused), every tensor must be a ``lora_A``/``lora_B`` matrix of a linear layer that the base
model has, with that layer's shape, and the files are bounded in size. Shapes are compared
with the base model's safetensors headers, so no model needs to be in memory.

The result is a tuning output directory (``manifest.json`` + ``adapter/``) like the trainer's:
tunelab serves, evaluates, shares and exports it as it does its own tuned models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunelab import __version__
from tunelab.catalog.specs import BaseModelSpec
from tunelab.catalog.templates import template_for_vocab
from tunelab.errors import InvalidArgument
from tunelab.export.formats import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from tunelab.fsutil import atomic_dir
from tunelab.training.checkpoint import write_manifest

# A rank-8 adapter of the 135M default base is ~9 MB, rank 64 on a 270M model ~100 MB.
MAX_ADAPTER_BYTES = 512 * 2**20
MAX_CONFIG_BYTES = 64 * 2**10
MAX_HEADER_BYTES = 16 * 2**20  # the JSON header of a safetensors file
PICKLE_NAMES = ("adapter_model.bin", "pytorch_model.bin", "adapter_model.pt",
                "adapter_model.pth", "adapter_model.ckpt", "adapter_model.pkl")
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
_DTYPES = {"F32", "F16", "BF16"}
# Options whose weights or behaviour tunelab's serving does not reproduce.
_UNSUPPORTED = {
    "use_dora": "DoRA adapters (use_dora) are not supported; train a plain LoRA adapter",
    "modules_to_save": "modules_to_save (full copies of layers) are not supported; a LoRA "
                       "adapter with lora_A/lora_B weights only can be imported",
    "layer_replication": "layer_replication is not supported",
}


@dataclasses.dataclass(frozen=True)
class CheckedAdapter:
    """An adapter that passed every check: its config (as it will be written) and weights."""

    config: dict
    weights: Path
    sha256: str
    rank: int
    modules: int


def adapter_files(folder: Path) -> tuple[Path, Path]:
    """``adapter_config.json`` and ``adapter_model.safetensors`` in ``folder`` (a PEFT
    ``save_pretrained`` folder), refusing pickled weights with what to do instead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidArgument(f"{folder} is not a folder; give the folder that "
                              "save_pretrained wrote (adapter_config.json + "
                              "adapter_model.safetensors).")
    config, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    problems = []
    if not config.is_file():
        problems.append(f"there is no {ADAPTER_CONFIG} in {folder}")
    if not weights.is_file():
        pickled = [n for n in PICKLE_NAMES if (folder / n).exists()]
        if pickled:
            problems.append(pickle_refusal(pickled[0]))
        else:
            problems.append(f"there is no {ADAPTER_WEIGHTS} in {folder}")
    if problems:
        raise InvalidArgument("Cannot import the adapter: " + "; ".join(problems) + ".")
    return config, weights


def pickle_refusal(name: str) -> str:
    return (f"{name} holds pickled weights, which can run code when loaded, so tunelab does "
            "not read them; save the adapter as safetensors (model.save_pretrained(folder, "
            "safe_serialization=True), the default of recent peft versions) and import that")


def check_adapter(config_bytes: bytes, weights: Path, base_path: Path) -> CheckedAdapter:
    """Every problem of an adapter at once, else the checked adapter (see the module doc)."""
    problems: list[str] = []
    config = _parse_config(config_bytes, problems)
    size = weights.stat().st_size
    if size > MAX_ADAPTER_BYTES:
        problems.append(f"{ADAPTER_WEIGHTS} is {size / 2**20:.0f} MB; the limit is "
                        f"{MAX_ADAPTER_BYTES // 2**20} MB")
        raise InvalidArgument(_message(problems))
    header = safetensors_header(weights, problems)
    base = base_shapes(base_path)
    pairs: dict[str, dict[str, list[int]]] = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        m = _KEY.match(key)
        if m is None:
            problems.append(f"tensor '{key}' is not a LoRA weight "
                            "(base_model.model.<layer>.lora_A.weight or lora_B.weight)")
            continue
        if meta.get("dtype") not in _DTYPES:
            problems.append(f"tensor '{key}' has dtype {meta.get('dtype')}; use float32, "
                            "float16 or bfloat16")
        pairs.setdefault(m["module"], {})[m["ab"]] = list(meta.get("shape") or [])
    ranks = set()
    for module, ab in sorted(pairs.items()):
        target = base.get(f"{module}.weight")
        if target is None or len(target) != 2:
            problems.append(f"the base model has no linear layer '{module}' (is the adapter "
                            "for another base model?)")
            continue
        if set(ab) != {"A", "B"}:
            problems.append(f"layer '{module}' has lora_{'A' if 'A' in ab else 'B'} without "
                            f"lora_{'B' if 'A' in ab else 'A'}")
            continue
        out_f, in_f = target
        a, b = ab["A"], ab["B"]
        if len(a) != 2 or len(b) != 2 or a[1] != in_f or b[0] != out_f or a[0] != b[1]:
            problems.append(f"layer '{module}': lora_A is {a} and lora_B is {b}; for this base "
                            f"model's layer ({out_f}×{in_f}) they must be [r, {in_f}] and "
                            f"[{out_f}, r] (is the adapter for another base model?)")
            continue
        if not _targeted(module, config.get("target_modules")):
            problems.append(f"layer '{module}' has LoRA weights but is not in target_modules "
                            f"{config.get('target_modules')}, so peft would not apply them")
            continue
        ranks.add(a[0])
    if not pairs and not problems:
        problems.append(f"{ADAPTER_WEIGHTS} holds no LoRA weights")
    if problems:
        raise InvalidArgument(_message(problems))
    _load_check(weights)
    return CheckedAdapter(config=config, weights=weights, sha256=_sha256(weights),
                          rank=max(ranks), modules=len(pairs))


def import_adapter(
    checked: CheckedAdapter,
    dest: Path,
    *,
    spec: BaseModelSpec,
    base_path: Path,
    display_name: str | None = None,
    system_instruction: str | None = None,
) -> dict:
    """Write a checked adapter as the tuning output directory ``dest``; returns its
    manifest. The config names the catalog base model instead of a path or hub id."""
    from transformers import AutoTokenizer

    config = dict(checked.config)
    original_base = config.get("base_model_name_or_path")
    config["base_model_name_or_path"] = spec.id
    template = spec.template
    if template is None:
        template = template_for_vocab(AutoTokenizer.from_pretrained(base_path).get_vocab())

    def write_adapter(tmp: Path) -> None:
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
        shutil.copyfile(checked.weights, tmp / ADAPTER_WEIGHTS)

    dest = Path(dest)
    atomic_dir(dest / "adapter", write_adapter)
    targets = config.get("target_modules")
    manifest = {
        "tunelab_version": __version__,
        "status": "completed",
        "base_model": spec.id,
        "template": template.name,
        "display_name": display_name,
        "imported": {
            "sha256": checked.sha256,
            "base_model_name_or_path": original_base,
            "peft_version": config.get("peft_version"),
            "imported_at": datetime.now(UTC).isoformat(),
        },
        "hyperparameters": None,
        "lora": {"rank": checked.rank, "alpha": config.get("lora_alpha"),
                 "dropout": config.get("lora_dropout"),
                 "target_modules": sorted(targets) if isinstance(targets, list) else targets},
        "seed": None,
        "dataset_hash": None,
        "example_count": 0,
        "system_instruction": system_instruction,
        "total_steps": 0,
        "completed_steps": 0,
        "epochs_run": 0,
        "epoch_losses": [],
        "advice": None,
        "selected_epoch": None,
        "snapshots": [],
        "finished_at": datetime.now(UTC).isoformat(),
    }
    write_manifest(dest, manifest)
    return manifest


def safetensors_header(path: Path, problems: list[str]) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes), read without
    reading the tensors; a malformed file adds a problem and gives ``{}``."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            problems.append(f"{path.name} is not a safetensors file (too short)")
            return {}
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n + 8 > path.stat().st_size:
            problems.append(f"{path.name} is not a valid safetensors file (header of {n} bytes)")
            return {}
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        header = None
    if not isinstance(header, dict):
        problems.append(f"{path.name} is not a valid safetensors file (unreadable header)")
        return {}
    return header


def base_shapes(base_path: Path) -> dict[str, list[int]]:
    """Weight name → shape of a base model's Hugging Face folder, from safetensors headers."""
    shapes: dict[str, list[int]] = {}
    for f in sorted(Path(base_path).glob("*.safetensors")):
        for key, meta in safetensors_header(f, []).items():
            if key != "__metadata__":
                shapes[key] = list(meta.get("shape") or [])
    return shapes


def _parse_config(data: bytes, problems: list[str]) -> dict:
    if len(data) > MAX_CONFIG_BYTES:
        problems.append(f"{ADAPTER_CONFIG} is {len(data)} bytes; the limit is "
                        f"{MAX_CONFIG_BYTES}")
        return {}
    try:
        config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        problems.append(f"{ADAPTER_CONFIG} is not valid JSON ({e})")
        return {}
    if not isinstance(config, dict):
        problems.append(f"{ADAPTER_CONFIG} must hold a JSON object")
        return {}
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}; only LoRA adapters "
                        "(\"LORA\") can be imported")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        problems.append(f"task_type is {config.get('task_type')!r}; the adapter must be for "
                        "a causal language model (\"CAUSAL_LM\")")
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= 1024:
        problems.append(f"r (the LoRA rank) must be a whole number from 1 to 1024; got {r!r}")
    alpha = config.get("lora_alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        problems.append(f"lora_alpha must be a positive number; got {alpha!r}")
    for key, why in _UNSUPPORTED.items():
        if config.get(key):
            problems.append(why)
    return config


def _targeted(module: str, targets: Any) -> bool:
    """Whether peft applies weights of ``module`` for this ``target_modules`` (a list of
    layer names matched at the end of the path; a string is a pattern or "all-linear")."""
    if not isinstance(targets, list):
        return True
    return any(module == t or module.endswith(f".{t}") for t in targets)


def _load_check(weights: Path) -> None:
    """Open the file with safetensors itself (which checks offsets and sizes)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidArgument(
            f"Cannot import the adapter: {ADAPTER_WEIGHTS} is damaged ({e}).") from None


def _message(problems: list[str]) -> str:
    n = len(problems)
    return (f"Cannot import the adapter ({n} problem{'s' if n != 1 else ''}): "
            + "; ".join(problems) + ".")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()
