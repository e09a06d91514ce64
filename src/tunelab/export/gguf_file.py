"""Merged weights → one GGUF file (f16 or q8_0) that llama.cpp loads, written with the
``gguf`` package.

llama.cpp's layout differs from Hugging Face's in two ways that matter: tensor names
(``model.layers.0.self_attn.q_proj.weight`` → ``blk.0.attn_q.weight``, from the ``gguf``
package's own name map) and the rows of the query and key projections, which llama.cpp
expects interleaved for its rotary embedding (``permute_qk``; readers such as transformers'
GGUF loader undo it). Only the Llama architecture is written (the default base model and
the tiny test model are Llamas); other architectures need their own tensor rules.

Metadata: for a base model that came from a GGUF file, that file's keys are reused (the
architecture's hyperparameters and the tokenizer: tokens, merges, pre-tokenizer), so llama.cpp
tokenizes exactly as for the base; otherwise they are derived from the Hugging Face config and
a byte-level BPE tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.errors import FailedPrecondition

SUPPORTED_ARCHITECTURES = ("llama",)
# Keys of the base GGUF that do not describe the exported file.
_NOT_COPIED = ("GGUF.", "general.architecture", "general.file_type", "general.name",
               "general.quantization_version", "general.description", "tokenizer.chat_template")


def permute_qk(w: Any, n_head: int) -> Any:
    """Hugging Face → llama.cpp row order of a query/key projection: within each head, the
    two rotary halves are interleaved (row i of half 0, row i of half 1, …)."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: Any, n_head: int) -> Any:
    """The inverse of ``permute_qk`` (llama.cpp → Hugging Face row order)."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def gguf_tensors(model: Any) -> list[tuple[str, Any]]:
    """(GGUF name, float32 numpy array in llama.cpp's layout) for every weight of ``model``."""
    import gguf

    cfg = model.config
    arch = getattr(cfg, "model_type", "")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise FailedPrecondition(
            f"GGUF export supports Llama-architecture base models (smollm2-135m-instruct); this "
            f"base model is '{arch}'. Export the 'merged' format and convert it with "
            "llama.cpp's convert_hf_to_gguf.py.")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    out = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise FailedPrecondition(f"GGUF export does not know the tensor '{hf_name}'.")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, cfg.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, n_kv)
        out.append((name, data))
    return out


def write_gguf(
    model: Any,
    tokenizer: Any,
    chat_template: str,
    path: Path,
    quantization: str,
    *,
    base_gguf: Path | None,
    name: str,
    description: str = "",
) -> Path:
    """Write ``model`` (merged, fp32) to ``path``: 2-D weights in ``quantization`` (``f16``
    or ``q8_0``; a row not a multiple of 32 long stays f16), 1-D weights (norms) in f32, as
    llama.cpp's own converter does."""
    import gguf
    import numpy as np

    tensors = gguf_tensors(model)
    qtype = {"f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[quantization]
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quantization]
    writer = gguf.GGUFWriter(str(path), "llama")
    try:
        if base_gguf is not None:
            _copy_metadata(writer, base_gguf)
        else:
            _config_metadata(writer, model.config)
            _tokenizer_metadata(writer, tokenizer)
        writer.add_name(name)
        if description:
            writer.add_description(description)
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_chat_template(chat_template)
        for tname, data in tensors:
            if data.ndim == 1:
                writer.add_tensor(tname, data.astype(np.float32))
            elif qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 == 0:
                writer.add_tensor(tname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            else:
                writer.add_tensor(tname, data.astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def _copy_metadata(writer: Any, base_gguf: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))
    for key, field in reader.fields.items():
        if key.startswith(_NOT_COPIED):
            continue
        main = field.types[0]
        if main == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), main, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), main)


def _config_metadata(writer: Any, cfg: Any) -> None:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    theta = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get(
        "rope_theta", 10000.0)
    writer.add_rope_freq_base(float(theta))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(cfg.vocab_size)


def _tokenizer_metadata(writer: Any, tokenizer: Any) -> None:
    """A byte-level BPE tokenizer (GPT-2 style) as llama.cpp's ``gpt2`` tokenizer model."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model", {})
    if model.get("type") != "BPE":
        raise FailedPrecondition(
            "GGUF export of a base model without a GGUF file supports byte-level BPE "
            "tokenizers only; export the 'merged' format and convert it with llama.cpp's "
            "convert_hf_to_gguf.py.")
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    special = set(tokenizer.all_special_ids) | {
        t["id"] for t in state.get("added_tokens", []) if t.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(size)])  # CONTROL/NORMAL
    if merges:
        writer.add_token_merges(merges)
    else:
        # GGUF has no empty arrays. A vocabulary without merges (the tiny test model's bytes)
        # is written with scores instead, from which readers derive the (no) merges.
        writer.add_token_scores([0.0] * size)
    for add, tid in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                     (writer.add_eos_token_id, tokenizer.eos_token_id),
                     (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if tid is not None:
            add(tid)
    writer.add_add_bos_token(False)
