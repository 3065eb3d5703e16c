"""context_tier: an LLM inference KV-cache tier on an NVMe-KV namespace (dpu-emu).

The shape inference engines use for KV offload (LMCache storage backends, Dynamo's KV
block manager): the KV cache is cut into blocks of a fixed number of tokens, each named by
a chained hash of the token prefix (:mod:`context_tier.keys`), stored per layer in a
small checked binary format (:mod:`context_tier.codec`), split into parts when larger
than the store's maximum value size, and moved in pipelined batches over several NVMe
queues (:class:`ContextTier`).  A missing, evicted, torn or corrupt block is a miss: the
engine recomputes it; it never gets wrong data.

    import asyncio
    from context_tier import BlockHasher, ContextTier, NvmeKvBackend, namespace_salt

    async def main() -> None:
        backend = await NvmeKvBackend.connect("127.0.0.1", 4420, "nqn.2026-11.io.dpu-emu:default")
        async with ContextTier(backend) as tier:
            hasher = BlockHasher(namespace_salt("llama-3-8b", tenant="acme"), block_tokens=256)
            keys = hasher.block_keys(prompt_ids)
            hit = await tier.contains(keys)        # longest cached prefix, in blocks
            blocks = await tier.get_prefix(keys[:hit])
            ...
            await tier.put(new_blocks)

Synchronous inference code uses :class:`BlockingContextTier`; a Hugging Face
transformers model uses :mod:`context_tier.hf` (needs torch).
"""

from .backends import (
    DEFAULT_IO_QUEUES,
    DEFAULT_KV_NSID,
    DEFAULT_PART_SIZE,
    FileBackend,
    KvBackend,
    MemoryBackend,
    NvmeKvBackend,
    RedisBackend,
)
from .blocking import BlockingContextTier
from .codec import FORMAT_VERSION, HEADER_SIZE, BlockLayout, DType, KvBlock, decode, encode, parse_header
from .keys import KEY_SIZE, ROOT_PARENT, BlockHasher, chain_key, namespace_salt, part_key
from .tier import DEFAULT_MAX_INFLIGHT, ContextTier, TierStats

__all__ = [
    "DEFAULT_IO_QUEUES",
    "DEFAULT_KV_NSID",
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_PART_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KEY_SIZE",
    "ROOT_PARENT",
    "BlockHasher",
    "BlockLayout",
    "BlockingContextTier",
    "ContextTier",
    "DType",
    "FileBackend",
    "KvBackend",
    "KvBlock",
    "MemoryBackend",
    "NvmeKvBackend",
    "RedisBackend",
    "TierStats",
    "chain_key",
    "decode",
    "encode",
    "namespace_salt",
    "parse_header",
    "part_key",
]
