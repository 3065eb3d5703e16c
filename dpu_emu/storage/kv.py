"""Key-value stores backing NVMe-KV namespaces (KV command set, CSI 01h).

A KV store maps keys of 1..``max_key_size`` bytes (at most 16, the KV format limit) to
values of 0..``max_value_size`` bytes.  ``capacity_bytes`` bounds the sum of the value
sizes and ``max_keys`` (optional) the number of keys.  Two modes (:class:`KvMode`):

* ``STRICT``: a Store that does not fit raises :class:`KvCapacityExceeded`.
* ``CACHE``: a Store that needs room evicts least-recently-used values first (Store and
  Retrieve refresh a key, Exist does not), never the key being written.  An optional
  ``ttl_s`` makes a value absent ``ttl_s`` seconds after it was last stored (reads do not
  extend it).  Expired values are dropped lazily: at the start of every operation the
  entries whose deadline has passed are removed (O(1) amortised, no timer), which also
  runs before room is made for a Store.  The clock is injected (``time.monotonic`` by
  default) and must not go backwards.

The :class:`KvStore` base class does every check, the LRU / TTL / capacity bookkeeping,
the sorted key index used by List, and the statistics, once.  A backend only stores and
fetches value bytes (``_put`` / ``_get`` / ``_remove``); a backend write that fails
leaves every index untouched, so an overwrite is atomic and evictions happen only when
the new value is in.  Backends: :class:`MemoryKvStore` here and
:class:`~dpu_emu.storage.kv_file.FileKvStore` (append-only log) in ``kv_file``.

Errors, one class per NVMe KV status the datapath reports (SCT 0):
:class:`KvCapacityExceeded` 81h, :class:`KvInvalidValueSize` 85h,
:class:`KvInvalidKeySize` 86h, :class:`KvKeyNotFound` 87h, :class:`KvIoError` and its
subclass :class:`KvStoreCorrupt` 88h (Unrecovered Error), :class:`KvKeyExists` 89h.
Use after :meth:`KvStore.close` raises :class:`KvStoreClosedError`.  Setting both Store
options is a programming error (``ValueError``); the protocol layer rejects it first.

Not thread-safe: the device drives a store from one event loop.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from types import TracebackType
from typing import Generic, Self, TypeVar

log = logging.getLogger(__name__)

MIN_KEY_SIZE = 1
MAX_KEY_SIZE = 16
"""KV format KVKML limit: keys travel in CDW2-3 and CDW14-15."""
DEFAULT_MAX_KEY_SIZE = MAX_KEY_SIZE
DEFAULT_MAX_VALUE_SIZE = 1 << 20
MAX_VALUE_SIZE_LIMIT = 0xFFFF_FFFF
"""KVVML and the Store value size (CDW10) are 32-bit."""
SORTED_CHUNK_LOAD = 1000
"""Keys per chunk of :class:`SortedKeys`; a chunk splits in two at twice this."""
_NO_DEADLINE = math.inf

BytesLike = bytes | bytearray | memoryview
"""Keys and values may be any flat byte buffer; keys are kept as ``bytes``."""


# -- errors ----------------------------------------------------------------------------


class KvError(Exception):
    """Base class of every KV store failure."""


class KvCapacityExceeded(KvError):
    """No room for the value (bytes or key count): NVMe KV status 81h."""


class KvInvalidValueSize(KvError):
    """Value longer than ``max_value_size``: NVMe KV status 85h."""


class KvInvalidKeySize(KvError):
    """Key length 0 or above ``max_key_size``: NVMe KV status 86h."""


class KvKeyNotFound(KvError):
    """The key is absent (or expired): NVMe KV status 87h (KV Key Does Not Exist)."""


class KvKeyExists(KvError):
    """Store with "must not exist" on a present key: NVMe KV status 89h."""


class KvIoError(KvError):
    """The backing storage failed: NVMe KV status 88h (Unrecovered Error)."""


class KvStoreCorrupt(KvIoError):
    """Stored bytes fail their CRC32C check; never returned to the host.  Status 88h."""


class KvStoreClosedError(KvError):
    """The store was used after :meth:`KvStore.close`."""

    def __init__(self) -> None:
        super().__init__("KV store is closed")


# -- configuration and statistics ------------------------------------------------------


class KvMode(StrEnum):
    """What a Store does when the namespace is full."""

    STRICT = "strict"
    """Fail with Capacity Exceeded."""
    CACHE = "cache"
    """Evict least-recently-used values; values may also expire after ``ttl_s``."""


@dataclass(slots=True)
class KvStoreStats:
    """Counters; ``keys`` and ``bytes_used`` are the current contents.

    ``hits`` / ``misses`` count Retrieve outcomes only (``hits + misses + corrupt_reads
    == retrieves``), so ``hits / retrieves`` is the cache hit ratio; Exist is counted
    in ``exists_checks``.  ``stores`` and ``deletes`` count successful commands.
    """

    keys: int = 0
    bytes_used: int = 0
    stores: int = 0
    retrieves: int = 0
    hits: int = 0
    misses: int = 0
    exists_checks: int = 0
    deletes: int = 0
    evictions: int = 0
    expirations: int = 0
    corrupt_reads: int = 0
    flushes: int = 0
    compactions: int = 0


# -- sorted key index --------------------------------------------------------------------


class SortedKeys:
    """Distinct ``bytes`` keys in ascending order, for List.

    A list of sorted chunks plus each chunk's largest key (the layout of
    ``sortedcontainers.SortedList``, in small): add and remove cost a bisect plus a
    memmove of at most ``2 * SORTED_CHUNK_LOAD`` pointers instead of one of the whole
    key set.  Empty chunks are dropped; chunks are not merged.
    """

    __slots__ = ("_chunks", "_maxes", "_len")

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        ordered = sorted(keys)
        self._chunks = [ordered[i : i + SORTED_CHUNK_LOAD] for i in range(0, len(ordered), SORTED_CHUNK_LOAD)]
        self._maxes = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def add(self, key: bytes) -> None:
        """Insert *key*, which must not be present."""
        if not self._chunks:
            self._chunks.append([key])
            self._maxes.append(key)
            self._len = 1
            return
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):  # beyond the largest key: append to the last chunk
            i -= 1
            self._chunks[i].append(key)
            self._maxes[i] = key
        else:
            insort(self._chunks[i], key)
        self._len += 1
        chunk = self._chunks[i]
        if len(chunk) > 2 * SORTED_CHUNK_LOAD:
            head, tail = chunk[:SORTED_CHUNK_LOAD], chunk[SORTED_CHUNK_LOAD:]
            self._chunks[i : i + 1] = [head, tail]
            self._maxes[i : i + 1] = [head[-1], tail[-1]]

    def remove(self, key: bytes) -> None:
        """Remove *key*; ``KeyError`` if it is absent."""
        i = bisect_left(self._maxes, key)
        chunk = self._chunks[i] if i < len(self._chunks) else []
        j = bisect_left(chunk, key)
        if j == len(chunk) or chunk[j] != key:
            raise KeyError(key)
        del chunk[j]
        self._len -= 1
        if not chunk:
            del self._chunks[i]
            del self._maxes[i]
        elif j == len(chunk):
            self._maxes[i] = chunk[-1]

    def first(self, start: bytes, limit: int) -> list[bytes]:
        """Up to *limit* keys ``>= start``, ascending."""
        out: list[bytes] = []
        i = bisect_left(self._maxes, start)
        if i == len(self._chunks) or limit <= 0:
            return out
        j = bisect_left(self._chunks[i], start)
        while i < len(self._chunks) and len(out) < limit:
            out.extend(self._chunks[i][j : j + limit - len(out)])
            i += 1
            j = 0
        return out


# -- the store -----------------------------------------------------------------------------

H = TypeVar("H")
"""A backend's handle to one stored value (the value itself, a log offset, ...)."""


