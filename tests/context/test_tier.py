"""ContextTier over in-process backends: put/get/contains/prefetch, splitting, misses."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_tier import (
    BlockHasher,
    BlockLayout,
    ContextTier,
    DType,
    FileBackend,
    KvBackend,
    KvBlock,
    MemoryBackend,
    RedisBackend,
    namespace_salt,
    part_key,
)
from context_tier.backends import Buffer
from context_tier.codec import HEADER_SIZE

from ._support import LOOPBACK, need, run

LAYOUT = BlockLayout(layers=2, dtype=DType.FLOAT32, shape=(1, 2, 4, 16))  # 2 KiB payload
PART = 512  # -> 5 parts per block
HASHER = BlockHasher(namespace_salt("unit"), 4)
REDIS_START_TIMEOUT_S = 10.0
POLL_S = 0.05


def make_blocks(n: int, layout: BlockLayout = LAYOUT, seed: int = 0) -> list[KvBlock]:
    keys = HASHER.block_keys([seed * 1000 + i for i in range(4 * n)])
    return [KvBlock(key, layout, os.urandom(layout.payload_nbytes)) for key in keys]


def same(a: KvBlock | None, b: KvBlock) -> bool:
    return a is not None and a.key == b.key and a.layout == b.layout and bytes(a.payload) == bytes(b.payload)


def test_put_get_contains_with_split_blocks() -> None:
    async def body() -> None:
        backend = MemoryBackend(max_value_size=PART)
        tier = ContextTier(backend)
        blocks = make_blocks(6)
        assert LAYOUT.parts(PART) == 5
        assert await tier.put(blocks) == 6
        assert len(backend.values) == 6 * 5
        assert all(len(v) <= PART for v in backend.values.values())
        got = await tier.get([b.key for b in blocks], layout=LAYOUT)
        assert all(same(g, b) for g, b in zip(got, blocks, strict=True))
        assert await tier.contains([b.key for b in blocks]) == 6
        other = make_blocks(2, seed=9)
        assert await tier.contains([b.key for b in blocks[:3]] + [other[0].key] + [blocks[4].key]) == 3
        assert await tier.get([other[0].key]) == [None]
        assert tier.stats.blocks_hit == 6 and tier.stats.blocks_missed == 1
    run(body())


def test_a_missing_part_makes_the_block_a_miss() -> None:
    async def body() -> None:
        backend = MemoryBackend(max_value_size=PART)
        tier = ContextTier(backend)
        blocks = make_blocks(4)
        await tier.put(blocks)
        await backend.delete(part_key(blocks[2].key, 3))  # "evicted"
        got = await tier.get([b.key for b in blocks])
        assert [g is not None for g in got] == [True, True, False, True]
        prefix = await tier.get_prefix([b.key for b in blocks])
        assert [p.key for p in prefix] == [b.key for b in blocks[:2]]
    run(body())


def test_a_corrupted_part_is_a_miss_and_a_key_collision_is_rejected() -> None:
    async def body() -> None:
        backend = MemoryBackend(max_value_size=PART)
        tier = ContextTier(backend)
        blocks = make_blocks(3)
        await tier.put(blocks)
        k = part_key(blocks[0].key, 2)
        backend.values[k] = backend.values[k][:10] + bytes([backend.values[k][10] ^ 1]) + backend.values[k][11:]
        backend.values[blocks[1].key] = backend.values[blocks[2].key]  # another block's data under this key
        got = await tier.get([b.key for b in blocks])
        assert got[0] is None and got[1] is None and same(got[2], blocks[2])
        assert tier.stats.blocks_rejected == 2
    run(body())


def test_parts_hint_adapts_to_larger_and_smaller_blocks() -> None:
    async def body() -> None:
        backend = MemoryBackend(max_value_size=PART)
        tier = ContextTier(backend)
        small = BlockLayout(1, DType.UINT8, (PART - HEADER_SIZE,))  # exactly one part
        big = BlockLayout(1, DType.UINT8, (PART * 7,))
        s, b = make_blocks(1, small, seed=1)[0], make_blocks(1, big, seed=2)[0]
        await tier.put([s])
        reader = ContextTier(backend)  # a fresh reader guesses one part
        assert same((await reader.get([b.key]))[0], b) is False  # not stored yet
        await tier.put([b])
        assert same((await reader.get([b.key]))[0], b)
        assert same((await reader.get([s.key]))[0], s)
    run(body())


def test_prefetch_overlaps_and_get_takes_its_results() -> None:
    async def body() -> None:
        backend = MemoryBackend(max_value_size=PART)
        tier = ContextTier(backend)
        blocks = make_blocks(5)
        await tier.put(blocks)
        keys = [b.key for b in blocks]
        calls = backend.calls["retrieve"]
        pending = tier.prefetch(keys)
        await asyncio.sleep(0)  # "compute" while it runs
        got = await tier.get(keys)
        assert all(same(g, b) for g, b in zip(got, blocks, strict=True))
        assert backend.calls["retrieve"] - calls == 5 * 5  # fetched once, not twice
        assert tier.stats.prefetch_hits == 5
        assert [g.key for g in await pending if g] == keys
        tier.prefetch(keys[:2])
        tier.discard_prefetched()
        assert await tier.get(keys[:1]) != [None]
    run(body())


def test_a_refused_store_leaves_no_torn_block() -> None:
    async def body() -> None:
        backend = MemoryBackend(max_value_size=PART)
        refused = 3
        original = backend.store

        async def flaky(key: bytes, value: Buffer) -> bool:
            return False if key == part_key(blocks[1].key, refused) else await original(key, value)

        backend.store = flaky  # type: ignore[method-assign]
        tier = ContextTier(backend)
        blocks = make_blocks(3)
        assert await tier.put(blocks) == 2
        assert tier.stats.blocks_put_failed == 1
        assert not any(part_key(blocks[1].key, i) in backend.values for i in range(5))
        assert await tier.contains([b.key for b in blocks]) == 1
    run(body())


def test_lru_eviction_turns_into_misses_never_wrong_data() -> None:
    async def body() -> None:
        per_block = 5 * PART
        backend = MemoryBackend(max_value_size=PART, capacity_bytes=4 * per_block)
        tier = ContextTier(backend)
        blocks = make_blocks(10)
        assert await tier.put(blocks) == 10
        assert backend.evictions > 0
        keys = [b.key for b in blocks]
        assert await tier.contains(keys) >= 4
        got = await tier.get(keys)
        assert all(same(g, b) for g, b in zip(got, blocks, strict=True) if g is not None)
        # Stored last block first: LRU evicted the sequence from its tail, the prefix survives.
        assert [g is not None for g in got] == [True] * 4 + [False] * 6
        assert tier.stats.blocks_missed == 6
        assert [p.key for p in await tier.get_prefix(keys)] == keys[:4]
    run(body())


def test_delete_removes_every_part() -> None:
    async def body() -> None:
        backend = MemoryBackend(max_value_size=PART)
        tier = ContextTier(backend)
        blocks = make_blocks(2)
        await tier.put(blocks)
        await tier.delete([blocks[0].key])
        assert len(backend.values) == 5
        assert await tier.get([blocks[0].key]) == [None]
    run(body())


def test_bad_tier_parameters() -> None:
    with pytest.raises(ValueError):
        ContextTier(MemoryBackend(max_value_size=PART), part_size=PART + 1)
    with pytest.raises(ValueError):
        ContextTier(MemoryBackend(max_value_size=PART), max_inflight=0)


# -- the same contract on the file and redis backends ---------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        pytest.skip("redis-server is not installed")
    need("redis")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while socket.socket().connect_ex((LOOPBACK, port)) != 0:
            assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(POLL_S)
        yield port
    finally:
        proc.terminate()
        proc.wait(REDIS_START_TIMEOUT_S)


async def contract(backend: KvBackend) -> None:
    tier = ContextTier(backend, part_size=PART)
    blocks = make_blocks(4)
    assert await tier.put(blocks) == 4
    keys = [b.key for b in blocks]
    assert all(same(g, b) for g, b in zip(await tier.get(keys), blocks, strict=True))
    assert await tier.contains(keys) == 4
    await backend.delete(part_key(keys[1], 4))
    assert await tier.get_prefix(keys) == (await tier.get(keys[:1]))
    await tier.delete(keys)
    assert await tier.contains(keys) == 0
    await tier.close()


def test_file_backend_contract(tmp_path: Path) -> None:
    run(contract(FileBackend(tmp_path / "blocks")))
    assert not [p for p in (tmp_path / "blocks").iterdir() if p.name.startswith(".tmp-")]


def test_redis_backend_contract(redis_port: int) -> None:
    async def body() -> None:
        await contract(RedisBackend.connect(LOOPBACK, redis_port))
    run(body())


def test_a_reader_with_another_part_size_still_reads_whole_blocks() -> None:
    async def body() -> None:
        backend = MemoryBackend(max_value_size=PART)
        blocks = make_blocks(3)
        assert await ContextTier(backend, part_size=300).put(blocks) == 3
        reader = ContextTier(backend)  # part size 512: every guess of sizes and counts is off
        got = await reader.get([b.key for b in blocks])
        assert all(same(g, b) for g, b in zip(got, blocks, strict=True))
        assert all(same(g, b) for g, b in zip(await reader.get([b.key for b in blocks], layout=LAYOUT), blocks,
                                              strict=True))
    run(body())
