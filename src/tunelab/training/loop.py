"""The LoRA training loop: epochs → batches → loss on output tokens → step → snapshot.

One readable function (``train``) does the work; everything it needs to resume lives in the
per-epoch checkpoint, and the shuffle order of epoch ``e`` is derived from ``(seed, e)``, so
a run resumed from a checkpoint takes exactly the steps an uninterrupted run takes.

With validation examples, the base model is scored once before the first step and the model
after every epoch (``training/evaluate.py``); the scores go into the checkpoint (so a resumed
run reports them too), into ``evaluation.json`` as soon as each is known, and into the
manifest. The epoch the scores advise is served when the run completes (``advice.py``: the
last, unless an earlier one scores clearly better).

The trainer works on a private copy of the base model's module tree that shares its weights
(``_private_model``): the loaded base is never changed, so it can serve (a ``Generator`` may
already have wrapped it with adapters) or tune again.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import itertools
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunelab import __version__
from tunelab.allocator import SHORT_OF_MEMORY_THRESHOLD_BYTES, fix_mmap_threshold
from tunelab.catalog.greedy import head_logits
from tunelab.catalog.labels import answer_labels
from tunelab.catalog.loading import LoadedBase
from tunelab.catalog.stopping import answer_rules
from tunelab.data.batches import (
    Batch,
    TokenizedExample,
    collate,
    laid_out_tokens,
    pack,
    tokenize_example,
)
from tunelab.data.examples import Example, dataset_hash
from tunelab.data.prompt_format import profile_of
from tunelab.errors import FailedPrecondition, InvalidArgument
from tunelab.fsutil import atomic_write_text
from tunelab.training.advice import EpochAdvice, advise_epoch
from tunelab.training.checkpoint import (
    capture_rng,
    load_resume_state,
    read_manifest,
    restore_rng,
    save_adapter,
    save_checkpoint,
    select_epoch,
    write_manifest,
)
from tunelab.training.evaluate import Evaluation, Evaluator, advice_of, metric_for
from tunelab.training.hyperparameters import (
    Hyperparameters,
    LoraSettings,
    ResolvedHyperparameters,
)
from tunelab.training.memory import MB, activation_budget, plan_memory

# A step's examples are drawn at random, as any trainer draws them, and packed into rows
# (data/batches.py: pack), each example with its own positions, so little padding is computed
# (random batches of 4 padded to their longest were 31% padding on the throughput benchmark;
# packed, 12-18% faster steps, the same loss and gradients).
# An earlier version grouped examples of similar length into the same batches (3% padding
# instead of 31% on the throughput benchmark's 200 "sentence → JSON" examples, 6% faster): its
# adapters' loss on held-out examples was 0.0061 and 0.0064 (seeds 0 and 1) where a plain
# PEFT loop's was 0.0038 and 0.0051, and 0.0040 with random batches (docs/performance.md):
# batches of alike examples teach less per step. Splitting a random batch into micro-batches
# of similar length (9% padding) was slower still (273 vs 290 tokens/s): a forward and backward
# pass costs more per pass than the padding it saves.
# Tokens per forward pass, as the pass lays them out (packed rows, or padded ones:
# ``laid_out_tokens``); a step whose batch is larger is split into micro-batches whose
# gradients add up to the same step (memory stays bounded for long examples).
MICRO_BATCH_TOKENS = 16_384


@dataclass(frozen=True)
class Snapshot:
    """One optimizer step, as Gemini's TuningSnapshot (epoch is 1-based)."""

    step: int
    epoch: int
    mean_loss: float
    compute_time: datetime
    tokens: int = 0
    seconds: float = 0.0
    # the run's total steps when it changed since the job was planned (a refit shorter than
    # planned, refit.py); 0: as planned
    total_steps: int = 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["compute_time"] = self.compute_time.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Snapshot:
        d = dict(d)
        d["compute_time"] = datetime.fromisoformat(d["compute_time"])
        return cls(**d)


