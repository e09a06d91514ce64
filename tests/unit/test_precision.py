"""The frozen base's precision: chosen by measurement on a CPU, honoured when set, cached."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.catalog import get_base_model, load_base_model, precision
from tunelab.catalog.precision import CACHE_FILE, Precision, choose, cpu_flags, probe
from tunelab.config import Settings
from tunelab.data import Example
from tunelab.training.hyperparameters import Hyperparameters
from tunelab.training.loop import train


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_an_explicit_setting_is_honoured_without_a_probe(setting, tmp_path):
    chosen = choose(setting, "cpu", tmp_path, 64, 256)
    assert chosen.name == setting
    assert "TUNELAB_PRECISION" in chosen.reason
    assert not (tmp_path / CACHE_FILE).exists()  # nothing measured, nothing cached


def test_auto_measures_once_and_caches_per_machine(tmp_path, monkeypatch):
    # the load average is the machine's, not the test's: take it as quiet here
    monkeypatch.setattr(precision, "machine_busy", lambda: False)
    first = choose("auto", "cpu", tmp_path, 64, 256)
    assert first.name in ("fp32", "bf16")
    assert first.fp32_ms is not None and first.bf16_ms is not None
    cached = json.loads((tmp_path / CACHE_FILE).read_text())
    (key,) = cached
    assert "64x256" in key and torch.__version__ in key
    # The cache is what a later process reads: change it, and the answer follows it.
    other = "fp32" if first.name == "bf16" else "bf16"
    cached[key] = Precision(other, "cached answer", 1.0, 2.0).to_dict()
    (tmp_path / CACHE_FILE).write_text(json.dumps(cached))
    assert choose("auto", "cpu", tmp_path, 64, 256).name == other


def test_a_probe_on_a_busy_machine_is_used_but_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "machine_busy", lambda: True)
    assert choose("auto", "cpu", tmp_path, 64, 256).name in ("fp32", "bf16")
    assert not (tmp_path / CACHE_FILE).exists()


def test_a_damaged_cache_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "machine_busy", lambda: False)
    (tmp_path / CACHE_FILE).write_text("{not json")
    assert choose("auto", "cpu", tmp_path, 64, 256).name in ("fp32", "bf16")
    assert isinstance(json.loads((tmp_path / CACHE_FILE).read_text()), dict)


def test_probe_reports_both_timings_and_a_reason():
    p = probe(64, 256)
    assert p.fp32_ms > 0 and p.bf16_ms > 0
    assert ("clearly" not in p.reason) == (p.name == "bf16")


def test_cpu_flags_are_the_ones_that_decide_bf16():
    assert set(cpu_flags()) <= {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"}


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="auto, fp32, bf16, bf16-stored"):
        choose("fp16", "cpu", None, 64, 256)
    with pytest.raises(ValueError):
        Settings(precision="fp16")


def test_a_bf16_base_trains_fp32_lora_weights(models_dir, tmp_path):
    """Only the frozen base is bf16: the adapter (and so its optimizer state) stays fp32, the
    loss is finite and falls, and the loaded base serves fp32-free afterwards."""
    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 2, "bf16")
    assert base.precision.name == "bf16"
    assert next(base.model.parameters()).dtype == torch.bfloat16
    examples = [Example(f"say {i}", "yes" if i % 2 else "no") for i in range(24)]
    result = train(base, examples, Hyperparameters(epoch_count=3, batch_size=4,
                                                   learning_rate=5e-3), tmp_path / "out")
    losses = [s.mean_loss for s in result.snapshots]
    assert all(loss == loss and loss < 100 for loss in losses)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert result.manifest["precision"]["name"] == "bf16"  # recorded with the run
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
    assert next(base.model.parameters()).dtype == torch.bfloat16


def test_a_config_gives_the_shape_a_text_part_included(tmp_path):
    assert precision.projection_shape({"hidden_size": 576, "intermediate_size": 1536}) == \
        (576, 1536)
    nested = {"text_config": {"hidden_size": 640, "intermediate_size": 2048}}
    assert precision.projection_shape(nested) == (640, 2048)
    (tmp_path / "config.json").write_text(json.dumps(nested))
    assert precision.folder_shape(tmp_path) == (640, 2048)
    (tmp_path / "config.json").write_text("{not json")
    assert precision.folder_shape(tmp_path) is None
    assert precision.folder_shape(tmp_path / "missing") is None


def test_tunelab_models_probes_each_model_with_its_own_shape(tmp_path, tiny_base):
    """`tunelab models` times each installed model's own projection (the tiny model's 64x128
    here, from its config), and converts nothing to learn the shape of one not used yet."""
    import os
    import subprocess
    import sys

    shape = precision.folder_shape(tiny_base.path)
    assert shape == (64, 128)
    env = {**os.environ, "TUNELAB_HOME": str(tmp_path / "home"), "TUNELAB_PRECISION": "auto",
           "TUNELAB_EXTRA_MODELS": json.dumps({"tiny": str(tiny_base.path)}), "COLUMNS": "250"}
    r = subprocess.run([sys.executable, "-m", "tunelab.cli", "models"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines()
            if line.count("│") > 3}
    assert "(64x128" in rows["tiny"]
    assert "chosen on first use" in rows["smollm2-135m-instruct"]
    assert not (tmp_path / "home" / "models" / "smollm2-135m-instruct").exists()
    cache = tmp_path / "home" / "models" / CACHE_FILE
    if cache.exists():  # not cached when the machine was busy
        keys = json.loads(cache.read_text())
        assert keys and all(k.endswith("64x128") for k in keys), keys


def test_auto_keeps_weights_in_bf16_where_bf16_is_slower_and_memory_short(tmp_path,
                                                                           monkeypatch):
    """Where the probe finds bf16 products slower and the base's fp32 weights would take more
    than an eighth of the memory available, the products run in fp32 on weights kept in bf16;
    with room, or where bf16 products are faster, not. The cache holds the probe's answer
    alone (memory changes; the CPU does not)."""
    monkeypatch.setattr(precision, "machine_busy", lambda: False)
    monkeypatch.setattr(precision, "available_memory", lambda: 4 * 2**30)
    for measured, size, stored in (("fp32", 600 * 2**20, True), ("fp32", 400 * 2**20, False),
                                   ("fp32", None, False), ("bf16", 600 * 2**20, False)):
        monkeypatch.setattr(precision, "probe", lambda h, i, m=measured: Precision(m, "probed"))
        cache = tmp_path / f"{measured}-{size}"
        chosen = choose("auto", "cpu", cache, 64, 256, weight_bytes=size)
        assert chosen.name == measured and chosen.stored is stored
        assert ("kept in bf16" in chosen.reason) is stored
        assert ("4.0 GB available" in chosen.reason) is stored
        cached = json.loads((cache / CACHE_FILE).read_text())
        assert [entry["storage"] for entry in cached.values()] == [None]
        again = choose("auto", "cpu", cache, 64, 256, weight_bytes=size)  # from the cache
        assert again == chosen
    assert not choose("fp32", "cpu", None, 64, 256, weight_bytes=2**40).stored  # as set
    explicit = choose("bf16-stored", "cpu", None, 64, 256)
    assert explicit.name == "fp32" and explicit.stored
    assert not choose("bf16-stored", "cuda", None, 64, 256).stored  # a CPU's way only
    assert Settings(precision="bf16-stored").precision == "bf16-stored"


def test_a_stored_base_trains_and_records_how_its_weights_were_kept(models_dir, tmp_path):
    """Weights kept in bf16, products in fp32: the adapter is fp32, the loss falls, the
    manifest says how the base was held, and the base's weights are still bf16 afterwards."""
    from tunelab.catalog.wide_linear import StoredLinear

    base = load_base_model(get_base_model("tiny-random"), models_dir, "cpu", 2, "bf16-stored")
    stored = [m for m in base.model.modules() if type(m) is StoredLinear]
    assert stored and all(m.weight.dtype == torch.bfloat16 for m in stored)
    examples = [Example(f"say {i}", "yes" if i % 2 else "no") for i in range(24)]
    result = train(base, examples, Hyperparameters(epoch_count=3, batch_size=4,
                                                   learning_rate=5e-3), tmp_path / "out")
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert result.manifest["precision"]["name"] == "fp32"
    assert result.manifest["precision"]["storage"] == "bf16"
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
    assert all(type(m) is StoredLinear and m.weight.dtype == torch.bfloat16 for m in stored)
