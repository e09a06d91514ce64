"""Export a tuned model (a tuning output directory) as a PEFT adapter folder, merged full
weights, or one GGUF file.

Every format carries the tokenizer, a chat template that renders prompts exactly as tunelab
does (with the tuned-in system prompt as its default), a model card (README.md) and
``tunelab.json`` (the run's manifest without the per-step snapshots). Folders and files
appear atomically: an interrupted export leaves nothing half-written at ``dest``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.catalog.specs import BaseModelSpec
from tunelab.catalog.templates import Template, template_for_vocab
from tunelab.errors import InvalidArgument
from tunelab.export.card import model_card
from tunelab.export.chat_template import jinja_template
from tunelab.fsutil import atomic_dir
from tunelab.training.checkpoint import adapter_path, read_manifest

FORMATS = ("peft", "merged", "gguf")
QUANTIZATIONS = ("f16", "q8_0")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_options(fmt: str, quantization: str = "f16", epoch: int | None = None) -> None:
    """Every problem with the export options at once, before any work is done."""
    problems = []
    if fmt not in FORMATS:
        problems.append(f"format must be one of {', '.join(FORMATS)}; got '{fmt}'")
    if quantization not in QUANTIZATIONS:
        problems.append(
            f"quantization must be one of {', '.join(QUANTIZATIONS)}; got '{quantization}'")
    elif quantization != "f16" and fmt != "gguf":
        problems.append("quantization applies to the gguf format only")
    if epoch is not None and epoch < 1:
        problems.append(f"epoch must be 1 or more; got {epoch}")
    if problems:
        raise InvalidArgument("Cannot export: " + "; ".join(problems) + ".")


def export_model(
    output_dir: Path,
    fmt: str,
    dest: Path,
    *,
    spec: BaseModelSpec,
    base_path: Path,
    epoch: int | None = None,
    quantization: str = "f16",
    name: str | None = None,
) -> Path:
    """Write ``output_dir``'s served adapter (or epoch ``epoch``'s checkpoint) to ``dest`` in
    ``fmt``. ``base_path`` is the base model's Hugging Face folder (``catalog.materialize``).
    Returns ``dest``."""
    from transformers import AutoTokenizer

    check_options(fmt, quantization, epoch)
    output_dir, dest = Path(output_dir), Path(dest)
    manifest = read_manifest(output_dir)
    adapter = adapter_path(output_dir, epoch)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    template = spec.template or template_for_vocab(tokenizer.get_vocab())
    tokenizer.chat_template = jinja_template(template, manifest.get("system_instruction"))
    label = name or manifest.get("model_id") or output_dir.name
    info = {**{k: v for k, v in manifest.items() if k != "snapshots"},
            "export": {"format": fmt, "epoch": epoch or manifest.get("selected_epoch"),
                       "refit": not epoch and bool((manifest.get("refit") or {}).get("served")),
                       "quantization": quantization if fmt == "gguf" else None,
                       "name": label}}
    card = model_card({**manifest, "display_name": label}, fmt, epoch,
                      file=dest.name if fmt == "gguf" else "")

    def extras(folder: Path) -> None:
        tokenizer.save_pretrained(folder)
        (folder / "README.md").write_text(card)
        (folder / "tunelab.json").write_text(json.dumps(info, indent=2))

    if fmt == "peft":
        def write_peft(tmp: Path) -> None:
            config = json.loads((adapter / ADAPTER_CONFIG).read_text())
            # The trainer recorded where the base model lay on its machine; name it instead.
            config["base_model_name_or_path"] = spec.id
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
            shutil.copyfile(adapter / ADAPTER_WEIGHTS, tmp / ADAPTER_WEIGHTS)
            extras(tmp)

        return atomic_dir(dest, write_peft)

    model = merged_model(base_path, adapter)
    if fmt == "merged":
        end_ids = stop_token_ids(tokenizer, template)
        model.generation_config.eos_token_id = end_ids if len(end_ids) > 1 else end_ids[0]
        model.generation_config.pad_token_id = tokenizer.pad_token_id

        def write_merged(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            extras(tmp)

        return atomic_dir(dest, write_merged)

    from tunelab.export.gguf_file import write_gguf

    return _atomic_file(dest, lambda tmp: write_gguf(
        model, tokenizer, tokenizer.chat_template, tmp, quantization,
        base_gguf=base_gguf_file(base_path), name=label, description=card))


def merged_model(base_path: Path, adapter: Path) -> Any:
    """A fresh fp32 copy of the base model with the adapter merged into its weights (the
    serving copy of the base is never touched)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.eval()
    return merged


def stop_token_ids(tokenizer: Any, template: Template) -> list[int]:
    """The tokens that end an answer, as tunelab's generator stops on them: the tokenizer's
    end-of-sequence token and the template's end-of-turn token."""
    ids = {tokenizer.eos_token_id}
    end = tokenizer(template.end, add_special_tokens=False)["input_ids"]
    if len(end) == 1:
        ids.add(end[0])
    ids.discard(None)
    return sorted(ids)


def base_gguf_file(base_path: Path) -> Path | None:
    """The GGUF file a base model was converted from (recorded by catalog/sources.py in the
    cache marker), whose tokenizer metadata an exported GGUF reuses; None for other bases."""
    try:
        source = json.loads((Path(base_path) / "tunelab-cache.json").read_text()).get("source")
    except (OSError, ValueError):
        return None
    if isinstance(source, str) and source.lower().endswith(".gguf") and Path(source).is_file():
        return Path(source)
    return None


def _atomic_file(dest: Path, write: Callable[[Path], object]) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