@dataclass
class TrainResult:
    status: str  # "completed" | "cancelled"
    output_dir: Path
    snapshots: list[Snapshot]
    epoch_losses: list[float]
    advice: EpochAdvice | None
    tokens: int = 0
    train_seconds: float = 0.0
    resumed_from_epoch: int = 0
    manifest: dict = field(default_factory=dict)
    # {"metric", "example_count", "validation", "baseline", "epochs"}; None without validation
    evaluation: dict | None = None
    # the refit on every example (refit.py), when one ran: what it trained and what is served
    refit: dict | None = None

    @property
    def adapter_dir(self) -> Path:
        return self.output_dir / "adapter"

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0


def plan_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches (lists of indices of ``count`` examples) of one epoch, deterministic in
    (seed, epoch)."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(count, generator=g).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _micro_batches(items: list[TokenizedExample], cap: int | None = None,
                   attention_span: float | None = None, share_prefix: bool = False,
                   ) -> list[list[TokenizedExample]]:
    """``items`` split into passes of at most ``MICRO_BATCH_TOKENS`` (and ``cap``) tokens, at
    least one example each, shortest first. A pass's tokens are counted as the step lays it
    out (``laid_out_tokens``, with ``attention_span`` and ``share_prefix`` as ``pack`` takes
    them: packed rows hold the sum of their examples, not each padded to the longest; padded
    where ``attention_span`` is None). Counted padded, a packed step was split where it fit: on
    the throughput benchmark at a 250 MB budget, 87 passes for 50 steps of which one was over
    (docs/performance.md "Memory")."""
    cap = MICRO_BATCH_TOKENS if cap is None else min(cap, MICRO_BATCH_TOKENS)
    ordered = sorted(items, key=lambda it: it.length)
    # the usual step fits whole: laid out once, not once per example (a batch of 512 short
    # examples spent 0.2 s a step laying out each growing pass)
    if laid_out_tokens(ordered, attention_span, share_prefix) <= cap:
        return [ordered]
    out: list[list[TokenizedExample]] = []
    cur: list[TokenizedExample] = []
    for it in ordered:
        if cur and laid_out_tokens([*cur, it], attention_span, share_prefix) > cap:
            out.append(cur)
            cur = []
        cur.append(it)
    if cur:
        out.append(cur)
    return out


