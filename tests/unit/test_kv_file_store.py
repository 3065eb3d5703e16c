"""Unit tests for dpu_emu.storage.kv_file: the log-backed KV store's persistence, recovery,
compaction and failure handling.  Behaviour shared with the memory store is tested in
test_kv_store.py.
"""

from __future__ import annotations

import errno
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dpu_emu.storage import kv_file
from dpu_emu.storage.kv import KvCapacityExceeded, KvError, KvIoError, KvKeyNotFound, KvMode, KvStoreCorrupt
from dpu_emu.storage.kv_file import (
    BAD_TAIL_PREFIX,
    FILE_HEADER_SIZE,
    LOG_NAME,
    RECORD_HEADER_SIZE,
    FileKvStore,
    record_size,
)

KIB = 1024
CAPACITY = 1 << 20


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def value(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# -- file store: persistence and recovery ------------------------------------------------------


def file_store(path: Path, **kwargs: Any) -> FileKvStore:
    return FileKvStore(path, kwargs.pop("capacity_bytes", CAPACITY), **kwargs)


def test_restart_keeps_values(tmp_path: Path) -> None:
    with file_store(tmp_path) as s:
        for i in range(50):
            s.store(f"key{i}".encode(), value(i * 37, seed=i))
        s.store(b"key3", b"overwritten")
        s.delete(b"key4")
        s.flush()
        assert s.stats.flushes == 1
    with file_store(tmp_path, create=False) as s:
        assert len(s) == 49
        assert s.retrieve(b"key3") == b"overwritten"
        assert s.retrieve(b"key49") == value(49 * 37, seed=49)
        with pytest.raises(KvKeyNotFound):
            s.exists(b"key4")
        assert s.stats.bytes_used == sum(i * 37 for i in range(50) if i not in (3, 4)) + len(b"overwritten")


def test_restart_keeps_cache_evictions_and_lru_order(tmp_path: Path) -> None:
    with file_store(tmp_path, capacity_bytes=300, mode=KvMode.CACHE) as s:
        for key in (b"a", b"b", b"c", b"d"):  # evicts a
            s.store(key, value(100))
    with file_store(tmp_path, capacity_bytes=300, mode=KvMode.CACHE) as s:
        assert s.list_keys(None, 10) == [b"b", b"c", b"d"]
        s.store(b"e", value(100))  # LRU after restart = store order: evicts b
        assert s.list_keys(None, 10) == [b"c", b"d", b"e"]


def test_open_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileKvStore(tmp_path / "nope", CAPACITY, create=False)


def test_directory_is_locked(tmp_path: Path) -> None:
    with file_store(tmp_path):
        with pytest.raises(KvIoError):
            file_store(tmp_path)
    file_store(tmp_path).close()


@pytest.mark.parametrize("content", [b"not a KV log at all, just text", b"DPUEMU"[:3] + b"zz"])
def test_foreign_file_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / LOG_NAME).write_bytes(content)
    with pytest.raises(KvStoreCorrupt):
        file_store(tmp_path)
    assert (tmp_path / LOG_NAME).read_bytes() == content