class KvEntry(Generic[H]):
    """Index entry: value length, TTL deadline (inf without TTL), backend handle."""

    __slots__ = ("length", "deadline", "handle")

    def __init__(self, length: int, deadline: float, handle: H) -> None:
        self.length = length
        self.deadline = deadline
        self.handle = handle


Victims = list[tuple[bytes, KvEntry[H]]]


def _byte_view(data: BytesLike) -> bytes | memoryview:
    """*data* as ``bytes`` (unchanged) or a flat unsigned-byte view (no copy)."""
    if type(data) is bytes:
        return data
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class KvStore(ABC, Generic[H]):
    """A bounded key-value store; see the module docstring for the semantics."""

    def __init__(
        self,
        capacity_bytes: int,
        *,
        max_key_size: int = DEFAULT_MAX_KEY_SIZE,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        max_keys: int | None = None,
        mode: KvMode | str = KvMode.STRICT,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        mode = KvMode(mode)
        if not MIN_KEY_SIZE <= max_key_size <= MAX_KEY_SIZE:
            raise ValueError(f"max key size {max_key_size} must be in {MIN_KEY_SIZE}..{MAX_KEY_SIZE}")
        if not 1 <= max_value_size <= MAX_VALUE_SIZE_LIMIT:
            raise ValueError(f"max value size {max_value_size} must be in 1..{MAX_VALUE_SIZE_LIMIT}")
        if capacity_bytes <= 0:
            raise ValueError(f"capacity must be positive, got {capacity_bytes}")
        if max_keys is not None and max_keys <= 0:
            raise ValueError(f"max keys must be positive or None, got {max_keys}")
        if ttl_s is not None:
            if not ttl_s > 0:
                raise ValueError(f"TTL must be positive or None, got {ttl_s}")
            if mode is not KvMode.CACHE:
                raise ValueError("a TTL needs cache mode: a strict namespace never drops values")
        self.capacity_bytes = capacity_bytes
        self.max_key_size = max_key_size
        self.max_value_size = max_value_size
        self.max_keys = max_keys
        self.mode = mode
        self.ttl_s = ttl_s
        self.clock = clock
        self._index: OrderedDict[bytes, KvEntry[H]] = OrderedDict()  # LRU order, oldest first
        self._deadlines: OrderedDict[bytes, None] = OrderedDict()  # store order = deadline order
        self._sorted = SortedKeys()
        self._bytes_used = 0
        self._key_bytes = 0
        self._stats = KvStoreStats()
        self._closed = False

    # -- read-only views ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> KvStoreStats:
        """A snapshot of the counters, after dropping expired values."""
        if not self._closed:
            self._expire_due()
        return replace(self._stats, keys=len(self._index), bytes_used=self._bytes_used)

    def __len__(self) -> int:
        self._check_open()
        self._expire_due()
        return len(self._index)

    # -- commands ------------------------------------------------------------------------

    def store(
        self,
        key: BytesLike,
        value: BytesLike,
        *,
        must_exist: bool = False,
        must_not_exist: bool = False,
    ) -> None:
        """Store *value* under *key*, replacing any previous value atomically.

        *must_exist*: fail with :class:`KvKeyNotFound` if the key is absent;
        *must_not_exist*: fail with :class:`KvKeyExists` if it is present.
        """
        if must_exist and must_not_exist:
            raise ValueError("Store options 'must exist' and 'must not exist' are mutually exclusive")
        self._check_open()
        key = self._check_key(key)
        data = _byte_view(value)
        length = len(data)
        if length > self.max_value_size:
            raise KvInvalidValueSize(f"value of {length} bytes exceeds the maximum of {self.max_value_size}")
        now = self._expire_due()
        old = self._lookup(key, now)
        if old is None and must_exist:
            raise KvKeyNotFound(f"key {key.hex()} does not exist")
        if old is not None and must_not_exist:
            raise KvKeyExists(f"key {key.hex()} exists")
        if length > self.capacity_bytes:
            raise KvCapacityExceeded(f"value of {length} bytes exceeds the capacity of {self.capacity_bytes}")
        victims = self._make_room(old, length)
        handle = self._put(key, data, victims)
        # The value is in: commit the evictions and the new entry.
        for victim_key, victim in victims:
            self._unlink(victim_key, victim)
        self._stats.evictions += len(victims)
        deadline = _NO_DEADLINE if self.ttl_s is None else now + self.ttl_s
        if old is None:
            self._index[key] = KvEntry(length, deadline, handle)
            self._sorted.add(key)
            self._key_bytes += len(key)
        else:
            self._bytes_used -= old.length
            old.length, old.deadline, old.handle = length, deadline, handle
            self._index.move_to_end(key)
        if self.ttl_s is not None:
            self._deadlines[key] = None
            self._deadlines.move_to_end(key)
        self._bytes_used += length
        self._stats.stores += 1
        self._after_update()

    def retrieve(self, key: BytesLike) -> bytes:
        """The value of *key* (whole); refreshes its LRU position."""
        self._check_open()
        key = self._check_key(key)
        entry = self._lookup(key, self._expire_due())
        self._stats.retrieves += 1
        if entry is None:
            self._stats.misses += 1
            raise KvKeyNotFound(f"key {key.hex()} does not exist")
        try:
            value = self._get(key, entry)
        except KvStoreCorrupt:
            self._stats.corrupt_reads += 1
            raise
        self._stats.hits += 1
        if self.mode is KvMode.CACHE:
            self._index.move_to_end(key)
        return value

    def exists(self, key: BytesLike) -> int:
        """Length of *key*'s value; :class:`KvKeyNotFound` if absent.  Leaves LRU order alone."""
        self._check_open()
        key = self._check_key(key)
        entry = self._lookup(key, self._expire_due())
        self._stats.exists_checks += 1
        if entry is None:
            raise KvKeyNotFound(f"key {key.hex()} does not exist")
        return entry.length

    def delete(self, key: BytesLike) -> None:
        """Remove *key*; :class:`KvKeyNotFound` if absent."""
        self._check_open()
        key = self._check_key(key)
        entry = self._lookup(key, self._expire_due())
        if entry is None:
            raise KvKeyNotFound(f"key {key.hex()} does not exist")
        self._drop([(key, entry)])
        self._stats.deletes += 1
        self._after_update()

    def list_keys(self, start: BytesLike | None, limit: int) -> list[bytes]:
        """Up to *limit* keys ``>= start`` in ascending byte order (``b"a" < b"a\\0" < b"b"``).

        *start* ``None`` or empty lists from the first key.  To page through every key,
        call again with ``start`` = the last key returned and skip that first result.
        """
        self._check_open()
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        start = b"" if start is None else bytes(start)
        if len(start) > self.max_key_size:
            raise KvInvalidKeySize(f"key length {len(start)} exceeds the maximum of {self.max_key_size}")
        self._expire_due()
        return self._sorted.first(start, limit)

    def flush(self) -> None:
        """Make every acknowledged Store and Delete durable (NVMe Flush)."""
        self._check_open()
        self._stats.flushes += 1
        self._flush()

    def close(self) -> None:
        """Release resources; idempotent.  Does not flush."""
        if not self._closed:
            self._closed = True
            try:
                self._close()
            finally:
                self._index.clear()
                self._deadlines.clear()
                self._sorted = SortedKeys()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity_bytes={self.capacity_bytes}, mode={self.mode.value})"

    # -- bookkeeping shared by every backend ------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise KvStoreClosedError()

    def _check_key(self, key: BytesLike) -> bytes:
        if type(key) is not bytes:
            key = bytes(key)
        if not MIN_KEY_SIZE <= len(key) <= self.max_key_size:
            raise KvInvalidKeySize(f"key length {len(key)} outside {MIN_KEY_SIZE}..{self.max_key_size}")
        return key

    def _expire_due(self) -> float:
        """Drop every value whose TTL has passed; return the current time (0 without TTL)."""
        if self.ttl_s is None:
            return 0.0
        now = self.clock()
        due: Victims[H] = []
        for key in self._deadlines:
            entry = self._index[key]
            if entry.deadline > now:
                break
            due.append((key, entry))
        if due:
            self._drop(due)
            self._stats.expirations += len(due)
        return now

    def _lookup(self, key: bytes, now: float) -> KvEntry[H] | None:
        """The live entry of *key*, or None."""
        entry = self._index.get(key)
        if entry is not None and entry.deadline <= now:  # only if the clock stepped back
            self._drop([(key, entry)])
            self._stats.expirations += 1
            return None
        return entry

    def _make_room(self, old: KvEntry[H] | None, length: int) -> Victims[H]:
        """Entries to evict so a value of *length* fits (replacing *old*); nothing is changed yet."""
        excess_bytes = self._bytes_used - (old.length if old is not None else 0) + length - self.capacity_bytes
        excess_keys = 0 if self.max_keys is None else len(self._index) + (old is None) - self.max_keys
        if excess_bytes <= 0 and excess_keys <= 0:
            return []
        if self.mode is KvMode.STRICT:
            raise KvCapacityExceeded(
                f"no room for {length} bytes: {self._bytes_used} of {self.capacity_bytes} bytes "
                f"and {len(self._index)} of {self.max_keys or 'unlimited'} keys in use"
            )
        victims: Victims[H] = []
        for key, entry in self._index.items():  # least recently used first
            if excess_bytes <= 0 and excess_keys <= 0:
                break
            if entry is old:
                continue
            victims.append((key, entry))
            excess_bytes -= entry.length
            excess_keys -= 1
        if excess_bytes > 0 or excess_keys > 0:  # cannot happen: the value alone fits
            raise KvCapacityExceeded(f"no room for {length} bytes even after evicting every other value")
        return victims

    def _drop(self, victims: Victims[H]) -> None:
        """Remove entries from the backend, then from every index."""
        self._remove(victims)
        for key, entry in victims:
            self._unlink(key, entry)

    def _unlink(self, key: bytes, entry: KvEntry[H]) -> None:
        del self._index[key]
        self._sorted.remove(key)
        self._deadlines.pop(key, None)
        self._bytes_used -= entry.length
        self._key_bytes -= len(key)

    def _load(self, entries: Iterable[tuple[bytes, int, H]]) -> None:
        """Install entries recovered by a backend, least recently used first.

        Recovered values get a full TTL.  Contents above the configured limits are kept
        (a cache store evicts the surplus on its next Store, a strict one refuses Stores
        until values are deleted).
        """
        deadline = _NO_DEADLINE if self.ttl_s is None else self.clock() + self.ttl_s
        for key, length, handle in entries:
            self._index[key] = KvEntry(length, deadline, handle)
            self._bytes_used += length
            self._key_bytes += len(key)
            if self.ttl_s is not None:
                self._deadlines[key] = None
        self._sorted = SortedKeys(self._index)
        if self._bytes_used > self.capacity_bytes or (self.max_keys is not None and len(self._index) > self.max_keys):
            used = f"{self._bytes_used} bytes in {len(self._index)} keys"
            log.warning("%r holds %s, above its limits (%s keys max)", self, used, self.max_keys)
        if any(len(key) > self.max_key_size for key in self._index):
            log.warning("%r holds keys longer than max_key_size=%d; they can only be listed", self, self.max_key_size)

    # -- backend hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _put(self, key: bytes, data: bytes | memoryview, victims: Victims[H]) -> H:
        """Store *data* and the removal of *victims*; return the new value's handle.

        Must raise (a :class:`KvError`) without any visible effect on failure.  *data*
        is only valid during the call.
        """

    @abstractmethod
    def _get(self, key: bytes, entry: KvEntry[H]) -> bytes:
        """The bytes of a present value, verified (:class:`KvStoreCorrupt` otherwise)."""

    @abstractmethod
    def _remove(self, victims: Victims[H]) -> None:
        """Remove present values (Delete, expiry); raise without effect on failure."""

    def _after_update(self) -> None:
        """Called after a Store or Delete is committed (e.g. to compact a log)."""

    @abstractmethod
    def _flush(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...


class MemoryKvStore(KvStore[bytes]):
    """In-memory store: the index entries hold the values.

    A ``bytes`` value is kept without a copy (it is immutable); other buffers are
    copied once.  Nothing survives the process, so :meth:`flush` is a no-op.
    """

    def _put(self, key: bytes, data: bytes | memoryview, victims: Victims[bytes]) -> bytes:
        return bytes(data)

    def _get(self, key: bytes, entry: KvEntry[bytes]) -> bytes:
        return entry.handle

    def _remove(self, victims: Victims[bytes]) -> None:
        pass

    def _flush(self) -> None:
        pass

    def _close(self) -> None:
        pass
