"""Export (peft, merged, gguf) and import of LoRA adapters, on the tiny model: each export is
loaded by its own library and answers with the same greedy tokens as tunelab."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from tunelab.catalog import get_base_model
from tunelab.catalog.templates import CHATML, GEMMA, PLAIN
from tunelab.data import Example
from tunelab.errors import InvalidArgument
from tunelab.export import export_model
from tunelab.export.adapter_import import adapter_files, check_adapter, import_adapter
from tunelab.export.chat_template import jinja_template
from tunelab.export.gguf_file import unpermute_qk
from tunelab.inference import GenerationConfig, Generator

PROMPTS = ["number 3", "number 40", "hello there"]
SYSTEM = "Answer with the parity."
MAX_NEW = 24


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_base):
    """A short tuning run whose answers are several tokens long and depend on the adapter;
    every example shares a system prompt, which the exports must make their default."""
    from tunelab.training import Hyperparameters, train

    examples = [Example(f"number {i}", f"{i} is {'even' if i % 2 == 0 else 'odd'}, next {i + 1}",
                        SYSTEM) for i in range(24)]
    out = tmp_path_factory.mktemp("run")
    train(tiny_base, examples, Hyperparameters(2, 4, 0.01), out, seed=0)
    return out


@pytest.fixture(scope="module")
def tunelab_answers(run, tiny_serving_base):
    gen = Generator(tiny_serving_base)
    cfg = GenerationConfig(max_output_tokens=MAX_NEW)
    tuned = [gen.generate([("user", p)], None, cfg, run / "adapter").text for p in PROMPTS]
    base = [gen.generate([("user", p)], None, cfg).text for p in PROMPTS]
    assert tuned != base and len(set(tuned)) > 1 and all(len(t) > 3 for t in tuned)
    return tuned


def hf_answers(model, tokenizer) -> list[str]:
    """Greedy answers through transformers' own path: the exported chat template (no system
    message: the tuned-in one is its default) and ``generate``."""
    import torch

    out = []
    for p in PROMPTS:
        enc = tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                            add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=MAX_NEW, do_sample=False)
        out.append(tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def export(run, tiny_base, fmt, dest, **kw):
    return export_model(run, fmt, dest, spec=get_base_model("tiny-random"),
                        base_path=tiny_base.path, **kw)


@pytest.mark.parametrize("template", [CHATML, GEMMA, PLAIN], ids=lambda t: t.name)
@pytest.mark.parametrize("default", [None, "Be brief."])
def test_chat_template_renders_like_tunelab(tiny_base, template, default):
    tok = tiny_base.tokenizer
    tok_template = jinja_template(template, default)
    convo = [("user", "hi"), ("model", "hello"), ("user", "2 + 2?")]
    messages = [{"role": "user" if r == "user" else "assistant", "content": t} for r, t in convo]
    bos = tok.bos_token if template.bos else ""
    for system in (None, "You are terse."):
        msgs = ([{"role": "system", "content": system}] if system else []) + messages
        got = tok.apply_chat_template(msgs, chat_template=tok_template, tokenize=False,
                                      add_generation_prompt=True)
        want = template.render(convo, system if system else default)
        assert got == bos + want


def test_peft_export_loads_in_peft_and_answers_like_tunelab(run, tiny_base, tunelab_answers,
                                                           tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = export(run, tiny_base, "peft", tmp_path / "peft")
    base = AutoModelForCausalLM.from_pretrained(tiny_base.path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, dest)
    assert hf_answers(model, AutoTokenizer.from_pretrained(dest)) == tunelab_answers
    config = json.loads((dest / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-random"  # not a path of this machine
    manifest = json.loads((run / "manifest.json").read_text())
    card = (dest / "README.md").read_text()
    assert manifest["dataset_hash"] in card and '"epoch_count": 2' in card
    assert "| epoch | 2 |" in card
    info = json.loads((dest / "tunelab.json").read_text())
    assert info["export"]["format"] == "peft" and "snapshots" not in info


def test_merged_export_loads_in_transformers_and_answers_like_tunelab(
        run, tiny_base, tunelab_answers, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = export(run, tiny_base, "merged", tmp_path / "merged")
    assert not (dest / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(dest)
    assert next(model.parameters()).dtype.is_floating_point
    assert hf_answers(model, AutoTokenizer.from_pretrained(dest)) == tunelab_answers


@pytest.mark.parametrize("quantization", ["f16", "q8_0"])
def test_gguf_export_matches_the_merged_weights(run, tiny_base, tmp_path, quantization):
    """llama-cpp-python has no prebuilt wheel for this platform (pip finds only sources, and
    compiling llama.cpp takes many minutes), so the file is checked by reading it back with
    the gguf package's GGUFReader: names, shapes and values against the merged weights, in
    llama.cpp's layout; and loaded by transformers' GGUF reader, an implementation of
    llama.cpp's conventions independent of ours, which must answer like tunelab (f16)."""
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM

    from tunelab.export.formats import merged_model

    path = export(run, tiny_base, "gguf", tmp_path / "m.gguf", quantization=quantization)
    merged = merged_model(tiny_base.path, run / "adapter")
    cfg = merged.config
    reader = gguf.GGUFReader(path)
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["tokenizer.chat_template"].contents() == jinja_template(CHATML, SYSTEM)
    assert len(fields["tokenizer.ggml.tokens"].data) == cfg.vocab_size
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    want = {names.get_name(k, try_suffixes=(".weight",)): v.numpy()
            for k, v in merged.state_dict().items() if k != "lm_head.weight"}
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(want)
    for name, t in tensors.items():
        data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want[name].shape)
        if name.endswith("attn_q.weight"):
            data = unpermute_qk(data, cfg.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            data = unpermute_qk(data, cfg.num_key_value_heads)
        expected = want[name]
        if expected.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(data, expected)
        else:
            kind = {"f16": gguf.GGMLQuantizationType.F16,
                    "q8_0": gguf.GGMLQuantizationType.Q8_0}[quantization]
            assert t.tensor_type == kind
            # f16 keeps ~3 significant digits; q8_0 a 1/127 step of each 32-value block's max
            tol = 1e-3 if quantization == "f16" else np.abs(expected).max() / 127
            np.testing.assert_allclose(data, expected, atol=tol, rtol=1e-3)
    if quantization == "f16":
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
        sd = merged.state_dict()
        for k, v in loaded.state_dict().items():
            assert (v - sd[k]).abs().max() < 2e-3, k


def test_an_epoch_checkpoint_is_exported_and_a_missing_one_is_named(run, tiny_base, tmp_path):
    dest = export(run, tiny_base, "peft", tmp_path / "e1", epoch=1)
    ckpt = run / "checkpoints" / "epoch-1" / "adapter_model.safetensors"
    assert (dest / "adapter_model.safetensors").read_bytes() == ckpt.read_bytes()
    assert json.loads((dest / "tunelab.json").read_text())["export"]["epoch"] == 1
    with pytest.raises(InvalidArgument, match="available epochs: 1, 2"):
        export(run, tiny_base, "peft", tmp_path / "e9", epoch=9)
    with pytest.raises(InvalidArgument, match="format must be one of peft, merged, gguf.*"
                                               "quantization applies to the gguf format only"):
        export(run, tiny_base, "onnx", tmp_path / "x", quantization="q8_0")
    assert not (tmp_path / "e9").exists() and not (tmp_path / "x").exists()


def test_import_round_trip_answers_the_same(run, tiny_base, tiny_serving_base, tunelab_answers,
                                           tmp_path):
    """export peft → import → the imported model answers exactly as the original."""
    exported = export(run, tiny_base, "peft", tmp_path / "peft")
    config, weights = adapter_files(exported)
    checked = check_adapter(config.read_bytes(), weights, tiny_base.path)
    spec = get_base_model("tiny-random")
    manifest = import_adapter(checked, tmp_path / "imported", spec=spec,
                              base_path=tiny_base.path, display_name="round trip",
                              system_instruction=SYSTEM)
    assert manifest["imported"]["sha256"] == checked.sha256 and checked.rank == 8
    gen = Generator(tiny_serving_base)
    cfg = GenerationConfig(max_output_tokens=MAX_NEW)
    answers = [gen.generate([("user", p)], None, cfg, tmp_path / "imported" / "adapter").text
               for p in PROMPTS]
    assert answers == tunelab_answers
    again = export_model(tmp_path / "imported", "merged", tmp_path / "again", spec=spec,
                         base_path=tiny_base.path)
    assert "imported PEFT adapter" in (again / "README.md").read_text()


def _adapter(folder: Path, tensors: dict, config: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
           "target_modules": ["q_proj", "v_proj"]} | (config or {})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    if tensors:
        save_file(tensors, folder / "adapter_model.safetensors")
    return folder


def _lora(module: str, r: int = 2, out_f: int = 64, in_f: int = 64) -> dict:
    import torch

    p = f"base_model.model.{module}"
    return {f"{p}.lora_A.weight": torch.zeros(r, in_f), f"{p}.lora_B.weight": torch.zeros(out_f, r)}


Q0 = "model.layers.0.self_attn.q_proj"
BAD_ADAPTERS = {
    # case: (tensors, config changes, words the message must hold)
    "not LoRA": (_lora(Q0), {"peft_type": "PREFIX_TUNING"}, ["only LoRA adapters"]),
    "not causal LM": (_lora(Q0), {"task_type": "SEQ_CLS"}, ["causal language model"]),
    "DoRA": (_lora(Q0), {"use_dora": True}, ["DoRA"]),
    "other base model": (_lora(Q0, out_f=576, in_f=576), {},
                         ["must be [r, 64] and [64, r]", "another base model"]),
    "unknown layer": (_lora("model.layers.7.self_attn.q_proj"), {},
                      ["no linear layer 'model.layers.7.self_attn.q_proj'"]),
    "A without B": ({f"base_model.model.{Q0}.lora_A.weight": _lora(Q0)[
        f"base_model.model.{Q0}.lora_A.weight"]}, {}, ["lora_A without lora_B"]),
    "not a LoRA tensor": (_lora(Q0) | {"base_model.model.lm_head.weight": _lora(Q0)[
        f"base_model.model.{Q0}.lora_B.weight"]}, {}, ["'base_model.model.lm_head.weight'"]),
    "not targeted": (_lora("model.layers.0.mlp.up_proj", out_f=128), {},
                     ["not in target_modules"]),
    "every problem at once": (_lora(Q0, out_f=576, in_f=576), {"peft_type": "IA3", "r": 0},
                              ["3 problems", "only LoRA", "r (the LoRA rank)", "[r, 64]"]),
}


@pytest.mark.parametrize("case", list(BAD_ADAPTERS))
def test_import_refuses_bad_adapters_saying_why(case, tiny_base, tmp_path):
    tensors, config, words = BAD_ADAPTERS[case]
    folder = _adapter(tmp_path / "a", tensors, config)
    cfg, weights = adapter_files(folder)
    with pytest.raises(InvalidArgument) as e:
        check_adapter(cfg.read_bytes(), weights, tiny_base.path)
    for w in words:
        assert w in e.value.message
    assert str(tmp_path) not in e.value.message


def test_import_accepts_a_minimal_adapter_of_the_base(tiny_base, tmp_path):
    folder = _adapter(tmp_path / "a", _lora(Q0) | _lora("model.layers.1.self_attn.v_proj"))
    checked = check_adapter(*[p.read_bytes() if p.suffix == ".json" else p
                              for p in adapter_files(folder)], tiny_base.path)
    assert (checked.rank, checked.modules) == (2, 2)


def test_import_never_reads_pickled_weights(tiny_base, tmp_path):
    folder = _adapter(tmp_path / "a", {})
    # a pickle that would run code when loaded: it must never be opened
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'touch pwned'\ntR.")
    with pytest.raises(InvalidArgument, match="pickled weights, which can run code"):
        adapter_files(folder)
    assert not Path("pwned").exists()


def test_import_bounds_what_it_reads(tiny_base, tmp_path, monkeypatch):
    from tunelab.export import adapter_import

    folder = _adapter(tmp_path / "a", _lora(Q0))
    cfg, weights = adapter_files(folder)
    monkeypatch.setattr(adapter_import, "MAX_ADAPTER_BYTES", weights.stat().st_size - 1)
    with pytest.raises(InvalidArgument, match="the limit is"):
        check_adapter(cfg.read_bytes(), weights, tiny_base.path)
    monkeypatch.undo()
    with pytest.raises(InvalidArgument, match="adapter_config.json is 70000 bytes"):
        check_adapter(b" " * 70000, weights, tiny_base.path)
    # a header that claims to be huge is not read
    weights.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(InvalidArgument, match="not a valid safetensors file"):
        check_adapter(cfg.read_bytes(), weights, tiny_base.path)
    shutil.rmtree(folder)


# -- archives: what a crafted .tar.gz can and cannot do ---------------------------------------

def _tar(path: Path, members: list[tuple[str, bytes | str | None]]) -> Path:
    """A .tar.gz of ``(name, content)``: bytes a regular file, a str a symlink to it, None a
    character device."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, bytes):
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.type = tarfile.CHRTYPE
                tar.addfile(info)
    return path


HOSTILE = [("top/../../escaped.txt", b"out"), ("/abs/evil.txt", b"abs"),
           ("top/link", "/etc/passwd"), ("top/dev", None), ("top/sub/../../x.txt", b"x")]


def test_unpack_writes_only_regular_files_inside_the_target(tmp_path):
    from tunelab.export.archive import unpack

    archive = _tar(tmp_path / "a.tar.gz", [("top/a.txt", b"A"), ("top/sub/b.txt", b"B"),
                                           *HOSTILE])
    dest = unpack(archive, tmp_path / "work" / "out", 10**6)
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if not p.is_dir())
    assert got == ["a.txt", "sub/b.txt"]
    assert (dest / "sub" / "b.txt").read_bytes() == b"B"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "work" / "x.txt").exists()


def test_read_members_takes_only_the_wanted_regular_files(tmp_path):
    from tunelab.export.archive import read_members

    archive = _tar(tmp_path / "a.tar.gz", [
        ("x/adapter_config.json", b"{}"), ("x/other.txt", b"no"),
        ("x/adapter_model.safetensors", "/etc/passwd"),  # a link under a wanted name
        ("y/adapter_config.json", b"second"), ("../adapter_model.safetensors", b"W"), *HOSTILE])
    found = read_members(archive, {"adapter_config.json", "adapter_model.safetensors"},
                         tmp_path / "dest", 10**6)
    assert found == {"adapter_config.json": tmp_path / "dest" / "adapter_config.json",
                     "adapter_model.safetensors": tmp_path / "dest" / "adapter_model.safetensors"}
    assert found["adapter_config.json"].read_bytes() == b"{}"  # the first of a name wins
    assert found["adapter_model.safetensors"].read_bytes() == b"W"  # flat: never outside dest
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(found)


@pytest.mark.parametrize("reader", ["read_members", "unpack"])
def test_archives_are_bounded_and_unreadable_ones_are_said(tmp_path, reader):
    from tunelab.export import archive as arc

    def read(path: Path, limit: int):
        if reader == "unpack":
            return arc.unpack(path, tmp_path / "out", limit)
        return arc.read_members(path, {"adapter_config.json"}, tmp_path / "out", limit)

    big = _tar(tmp_path / "big.tar.gz",
               [("t/a", b"0" * 600), ("t/adapter_config.json", b"1" * 600)])
    with pytest.raises(InvalidArgument, match="more than"):
        read(big, 1000)  # the sizes add past the limit: refused before the second is read
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(InvalidArgument, match="not a readable .tar.gz archive"):
        read(tmp_path / "junk.tar.gz", 1000)
    truncated = (tmp_path / "big.tar.gz").read_bytes()[:60]
    (tmp_path / "cut.tar.gz").write_bytes(truncated)
    with pytest.raises(InvalidArgument, match="not a readable .tar.gz archive"):
        read(tmp_path / "cut.tar.gz", 10**6)
