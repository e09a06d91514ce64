"""What a training step keeps for its backward pass, and recomputing it when it would not fit.

A step's forward pass keeps, for each token and layer, what the backward pass needs (the
inputs of the LoRA layers, the attention's queries, keys and values, the MLP's gate and up
products …): on the default model ~0.69 MB per token with an fp32 base, ~0.5 MB with a bf16
one (counted with ``saved_tensors_hooks``, ``docs/performance.md`` "Memory"), so a batch of 4
examples of 150 tokens keeps ~0.3 GB, on top of the libraries (~0.35 GB) and the base (~0.27 GB
in bf16).

Where the longest batch a run can draw would keep more than the **activation budget**, the
trainer first has the gated MLPs make their gate and up products again in the backward pass
instead of keeping them (``fused_lora.recomputed_mlps``: ~46% of what a bf16 base's step keeps,
for two frozen products more per layer), in as few layers as bring each step within the budget
and only in the steps over it, where every layer's would fit the longest step; else it splits
batches into passes (micro-batches whose gradients add up to the same step) that fit, as long
as a pass holds at least ``MIN_PASS_TOKENS``; short of that it
recomputes: each decoder layer keeps only its input, and its insides are computed again during
the backward pass (transformers' gradient checkpointing), ~0.1 MB per token, for about a third
more compute per step, and splits batches too if even that would not fit. (On the throughput
benchmark, AMD EPYC with avx512_bf16: passes of ≤ 437 tokens cost 8% of the speed, recomputing
31%, docs/performance.md "Memory".) The budget is
``TUNELAB_TRAIN_MEMORY_MB`` where it is set, else half of the memory the system reports
available when training starts: a machine with room trains at full speed, a small one still
trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.catalog.precision import available_memory

FP32 = 4
MB = 1024 * 1024
# The shortest pass a step is split into while it keeps its activations: shorter ones cost
# more per token than recomputing does (measured in docs/performance.md "Memory").
MIN_PASS_TOKENS = 256


def activation_bytes_per_token(config: Any, recompute: bool, mlp_fused: bool = True,
                               norms_fused: bool = True, bf16: bool = False) -> int:
    """Bytes a training step keeps per token for the backward pass. Without recomputation, per
    layer: the two RMS norms' outputs (also the LoRA layers' inputs), the attention's queries,
    keys, values and output, and of the MLP's width the gate's and up projection's outputs
    where the gated MLP is one function (``fused_lora._LoraMlp``, ``mlp_fused``), else four
    (their product and the activation too, in fp32); two bytes a value where a step keeps its
    activations in bf16 (a bf16 base: ``fused_lora.keeps_bf16``, ``bf16``; the queries and
    keys stay fp32), else four; the norms' inputs too, in fp32, where the RMS norms are not
    fused (``fused_norm.py``, ``norms_fused``). With recomputation: one hidden-width vector per
    layer, plus one layer's full share while that layer is recomputed.
    (SmolLM2-135M: 675 KB, 383 KB with a bf16 base, 810 KB with the norms' inputs, 90 KB
    recomputed; counted with ``saved_tensors_hooks``: 687 KB, 393 KB with a bf16 base, 822 KB
    with the norms' inputs; docs/performance.md "Memory".)"""
    hidden = config.hidden_size
    layers = config.num_hidden_layers
    heads = getattr(config, "num_attention_heads", None) or 1
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    size = 2 if bf16 else FP32
    # the queries and the keys (always fp32: segment_attention.py); as many values and outputs
    attention = (heads + kv_heads) * head_dim
    wide = getattr(config, "intermediate_size", 4 * hidden)
    one_layer = (FP32 * attention + size * (2 * hidden + attention)
                 + (size * 2 * wide if mlp_fused else FP32 * 4 * wide)
                 + (0 if norms_fused else FP32 * 2 * hidden))
    if not recompute:
        return layers * one_layer
    return layers * FP32 * hidden + one_layer


def mlp_bytes_per_token(config: Any, bf16: bool = False) -> int:
    """Bytes one layer's gated MLP keeps per token (its gate's and up projection's outputs,
    ``fused_lora._LoraMlp``) that it makes again instead where it recomputes them
    (``fused_lora.recomputed_mlps``)."""
    return (2 if bf16 else FP32) * 2 * getattr(config, "intermediate_size",
                                               4 * config.hidden_size)


@dataclass(frozen=True)
class MemoryPlan:
    """How a run keeps its step's activations within ``budget`` bytes (None: no limit)."""

    budget: int | None
    recompute: bool
    micro_batch_tokens: int | None  # a cap on a forward pass's tokens, None: no extra cap
    # where a pass would keep more than the budget, the gated MLPs of as many layers as it
    # takes make their products again (``recomputed_mlps``): the bytes a pass keeps per token,
    # and those one layer's MLP keeps of them; 0: no MLP recomputes
    kept_per_token: int = 0
    mlp_per_token: int = 0

    def recomputed_mlps(self, tokens: int) -> int:
        """How many layers' MLPs a pass of ``tokens`` (as laid out) makes again to keep
        within the budget: none where it fits."""
        if not self.mlp_per_token or self.budget is None:
            return 0
        over = tokens * self.kept_per_token - self.budget
        return 0 if over <= 0 else -(-over // (tokens * self.mlp_per_token))

    def describe(self) -> str:
        if self.budget is None:
            return "activations kept (no memory limit known)"
        mb = self.budget // MB
        if self.mlp_per_token:
            return (f"activations kept; a step that would keep more than {mb} MB makes the "
                    "MLP products of some layers again in the backward pass")
        if not self.recompute:
            if self.micro_batch_tokens:
                return (f"activations kept, batches split into passes of at most "
                        f"{self.micro_batch_tokens} tokens to fit {mb} MB")
            return f"activations kept (the longest batch fits the {mb} MB budget)"
        split = (f", batches split into passes of at most {self.micro_batch_tokens} tokens"
                 if self.micro_batch_tokens else "")
        return f"activations recomputed in the backward pass to fit {mb} MB{split}"


def plan_memory(config: Any, longest_step_tokens: int, budget: int | None,
                mlp_fused: bool = True, norms_fused: bool = True,
                bf16: bool = False, longest_example_tokens: int | None = None) -> MemoryPlan:
    """How a step of ``longest_step_tokens`` (its longest example: ``longest_example_tokens``)
    stays in budget: kept whole; else, where the gated MLPs are one function each and the
    longest step fits with every one of them making its products again, each step over the
    budget recomputes as few layers' MLPs as fit it (``MemoryPlan.recomputed_mlps``); else
    split into passes of at least ``MIN_PASS_TOKENS`` that keep their activations; else
    recomputed, and split if need be (``mlp_fused``, ``norms_fused``, ``bf16``: see
    ``activation_bytes_per_token``)."""
    kept = activation_bytes_per_token(config, False, mlp_fused, norms_fused, bf16)
    if budget is None or longest_step_tokens * kept <= budget:
        return MemoryPlan(budget, False, None)
    if mlp_fused:  # the MLPs' products made again where a step needs it, in as few layers
        mlp = mlp_bytes_per_token(config, bf16)
        if longest_step_tokens * (kept - config.num_hidden_layers * mlp) <= budget:
            return MemoryPlan(budget, False, None, kept, mlp)
    longest_example = longest_example_tokens or longest_step_tokens
    cap = budget // kept
    if cap >= max(MIN_PASS_TOKENS, longest_example):
        return MemoryPlan(budget, False, cap)
    per_token = activation_bytes_per_token(config, True)
    cap = None if longest_step_tokens * per_token <= budget else max(1, budget // per_token)
    return MemoryPlan(budget, True, cap)


def activation_budget(setting_mb: int | None) -> int | None:
    """The budget in bytes: the setting, else half of the available memory (None if unknown)."""
    if setting_mb is not None:
        return setting_mb * MB
    free = available_memory()
    return None if free is None else free // 2
