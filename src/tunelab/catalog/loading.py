"""Loading a base model (weights + tokenizer + template) onto a device."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.catalog.precision import Precision, choose, folder_shape, projection_shape
from tunelab.catalog.sources import bf16_copy
from tunelab.catalog.specs import BaseModelSpec
from tunelab.catalog.templates import Template, template_for_vocab
from tunelab.fsutil import file_lock

# The bf16 copy of model ``id`` is cached in ``models_dir/{id}.bf16`` (catalog ids and ids made
# from a path never hold a dot, so it is not another model's folder).
BF16_CACHE_SUFFIX = ".bf16"


@dataclass
class LoadedBase:
    """A base model ready to tune or serve."""

    spec: BaseModelSpec
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    template: Template
    device: str
    path: Path
    precision: Precision = Precision("fp32", "default")

    @property
    def context_length(self) -> int:
        return self.spec.context_length

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))


def pick_device(setting: str = "auto") -> str:
    import torch

    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def hub_kernels_off() -> dict[str, Any]:
    """``from_pretrained``'s argument that keeps transformers' "hub kernels" off, where the
    installed transformers has them (none where it has not).

    transformers 5 turns them on by default: whenever a model changes between inference and
    training mode it swaps the forward of the layers it has kernels for (RMS norms, rotary
    embeddings), for kernels fetched from the network on a GPU and for its own code elsewhere.
    That drops the forward tunelab gives each RMS norm for training (training/fused_norm.py:
    the trainer switches the model to training mode after fusing), so a step kept every norm's
    input again, ~135 KB a token on the default model, unnoticed; and tunelab runs offline."""
    from transformers import PreTrainedModel

    return {"use_kernels": False} if hasattr(PreTrainedModel, "set_use_kernels") else {}


def set_threads(threads: int | None) -> None:
    """Torch's thread count for this process (all cores when unset)."""
    import torch

    n = threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def materialize(spec: BaseModelSpec, models_dir: Path) -> Path:
    """The Hugging Face folder for ``spec``, converting/caching GGUF weights on first use
    (under a lock, so concurrent processes convert once)."""
    with file_lock(models_dir / f".{spec.id}.lock"):
        return spec.source.materialize(models_dir / spec.id)


def weight_bytes(folder: Path) -> int:
    """The bytes of a Hugging Face folder's safetensors weights (0 where there are none)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors") if f.is_file())


def _installed_folders(spec: BaseModelSpec, models_dir: Path) -> list[Path]:
    """Where ``spec``'s weights may be on this machine as a Hugging Face folder: a local
    folder, or a catalog model converted on an earlier use (nothing is converted here)."""
    folder = getattr(spec.source, "path", None)
    return [Path(c) for c in (folder, models_dir / spec.id) if c is not None]


def installed_weight_bytes(spec: BaseModelSpec, models_dir: Path) -> int | None:
    """The bytes of ``spec``'s weights where they are on this machine, else None."""
    return next((size for folder in _installed_folders(spec, models_dir)
                 if (size := weight_bytes(folder))), None)


def installed_shape(spec: BaseModelSpec, models_dir: Path) -> tuple[int, int] | None:
    """The projection shape of ``spec`` from its config where its weights are on this machine;
    None before its first use, so that listing models converts nothing."""
    return next((shape for folder in _installed_folders(spec, models_dir)
                 if (shape := folder_shape(folder)) is not None), None)


def load_base_model(
    spec: BaseModelSpec,
    models_dir: Path,
    device: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
) -> LoadedBase:
    """Load ``spec``'s weights with the frozen base held in the precision ``precision`` picks
    (``auto``: measured on this CPU, catalog/precision.py; the service passes its setting, whose
    default is ``auto``; a library caller gets fp32, the same numbers on every machine)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tunelab.catalog.wide_linear import (  # torch: imported when used
        store_linear_weights,
        widen_embedding_output,
        widen_linear_outputs,
    )

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    set_threads(threads)
    path = materialize(spec, models_dir)
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    chosen = choose(precision, device, models_dir, *projection_shape(config),
                    weight_bytes=weight_bytes(path))
    weights = path
    store = chosen.stored
    if chosen.name == "bf16" or store:
        # a bf16 copy, written once: loading fp32 weights into bf16 maps and converts the whole
        # fp32 file at every load (sources.bf16_copy)
        with file_lock(models_dir / f".{spec.id}.lock"):
            weights = bf16_copy(path, models_dir / f"{spec.id}{BF16_CACHE_SUFFIX}")
    model = AutoModelForCausalLM.from_pretrained(weights, config=config,
                                                 dtype=torch.bfloat16 if store else chosen.dtype,
                                                 **hub_kernels_off())
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if chosen.name == "bf16":
        # bf16 matmuls, fp32 results: an adapter's small updates are not rounded away; and the
        # embedding's output in fp32, as autocast keeps it (wide_linear.py)
        widen_linear_outputs(model)
        widen_embedding_output(model)
    elif store:
        # the linear layers' weights stay bf16, their products run in fp32 (each weight
        # widened just before it); the embedding, head and norms in fp32 (wide_linear.py)
        store_linear_weights(model, skip=(model.get_output_embeddings(),))
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    template = spec.template or template_for_vocab(tokenizer.get_vocab())
    if spec.template is None:
        ctx = getattr(model.config, "max_position_embeddings", None) or spec.context_length
        spec = dataclasses.replace(spec, context_length=min(int(ctx), 4096))
    torch.manual_seed(0)
    return LoadedBase(spec, model, tokenizer, template, device, path, chosen)
