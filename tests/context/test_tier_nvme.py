"""ContextTier against a real dpu-emu device: NVMe-KV over NVMe/TCP on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from context_tier import (
    BlockHasher,
    BlockingContextTier,
    BlockLayout,
    ContextTier,
    DType,
    KvBlock,
    NvmeKvBackend,
    namespace_salt,
    part_key,
)

from ._support import KIB, LOOPBACK, MIB, RunningDevice, run

HASHER = BlockHasher(namespace_salt("nvme-test", tenant="t0"), 16)
BIG = BlockLayout(layers=4, dtype=DType.BFLOAT16, shape=(1, 4, 16, 2048))  # 2 MiB: 3 parts of 1 MiB
QUEUES = 4


def blocks_for(n: int, layout: BlockLayout, seed: int = 0) -> list[KvBlock]:
    keys = HASHER.block_keys([seed * 100_000 + i for i in range(16 * n)])
    return [KvBlock(key, layout, os.urandom(layout.payload_nbytes)) for key in keys]


async def connect(dev: RunningDevice, **kw: Any) -> ContextTier:
    return ContextTier(await NvmeKvBackend.connect(LOOPBACK, dev.io_port, dev.subnqn, nr_io_queues=QUEUES), **kw)


def test_split_blocks_round_trip_over_nvme_kv(make_device: Callable[..., RunningDevice]) -> None:
    dev = make_device(capacity=64 * MIB)

    async def body() -> None:
        async with await connect(dev) as tier:
            assert tier.part_size == MIB and BIG.parts(MIB) == 3
            blocks = blocks_for(6, BIG)
            keys = [b.key for b in blocks]
            assert await tier.put(blocks) == 6
            assert await tier.contains(keys) == 6
            got = await tier.get(keys, layout=BIG)
            assert [bytes(g.payload) if g else None for g in got] == [bytes(b.payload) for b in blocks]
            # one part evicted / lost -> that block is a miss, and the prefix stops there
            await tier.backend.delete(part_key(keys[3], 2))
            assert [b.key for b in await tier.get_prefix(keys)] == keys[:3]
            # a size hint that is too small still returns the whole value (a second Retrieve)
            whole = await tier.backend.retrieve(keys[0])
            assert whole is not None and len(whole) == MIB
            assert await tier.backend.retrieve(keys[0], 100) == whole
            unknown = blocks_for(1, BIG, seed=7)[0].key
            assert await tier.get([unknown]) == [None]
            assert await tier.contains([unknown, *keys]) == 0
    run(body())


def test_commands_spread_over_every_queue(make_device: Callable[..., RunningDevice]) -> None:
    dev = make_device(capacity=64 * MIB)
    small = BlockLayout(2, DType.FLOAT16, (1, 2, 16, 64))

    async def body() -> None:
        async with await connect(dev) as tier:
            backend = tier.backend
            assert isinstance(backend, NvmeKvBackend)
            used: set[int] = set()
            original = backend.controller.queue

            def spy(index: int | None = None) -> Any:
                queue = original(index)
                used.add(id(queue))
                return queue

            backend.controller.queue = spy  # type: ignore[method-assign]
            blocks = blocks_for(32, small)
            assert await tier.put(blocks) == 32
            assert len(used) == QUEUES
    run(body())


def test_cache_mode_eviction_is_a_miss_never_an_error(make_device: Callable[..., RunningDevice]) -> None:
    dev = make_device(capacity=8 * MIB)  # 8 MiB namespace, 24 MiB of blocks

    async def body() -> None:
        async with await connect(dev) as tier:
            blocks = blocks_for(12, BIG)
            keys = [b.key for b in blocks]
            for start in range(0, 12, 3):  # four requests, three blocks each
                assert await tier.put(blocks[start:start + 3]) == 3
            got = await tier.get(keys)
            assert all(g is None or bytes(g.payload) == bytes(b.payload) for g, b in zip(got, blocks, strict=True))
            assert sum(g is None for g in got) >= 8  # at most 4 blocks of 2 MiB fit
            assert got[-1] is not None
            assert tier.stats.blocks_missed >= 8 and tier.stats.blocks_rejected == 0
    run(body())


def test_strict_mode_refusal_leaves_no_torn_block(make_device: Callable[..., RunningDevice]) -> None:
    dev = make_device(capacity=5 * MIB, mode="strict")

    async def body() -> None:
        async with await connect(dev) as tier:
            blocks = blocks_for(4, BIG)
            stored = await tier.put(blocks)
            assert stored < 4 and tier.stats.blocks_put_failed == 4 - stored
            got = await tier.get([b.key for b in blocks])
            assert sum(g is not None for g in got) == stored
            for block in blocks:
                present = [await tier.backend.exist(part_key(block.key, i)) for i in range(3)]
                assert all(present) or not any(present)
    run(body())


def test_blocking_tier_prefetch_overlaps_the_callers_work(make_device: Callable[..., RunningDevice]) -> None:
    dev = make_device(capacity=64 * MIB, max_value_size=256 * KIB)
    tier = BlockingContextTier.connect_nvme(LOOPBACK, dev.io_port, dev.subnqn, nr_io_queues=2)
    try:
        assert tier.tier.part_size == 256 * KIB
        blocks = blocks_for(4, BIG)
        keys = [b.key for b in blocks]
        assert tier.put(blocks) == 4
        future = tier.prefetch(keys)
        busy = sum(i * i for i in range(10_000))  # the caller's "compute"
        got = tier.get(keys)
        assert busy and future.result(10) is not None
        assert all(g is not None and bytes(g.payload) == bytes(b.payload) for g, b in zip(got, blocks, strict=True))
        assert tier.stats.prefetch_hits == 4
        assert tier.contains(keys) == 4
    finally:
        tier.close()
