"""The context tier client: put, get, contains and prefetch of KV-cache blocks, batched and
pipelined over a :class:`~context_tier.backends.KvBackend`.

Theory of operation
-------------------
Every public call takes a batch of blocks or keys and turns it into one backend command
per part, all issued at once (``asyncio.gather``) and bounded by ``max_inflight``; the NVMe
backend spreads them round-robin over its I/O queues, so a batch keeps every queue busy.

* ``put``: encode each block (header + payload, cut into parts of ``part_size``) and store
  every part.  Commands are issued from the last block of the batch to the first (and
  ``get`` does the same), so an LRU store such as a cache-mode NVMe-KV namespace, which
  evicts the least recently used values first, evicts a sequence from its tail: what
  survives is still a usable prefix.  A refused part (no room) makes the block a miss: its
  other parts are deleted.
* ``get``: retrieve every part at once, guessing their number and sizes from the expected
  layout (or the last block seen) - NVMe-KV Retrieve sizes its buffer in advance, and a
  tight buffer is several times faster than the 1 MiB maximum; the header says what is
  really there, and any part still missing is fetched.  A missing
  part, a bad header, a key or layout mismatch or a CRC failure is a miss (None), never an
  exception and never wrong data.
* ``contains``: Exist on every block's part 0, all at once; the answer is the length of
  the longest prefix that exists.  It is a hint (an eviction may strike between contains
  and get); ``get`` / ``get_prefix`` are authoritative.
* ``prefetch``: start the gets now and return at once; a later ``get`` of the same keys
  waits for those results instead of asking again.  The caller computes meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .backends import Buffer, KvBackend
from .codec import HEADER_SIZE, BlockLayout, KvBlock, decode, encode, parse_header
from .keys import part_key

log = logging.getLogger("context_tier")

DEFAULT_MAX_INFLIGHT = 32  # backend commands in flight at once (QD 8 over 4 queues)
DEFAULT_PREFETCH_LIMIT = 4096  # blocks whose prefetched result may wait for a get


@dataclass
class TierStats:
    """Counters since the tier was created (or :meth:`ContextTier.reset_stats`)."""

    blocks_put: int = 0
    blocks_put_failed: int = 0
    bytes_put: int = 0
    blocks_hit: int = 0
    blocks_missed: int = 0
    blocks_rejected: int = 0  # present but torn, corrupt or of another layout
    bytes_got: int = 0
    prefetch_hits: int = 0
    commands: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ContextTier:
    """KV-cache blocks in a key-value store, addressed by the keys of :mod:`context_tier.keys`."""

    def __init__(self, backend: KvBackend, *, part_size: int | None = None,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, prefetch_limit: int = DEFAULT_PREFETCH_LIMIT) -> None:
        limit = backend.max_value_size
        self.part_size = limit if part_size is None else part_size
        if not HEADER_SIZE < self.part_size <= limit:
            raise ValueError(f"part_size must be in {HEADER_SIZE + 1}..{limit} (the backend's max value size)")
        if max_inflight <= 0:
            raise ValueError("max_inflight must be positive")
        self.backend = backend
        self.stats = TierStats()
        self._slots = asyncio.Semaphore(max_inflight)
        self._value_hint = self.part_size  # one full part until a block is seen
        self._prefetch_limit = prefetch_limit
        self._pending: OrderedDict[bytes, asyncio.Task[KvBlock | None]] = OrderedDict()

    # -- backend commands, bounded ---------------------------------------------------

    async def _store(self, key: bytes, value: Buffer) -> bool:
        async with self._slots:
            self.stats.commands += 1
            return await self.backend.store(key, value)

    async def _retrieve(self, key: bytes, size_hint: int | None = None) -> bytes | bytearray | None:
        async with self._slots:
            self.stats.commands += 1
            return await self.backend.retrieve(key, size_hint)

    async def _exist(self, key: bytes) -> bool:
        async with self._slots:
            self.stats.commands += 1
            return await self.backend.exist(key)

    async def _delete(self, key: bytes) -> None:
        async with self._slots:
            self.stats.commands += 1
            await self.backend.delete(key)

    # -- put ---------------------------------------------------------------------------

    async def put(self, blocks: Iterable[KvBlock]) -> int:
        """Store every block (all parts pipelined); returns how many were stored.  A block
        the store refuses (no room in a strict namespace, too large) is skipped, not an
        error, and none of its parts is left behind."""
        batch = [(block, encode(block, self.part_size)) for block in blocks]
        jobs: list[Coroutine[Any, Any, bool]] = []
        for block, parts in reversed(batch):  # the last block first: see the module docstring
            self._pending.pop(block.key, None)
            jobs.extend(self._store(part_key(block.key, index), part) for index, part in enumerate(parts))
        results = iter(reversed(await asyncio.gather(*jobs)))
        stored = 0
        torn: list[bytes] = []
        for block, parts in batch:
            outcome = [next(results) for _ in parts][::-1]  # results of this block, in part order
            if all(outcome):
                stored += 1
                self.stats.blocks_put += 1
                self.stats.bytes_put += block.layout.payload_nbytes
                self._value_hint = HEADER_SIZE + block.layout.payload_nbytes
            else:
                self.stats.blocks_put_failed += 1
                torn.extend(part_key(block.key, index) for index, ok in enumerate(outcome) if ok)
        if torn:  # a block missing a part must not look present
            await asyncio.gather(*(self._delete(key) for key in torn))
        return stored

    # -- get ---------------------------------------------------------------------------

    def _part_sizes(self, value_length: int) -> list[int]:
        """The length of every part of a stored value of ``value_length`` bytes."""
        full, rest = divmod(value_length, self.part_size)
        return [self.part_size] * full + ([rest] if rest else [])

    async def _get_one(self, key: bytes, expected: BlockLayout | None) -> KvBlock | None:
        # Guess the parts' sizes (from the expected layout, else from the last block seen)
        # and fetch them all at once; the header says what is really there.
        guess = self._part_sizes(HEADER_SIZE + expected.payload_nbytes if expected else self._value_hint)
        parts: list[bytes | bytearray | None] = list(await asyncio.gather(
            *(self._retrieve(part_key(key, index), size) for index, size in enumerate(guess))))
        head = parts[0]
        if head is None:
            self.stats.blocks_missed += 1
            return None
        header = parse_header(head)
        if header is None or header.key != key:
            self.stats.blocks_rejected += 1
            return None
        if header.parts > len(guess):
            sizes = self._part_sizes(HEADER_SIZE + header.payload_nbytes) if header.part_size == self.part_size \
                else [header.part_size] * header.parts
            parts.extend(await asyncio.gather(*(self._retrieve(part_key(key, index), sizes[index])
                                                for index in range(len(guess), header.parts))))
        parts = parts[:header.parts]
        if any(part is None for part in parts):
            self.stats.blocks_missed += 1  # a part was evicted: the block is gone
            return None
        block = decode(key, parts, expected)
        if block is None:
            self.stats.blocks_rejected += 1
            return None
        self._value_hint = HEADER_SIZE + header.payload_nbytes
        self.stats.blocks_hit += 1
        self.stats.bytes_got += block.layout.payload_nbytes
        return block

    async def get(self, keys: Sequence[bytes], *, layout: BlockLayout | None = None) -> list[KvBlock | None]:
        """The block of every key, None for a miss (all fetched at once).  With ``layout``,
        a block of any other layout is a miss too."""
        tasks: list[asyncio.Future[KvBlock | None]] = []
        for key in reversed(keys):  # the last block first, so the first is the most recently used
            pending = self._pending.pop(key, None)
            if pending is not None:
                self.stats.prefetch_hits += 1
                tasks.append(pending)
            else:
                tasks.append(asyncio.ensure_future(self._get_one(key, layout)))
        results = list(await asyncio.gather(*tasks))[::-1]
        if layout is not None:
            results = [block if block is None or block.layout == layout else None for block in results]
        return results

    async def get_prefix(self, keys: Sequence[bytes], *, layout: BlockLayout | None = None) -> list[KvBlock]:
        """The blocks of the longest prefix of ``keys`` that is present (one batch)."""
        prefix: list[KvBlock] = []
        for block in await self.get(keys, layout=layout):
            if block is None:
                break
            prefix.append(block)
        return prefix

    # -- contains / prefetch / delete ---------------------------------------------------

    async def contains(self, keys: Sequence[bytes]) -> int:
        """How many leading blocks of ``keys`` are present (Exist on part 0, all at once)."""
        present = await asyncio.gather(*(self._exist(key) for key in keys))
        count = 0
        for exists in present:
            if not exists:
                break
            count += 1
        return count

    def prefetch(self, keys: Sequence[bytes], *, layout: BlockLayout | None = None) -> asyncio.Future[
            list[KvBlock | None]]:
        """Start fetching ``keys`` now; the returned future resolves to what ``get`` would
        return, and a later ``get`` of any of these keys takes the prefetched result."""
        tasks = []
        for key in keys:
            task = self._pending.get(key)
            if task is None:
                task = asyncio.ensure_future(self._get_one(key, layout))
                self._pending[key] = task
            tasks.append(task)
        while len(self._pending) > self._prefetch_limit:
            _, stale = self._pending.popitem(last=False)
            if not stale.done():
                stale.cancel()
        return asyncio.gather(*(asyncio.shield(task) for task in tasks))

    def discard_prefetched(self) -> None:
        """Forget (and cancel) every prefetch no get has taken yet."""
        while self._pending:
            _, task = self._pending.popitem()
            if not task.done():
                task.cancel()

    async def delete(self, keys: Sequence[bytes]) -> None:
        """Remove the blocks (every part the header of part 0 names; part 0 last)."""
        async def delete_one(key: bytes) -> None:
            self._pending.pop(key, None)
            head = await self._retrieve(key)
            header = parse_header(head) if head is not None else None
            count = header.parts if header is not None and header.key == key else 1
            await asyncio.gather(*(self._delete(part_key(key, index)) for index in range(1, count)))
            await self._delete(key)
        await asyncio.gather(*(delete_one(key) for key in keys))

    def reset_stats(self) -> None:
        self.stats = TierStats()

    async def close(self) -> None:
        self.discard_prefetched()
        await self.backend.close()

    async def __aenter__(self) -> ContextTier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
