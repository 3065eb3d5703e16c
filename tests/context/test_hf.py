"""A real transformer (seeded random weights, CPU) on the context tier through dpu-emu.

Tolerances: a prefix restored from the tier gives logits *bit-identical* to computing the
same split locally (prefix, then suffix on the model's own cache): the tier moves the
model's KV tensors exactly.  Against one full prefill of the whole prompt the logits agree
within ``ATOL`` = 1e-5 (measured about 5e-7 in float32: a different matrix shape sums in a
different order) and the chosen next tokens are equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from context_tier import BlockHasher, BlockingContextTier, namespace_salt, part_key

from ._support import KIB, LOOPBACK, MIB, RunningDevice, need

torch = need("torch")
transformers = need("transformers")

from context_tier.hf import (  # noqa: E402  (after the optional-dependency gate)
    PrefixCachingLM,
    blocks_from_layers,
    cache_layers,
    forward_with_cache,
    layers_from_blocks,
    make_cache,
    model_layout,
)

SEED = 1234
VOCAB = 1000
BLOCK = 32
PROMPT = 200  # 6 full blocks + 8 tokens
ATOL = 1e-5
NEW_TOKENS = 4
PART = 64 * KIB  # the device's max value size here: every block is split into parts
KINDS = ["llama", "gpt2"]


def tiny_model(kind: str) -> Any:
    """4 layers, 4 heads, hidden 256, vocab 1000, seeded: the same weights every call."""
    transformers.logging.set_verbosity_error()
    if kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=512,
                                       num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=1024)
    else:
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=256, n_layer=4, n_head=4, n_positions=1024,
                                      bos_token_id=0, eos_token_id=0)
    torch.manual_seed(SEED)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


def prompt(n: int = PROMPT, seed: int = 7) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n,), generator=gen).tolist()


@torch.no_grad()
def local_logits(model: Any, ids: list[int], writer_cache: Any, restored: int) -> Any:
    """The bit-exact reference: the suffix run on the writer's own KV of the first
    ``restored`` tokens, kept locally (no tier)."""
    prefix = [(k[:, :, :restored].clone(), v[:, :, :restored].clone()) for k, v in cache_layers(writer_cache)]
    logits, _ = forward_with_cache(model, torch.tensor([ids[restored:]]), make_cache(prefix))
    return logits[0, -1]


@torch.no_grad()
def full_logits(model: Any, ids: list[int]) -> Any:
    """Full recomputation: the whole prompt in one prefill."""
    logits, _ = forward_with_cache(model, torch.tensor([ids]), None)
    return logits[0, -1]


def assert_like_recomputation(logits: Any, model: Any, ids: list[int]) -> None:
    full = full_logits(model, ids)
    assert torch.allclose(logits, full, rtol=0, atol=ATOL), float((logits - full).abs().max())
    assert int(logits.argmax()) == int(full.argmax())


@pytest.fixture
def tier_on_device(make_device: Callable[..., RunningDevice]) -> Iterator[Callable[..., BlockingContextTier]]:
    tiers: list[BlockingContextTier] = []

    def factory(capacity: int = 64 * MIB, dev: RunningDevice | None = None) -> BlockingContextTier:
        dev = dev or make_device(capacity=capacity, max_value_size=PART)
        tier = BlockingContextTier.connect_nvme(LOOPBACK, dev.io_port, dev.subnqn, nr_io_queues=4)
        tiers.append(tier)
        return tier

    yield factory
    for tier in tiers:
        tier.close()


def hasher(kind: str, tenant: str = "acme") -> BlockHasher:
    return BlockHasher(namespace_salt(f"tiny-{kind}", tenant=tenant, dtype="float32"), BLOCK)


@pytest.mark.parametrize("kind", KINDS)
def test_cache_adapters_round_trip(kind: str) -> None:
    model = tiny_model(kind)
    ids = prompt(3 * BLOCK)
    with torch.no_grad():
        _, cache = forward_with_cache(model, torch.tensor([ids]), None)
    layers = cache_layers(cache)
    keys = hasher(kind).block_keys(ids)
    blocks = blocks_from_layers(layers, keys, BLOCK)
    assert blocks[0].layout == model_layout(model.config, BLOCK, torch.float32)
    restored = layers_from_blocks(blocks[:2])
    for (k, v), (rk, rv) in zip(layers, restored, strict=True):
        assert torch.equal(k[:, :, :2 * BLOCK], rk) and torch.equal(v[:, :, :2 * BLOCK], rv)
    rebuilt = cache_layers(make_cache(restored))
    assert all(torch.equal(a, b) for pair, again in zip(restored, rebuilt, strict=True)
               for a, b in zip(pair, again, strict=True))
    legacy = tuple((k, v) for k, v in layers)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(cache_layers(legacy), layers, strict=True))
    with pytest.raises(ValueError):
        blocks_from_layers(layers, keys + keys[:1], BLOCK)  # a 4th block is not in the cache


@pytest.mark.parametrize("kind", KINDS)
def test_restored_prefix_gives_the_logits_of_recomputation(kind: str, tier_on_device: Any) -> None:
    tier = tier_on_device()
    ids = prompt()
    writer = PrefixCachingLM(tiny_model(kind), tier, hasher(kind))
    first = writer.prefill(ids)
    assert first.restored_tokens == 0 and first.stored_blocks == PROMPT // BLOCK
    assert writer.layout.parts(PART) > 1  # blocks really are split on the device

    fresh = tiny_model(kind)  # a new instance: same seed, same weights, empty cache
    reader = PrefixCachingLM(fresh, tier, hasher(kind))
    result = reader.prefill(ids)
    assert result.restored_tokens == PROMPT // BLOCK * BLOCK and result.computed_tokens == PROMPT % BLOCK
    assert torch.equal(result.logits, local_logits(fresh, ids, first.cache, result.restored_tokens))
    assert_like_recomputation(result.logits, fresh, ids)
    # the restored KV tensors are the writer's, bit for bit
    for (k, v), (wk, wv) in zip(cache_layers(result.cache), cache_layers(first.cache), strict=True):
        assert torch.equal(k[:, :, :result.restored_tokens], wk[:, :, :result.restored_tokens])
        assert torch.equal(v[:, :, :result.restored_tokens], wv[:, :, :result.restored_tokens])

    tokens, history = reader.generate(ids, NEW_TOKENS)
    ref_tokens, ref_history = PrefixCachingLM(fresh, None, hasher(kind)).generate(ids, NEW_TOKENS)
    assert tokens == ref_tokens
    assert all(torch.allclose(a, b, rtol=0, atol=ATOL) for a, b in zip(history, ref_history, strict=True))


def test_prefetch_overlaps_the_previous_requests_compute(tier_on_device: Any) -> None:
    tier = tier_on_device()
    model = tiny_model("llama")
    lm = PrefixCachingLM(model, tier, hasher("llama"))
    ids = prompt()
    first = lm.prefill(ids)
    assert lm.prefetch(ids) == PROMPT // BLOCK * BLOCK  # returns at once; loading goes on
    full_logits(model, prompt(seed=3))  # another request's prefill meanwhile
    result = lm.prefill(ids, store=False)
    assert tier.stats.prefetch_hits == PROMPT // BLOCK
    assert torch.equal(result.logits, local_logits(model, ids, first.cache, result.restored_tokens))


def test_shared_prefix_hits_and_other_tenants_miss(tier_on_device: Any) -> None:
    tier = tier_on_device()
    model = tiny_model("llama")
    ids = prompt()
    first = PrefixCachingLM(model, tier, hasher("llama")).prefill(ids)
    shared = ids[:100] + prompt(60, seed=99)  # shares 3 full blocks (96 tokens)
    lm = PrefixCachingLM(model, tier, hasher("llama"))
    result = lm.prefill(shared)
    assert result.restored_tokens == 3 * BLOCK
    assert torch.equal(result.logits, local_logits(model, shared, first.cache, 3 * BLOCK))
    assert_like_recomputation(result.logits, model, shared)
    other = PrefixCachingLM(model, tier, hasher("llama", tenant="globex")).prefill(ids, store=False)
    assert other.restored_tokens == 0
    assert_like_recomputation(other.logits, model, ids)


def test_a_lost_part_means_recomputation_from_that_block(tier_on_device: Any) -> None:
    tier = tier_on_device()
    model = tiny_model("llama")
    ids = prompt()
    lm = PrefixCachingLM(model, tier, hasher("llama"))
    first = lm.prefill(ids)
    keys = hasher("llama").block_keys(ids)
    evicted = part_key(keys[2], 1)
    tier.run(tier.backend.delete(evicted))
    assert tier.contains(keys) == len(keys)  # Exist on part 0 cannot see it: get does
    result = lm.prefill(ids, store=False)
    assert result.restored_tokens == 2 * BLOCK
    assert torch.equal(result.logits, local_logits(model, ids, first.cache, 2 * BLOCK))
    assert_like_recomputation(result.logits, model, ids)
    assert tier.stats.blocks_missed == 1


def test_eviction_gives_misses_and_recomputation_never_wrong_logits(tier_on_device: Any) -> None:
    """A 1 MiB cache-mode namespace; prompts whose blocks add up to 3 MiB."""
    tier = tier_on_device(capacity=MIB)
    model = tiny_model("llama")
    lm = PrefixCachingLM(model, tier, hasher("llama"))
    prompts = [prompt(seed=s) for s in range(4)]
    for ids in prompts:
        assert lm.prefill(ids).stored_blocks == PROMPT // BLOCK
    restored = []
    for ids in prompts:
        result = lm.prefill(ids)
        restored.append(result.restored_tokens)
        assert_like_recomputation(result.logits, model, ids)
    assert restored[0] < PROMPT // BLOCK * BLOCK  # the oldest prompt was (partly) evicted
    assert tier.stats.blocks_rejected == 0