def _text_config(config: Any) -> Any:
    """The language model's part of a config (a multimodal config nests it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _causal_lm(model: Any) -> Any:
    """The causal LM under a PEFT model (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# Output tokens whose logits are computed at once when a run saves memory (memory.py).
LOSS_CHUNK = 64


def output_loss_sum(model: Any, batch: Batch, recompute: bool = False):
    """Sum of cross-entropy over the output tokens, computing logits only where needed.

    A plain frozen head's loss is one autograd function (``head_loss.py``: a few passes over
    the vocabulary-wide logits instead of a dozen). ``recompute`` (a run short of memory): the
    logits are made a block at a time and made again in the backward pass instead of kept (a
    vocabulary of 49,152 makes them ~0.2 MB per output token in fp32); any other head makes
    them ``LOSS_CHUNK`` tokens at a time through checkpointing."""
    import torch
    import torch.nn.functional as F

    from tunelab.training import head_loss

    lm = _causal_lm(model)
    h = _output_hidden(lm, batch)
    head = lm.get_output_embeddings()
    if head_loss.usable(head, lm.config):
        return head_loss.head_cross_entropy(head, h, batch.targets, keep_logits=not recompute)
    if not recompute:
        return F.cross_entropy(head_logits(lm, h), batch.targets, reduction="sum")

    def chunk_loss(hidden: Any, targets: Any) -> Any:
        return F.cross_entropy(head_logits(lm, hidden), targets, reduction="sum")

    total = h.new_zeros((), dtype=torch.float32)
    for i in range(0, h.shape[0], LOSS_CHUNK):
        total = total + torch.utils.checkpoint.checkpoint(
            chunk_loss, h[i:i + LOSS_CHUNK], batch.targets[i:i + LOSS_CHUNK],
            use_reentrant=False)
    return total


def output_logit_chunks(model: Any, batch: Batch, max_bytes: int, cache: Any = None):
    """The logits (fp32) of the hidden states that predict ``batch.targets``, one row each, in
    order, as chunks of at most ``max_bytes`` (at least one row each) with their targets: one
    forward pass, and never the whole vocabulary-wide tensor at once (with its cross-entropy's
    copy it would be 2.5 times the logits' size: ~430 MB for 25 answers of 35 tokens).
    ``cache`` (``kv_cache.pass_cache``): the pass's keys and values are kept in it."""
    lm = _causal_lm(model)
    hidden = _output_hidden(lm, batch, cache)
    vocab = lm.get_output_embeddings().weight.shape[0]
    rows = max(1, max_bytes // (4 * vocab))
    for i in range(0, hidden.shape[0], rows):
        yield head_logits(lm, hidden[i:i + rows]), batch.targets[i:i + rows]


def _output_hidden(lm: Any, batch: Batch, cache: Any = None) -> Any:
    """The final hidden states that predict ``batch.targets``, one row each (the keys and
    values kept in ``cache`` where one is given)."""
    from tunelab.catalog.kv_cache import with_cache
    from tunelab.training.fused_lora import kept_dtype
    from tunelab.training.segment_attention import segments

    decoder = lm.get_decoder()
    kept = {} if cache is None else with_cache(decoder, cache)
    with segments(batch.segments, batch.prefix, kept_dtype(lm)):
        hidden = decoder(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            position_ids=batch.position_ids, use_cache=cache is not None, **kept
        ).last_hidden_state
    return hidden[batch.predict_rows, batch.predict_cols]


def attention_span(model: Any) -> float:
    """The row width at which a token's attention costs as much as its linear layers (for
    ``pack_rows``): a token's linear layers do 2·P multiply-adds for the P weights of a layer,
    its attention 4·W·Q over a row of W tokens (Q = the queries' width: scores and values)."""
    layer = model.get_decoder().layers[0]
    weights = sum(p.numel() for p in layer.parameters() if p.dim() == 2)
    config = model.config
    heads = config.num_attention_heads
    q_width = heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)
    return weights / (2 * q_width)


# Per model, per attention implementation and layout (shared prefix or not): the base (SDPA
# with a block mask) and the trainer's private copy of it (attention by example) are checked
# apart.
_PACKING: weakref.WeakKeyDictionary[Any, dict[tuple[str | None, bool], bool]] = (
    weakref.WeakKeyDictionary())


def packing_works(model: Any, pad_id: int, key: Any = None) -> bool:
    """Whether ``model`` keeps packed examples apart (``data.batches.pack``): two short
    sequences packed into one row must give the hidden states each gives alone. Checked once
    per ``key`` (the trainer's: the base model its private copy was made from; default: the
    model) and attention implementation; a model whose attention ignores the restarted
    positions trains on padded rows."""
    return _layout_works(model, pad_id, key, share_prefix=False)


def prefix_sharing_works(model: Any, pad_id: int, key: Any = None) -> bool:
    """Whether ``model`` reads rows whose examples share a prefix laid once
    (``pack(share_prefix=True)``) as it reads each example alone; as ``packing_works``."""
    return _layout_works(model, pad_id, key, share_prefix=True)


def _layout_works(model: Any, pad_id: int, key: Any, share_prefix: bool) -> bool:
    import torch

    from tunelab.training.segment_attention import segments

    lm = _causal_lm(model)
    key = lm if key is None else key
    impl = getattr(getattr(lm, "config", None), "_attn_implementation", None)
    known = _PACKING.get(key, {}).get((impl, share_prefix))
    if known is not None:
        return known
    # with a shared prefix both begin with tokens 5-8, and b is shorter than a
    a = TokenizedExample(list(range(5, 12)), list(range(20, 25)))
    b = TokenizedExample([*range(5, 9), *range(30, 34)] if share_prefix else
                         list(range(30, 34)), list(range(40, 49)))
    decoder = lm.get_decoder()
    was_training = decoder.training
    decoder.eval()
    try:
        with torch.no_grad():
            device = next(decoder.parameters()).device
            packed = pack([a, b], pad_id, attention_span=float("inf"),
                          share_prefix=share_prefix).to(device)
            if packed.input_ids.shape[0] != 1 or packed.prefix != (4 if share_prefix else 0):
                raise AssertionError("the check needs one packed row")
            with segments(packed.segments, packed.prefix):
                together = decoder(input_ids=packed.input_ids,
                                   position_ids=packed.position_ids,
                                   use_cache=False).last_hidden_state[0].float()
            alone = decoder(input_ids=torch.tensor([b.prompt_ids + b.output_ids], device=device),
                            use_cache=False).last_hidden_state[0].float()
        # the second example's states: they differ when it sees the first or misses its
        # positions (SmolLM2 with a bf16 base: relative error 0.002, and 0.3 when they mix),
        # or, sharing a prefix, when it misses the prefix
        start, n = packed.segments[0][1]
        mine = together[start:start + n]
        if share_prefix:
            mine = torch.cat((together[:packed.prefix], mine))
        error = (mine - alone).norm() / alone.norm()
        works = bool(error < 0.05)
    # an architecture that refuses position ids without a mask, or packed rows; other
    # errors (a KeyboardInterrupt, a bug in this check) propagate
    except (AssertionError, NotImplementedError, RuntimeError, TypeError, ValueError):
        works = False
    finally:
        decoder.train(was_training)
    _PACKING.setdefault(key, {})[(impl, share_prefix)] = works
    return works


def _fingerprint(base: LoadedBase, data_hash: str, hp: dict, lora: LoraSettings, seed: int,
                 validation_hash: str | None) -> dict:
    out = {
        "base_model": base.spec.id,
        "dataset_hash": data_hash,
        "hyperparameters": hp,
        "lora": lora.to_dict(),
        "seed": seed,
    }
    if validation_hash is not None:  # the checkpoints hold scores on these examples
        out["validation_hash"] = validation_hash
    return out


def _private_model(model: Any) -> Any:
    """A module tree of its own that shares ``model``'s weights (no copy of the weights).

    PEFT injects LoRA layers into the model it wraps. Training on the loaded base itself would
    change it under a ``Generator`` that serves it, and a base a ``Generator`` has already
    wrapped holds the generator's LoRA layers, made in inference mode: PEFT then fails with
    "Setting requires_grad=True on inference tensor outside InferenceMode". The copy is the
    plain base model (any LoRA layer replaced by the layer it wraps), its parameters and
    buffers the very tensors of ``model``.
    """
    from peft.tuners.lora import LoraLayer

    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    private = copy.deepcopy(model, shared)
    for name, module in list(private.named_modules()):
        if isinstance(module, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            parent = private.get_submodule(parent_name) if parent_name else private
            setattr(parent, child, module.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in private.__dict__:
            delattr(private, attr)
    return private


def write_evaluation(output_dir: Path, evaluation: dict) -> None:
    """``evaluation.json``: the scores so far, readable while the run goes on (the API shows
    them on the operation)."""
    atomic_write_text(output_dir / "evaluation.json", json.dumps(evaluation, indent=2))


# evaluation.json holds at most 100 examples' worth of labels and 3 wrong answers per epoch
# (each under 45,000 characters): a few MB at the very most.
MAX_EVALUATION_BYTES = 16 * 1024 * 1024


def read_evaluation(output_dir: Path) -> dict | None:
    """The scores of a run with validation examples (None without, before any, or if the file
    is not one tunelab wrote)."""
    path = Path(output_dir) / "evaluation.json"
    try:
        if path.stat().st_size > MAX_EVALUATION_BYTES:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def shared_system(examples: list[Example]) -> str | None:
    """The system prompt all the examples have in common, else None."""
    systems = {ex.system for ex in examples}
    return systems.pop() if len(systems) == 1 else None


def train(
    base: LoadedBase,
    examples: list[Example],
    hyperparameters: Hyperparameters | ResolvedHyperparameters,
    output_dir: Path,
    *,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    seed: int = 0,
    lora: LoraSettings | None = None,
    resume: bool = True,
    validation: list[Example] | None = None,
    validation_record: dict | None = None,
    on_evaluation: Callable[[Evaluation], None] | None = None,
    on_evaluation_progress: Callable[[int, int, int], None] | None = None,
    train_memory_mb: int | None = None,
    refit_examples: list[Example] | None = None,
    schedule_steps: int | None = None,
) -> TrainResult:
    """Tune a LoRA adapter on ``examples``; write checkpoints and the adapter to ``output_dir``.

    If ``output_dir`` holds checkpoints of the same run (same base, data, hyperparameters,
    seed), training resumes after the last one. ``should_cancel`` is checked before every
    step; on cancel the parameters learned so far are saved as the adapter.

    With ``validation`` examples the base model and every epoch are scored on them
    (``on_evaluation`` gets each score, epoch 0 being the base model;
    ``on_evaluation_progress(epoch, done, total)`` follows the answers, from ``done`` 0 as the
    scoring begins), and a completed run
    serves the epoch they advise (``advice.py``). ``validation_record`` (how the examples were
    chosen, see ``data/split.py``) is kept with the scores.

    ``train_memory_mb`` bounds what a step keeps for its backward pass (default: half of the
    available memory); a run whose longest batch would keep more recomputes (memory.py).

    Unset hyperparameters are chosen from the examples (``training/auto.py``); a
    ``ResolvedHyperparameters`` (a queued job's plan) is used as it is. With validation
    examples the advised epoch is served, without them the last; when the plan asks for a refit
    and ``refit_examples`` (every example, the held-out ones included) are given, a completed
    run is followed by one on all of them for the served epoch's number of epochs, which is
    served (``refit.py``). ``schedule_steps`` is the length the learning-rate schedule is laid
    over (default: the run's own steps; a refit stops before the end of its schedule).
    """
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    from tunelab.training.fused_lora import (  # imports torch
        fuse_lora_layers,
        kept_dtype,
        mlp_fuses,
        recomputed_mlps,
        release_cast,
    )
    from tunelab.training.fused_norm import fuse_rms_norms, norms_fuse
    from tunelab.training.segment_attention import segments, use_segment_attention

    if not examples:
        raise InvalidArgument("No training examples were given.")
    fix_mmap_threshold()  # the process keeps less of the freed activations (allocator.py)
    validation = list(validation or [])
    hp = hyperparameters if isinstance(hyperparameters, ResolvedHyperparameters) else (
        hyperparameters.resolve(base.spec.recommended_learning_rate, examples,
                                validation=validation))
    lora = lora or LoraSettings(rank=hp.lora_rank, alpha=hp.lora_alpha)
    output_dir = Path(output_dir)
    data_hash = dataset_hash(examples)
    schedule = hp.schedule()  # None for Gemini's constant rate: fingerprints stay as they were
    bounds = {"schedule_steps": schedule_steps} if schedule_steps else {}
    fingerprint = _fingerprint(base, data_hash, {**hp.to_dict(), **(
        {"schedule": schedule} if schedule else {}), **bounds}, lora, seed,
        dataset_hash(validation) if validation else None)
    tokenized = [tokenize_example(base.tokenizer, base.template, ex) for ex in examples]
    steps_per_epoch = hp.steps_per_epoch(len(examples))
    total = steps_per_epoch * hp.epoch_count
    lr_steps = schedule_steps or total
    pad_id = base.tokenizer.pad_token_id

    torch.manual_seed(seed)
    targets = [m for m in lora.target_modules if _has_module(base.model, m)]
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets or "all-linear",
        task_type="CAUSAL_LM",
    )
    private = _private_model(base.model)
    if not hp.answer_labels:
        labels = None
    elif hp.labels is not None:  # decided with the plan, as its schedule was (training/auto.py)
        labels = list(hp.labels) or None
    else:
        labels = answer_labels([ex.text_input for ex in examples], [ex.output for ex in examples],
                               [ex.output for ex in validation])
    # how its answers are decoded (catalog/stopping.py): what every output holds, in order,
    # and where an answer ends after it; the longest output; the one fixed shape of every
    # output (the held-out ones too); whether outputs copy their inputs' words
    # (catalog/copying.py). A classifier's answers are its labels already; free answers asked
    # for keep to no shape.
    rules = answer_rules([ex.text_input for ex in examples], [ex.output for ex in examples],
                         [ex.output for ex in validation], classifier=bool(labels),
                         free=not hp.answer_labels)
    lengths = sorted(it.length for it in tokenized)
    # the dtype a step keeps its activations in (fused_lora.keeps_bf16): the plan counts them
    # in it, the norms and the attention keep them in it
    kept = kept_dtype(private)
    memory = plan_memory(_text_config(private.config), sum(lengths[-hp.batch_size:]),
                         activation_budget(train_memory_mb),
                         mlp_fuses(private, targets, lora.dropout), norms_fuse(private),
                         bf16=kept is not None,
                         longest_example_tokens=lengths[-1])
    try:
        if memory.recompute:  # each layer keeps its input only (memory.py)
            fix_mmap_threshold(SHORT_OF_MEMORY_THRESHOLD_BYTES)  # and gives freed blocks back
            private.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        # Packed examples' attention computed example by example (segment_attention.py).
        by_example = use_segment_attention(private)
        model = get_peft_model(private, config)
        fuse_lora_layers(model)  # PEFT's result in fewer passes over memory (fused_lora.py)
        fuse_rms_norms(model, kept)  # the norms keep their outputs, not inputs (fused_norm.py)
        # Several examples per row where the model keeps them apart (data/batches.py: pack):
        # one row holds them all when each example's attention is its own, else the rows are
        # chosen from the cost of padding against that of attention across examples.
        span = None
        if packing_works(model, pad_id, key=base.model):
            span = float("inf") if by_example else attention_span(base.model)
        # The tokens a step's examples begin with (the template's opening, the system turn, a
        # shared preamble) computed once per row instead of once per example (data/batches.py:
        # pack): exact, and 19-40% of the tokens of the benchmarks' batches of 4
        # (docs/performance.md). Not where a layer's attention window is shorter than an
        # example (it would need transformers' path, which cannot read such rows).
        window = getattr(_text_config(private.config), "sliding_window", None)
        share = bool(span and by_example and (not window or max(
            it.length for it in tokenized) <= window) and prefix_sharing_works(
                model, pad_id, key=base.model))
        evaluator = None
        if validation:
            metric = metric_for([ex.output for ex in [*examples, *validation]])
            # its loss pass laid out as the steps are (one row, the prefix once); its answers
            # chosen among the labels as served answers are (catalog/labels.py)
            evaluator = Evaluator(base, validation, metric, packed=span == float("inf"),
                                  share_prefix=share, labels=labels, rules=rules)
        evaluation: dict | None = None
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = _adamw(params, hp.learning_rate)

        start_epoch, step = 0, 0
        snapshots: list[Snapshot] = []
        epoch_losses: list[float] = []
        tokens_total, seconds_total = 0, 0.0
        state = load_resume_state(output_dir) if resume else None
        if state is not None:
            if state["fingerprint"] != fingerprint:
                raise FailedPrecondition(
                    "The output directory holds checkpoints of a different tuning run (other "
                    "data, base model or hyperparameters). Choose another output directory "
                    "or delete it."
                )
            set_peft_model_state_dict(model, state["adapter"])
            optimizer.load_state_dict(state["optimizer"])
            restore_rng(state.get("rng"))
            start_epoch, step = state["epochs_run"], state["step"]
            snapshots = [Snapshot.from_dict(s) for s in state["snapshots"]]
            epoch_losses = list(state["epoch_losses"])
            tokens_total, seconds_total = state.get("tokens", 0), state.get("seconds", 0.0)
            evaluation = state.get("evaluation")
            if evaluator is not None and evaluation and evaluation.get("metric"):
                evaluator.metric = evaluation["metric"]  # the epochs before were scored so
            state = None  # restored: its copies of the adapter and optimizer are let go

        def evaluate(epoch: int) -> dict:
            """Score the model (epoch 0: with the LoRA layers off, the base model)."""
            progress = None
            if on_evaluation_progress is not None:
                def progress(done: int, total: int) -> None:
                    on_evaluation_progress(epoch, done, total)
            if epoch == 0:
                with model.disable_adapter():
                    result = evaluator.evaluate(model, 0, progress)
            else:
                result = evaluator.evaluate(model, epoch, progress)
            if on_evaluation is not None:
                on_evaluation(result)
            return result.to_dict()

        if evaluator is not None and evaluation is None:
            evaluation = {
                "metric": evaluator.metric,
                "example_count": len(evaluator.examples),
                "validation": validation_record,
                "baseline": None,
                "epochs": [],
            }
            evaluation["baseline"] = evaluate(0)
        if evaluation is not None:
            write_evaluation(output_dir, evaluation)

        model.train()
        status = "completed"
        for epoch in range(start_epoch, hp.epoch_count):
            loss_sum_epoch, tokens_epoch = 0.0, 0
            for batch_idx in plan_batches(len(tokenized), hp.batch_size, seed, epoch):
                if should_cancel is not None and should_cancel():
                    status = "cancelled"
                    break
                t0 = time.perf_counter()
                items = [tokenized[i] for i in batch_idx]
                n_tokens = sum(len(it.output_ids) for it in items)
                optimizer.zero_grad(set_to_none=True)
                step_loss = 0.0
                # a cap on what a pass holds, as it is laid out, splits a step (memory.py)
                for micro in _micro_batches(items, memory.micro_batch_tokens, span, share):
                    mb = pack(micro, pad_id, span, share) if span else collate(micro, pad_id)
                    mb = mb.to(base.device)
                    # as few layers' MLP products as fit the budget made again (memory.py)
                    with recomputed_mlps(memory.recomputed_mlps(mb.input_ids.numel())):
                        loss = output_loss_sum(model, mb, memory.recompute) / n_tokens
                    # recomputed layers attend, and keep what they keep, as in the forward
                    with segments(mb.segments, mb.prefix, kept):
                        loss.backward()
                    step_loss += loss.item()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                for group in optimizer.param_groups:  # a function of the step alone (resume)
                    group["lr"] = hp.lr_at(step + 1, lr_steps)
                optimizer.step()
                step += 1
                dt = time.perf_counter() - t0
                tokens = sum(it.length for it in items)
                tokens_total += tokens
                seconds_total += dt
                loss_sum_epoch += step_loss * n_tokens
                tokens_epoch += n_tokens
                snap = Snapshot(step, epoch + 1, step_loss, datetime.now(UTC), tokens, dt)
                snapshots.append(snap)
                if on_snapshot is not None:
                    on_snapshot(snap)
            if status == "cancelled":
                break
            epoch_losses.append(loss_sum_epoch / max(tokens_epoch, 1))
            if evaluation is not None:
                evaluation["epochs"].append(evaluate(epoch + 1))
                write_evaluation(output_dir, evaluation)
            state = {
                "fingerprint": fingerprint,
                "epochs_run": epoch + 1,
                "step": step,
                "adapter": {
                    k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()
                },
                "optimizer": optimizer.state_dict(),
                "rng": capture_rng(),
                "snapshots": [s.to_dict() for s in snapshots],
                "epoch_losses": epoch_losses,
                "tokens": tokens_total,
                "seconds": seconds_total,
                "evaluation": evaluation,
            }
            save_checkpoint(output_dir, epoch + 1, model, state)
            state = None  # its copy of the adapter is on disk: not kept through the next epoch
    finally:
        # whatever ends the run (completion, cancellation, an error): the input cast kept for
        # sibling layers is let go, and a run short of memory gives the process its usual
        # mmap threshold back (allocator.py)
        release_cast()
        if memory.recompute:
            fix_mmap_threshold()
    save_adapter(output_dir, model)
    advice = (advice_of(evaluation) if evaluation else None) or advise_epoch(epoch_losses)
    selected = None
    if status == "completed":
        # with scores, the advised epoch is served (advice.py: the last unless an earlier one
        # is clearly better); without, the last (the loss-based advice only advises)
        selected = advice.epoch if evaluation and advice else len(epoch_losses)
    manifest = {
        "tunelab_version": __version__,
        # what the frozen base was held in and why (catalog/precision.py)
        "precision": base.precision.to_dict(),
        # whether activations were kept or recomputed, and the budget (memory.py)
        "memory": {"budget_mb": None if memory.budget is None else memory.budget // MB,
                   "recompute": memory.recompute, "pass_tokens": memory.micro_batch_tokens,
                   "mlps_recomputed": bool(memory.mlp_per_token),
                   "note": memory.describe()},
        "status": status,
        "base_model": base.spec.id,
        "template": base.template.name,
        "hyperparameters": hp.to_dict(),
        "requested_hyperparameters": dataclasses.asdict(hyperparameters),
        # every setting the run used, and one line on each choice (training/auto.py)
        "plan": hp.plan(),
        "lora": lora.to_dict(),
        "seed": seed,
        "dataset_hash": data_hash,
        "example_count": len(examples),
        # the system prompt every example was tuned with, if they share one: generation
        # uses it when a request brings none (inference/generate.py)
        "system_instruction": shared_system(examples),
        # the preamble and field labels every training prompt has: a production prompt
        # without them is answered with a note saying so (data/prompt_format.py)
        "prompt_format": profile_of([ex.text_input for ex in examples]).to_dict(),
        # a classifier's labels: a served answer that is none of them is replaced by the most
        # likely one (catalog/labels.py)
        "answer_labels": labels,
        # how a served answer is decoded (catalog/stopping.py AnswerRules): the pieces every
        # training output holds (an answer does not end before), the pieces' texts that end
        # it where they follow the last piece, the longest output in characters (an answer
        # that long may end without its pieces), the one fixed shape of every output (an
        # answer ends at its length), and whether outputs copy their inputs' words (a new
        # word given up for a near one of the prompt's, catalog/copying.py)
        **rules.to_record(),
        "total_steps": total,
        "completed_steps": step,
        "epochs_run": len(epoch_losses),
        "epoch_losses": epoch_losses,
        "advice": advice.to_dict() if advice else None,
        "selected_epoch": len(epoch_losses) if status == "completed" else None,
        "evaluation": evaluation,
        "snapshots": [s.to_dict() for s in snapshots],
        "tokens": tokens_total,
        "train_seconds": seconds_total,
        "finished_at": datetime.now(UTC).isoformat(),
    }
    write_manifest(output_dir, manifest)
    if selected is not None and selected != len(epoch_losses):
        manifest = select_epoch(output_dir, selected)
    result = TrainResult(
        status=status,
        output_dir=output_dir,
        snapshots=snapshots,
        epoch_losses=epoch_losses,
        advice=advice,
        tokens=tokens_total,
        train_seconds=seconds_total,
        resumed_from_epoch=start_epoch,
        manifest=manifest,
        evaluation=evaluation,
    )
    if status == "completed" and hp.refit and refit_examples:
        from tunelab.training.refit import refit

        # the refit trains an adapter of its own: this run's (its module tree, the optimizer's
        # state) is let go before it starts
        del model, private, optimizer, params, evaluator
        gc.collect()
        return refit(result, base, refit_examples, hp, lora, seed, on_snapshot=on_snapshot,
                     should_cancel=should_cancel, train_memory_mb=train_memory_mb)
    return result


def _adamw(params: list, lr: float):
    """AdamW, fused where the device has it (CPU since torch 2.4, CUDA): one kernel over all the
    LoRA tensors instead of a Python loop over each (SmolLM2's adapter has 420 of them; measured
    60 → 5 ms per optimizer step on a 2-core CPU)."""
    import torch

    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError):  # a device or an older torch without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def _has_module(model: Any, suffix: str) -> bool:
    return any(name.endswith(suffix) for name, _ in model.named_modules())


__all__ = ["Snapshot", "TrainResult", "train", "plan_batches", "read_evaluation",
           "read_manifest"]
