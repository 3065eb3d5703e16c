"""Hugging Face transformers on the context tier: a causal LM's own KV cache, per block.

Needs ``torch`` and ``transformers`` (``pip install 'dpu-emu[context]'``).

    model = AutoModelForCausalLM.from_config(config).eval()
    hasher = BlockHasher(namespace_salt("my-model", tenant="acme", dtype="float32"), block_tokens=64)
    lm = PrefixCachingLM(model, tier, hasher)
    result = lm.prefill(prompt_ids)        # restores the cached prefix, computes the rest,
    next_token = int(result.logits.argmax())  # stores the new full blocks

The cache object API changed across transformers releases; :func:`cache_layers` and
:func:`make_cache` read and build all of them: ``DynamicCache.layers[i].keys/.values``
(4.56+ and 5.x), ``DynamicCache.key_cache/.value_cache`` (4.36 - 4.55) and the legacy
tuple of ``(key, value)`` pairs.  The forward argument is ``cache`` in 5.x and
``past_key_values`` before; :func:`forward_with_cache` picks the one the model takes.
Per-layer tensors are ``[batch, kv_heads, seq, head_dim]``; only batch 1 is cut into
blocks, and sliding-window layers (which keep only the last window) are refused.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .blocking import BlockingContextTier
from .codec import KV_TENSORS_PER_LAYER, BlockLayout, DType, KvBlock
from .keys import BlockHasher, Tokens, token_list

SEQ_DIM = -2  # [batch, kv_heads, seq, head_dim]
BATCH = 1

TORCH_TO_DTYPE: dict[torch.dtype, DType] = {
    torch.float32: DType.FLOAT32, torch.float16: DType.FLOAT16, torch.bfloat16: DType.BFLOAT16,
    torch.float64: DType.FLOAT64, torch.int8: DType.INT8, torch.uint8: DType.UINT8,
}
for _name, _code in (("float8_e4m3fn", DType.FLOAT8_E4M3FN), ("float8_e5m2", DType.FLOAT8_E5M2)):
    if hasattr(torch, _name):
        TORCH_TO_DTYPE[getattr(torch, _name)] = _code
DTYPE_TO_TORCH = {code: dtype for dtype, code in TORCH_TO_DTYPE.items()}

KvLayers = list[tuple[torch.Tensor, torch.Tensor]]


def dtype_code(dtype: torch.dtype) -> DType:
    try:
        return TORCH_TO_DTYPE[dtype]
    except KeyError:
        raise ValueError(f"no context-tier dtype for {dtype}") from None


# -- the cache object, across transformers versions ------------------------------------

def cache_layers(cache: Any) -> KvLayers:
    """Every layer's (keys, values) tensors of a transformers cache object or legacy tuple."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        if any(getattr(layer, "is_sliding", False) for layer in layers):
            raise ValueError("sliding-window cache layers cannot be cut into prefix blocks")
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache") and hasattr(cache, "value_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    if hasattr(cache, "to_legacy_cache"):
        cache = cache.to_legacy_cache()
    if isinstance(cache, tuple | list):
        return [(entry[0], entry[1]) for entry in cache]
    raise TypeError(f"unsupported cache object {type(cache).__name__}")


def make_cache(layers: KvLayers) -> Any:
    """A ``DynamicCache`` holding ``layers`` (each (keys, values) as the model wrote them)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def _cache_argument(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def forward_with_cache(model: Any, input_ids: torch.Tensor, cache: Any | None) -> tuple[torch.Tensor, Any]:
    """Run ``model`` on ``input_ids`` after ``cache`` (None: from scratch); (logits, new cache)."""
    out = model(input_ids=input_ids, use_cache=True, **{_cache_argument(model): cache})
    new_cache = out["cache"] if "cache" in out else out["past_key_values"]
    return out.logits, new_cache


# -- layers <-> blocks -----------------------------------------------------------------

def model_layout(config: Any, block_tokens: int, dtype: torch.dtype) -> BlockLayout:
    """The layout of one block of a model with ``config`` (a transformers config)."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return BlockLayout(config.num_hidden_layers, dtype_code(dtype), (BATCH, kv_heads, block_tokens, head_dim))


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return flat.numpy().tobytes()


def blocks_from_layers(layers: KvLayers, keys: Sequence[bytes], block_tokens: int, *,
                       first_block: int = 0) -> list[KvBlock]:
    """Blocks ``first_block`` .. of a full-sequence cache, one per key."""
    if not layers:
        raise ValueError("the cache has no layers")
    keys0 = layers[0][0]
    if keys0.shape[0] != BATCH:
        raise ValueError(f"only batch {BATCH} caches are cut into blocks, got batch {keys0.shape[0]}")
    shape = list(keys0.shape)
    shape[SEQ_DIM] = block_tokens
    layout = BlockLayout(len(layers), dtype_code(keys0.dtype), tuple(shape), KV_TENSORS_PER_LAYER)
    blocks = []
    for offset, key in enumerate(keys):
        start = (first_block + offset) * block_tokens
        if start + block_tokens > keys0.shape[SEQ_DIM]:
            raise ValueError(f"block {first_block + offset} lies beyond the {keys0.shape[SEQ_DIM]} cached tokens")
        span = slice(start, start + block_tokens)
        payload = torch.cat([tensor[:, :, span, :].reshape(-1) for pair in layers for tensor in pair])
        blocks.append(KvBlock(key, layout, _raw_bytes(payload)))
    return blocks


