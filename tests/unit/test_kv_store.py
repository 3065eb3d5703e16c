"""Unit tests for dpu_emu.storage.kv and kv_file (memory and file-backed KV stores)."""

from __future__ import annotations

import math
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dpu_emu.storage.kv import (
    SORTED_CHUNK_LOAD,
    KvCapacityExceeded,
    KvError,
    KvInvalidKeySize,
    KvInvalidValueSize,
    KvKeyExists,
    KvKeyNotFound,
    KvMode,
    KvStore,
    KvStoreClosedError,
    MemoryKvStore,
    SortedKeys,
)
from dpu_emu.storage.kv_file import FileKvStore

KIB = 1024
MIB = 1 << 20
CAPACITY = 1 * MIB


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StoreFactory = Callable[..., KvStore[Any]]


@pytest.fixture(params=["memory", "file"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Build stores of the parametrised kind; closes them at the end."""
    made: list[KvStore[Any]] = []

    def factory(capacity_bytes: int = CAPACITY, **kwargs: Any) -> KvStore[Any]:
        s: KvStore[Any]
        if request.param == "memory":
            s = MemoryKvStore(capacity_bytes, **kwargs)
        else:
            s = FileKvStore(tmp_path / f"ns{len(made)}", capacity_bytes, **kwargs)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


def value(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# -- commands --------------------------------------------------------------------------


def test_store_retrieve_exists_delete(make: StoreFactory) -> None:
    s = make()
    s.store(b"k1", b"hello")
    s.store(b"k2", b"")
    assert s.retrieve(b"k1") == b"hello"
    assert s.retrieve(b"k2") == b""
    assert s.exists(b"k1") == 5
    assert s.exists(b"k2") == 0
    assert len(s) == 2
    s.store(b"k1", b"bye")  # overwrite
    assert s.retrieve(b"k1") == b"bye"
    s.delete(b"k1")
    for op in (s.retrieve, s.exists, s.delete):
        with pytest.raises(KvKeyNotFound):
            op(b"k1")
    st = s.stats
    assert (st.keys, st.bytes_used, st.stores, st.deletes) == (1, 0, 3, 1)
    assert (st.retrieves, st.hits, st.misses, st.exists_checks) == (4, 3, 1, 3)


def test_buffers_are_copied(make: StoreFactory) -> None:
    s = make()
    src = bytearray(b"abcdef")
    s.store(bytearray(b"key"), memoryview(src))
    s.store(memoryview(b"k2"), src)
    src[:] = b"XXXXXX"
    assert s.retrieve(b"key") == b"abcdef" == s.retrieve(b"k2")
    assert isinstance(s.retrieve(b"key"), bytes)


def test_store_options(make: StoreFactory) -> None:
    s = make()
    with pytest.raises(KvKeyNotFound):
        s.store(b"k", b"v", must_exist=True)
    s.store(b"k", b"v1", must_not_exist=True)
    with pytest.raises(KvKeyExists):
        s.store(b"k", b"v2", must_not_exist=True)
    assert s.retrieve(b"k") == b"v1"
    s.store(b"k", b"v3", must_exist=True)
    assert s.retrieve(b"k") == b"v3"
    with pytest.raises(ValueError):
        s.store(b"k", b"v4", must_exist=True, must_not_exist=True)
    assert s.stats.stores == 2


def test_key_sizes(make: StoreFactory) -> None:
    s = make()
    for key in (b"\x00", b"\xff" * 16):
        s.store(key, key)
        assert s.retrieve(key) == key
    for bad in (b"", b"x" * 17):
        for op in (s.retrieve, s.exists, s.delete):
            with pytest.raises(KvInvalidKeySize):
                op(bad)
        with pytest.raises(KvInvalidKeySize):
            s.store(bad, b"v")
    short = make(max_key_size=8)
    short.store(b"k" * 8, b"v")
    with pytest.raises(KvInvalidKeySize):
        short.store(b"k" * 9, b"v")
    with pytest.raises(KvInvalidKeySize):
        short.list_keys(b"k" * 9, 10)


def test_value_sizes(make: StoreFactory) -> None:
    s = make(max_value_size=4 * KIB)
    s.store(b"max", value(4 * KIB))
    with pytest.raises(KvInvalidValueSize):
        s.store(b"big", value(4 * KIB + 1))
    with pytest.raises(KvInvalidValueSize):
        s.store(b"max", value(4 * KIB + 1))  # a failed overwrite keeps the old value
    assert s.retrieve(b"max") == value(4 * KIB)
    assert s.stats.stores == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_key_size": 0},
        {"max_key_size": 17},
        {"max_value_size": 0},
        {"max_value_size": 1 << 32},
        {"max_keys": 0},
        {"ttl_s": 5.0},  # needs cache mode
        {"mode": KvMode.CACHE, "ttl_s": 0},
        {"mode": "lru"},
    ],
)
def test_bad_configuration(make: StoreFactory, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(**kwargs)
    with pytest.raises(ValueError):
        make(capacity_bytes=0)


def test_closed_store(make: StoreFactory) -> None:
    s = make()
    s.store(b"k", b"v")
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(KvStoreClosedError):
        s.retrieve(b"k")
    with pytest.raises(KvStoreClosedError):
        s.store(b"k", b"v")
    with pytest.raises(KvStoreClosedError):
        s.flush()
    with pytest.raises(KvStoreClosedError):
        len(s)


# -- capacity, LRU, TTL ------------------------------------------------------------------


def test_strict_capacity_by_bytes(make: StoreFactory) -> None:
    s = make(capacity_bytes=1000)
    s.store(b"a", value(600))
    s.store(b"b", value(400))
    with pytest.raises(KvCapacityExceeded):
        s.store(b"c", b"x")
    with pytest.raises(KvCapacityExceeded):
        s.store(b"a", value(601))  # overwrite: 601 + 400 > 1000
    s.store(b"a", value(600, seed=9))  # same size fits
    s.delete(b"b")
    s.store(b"c", value(400))
    assert s.stats.bytes_used == 1000
    assert s.stats.evictions == 0
    assert s.retrieve(b"a") == value(600, seed=9)


def test_strict_capacity_by_keys(make: StoreFactory) -> None:
    s = make(max_keys=3)
    for key in (b"a", b"b", b"c"):
        s.store(key, b"v")
    with pytest.raises(KvCapacityExceeded):
        s.store(b"d", b"v")
    s.store(b"c", b"overwrite is fine")
    s.delete(b"a")
    s.store(b"d", b"v")
    assert s.list_keys(None, 10) == [b"b", b"c", b"d"]


@pytest.mark.parametrize("mode", list(KvMode))
def test_value_larger_than_capacity(make: StoreFactory, mode: KvMode) -> None:
    s = make(capacity_bytes=1000, mode=mode)
    s.store(b"a", value(500))
    with pytest.raises(KvCapacityExceeded):
        s.store(b"b", value(1001))
    assert s.retrieve(b"a") == value(500)
    assert s.stats.evictions == 0


def test_cache_lru_order(make: StoreFactory) -> None:
    s = make(capacity_bytes=300, mode=KvMode.CACHE)
    for key in (b"a", b"b", b"c"):
        s.store(key, value(100))
    s.retrieve(b"a")  # refreshes a: LRU order b, c, a
    s.exists(b"b")  # does not refresh b
    s.store(b"d", value(100))
    assert s.list_keys(None, 10) == [b"a", b"c", b"d"]
    s.store(b"e", value(100))  # evicts c
    assert s.list_keys(None, 10) == [b"a", b"d", b"e"]
    s.store(b"f", value(200))  # evicts a, d
    assert s.list_keys(None, 10) == [b"e", b"f"]
    assert s.stats.evictions == 4
    with pytest.raises(KvKeyNotFound):
        s.retrieve(b"a")


def test_cache_overwrite_never_evicts_the_key_itself(make: StoreFactory) -> None:
    s = make(capacity_bytes=300, mode=KvMode.CACHE)
    for key in (b"a", b"b", b"c"):
        s.store(key, value(100))
    s.store(b"a", value(150, seed=3))  # a is the LRU entry but is being written: evict b
    assert s.list_keys(None, 10) == [b"a", b"c"]
    assert s.retrieve(b"a") == value(150, seed=3)
    s.store(b"a", value(300, seed=4))  # takes the whole capacity
    assert s.list_keys(None, 10) == [b"a"]
    assert s.stats.bytes_used == 300


def test_cache_evicts_by_key_count(make: StoreFactory) -> None:
    s = make(mode=KvMode.CACHE, max_keys=2)
    for key in (b"a", b"b", b"c"):
        s.store(key, b"v")
    assert s.list_keys(None, 10) == [b"b", b"c"]
    assert s.stats.evictions == 1


def test_ttl_with_fake_clock(make: StoreFactory) -> None:
    clock = FakeClock()
    s = make(mode=KvMode.CACHE, ttl_s=10.0, clock=clock)
    s.store(b"a", b"1")
    clock.advance(5)
    s.store(b"b", b"2")
    clock.advance(4.9)
    assert s.retrieve(b"a") == b"1"  # a read does not extend the TTL
    clock.advance(0.1)  # a is 10 s old
    with pytest.raises(KvKeyNotFound):
        s.exists(b"a")
    assert s.retrieve(b"b") == b"2"
    s.store(b"b", b"3")  # a Store restarts the TTL
    clock.advance(9)
    assert s.list_keys(None, 10) == [b"b"]
    assert len(s) == 1
    clock.advance(1)
    assert len(s) == 0
    assert s.list_keys(b"", 10) == []
    st = s.stats
    assert (st.expirations, st.keys, st.bytes_used) == (2, 0, 0)
    with pytest.raises(KvKeyNotFound):
        s.store(b"a", b"x", must_exist=True)
    s.store(b"a", b"x", must_not_exist=True)


def test_expired_values_make_room_before_evictions(make: StoreFactory) -> None:
    clock = FakeClock()
    s = make(capacity_bytes=200, mode=KvMode.CACHE, ttl_s=10.0, clock=clock)
    s.store(b"old", value(100))
    clock.advance(5)
    s.store(b"new", value(100))
    s.retrieve(b"old")  # most recently used, but expires first
    clock.advance(5)
    s.store(b"x", value(100))
    assert s.list_keys(None, 10) == [b"new", b"x"]
    assert (s.stats.expirations, s.stats.evictions) == (1, 0)


# -- List ----------------------------------------------------------------------------------


def test_list_keys_order(make: StoreFactory) -> None:
    s = make()
    keys = [b"b", b"a", b"ab", b"a\x00", b"\xff", b"\x00", b"aa", b"a\x01" * 8]
    for key in keys:
        s.store(key, b"")
    expected = [b"\x00", b"a", b"a\x00", b"a\x01" * 8, b"aa", b"ab", b"b", b"\xff"]
    assert s.list_keys(None, 100) == expected == sorted(keys)
    assert s.list_keys(b"", 3) == expected[:3]
    assert s.list_keys(b"a", 100) == expected[1:]  # start is inclusive
    assert s.list_keys(b"a\x01", 2) == [b"a\x01" * 8, b"aa"]  # start need not exist
    assert s.list_keys(b"\xff\x00", 100) == []
    assert s.list_keys(None, 0) == []
    with pytest.raises(ValueError):
        s.list_keys(None, -1)


def test_list_keys_continuation(make: StoreFactory) -> None:
    s = make(capacity_bytes=MIB)
    rng = random.Random(7)
    keys = {rng.randbytes(rng.randint(1, 16)) for _ in range(3 * SORTED_CHUNK_LOAD)}
    for key in keys:
        s.store(key, b"")
    for key in rng.sample(sorted(keys), 500):
        s.delete(key)
        keys.discard(key)
    seen: list[bytes] = []
    page = s.list_keys(None, 97)
    while page:
        seen += page
        page = s.list_keys(page[-1], 98)[1:]  # continue from the last key, skip it
    assert seen == sorted(keys)


def test_sorted_keys_against_a_sorted_list() -> None:
    rng = random.Random(3)
    index = SortedKeys()
    model: set[bytes] = set()
    for _ in range(20000):
        key = rng.randbytes(rng.randint(1, 3))
        if key in model:
            index.remove(key)
            model.discard(key)
        else:
            index.add(key)
            model.add(key)
        if rng.random() < 0.01:
            start = rng.randbytes(rng.randint(0, 3))
            assert index.first(start, 50) == [k for k in sorted(model) if k >= start][:50]
    assert len(index) == len(model)
    assert index.first(b"", len(model) + 1) == sorted(model)
    with pytest.raises(KeyError):
        index.remove(b"\x00\x00\x00\x00")
    assert SortedKeys(model).first(b"", 10**6) == sorted(model)


# -- randomised model test --------------------------------------------------------------------


class Model:
    """A plain-dict model of a KV store, LRU / TTL / log order included."""

    def __init__(self, capacity: int, max_keys: int, mode: KvMode, ttl: float | None, clock: FakeClock) -> None:
        self.capacity, self.max_keys, self.mode, self.ttl, self.clock = capacity, max_keys, mode, ttl, clock
        self.lru: OrderedDict[bytes, bytes] = OrderedDict()
        self.deadline: OrderedDict[bytes, float] = OrderedDict()  # in store order
        self.log_order: OrderedDict[bytes, None] = OrderedDict()  # replay order of a file log
        self.evictions = 0

    def _remove(self, key: bytes) -> None:
        del self.lru[key], self.deadline[key], self.log_order[key]

    def expire(self) -> None:
        for key, deadline in list(self.deadline.items()):
            if deadline > self.clock.now:
                break
            self._remove(key)

    def store(self, key: bytes, data: bytes, must_exist: bool, must_not_exist: bool) -> None:
        self.expire()
        if must_exist and key not in self.lru:
            raise KvKeyNotFound
        if must_not_exist and key in self.lru:
            raise KvKeyExists
        if len(data) > self.capacity:
            raise KvCapacityExceeded
        others = [k for k in self.lru if k != key]
        victims = []
        while sum(len(self.lru[k]) for k in others) + len(data) > self.capacity or len(others) + 1 > self.max_keys:
            if self.mode is KvMode.STRICT:
                raise KvCapacityExceeded
            victims.append(others.pop(0))
        for victim in victims:
            self._remove(victim)
        self.evictions += len(victims)
        self.lru[key] = data
        self.lru.move_to_end(key)
        self.deadline[key] = math.inf if self.ttl is None else self.clock.now + self.ttl
        self.deadline.move_to_end(key)
        self.log_order[key] = None
        self.log_order.move_to_end(key)

    def lookup(self, key: bytes) -> bytes:
        self.expire()
        if key not in self.lru:
            raise KvKeyNotFound
        return self.lru[key]

    def retrieve(self, key: bytes) -> bytes:
        data = self.lookup(key)
        if self.mode is KvMode.CACHE:
            self.lru.move_to_end(key)
        return data

    def delete(self, key: bytes) -> None:
        self.lookup(key)
        self._remove(key)

    def list_keys(self, start: bytes, limit: int) -> list[bytes]:
        self.expire()
        return [k for k in sorted(self.lru) if k >= start][:limit]

    def compacted(self) -> None:
        self.log_order = OrderedDict.fromkeys(self.lru)

    def reopened(self) -> None:
        self.lru = OrderedDict((k, self.lru[k]) for k in self.log_order)
        deadline = math.inf if self.ttl is None else self.clock.now + self.ttl
        self.deadline = OrderedDict((k, deadline) for k in self.log_order)


MODEL_OPS = ["store", "retrieve", "exists", "delete", "list", "tick", "reopen"]
MODEL_OP_WEIGHTS = [8, 5, 2, 2, 1, 1, 0.2]


def _outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args, **kwargs))
    except KvError as exc:
        return ("error", type(exc))


@pytest.mark.parametrize(
    ("kind", "mode", "ttl"),
    [
        ("memory", KvMode.STRICT, None),
        ("memory", KvMode.CACHE, None),
        ("memory", KvMode.CACHE, 3.0),
        ("file", KvMode.STRICT, None),
        ("file", KvMode.CACHE, None),
        ("file", KvMode.CACHE, 3.0),
    ],
)
def test_random_ops_against_a_model(tmp_path: Path, kind: str, mode: KvMode, ttl: float | None) -> None:
    rng = random.Random(f"{kind}-{mode}-{ttl}")
    clock = FakeClock()
    capacity, max_keys = 24 * KIB, 30
    options: dict[str, Any] = dict(mode=mode, ttl_s=ttl, clock=clock, max_keys=max_keys, max_value_size=4 * KIB)

    def open_store() -> KvStore[Any]:
        if kind == "memory":
            return MemoryKvStore(capacity, **options)
        return FileKvStore(tmp_path, capacity, compact_min_bytes=32 * KIB, **options)

    store = open_store()
    model = Model(capacity, max_keys, mode, ttl, clock)
    keys = [rng.randbytes(rng.randint(1, 4)) for _ in range(40)] + [b"a", b"a\x00", b"ab"]
    compactions = evictions = 0
    for step in range(3000):
        op = rng.choices(MODEL_OPS, MODEL_OP_WEIGHTS)[0]
        key = rng.choice(keys)
        if op == "store":
            data = rng.randbytes(rng.choice([0, 1, 100, 1500, 4 * KIB]))
            flags = rng.choice([(False, False)] * 4 + [(True, False), (False, True)])
            got = _outcome(store.store, key, data, must_exist=flags[0], must_not_exist=flags[1])
            want = _outcome(model.store, key, data, *flags)
        elif op in ("retrieve", "exists", "delete"):
            got = _outcome(getattr(store, op), key)
            want = _outcome({"retrieve": model.retrieve, "exists": model.lookup, "delete": model.delete}[op], key)
            if op == "exists" and want[0] == "ok":
                want = ("ok", len(want[1]))
        elif op == "list":
            start, limit = rng.choice([b"", key, key[:1]]), rng.randint(0, 50)
            got, want = _outcome(store.list_keys, start, limit), _outcome(model.list_keys, start, limit)
        elif op == "tick":
            clock.advance(rng.random())
            continue
        else:  # reopen: a file store replays its log (half the time a freshly compacted one)
            if isinstance(store, FileKvStore):
                if rng.random() < 0.5:
                    store.compact()
                    model.compacted()
                evictions += store.stats.evictions
                store.close()
                store = open_store()
                model.reopened()
                compactions = 0
            continue
        assert got == want, f"step {step}: {op} {key!r}"
        if isinstance(store, FileKvStore) and store.stats.compactions != compactions:
            compactions = store.stats.compactions
            model.compacted()
    model.expire()
    st = store.stats
    assert (st.keys, st.bytes_used) == (len(model.lru), sum(map(len, model.lru.values())))
    assert store.list_keys(None, 1000) == sorted(model.lru)
    assert evictions + st.evictions == model.evictions
    if mode is KvMode.CACHE:
        assert st.evictions > 0
    store.close()


# -- speed (printed, never asserted) ---------------------------------------------------------


def test_print_speed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    for size, count in ((4 * KIB, 2000), (MIB, 40)):
        data = os.urandom(size)
        for name in ("memory", "file"):
            s: KvStore[Any] = (
                MemoryKvStore(4 * count * size, max_value_size=MIB)
                if name == "memory"
                else FileKvStore(tmp_path / f"{name}{size}", 4 * count * size, max_value_size=MIB)
            )
            keys = [i.to_bytes(8, "big") for i in range(count)]
            view = memoryview(data)  # as the datapath hands it over: the memory store copies it
            t0 = time.perf_counter()
            for key in keys:
                s.store(key, view)
            t1 = time.perf_counter()
            for key in keys:
                s.retrieve(key)
            t2 = time.perf_counter()
            s.close()
            store_s, retrieve_s = (t1 - t0) / count, (t2 - t1) / count
            rows.append((name, size, 1 / store_s, 1 / retrieve_s, size / store_s, size / retrieve_s))
    with capsys.disabled():
        print("\nKV store speed (one thread, page cache, no fsync)")
        print(f"{'store':8} {'value':>8} {'store/s':>10} {'retrieve/s':>11} {'store MB/s':>11} {'retr MB/s':>10}")
        for name, size, sps, rps, smb, rmb in rows:
            print(f"{name:8} {size:>8} {sps:>10.0f} {rps:>11.0f} {smb / 1e6:>11.0f} {rmb / 1e6:>10.0f}")