def test_partial_file_header_is_reinitialised(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_bytes(kv_file.FILE_HEADER_BYTES[:5])
    with file_store(tmp_path) as s:
        s.store(b"k", b"v")
    with file_store(tmp_path) as s:
        assert s.retrieve(b"k") == b"v"


def _record_bytes(tmp_path: Path, key: bytes, data: bytes) -> bytes:
    """The log record our store writes for (key, data), taken from a scratch store."""
    scratch = tmp_path / "scratch"
    with file_store(scratch) as s:
        s.store(key, data)
    return (scratch / LOG_NAME).read_bytes()[FILE_HEADER_SIZE:]


def _fill(path: Path) -> tuple[dict[bytes, bytes], int]:
    values = {f"k{i}".encode(): value(300 + i, seed=i) for i in range(10)}
    with file_store(path) as s:
        for key, data in values.items():
            s.store(key, data)
        size = s.log_bytes
    assert (path / LOG_NAME).stat().st_size == size
    return values, size


def _check_values(path: Path, values: dict[bytes, bytes]) -> None:
    with file_store(path) as s:
        assert s.list_keys(None, 100) == sorted(values)
        for key, data in values.items():
            assert s.retrieve(key) == data
        s.store(b"after", b"recovery")  # appends land right after the last good record
    with file_store(path) as s:
        assert s.retrieve(b"after") == b"recovery"
        assert len(s) == len(values) + 1


@pytest.mark.parametrize("tail", ["half_record", "bad_crc_last", "short_garbage", "zeroes"])
def test_torn_tail_is_truncated(tmp_path: Path, tail: str, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "db"
    values, size = _fill(db)
    record = _record_bytes(tmp_path, b"torn", value(5000))
    junk = {
        "half_record": record[: len(record) // 2],
        "bad_crc_last": record[:-1] + bytes([record[-1] ^ 0x40]),
        "short_garbage": b"\x4b\x56\x52",
        "zeroes": bytes(10000),
    }[tail]
    with (db / LOG_NAME).open("ab") as f:
        f.write(junk)
    with caplog.at_level(logging.INFO, logger=kv_file.__name__):
        with file_store(db) as s:
            assert s.log_bytes == size
            with pytest.raises(KvKeyNotFound):
                s.retrieve(b"torn")
    assert (db / LOG_NAME).stat().st_size == size
    assert "torn tail" in caplog.text
    assert not list(db.glob(BAD_TAIL_PREFIX + "*"))
    _check_values(db, values)


def test_garbage_tail_is_cut_and_kept_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    values, size = _fill(tmp_path)
    garbage = b"\x01garbage that is no record" * 10
    with (tmp_path / LOG_NAME).open("ab") as f:
        f.write(garbage)
    with caplog.at_level(logging.WARNING, logger=kv_file.__name__):
        file_store(tmp_path).close()
    assert "bad record header" in caplog.text
    assert (tmp_path / f"{BAD_TAIL_PREFIX}{size}").read_bytes() == garbage
    _check_values(tmp_path, values)


def test_crc_corruption_in_a_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with file_store(tmp_path) as s:
        s.store(b"first", value(4096, seed=1))
        s.store(b"victim", value(4096, seed=2))
        s.store(b"last", value(4096, seed=3))
        offset = FILE_HEADER_SIZE + record_size(5, 4096)  # the victim's record
        with (tmp_path / LOG_NAME).open("r+b") as f:  # flip one bit in the middle of the value
            pos = offset + RECORD_HEADER_SIZE + 6 + 2048
            f.seek(pos)
            byte = f.read(1)
            f.seek(pos)
            f.write(bytes([byte[0] ^ 0x01]))
        with pytest.raises(KvStoreCorrupt):
            s.retrieve(b"victim")
        with pytest.raises(KvIoError):  # the datapath may catch the 88h family at once
            s.retrieve(b"victim")
        assert s.retrieve(b"first") == value(4096, seed=1)
        assert s.retrieve(b"last") == value(4096, seed=3)
        assert s.exists(b"victim") == 4096
        st = s.stats
        assert (st.corrupt_reads, st.hits, st.retrieves) == (2, 2, 4)
        size = s.log_bytes
    # Recovery stops at the bad record: what came before survives, the rest is set aside.
    with caplog.at_level(logging.WARNING, logger=kv_file.__name__):
        with file_store(tmp_path) as s:
            assert s.list_keys(None, 10) == [b"first"]
            assert s.log_bytes == offset
    assert "record CRC mismatch" in caplog.text
    assert (tmp_path / f"{BAD_TAIL_PREFIX}{offset}").stat().st_size == size - offset
    _check_values(tmp_path, {b"first": value(4096, seed=1)})


# -- file store: compaction, failures, durability ------------------------------------------------


def test_compaction_keeps_live_values_and_shrinks(tmp_path: Path) -> None:
    keys = [f"key{i:02}".encode() for i in range(20)]
    with file_store(tmp_path, compact_min_bytes=64 * KIB) as s:
        for rnd in range(10):
            for i, key in enumerate(keys):
                s.store(key, value(4 * KIB, seed=rnd * 100 + i))
        live = sum(record_size(len(k), 4 * KIB) for k in keys)
        assert s.stats.compactions >= 5
        assert s.log_bytes <= 2 * (FILE_HEADER_SIZE + live) + 2 * RECORD_HEADER_SIZE + 4 * KIB
        assert (tmp_path / LOG_NAME).stat().st_size == s.log_bytes
        for i, key in enumerate(keys):
            assert s.retrieve(key) == value(4 * KIB, seed=900 + i)
        for key in keys[::2]:
            s.delete(key)
        s.compact()  # explicit: exactly the live records remain
        assert s.log_bytes == FILE_HEADER_SIZE + live // 2
        assert s.dead_bytes == 0
        s.store(b"new", b"after compaction")
    assert not (tmp_path / kv_file.COMPACT_NAME).exists()
    with file_store(tmp_path) as s:
        assert s.list_keys(None, 100) == sorted(keys[1::2] + [b"new"])
        for i in range(1, 20, 2):
            assert s.retrieve(keys[i]) == value(4 * KIB, seed=900 + i)


def test_compaction_keeps_lru_order_and_drops_corrupt_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with file_store(tmp_path, capacity_bytes=400, mode=KvMode.CACHE) as s:
        for key in (b"a", b"b", b"c", b"d"):
            s.store(key, value(100))
        s.retrieve(b"a")  # LRU: b, c, d, a
        bad = s._index[b"c"].handle.offset
        fd = os.open(tmp_path / LOG_NAME, os.O_RDWR)
        os.pwrite(fd, b"\xee", bad + 50)
        os.close(fd)
        with caplog.at_level(logging.WARNING, logger=kv_file.__name__):
            s.compact()
        assert "fails its CRC" in caplog.text
        assert s.list_keys(None, 10) == [b"a", b"b", b"d"]
        assert s.stats.bytes_used == 300
    with file_store(tmp_path, capacity_bytes=300, mode=KvMode.CACHE) as s:
        s.store(b"e", value(100))  # LRU order from the compacted log: b, d, a
        assert s.list_keys(None, 10) == [b"a", b"d", b"e"]


def _failing_pwritev(err: int) -> Callable[..., int]:
    """A pwritev that writes part of the data, then fails like a full or broken disk."""
    real = os.pwritev

    def pwritev(fd: int, bufs: list[bytes], offset: int, *flags: int) -> int:
        data = b"".join(bytes(b) for b in bufs)
        real(fd, [data[: len(data) // 2]], offset)
        raise OSError(err, os.strerror(err))

    return pwritev


@pytest.mark.parametrize(("err", "exc"), [(errno.EIO, KvIoError), (errno.ENOSPC, KvCapacityExceeded)])
def test_failed_append_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, exc: type[KvError]
) -> None:
    with file_store(tmp_path, capacity_bytes=300, mode=KvMode.CACHE) as s:
        for key in (b"a", b"b", b"c"):
            s.store(key, value(100, seed=key[0]))
        size = s.log_bytes
        with monkeypatch.context() as m:
            m.setattr(os, "pwritev", _failing_pwritev(err))
            with pytest.raises(exc):
                s.store(b"a", value(200, seed=7))  # would evict b and c
            with pytest.raises(exc):
                s.delete(b"b")
        assert s.log_bytes == size == (tmp_path / LOG_NAME).stat().st_size
        assert s.list_keys(None, 10) == [b"a", b"b", b"c"]
        assert s.retrieve(b"a") == value(100, seed=ord("a"))
        assert s.stats.evictions == 0
        s.store(b"d", value(100))  # the Retrieve above made b the LRU entry
        assert s.list_keys(None, 10) == [b"a", b"c", b"d"]
    with file_store(tmp_path, capacity_bytes=300, mode=KvMode.CACHE) as s:
        assert s.list_keys(None, 10) == [b"a", b"c", b"d"]


def test_sync_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    with file_store(tmp_path / "sync", sync_every_write=True) as s:
        s.store(b"a", b"1")
        s.delete(b"a")
        assert len(calls) == 2
    calls.clear()
    with file_store(tmp_path / "lazy") as s:
        s.store(b"a", b"1")
        assert calls == []
        s.flush()
        assert len(calls) == 1


def test_file_ttl_restarts_on_reopen(tmp_path: Path) -> None:
    clock = FakeClock()
    with file_store(tmp_path, mode=KvMode.CACHE, ttl_s=10, clock=clock) as s:
        s.store(b"gone", b"1")
        clock.advance(6)
        s.store(b"kept", b"2")
        clock.advance(5)
        assert s.list_keys(None, 10) == [b"kept"]  # "gone" expired: a tombstone is logged
    clock.advance(100)
    with file_store(tmp_path, mode=KvMode.CACHE, ttl_s=10, clock=clock) as s:
        assert s.list_keys(None, 10) == [b"kept"]
        clock.advance(10)
        assert len(s) == 0


def test_append_that_cannot_be_undone_fences_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with file_store(tmp_path) as s:
        s.store(b"a", b"kept")
        with monkeypatch.context() as m:
            m.setattr(os, "pwritev", _failing_pwritev(errno.EIO))
            m.setattr(os, "ftruncate", _raise_eio)
            with pytest.raises(KvIoError):
                s.store(b"b", value(1000))
        with pytest.raises(KvIoError, match="reopen"):  # the log tail is unknown: no more appends
            s.store(b"c", b"v")
        assert s.retrieve(b"a") == b"kept"  # reads still work
    with file_store(tmp_path) as s:  # recovery cuts the half-written record
        assert s.list_keys(None, 10) == [b"a"]
        s.store(b"c", b"v")


def _raise_eio(*args: object) -> None:
    raise OSError(errno.EIO, "injected")


# -- crash consistency: the last record cut or damaged anywhere ---------------------------------

_SMALL = {f"k{i}".encode(): value(24 + i, seed=i) for i in range(4)}


def _last_record_case(path: Path, kind: str) -> tuple[bytes, bytes, dict[bytes, bytes], dict[bytes, bytes]]:
    """(log before, log after, values before, values after) around one last update of *kind*."""
    with file_store(path) as s:
        for key, data in _SMALL.items():
            s.store(key, data)
        s.flush()
        before = (path / LOG_NAME).read_bytes()
        after_values = dict(_SMALL)
        if kind == "new_key":
            s.store(b"last", value(40, seed=99))
            after_values[b"last"] = value(40, seed=99)
        elif kind == "overwrite":
            s.store(b"k1", value(33, seed=98))
            after_values[b"k1"] = value(33, seed=98)
        else:
            s.delete(b"k2")
            del after_values[b"k2"]
        s.flush()
    return before, (path / LOG_NAME).read_bytes(), dict(_SMALL), after_values


def _recovered(path: Path) -> dict[bytes, bytes]:
    with file_store(path) as s:
        keys = s.list_keys(None, 100)
        return {key: s.retrieve(key) for key in keys}


@pytest.mark.parametrize("kind", ["new_key", "overwrite", "delete"])
def test_last_record_cut_at_every_offset(tmp_path: Path, kind: str) -> None:
    before, after, old, new = _last_record_case(tmp_path / "src", kind)
    record = after[len(before):]
    assert record and after.startswith(before)
    db = tmp_path / "db"
    db.mkdir()
    for cut in range(len(record) + 1):
        for leftover in db.iterdir():
            leftover.unlink()
        (db / LOG_NAME).write_bytes(before + record[:cut])
        complete = cut == len(record)
        assert _recovered(db) == (new if complete else old), f"cut at byte {cut} of {len(record)}"
        assert (db / LOG_NAME).stat().st_size == (len(after) if complete else len(before))
        assert not list(db.glob(BAD_TAIL_PREFIX + "*"))  # a cut is a torn tail, not damage
        with file_store(db) as s:  # appends continue right after the last good record
            s.store(b"next", b"v")
        assert _recovered(db)[b"next"] == b"v"


@pytest.mark.parametrize("kind", ["new_key", "overwrite", "delete"])
def test_last_record_damaged_at_every_byte(tmp_path: Path, kind: str) -> None:
    before, after, old, _ = _last_record_case(tmp_path / "src", kind)
    db = tmp_path / "db"
    db.mkdir()
    for pos in range(len(before), len(after)):
        for leftover in db.iterdir():
            leftover.unlink()
        damaged = bytearray(after)
        damaged[pos] ^= 0x01
        (db / LOG_NAME).write_bytes(damaged)
        # Never indexed: the record's CRC32C (or its header checks) rejects it wherever the bit is.
        assert _recovered(db) == old, f"bit flipped at byte {pos - len(before)} of the record"
        assert (db / LOG_NAME).stat().st_size == len(before)


def test_new_directories_and_log_are_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    real = kv_file.fsync_dir

    def spy(path: Path) -> None:
        synced.append(Path(path))
        real(path)

    monkeypatch.setattr(kv_file, "fsync_dir", spy)
    db = tmp_path / "a" / "b"
    file_store(db).close()
    # each new directory's entry in its parent, then the new log's entry in the store directory
    assert synced == [tmp_path, tmp_path / "a", db]
    synced.clear()
    file_store(db).close()
    assert synced == []


def test_compaction_is_atomic_and_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between writing kv.log.compact and its rename leaves the old log in charge."""
    with file_store(tmp_path) as s:
        for i in range(20):
            s.store(b"key", value(500, seed=i))
        s.flush()
        with monkeypatch.context() as m:
            m.setattr(os, "rename", _raise_eio)
            with pytest.raises(KvIoError):
                s.compact()
        assert not (tmp_path / kv_file.COMPACT_NAME).exists()
        (tmp_path / kv_file.COMPACT_NAME).write_bytes(b"half a compaction")  # as if killed mid-way
    assert _recovered(tmp_path) == {b"key": value(500, seed=19)}
    assert not (tmp_path / kv_file.COMPACT_NAME).exists()
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd))[1])
    with file_store(tmp_path) as s:
        s.compact()
    assert synced[-2:] == [str(tmp_path / kv_file.COMPACT_NAME), str(tmp_path)]  # data, then the rename
    assert _recovered(tmp_path) == {b"key": value(500, seed=19)}
