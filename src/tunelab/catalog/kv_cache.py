"""A key/value cache for decoding that grows by doubling instead of by concatenation.

transformers' ``DynamicCache`` appends each new token's keys and values with ``torch.cat``,
which copies the whole cache at every token of every layer: decoding ``n`` tokens copies
O(n²) of it. On a CPU that copy was the largest single cost of decoding (a third of the time of
answering 10 validation examples, 96 tokens each, on the default model). ``growing_cache``
keeps each layer's keys and values in a buffer with room to spare (doubled when full) and
hands the model views of its filled part, so each token writes only its own keys and values.
The attention computed is the same: the answers are equal to ``DynamicCache``'s
(``tests/unit/test_kv_cache.py``). Layers of other kinds (sliding windows, as Gemma 3's local
layers) keep transformers' own behaviour.
"""

from __future__ import annotations

import inspect
from typing import Any

# The keyword a causal LM's forward pass takes its cache by, per model class: transformers 5
# renamed ``past_key_values`` to ``cache`` (the old name is deprecated, and goes in 5.40).
_CACHE_KEYWORD: dict[type, str] = {}


def with_cache(model: Any, cache: Any) -> dict:
    """The keyword argument that hands ``cache`` to ``model``'s forward pass, under the name
    its transformers version takes (``cache``, or ``past_key_values`` before the rename).
    ``model`` may be a PEFT model: the name is its base model's."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cls = type(inner)
    if cls not in _CACHE_KEYWORD:
        try:
            params = inspect.signature(cls.forward).parameters
        except (TypeError, ValueError):
            params = {}
        _CACHE_KEYWORD[cls] = "cache" if "cache" in params else "past_key_values"
    return {_CACHE_KEYWORD[cls]: cache}


def cache_of(output: Any) -> Any:
    """The cache a forward pass returned (``output.cache``; ``past_key_values`` before the
    rename), without the deprecated name's notice."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def growing_cache(config: Any, capacity: int | None = None) -> Any:
    """A ``DynamicCache`` for a model of ``config`` whose full-attention layers grow in place;
    pass it on the first forward pass (``with_cache``). ``capacity``: the most positions a row
    will hold (its prompt and its answer's budget), where the caller knows it: the buffer grows
    no larger (``_grown``)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = _growing_layer_class()
            layer.capacity = capacity
    return cache


_CLASS: list[type] = []


def _growing_layer_class() -> type:
    if _CLASS:
        return _CLASS[0]
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A ``DynamicLayer`` whose ``keys``/``values`` are views of a larger buffer. Whatever
        replaces them (transformers' ``crop``, ``reorder_cache``, …) is taken as the new
        content: a buffer they are no longer a view of is rebuilt from them."""

        key_buffer: Any = None
        value_buffer: Any = None
        capacity: int | None = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any
                   ) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.key_buffer = self.value_buffer = None
            filled = self.keys.shape[-2] if self.keys.numel() else 0
            n = filled + key_states.shape[-2]
            if not (_fits(self.keys, self.key_buffer, n)
                    and _fits(self.values, self.value_buffer, n)):
                self.key_buffer = _grown(self.keys, key_states, filled, n, self.capacity)
                self.value_buffer = _grown(self.values, value_states, filled, n, self.capacity)
            self.key_buffer[..., filled:n, :] = key_states
            self.value_buffer[..., filled:n, :] = value_states
            self.keys = self.key_buffer[..., :n, :]
            self.values = self.value_buffer[..., :n, :]
            return self.keys, self.values

    _CLASS.append(GrowingLayer)
    return GrowingLayer


def _fits(content: Any, buffer: Any, needed: int) -> bool:
    """Whether ``content`` is the start of ``buffer`` and ``buffer`` has ``needed`` positions."""
    if buffer is None or needed > buffer.shape[-2]:
        return False
    if content.numel() == 0:
        return True
    return (content.data_ptr() == buffer.data_ptr() and content.stride() == buffer.stride()
            and content.shape[:-2] == buffer.shape[:-2])


def _grown(content: Any, states: Any, filled: int, needed: int,
           capacity: int | None = None) -> Any:
    """A buffer with room for ``needed`` positions and as many again (at least 64 more), but
    no more than ``capacity`` where it is known (and at least ``needed``), holding ``content``
    (the ``filled`` positions cached so far). Decoding a batch of validation answers, the
    room doubled past the answers' budget held 1.65 times the cache they needed: the largest
    allocation of a 100-example tune (docs/performance.md "Memory")."""
    room = max(needed + 64, 2 * needed)
    if capacity is not None:
        room = max(needed, min(room, capacity))
    new = states.new_empty((*states.shape[:-2], room, states.shape[-1]))
    if filled:
        new[..., :filled, :] = content
    return new


# The most a forward pass's keys and values are kept for decoding on from it (``pass_cache``):
# a validation loss pass of the default model over 1,600 tokens keeps 74 MB (46 KB a token).
# The validation scoring counts what it still holds from earlier passes in it too; the copies
# it keeps of a pass's states are at most the pass's, so it holds at most twice this at once.
PASS_CACHE_BYTES = 128 * 2**20


def pass_cache(config: Any, tokens: int, bytes_per_token: int) -> Any | None:
    """A ``DynamicCache`` to hand a forward pass over ``tokens`` positions whose keys and values
    are read back afterwards (``states_at``), or None where they could not be: a layer of
    another kind (a sliding window keeps only its last tokens), or more than
    ``PASS_CACHE_BYTES``."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if tokens * bytes_per_token > PASS_CACHE_BYTES:
        return None
    cache = DynamicCache(config=config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    return cache


class Prefilled:
    """The keys and values a forward pass computed for ``tokens``, the start of one row, each
    at its own position (0, 1, …): decoding a row that begins with them need not compute them
    again (``catalog/greedy.py``). ``layers``: per layer, keys and values of shape
    (key/value heads, len(tokens), head size)."""

    def __init__(self, tokens: list[int], layers: list[tuple[Any, Any]]):
        self.tokens, self.layers = tokens, layers


def states_at(cache: Any, row: int, columns: list[int], tokens: list[int]) -> Prefilled | None:
    """The keys and values ``cache`` holds from a forward pass at ``columns`` of ``row``, in
    order (a copy: the pass's cache can go), for the ``tokens`` the pass read there; None
    where it kept none (no ``columns``, or a cache that is not ``pass_cache``'s)."""
    import torch

    if cache is None or not columns or not cache.layers or not all(
            getattr(layer, "is_initialized", False) for layer in cache.layers):
        return None
    at = torch.tensor(columns, device=cache.layers[0].keys.device)
    return Prefilled(list(tokens), [(layer.keys[row][:, at], layer.values[row][:, at])
                                    for layer in cache.layers])


def prefilled_cache(config: Any, rows: list[Prefilled], capacity: int) -> Any:
    """A ``growing_cache`` holding ``rows``' keys and values, each row's on the right (padded on
    the left to the longest, as decoding lays out its prompts), with room for ``capacity``
    positions a row."""
    cache = growing_cache(config, capacity)
    width = max(len(r.tokens) for r in rows)
    for i in range(len(cache.layers)):
        keys, values = rows[0].layers[i]
        k = keys.new_zeros((len(rows), keys.shape[0], width, keys.shape[-1]))
        v = values.new_zeros((len(rows), values.shape[0], width, values.shape[-1]))
        for r, row in enumerate(rows):
            n = len(row.tokens)
            k[r, :, width - n:] = row.layers[i][0]
            v[r, :, width - n:] = row.layers[i][1]
        cache.update(k, v, i)
    return cache
