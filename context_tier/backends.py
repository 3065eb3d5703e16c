"""Where the blocks' parts live: the :class:`KvBackend` port and its adapters.

* :class:`NvmeKvBackend` - an NVMe-KV namespace over NVMe/TCP (dpu-emu, or any NVMe-KV
  target), through :mod:`nvmeof.host`; commands go round-robin over the I/O queues.
* :class:`RedisBackend` - a redis server (redis-py's asyncio client): for comparison.
* :class:`FileBackend` - one file per key in a directory: for comparison.
* :class:`MemoryBackend` - a dict with optional LRU capacity: for tests.

A backend answers ``None`` / ``False`` for what a cache may legitimately lack or refuse
(a missing or evicted key, no room, a value the store will not take) and raises only for a
broken transport (``ConnectionError``, ``TimeoutError``, ``OSError``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import nvmeof.host
from nvmeof.errors import KvKeyDoesNotExist, NvmeStatus
from nvmeof.host import HostController, KvNamespace, KvValueTruncated

from .keys import KEY_SIZE

log = logging.getLogger("context_tier")

Buffer = bytes | bytearray | memoryview
DEFAULT_KV_NSID = 2
DEFAULT_IO_QUEUES = 4
DEFAULT_PART_SIZE = 1 << 20  # dpu-emu's default KV max value size (1 MiB)
REDIS_KEY_PREFIX = b"ctxtier:"
FILE_SUFFIX = ".ctkv"


@runtime_checkable
class KvBackend(Protocol):
    """A store of values (at most ``max_value_size`` bytes) under 16-byte keys."""

    @property
    def max_value_size(self) -> int: ...

    async def store(self, key: bytes, value: Buffer) -> bool:
        """True when stored; False when the store refused it (no room, too large)."""
        ...

    async def retrieve(self, key: bytes, size_hint: int | None = None) -> bytes | bytearray | None:
        """The whole value, or None when the key is missing (never stored, evicted, deleted).
        ``size_hint`` is the value's expected length: a store that must size its transfer
        buffer in advance (NVMe-KV Retrieve) uses it, and still returns a longer value whole."""
        ...

    async def exist(self, key: bytes) -> bool: ...

    async def delete(self, key: bytes) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    async def close(self) -> None: ...


class NvmeKvBackend:
    """An NVMe-KV namespace through the dpu-emu host library."""

    def __init__(self, kv: KvNamespace, *, owns_controller: bool = False) -> None:
        self.kv = kv
        self._owns_controller = owns_controller

    @classmethod
    async def connect(cls, address: str, port: int, subnqn: str, *, nsid: int = DEFAULT_KV_NSID,
                      nr_io_queues: int = DEFAULT_IO_QUEUES, **connect_kwargs: Any) -> NvmeKvBackend:
        """Connect a controller with ``nr_io_queues`` I/O queues and open KV namespace ``nsid``."""
        ctrl = await nvmeof.host.connect(address, port, subnqn, nr_io_queues=nr_io_queues, **connect_kwargs)
        try:
            kv = await KvNamespace.open(ctrl, nsid)
        except BaseException:
            await ctrl.close()
            raise
        if kv.limits.max_key_size < KEY_SIZE:
            await ctrl.close()
            raise ValueError(f"namespace {nsid} takes keys of at most {kv.limits.max_key_size} bytes; "
                             f"context_tier needs {KEY_SIZE}")
        return cls(kv, owns_controller=True)

    @property
    def controller(self) -> HostController:
        return self.kv.ctrl

    @property
    def max_value_size(self) -> int:
        return self.kv.limits.max_value_size

    async def store(self, key: bytes, value: Buffer) -> bool:
        try:
            await self.kv.store(key, value)
        except NvmeStatus as exc:  # capacity exceeded (strict mode), invalid value size, ...
            log.debug("store of %s refused: %s", key.hex(), exc)
            return False
        return True

    async def retrieve(self, key: bytes, size_hint: int | None = None) -> bytes | None:
        """Retrieve with a buffer of ``size_hint`` bytes (the maximum value size without a
        hint); a longer value is retrieved again with a buffer of its length."""
        limit = self.max_value_size
        size = limit if size_hint is None else max(1, min(size_hint, limit))
        try:
            try:
                return await self.kv.retrieve(key, buffer_size=size)
            except KvValueTruncated as short:
                return await self.kv.retrieve(key, buffer_size=min(short.length, limit))
        except KvKeyDoesNotExist:
            return None
        except KvValueTruncated:  # overwritten with a longer value meanwhile: the reader treats it as a miss
            return None
        except NvmeStatus as exc:  # e.g. an unrecovered read error: the block is simply not there
            log.warning("retrieve of %s failed: %s", key.hex(), exc)
            return None

    async def exist(self, key: bytes) -> bool:
        return await self.kv.exist(key)

    async def delete(self, key: bytes) -> None:
        try:
            await self.kv.delete(key)
        except KvKeyDoesNotExist:
            pass

    async def close(self) -> None:
        if self._owns_controller:
            await self.kv.ctrl.close()


class MemoryBackend:
    """A dict; with ``capacity_bytes`` it evicts least-recently-used values like a cache-mode
    NVMe-KV namespace (Store and Retrieve refresh a key, Exist does not)."""

    def __init__(self, *, max_value_size: int = DEFAULT_PART_SIZE, capacity_bytes: int | None = None) -> None:
        self._max_value_size = max_value_size
        self.capacity_bytes = capacity_bytes
        self.values: OrderedDict[bytes, bytes] = OrderedDict()
        self.used_bytes = 0
        self.evictions = 0
        self.calls: dict[str, int] = {"store": 0, "retrieve": 0, "exist": 0, "delete": 0}

    @property
    def max_value_size(self) -> int:
        return self._max_value_size

    async def store(self, key: bytes, value: Buffer) -> bool:
        self.calls["store"] += 1
        data = bytes(value)
        if len(data) > self._max_value_size or (self.capacity_bytes is not None
                                                 and len(data) > self.capacity_bytes):
            return False
        self._remove(key)
        if self.capacity_bytes is not None:
            while self.used_bytes + len(data) > self.capacity_bytes:
                victim = next(iter(self.values))
                self._remove(victim)
                self.evictions += 1
        self.values[key] = data
        self.used_bytes += len(data)
        return True

    async def retrieve(self, key: bytes, size_hint: int | None = None) -> bytes | None:
        self.calls["retrieve"] += 1
        value = self.values.get(key)
        if value is not None:
            self.values.move_to_end(key)
        return value

    async def exist(self, key: bytes) -> bool:
        self.calls["exist"] += 1
        return key in self.values

    async def delete(self, key: bytes) -> None:
        self.calls["delete"] += 1
        self._remove(key)

    def _remove(self, key: bytes) -> None:
        old = self.values.pop(key, None)
        if old is not None:
            self.used_bytes -= len(old)

    async def close(self) -> None:
        pass


class FileBackend:
    """One file per key (hex name) under ``root``; writes are atomic (temp file + rename).

    ``fsync`` makes each store durable; it is off by default because a cache does not need
    it (a value lost in a crash is a miss) and the comparison is with in-memory stores."""

    def __init__(self, root: str | os.PathLike[str], *, max_value_size: int = DEFAULT_PART_SIZE,
                 fsync: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._max_value_size = max_value_size
        self.fsync = fsync

    @property
    def max_value_size(self) -> int:
        return self._max_value_size

    def _path(self, key: bytes) -> Path:
        return self.root / f"{key.hex()}{FILE_SUFFIX}"

    def _write(self, key: bytes, value: Buffer) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(value)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, key: bytes) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    async def store(self, key: bytes, value: Buffer) -> bool:
        if len(value) > self._max_value_size:
            return False
        try:
            self._write(key, value)
        except OSError as exc:  # no space: the cache just does not keep it
            log.warning("file store of %s failed: %s", key.hex(), exc)
            return False
        return True

    async def retrieve(self, key: bytes, size_hint: int | None = None) -> bytes | None:
        return self._read(key)

    async def exist(self, key: bytes) -> bool:
        return self._path(key).exists()

    async def delete(self, key: bytes) -> None:
        self._path(key).unlink(missing_ok=True)

    async def close(self) -> None:
        pass


class RedisBackend:
    """A redis server through redis-py's asyncio client (``pip install redis``)."""

    def __init__(self, client: Any, *, max_value_size: int = DEFAULT_PART_SIZE,
                 prefix: bytes = REDIS_KEY_PREFIX) -> None:
        self.client = client
        self._max_value_size = max_value_size
        self.prefix = prefix

    @classmethod
    def connect(cls, host: str, port: int, *, max_connections: int = DEFAULT_IO_QUEUES,
                max_value_size: int = DEFAULT_PART_SIZE, **kwargs: Any) -> RedisBackend:
        import redis.asyncio as aioredis  # optional dependency

        pool = aioredis.BlockingConnectionPool(host=host, port=port, max_connections=max_connections, **kwargs)
        return cls(aioredis.Redis(connection_pool=pool), max_value_size=max_value_size)

    @property
    def max_value_size(self) -> int:
        return self._max_value_size

    async def store(self, key: bytes, value: Buffer) -> bool:
        from redis.exceptions import ResponseError

        if len(value) > self._max_value_size:
            return False
        try:
            await self.client.set(self.prefix + key, bytes(value))
        except ResponseError as exc:  # OOM with maxmemory and no eviction policy
            log.debug("redis refused %s: %s", key.hex(), exc)
            return False
        return True

    async def retrieve(self, key: bytes, size_hint: int | None = None) -> bytes | None:
        value = await self.client.get(self.prefix + key)
        return None if value is None else bytes(value)

    async def exist(self, key: bytes) -> bool:
        return bool(await self.client.exists(self.prefix + key))

    async def delete(self, key: bytes) -> None:
        await self.client.delete(self.prefix + key)

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)
