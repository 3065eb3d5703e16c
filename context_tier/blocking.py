"""A synchronous face for inference code that is not asyncio: the tier's event loop runs in
a background thread, so a prefetch proceeds while the caller's thread computes (PyTorch
releases the GIL inside its kernels).

    tier = BlockingContextTier.connect_nvme("127.0.0.1", 4420, "nqn.2026-11.io.dpu-emu:default")
    pending = tier.prefetch(keys)          # returns at once
    ...                                    # compute something else
    blocks = tier.get(keys)                # takes the prefetched results
    tier.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from .backends import DEFAULT_IO_QUEUES, DEFAULT_KV_NSID, FileBackend, KvBackend, NvmeKvBackend, RedisBackend
from .codec import BlockLayout, KvBlock
from .tier import ContextTier, TierStats

T = TypeVar("T")
DEFAULT_CALL_TIMEOUT_S = 120.0
THREAD_JOIN_TIMEOUT_S = 10.0


class BlockingContextTier:
    """A :class:`ContextTier` driven from synchronous code."""

    def __init__(self, make_backend: Callable[[], Awaitable[KvBackend]], *, timeout: float = DEFAULT_CALL_TIMEOUT_S,
                 **tier_kwargs: Any) -> None:
        """``make_backend`` runs on the tier's own loop (asyncio connections belong to a loop)."""
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="context-tier", daemon=True)
        self._thread.start()

        async def build() -> ContextTier:
            return ContextTier(await make_backend(), **tier_kwargs)

        try:
            self.tier: ContextTier = self.run(build())
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    def connect_nvme(cls, address: str, port: int, subnqn: str, *, nsid: int = DEFAULT_KV_NSID,
                     nr_io_queues: int = DEFAULT_IO_QUEUES, connect_kwargs: dict[str, Any] | None = None,
                     **tier_kwargs: Any) -> BlockingContextTier:
        """A tier on NVMe-KV namespace ``nsid`` of ``subnqn`` at ``address:port`` (NVMe/TCP)."""
        async def make() -> KvBackend:
            return await NvmeKvBackend.connect(address, port, subnqn, nsid=nsid, nr_io_queues=nr_io_queues,
                                               **(connect_kwargs or {}))
        return cls(make, **tier_kwargs)

    @classmethod
    def connect_redis(cls, host: str, port: int, *, connections: int = DEFAULT_IO_QUEUES,
                      **tier_kwargs: Any) -> BlockingContextTier:
        async def make() -> KvBackend:
            return RedisBackend.connect(host, port, max_connections=connections)
        return cls(make, **tier_kwargs)

    @classmethod
    def open_directory(cls, root: str | os.PathLike[str], **tier_kwargs: Any) -> BlockingContextTier:
        async def make() -> KvBackend:
            return FileBackend(root)
        return cls(make, **tier_kwargs)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the tier's loop (e.g. a backend command) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    @property
    def stats(self) -> TierStats:
        return self.tier.stats

    @property
    def backend(self) -> KvBackend:
        return self.tier.backend

    def put(self, blocks: Iterable[KvBlock]) -> int:
        return self.run(self.tier.put(list(blocks)))

    def get(self, keys: Sequence[bytes], *, layout: BlockLayout | None = None) -> list[KvBlock | None]:
        return self.run(self.tier.get(keys, layout=layout))

    def get_prefix(self, keys: Sequence[bytes], *, layout: BlockLayout | None = None) -> list[KvBlock]:
        return self.run(self.tier.get_prefix(keys, layout=layout))

    def contains(self, keys: Sequence[bytes]) -> int:
        return self.run(self.tier.contains(keys))

    def prefetch(self, keys: Sequence[bytes], *, layout: BlockLayout | None = None
                 ) -> concurrent.futures.Future[list[KvBlock | None]]:
        """Start fetching now (on the tier's thread); returns a future of ``get``'s answer."""
        async def start() -> list[KvBlock | None]:
            return await self.tier.prefetch(keys, layout=layout)
        return asyncio.run_coroutine_threadsafe(start(), self._loop)

    def delete(self, keys: Sequence[bytes]) -> None:
        self.run(self.tier.delete(keys))

    def reset_stats(self) -> None:
        self.tier.reset_stats()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(self.tier.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(THREAD_JOIN_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> BlockingContextTier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