def layers_from_blocks(blocks: Sequence[KvBlock], device: torch.device | str = "cpu") -> KvLayers:
    """The (keys, values) of every layer, the blocks concatenated along the sequence."""
    if not blocks:
        raise ValueError("no blocks")
    layout = blocks[0].layout
    if any(block.layout != layout for block in blocks):
        raise ValueError("blocks of different layouts")
    dtype = DTYPE_TO_TORCH[layout.dtype]

    def tensor(block: KvBlock, layer: int, index: int) -> torch.Tensor:
        raw = torch.frombuffer(block.tensor_bytes(layer, index), dtype=torch.uint8)
        return raw.view(dtype).reshape(layout.shape)

    layers: KvLayers = []
    with warnings.catch_warnings():
        # A read-only payload (bytes) is only read: torch.cat copies it into the new cache.
        warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
        for layer in range(layout.layers):
            pair = tuple(torch.cat([tensor(block, layer, index) for block in blocks], dim=SEQ_DIM).to(device)
                         for index in range(KV_TENSORS_PER_LAYER))
            layers.append((pair[0], pair[1]))
    return layers


# -- an engine that uses the tier ------------------------------------------------------

@dataclass
class PrefillResult:
    logits: torch.Tensor  # [vocab]: the next token's logits
    cache: Any  # the model's cache object, holding every prompt token
    tokens: int
    restored_tokens: int
    computed_tokens: int
    stored_blocks: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase


class PrefixCachingLM:
    """A causal LM whose prefill restores the longest cached prefix from the tier,
    computes only the rest, and stores the new full blocks.

    At least one token is always computed (the next token's logits come from it), so a
    prompt whose length is a multiple of the block size restores one block fewer."""

    def __init__(self, model: Any, tier: BlockingContextTier | None, hasher: BlockHasher) -> None:
        self.model = model
        self.tier = tier
        self.hasher = hasher
        self.dtype: torch.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.layout = model_layout(model.config, hasher.block_tokens, self.dtype)

    def prefetch(self, tokens: Tokens) -> int:
        """Scheduler side: look the prompt up and start loading its cached prefix in the
        background (the caller goes on computing); a later :meth:`prefill` of the same
        prompt takes the loaded blocks.  Returns how many tokens will be restored."""
        if self.tier is None:
            return 0
        ids = token_list(tokens)
        keys = self.hasher.block_keys(ids, limit=max(0, (len(ids) - 1) // self.hasher.block_tokens))
        present = self.tier.contains(keys)
        if present:
            self.tier.prefetch(keys[:present], layout=self.layout)
        return present * self.hasher.block_tokens

    def restore(self, keys: Sequence[bytes]) -> tuple[list[KvBlock], dict[str, float]]:
        """The longest cached prefix of ``keys`` (contains, then one batched get)."""
        timings: dict[str, float] = {}
        if self.tier is None or not keys:
            return [], timings
        started = time.perf_counter()
        present = self.tier.contains(keys)
        timings["lookup"] = time.perf_counter() - started
        started = time.perf_counter()
        blocks = self.tier.get_prefix(keys[:present], layout=self.layout) if present else []
        timings["retrieve"] = time.perf_counter() - started
        return blocks, timings

    @torch.no_grad()
    def prefill(self, tokens: Tokens, *, use_tier: bool = True, store: bool = True) -> PrefillResult:
        ids = token_list(tokens)
        if not ids:
            raise ValueError("an empty prompt")
        block = self.hasher.block_tokens
        keys = self.hasher.block_keys(ids)
        restorable = (len(ids) - 1) // block
        blocks, timings = self.restore(keys[:restorable]) if use_tier else ([], {})
        restored = len(blocks) * block
        started = time.perf_counter()
        cache = make_cache(layers_from_blocks(blocks, self.device)) if blocks else None
        timings["rebuild"] = time.perf_counter() - started
        started = time.perf_counter()
        suffix = torch.tensor([ids[restored:]], dtype=torch.long, device=self.device)
        logits, cache = forward_with_cache(self.model, suffix, cache)
        timings["compute"] = time.perf_counter() - started
        stored = 0
        if store and self.tier is not None and len(keys) > len(blocks):
            started = time.perf_counter()
            new = blocks_from_layers(cache_layers(cache), keys[len(blocks):], block, first_block=len(blocks))
            stored = self.tier.put(new)
            timings["store"] = time.perf_counter() - started
        return PrefillResult(logits[0, -1], cache, len(ids), restored, len(ids) - restored, stored, timings)

    @torch.no_grad()
    def generate(self, tokens: Tokens, max_new_tokens: int, **prefill_kwargs: Any
                 ) -> tuple[list[int], list[torch.Tensor]]:
        """Greedy decoding: the new tokens and the logits each was chosen from."""
        result = self.prefill(tokens, **prefill_kwargs)
        logits, cache = result.logits, result.cache
        chosen: list[int] = []
        history: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            history.append(logits)
            chosen.append(int(logits.argmax()))
            step = torch.tensor([[chosen[-1]]], dtype=torch.long, device=self.device)
            out, cache = forward_with_cache(self.model, step, cache)
            logits = out[0, -1]
        return chosen, history
