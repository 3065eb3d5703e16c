"""Unit tests for dpu_emu.storage.block (RAM and file block stores)."""

from __future__ import annotations

import array
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dpu_emu.storage import block
from dpu_emu.storage.block import (
    BlockRangeError,
    BlockStore,
    BlockStoreClosedError,
    BlockStoreKind,
    BlockStoreSizeError,
    FileBlockStore,
    RamBlockStore,
    open_block_store,
)

BS = 512
SMALL_CHUNK = 4096  # 8 blocks per RAM chunk, so boundaries are cheap to cross
NUM_BLOCKS = 64
GIB = 1 << 30
KIB128 = 128 * 1024


def pattern(nblocks: int, seed: int = 1, block_size: int = BS) -> bytes:
    """Distinct non-zero bytes per block, so misplaced blocks are caught."""
    return b"".join(bytes([(seed + i) % 255 + 1]) * block_size for i in range(nblocks))


@pytest.fixture(params=["ram", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockStore]:
    s: BlockStore
    if request.param == "ram":
        s = RamBlockStore(BS, NUM_BLOCKS, chunk_size=SMALL_CHUNK)
    else:
        s = FileBlockStore(tmp_path / "ns.img", BS, NUM_BLOCKS)
    with s:
        yield s


# -- data path ---------------------------------------------------------------------


def test_unwritten_reads_are_zero(store: BlockStore) -> None:
    assert store.read(0, NUM_BLOCKS) == bytes(NUM_BLOCKS * BS)
    buf = bytearray(b"\xff" * 3 * BS)
    store.read_into(NUM_BLOCKS - 3, memoryview(buf))
    assert buf == bytes(3 * BS)


@pytest.mark.parametrize(("lba", "nblocks"), [(0, 1), (5, 6), (7, 2), (3, 20), (8, 8), (0, NUM_BLOCKS)])
def test_read_after_write_across_chunks(store: BlockStore, lba: int, nblocks: int) -> None:
    data = pattern(nblocks, seed=lba)
    store.write(lba, data)
    assert store.read(lba, nblocks) == data
    buf = bytearray(nblocks * BS)
    store.read_into(lba, memoryview(buf))
    assert buf == data
    # neighbours untouched
    if lba:
        assert store.read(lba - 1, 1) == bytes(BS)
    if lba + nblocks < NUM_BLOCKS:
        assert store.read(lba + nblocks, 1) == bytes(BS)


def test_partial_read_of_written_and_unwritten_chunks(store: BlockStore) -> None:
    store.write(9, pattern(2))
    got = store.read(4, 12)  # spans unwritten chunk 0, written chunk 1
    assert got == bytes(5 * BS) + pattern(2) + bytes(5 * BS)


def test_overwrite(store: BlockStore) -> None:
    store.write(6, pattern(4, seed=1))
    store.write(7, pattern(2, seed=9))
    assert store.read(6, 4) == pattern(1, 1) + pattern(2, 9) + pattern(4, 1)[3 * BS :]


def test_write_accepts_memoryview_bytearray_and_wide_formats(store: BlockStore) -> None:
    data = pattern(2)
    store.write(0, memoryview(data))
    store.write(2, bytearray(data))
    words = array.array("I", data)  # itemsize 4: must be cast to bytes, not counted in items
    store.write(4, memoryview(words))
    assert store.read(0, 6) == data * 3


def test_zero_length_is_noop(store: BlockStore) -> None:
    assert store.read(NUM_BLOCKS, 0) == b""
    store.write(NUM_BLOCKS, b"")
    store.read_into(0, memoryview(bytearray()))
    store.deallocate(3, 0)
    store.write_zeroes(NUM_BLOCKS, 0)


# -- range and length checks ---------------------------------------------------------


def test_last_block_ok(store: BlockStore) -> None:
    store.write(NUM_BLOCKS - 1, pattern(1))
    assert store.read(NUM_BLOCKS - 1, 1) == pattern(1)
    store.deallocate(NUM_BLOCKS - 1, 1)
    store.write_zeroes(NUM_BLOCKS - 1, 1)


@pytest.mark.parametrize(
    ("lba", "nblocks"),
    [
        (NUM_BLOCKS, 1),  # one past the end
        (NUM_BLOCKS - 1, 2),  # straddles the end
        (2**64 - 1, 2),  # would wrap a 64-bit lba + n
        (1, 2**64 - 1),
        (-1, 1),
        (0, -1),
        (NUM_BLOCKS + 1, 0),
    ],
)
def test_out_of_range(store: BlockStore, lba: int, nblocks: int) -> None:
    with pytest.raises(BlockRangeError):
        store.read(lba, nblocks)
    with pytest.raises(BlockRangeError):
        store.deallocate(lba, nblocks)
    with pytest.raises(BlockRangeError):
        store.write_zeroes(lba, nblocks)
    if nblocks in range(1, 4):
        with pytest.raises(BlockRangeError):
            store.write(lba, pattern(nblocks))
        with pytest.raises(BlockRangeError):
            store.read_into(lba, memoryview(bytearray(nblocks * BS)))


def test_range_error_is_value_error() -> None:
    assert issubclass(BlockRangeError, ValueError)


@pytest.mark.parametrize("length", [1, BS - 1, BS + 1, 3 * BS - 7])
def test_wrong_lengths(store: BlockStore, length: int) -> None:
    with pytest.raises(ValueError) as info:
        store.write(0, bytes(length))
    assert not isinstance(info.value, BlockRangeError)
    with pytest.raises(ValueError):
        store.read_into(0, memoryview(bytearray(length)))


def test_use_after_close(store: BlockStore) -> None:
    store.close()
    store.close()  # idempotent
    assert store.closed
    with pytest.raises(BlockStoreClosedError) as info:
        store.read(0, 1)
    assert isinstance(info.value, OSError) and info.value.errno == errno.EBADF
    with pytest.raises(OSError):
        store.write(0, pattern(1))
    with pytest.raises(OSError):
        store.flush()


# -- deallocate / write zeroes -------------------------------------------------------


@pytest.mark.parametrize("op", ["deallocate", "zeroes", "zeroes_deac"])
@pytest.mark.parametrize(("lba", "nblocks"), [(2, 3), (8, 8), (6, 20), (0, NUM_BLOCKS)])
def test_zeroing_ranges(store: BlockStore, op: str, lba: int, nblocks: int) -> None:
    full = pattern(NUM_BLOCKS)
    store.write(0, full)
    if op == "deallocate":
        store.deallocate(lba, nblocks)
    else:
        store.write_zeroes(lba, nblocks, deallocate=op == "zeroes_deac")
    expected = full[: lba * BS] + bytes(nblocks * BS) + full[(lba + nblocks) * BS :]
    assert store.read(0, NUM_BLOCKS) == expected


def test_ram_is_sparse_at_1gib() -> None:
    s = RamBlockStore(BS, GIB // BS)
    assert s.allocated_bytes == 0
    assert s.read(s.num_blocks - 256, 256) == bytes(256 * BS)
    s.write(s.num_blocks - 1, pattern(1))
    assert s.allocated_chunks == 1
    assert s.allocated_bytes == block.DEFAULT_CHUNK_SIZE
    s.deallocate(0, s.num_blocks)
    assert s.allocated_bytes == 0


def test_ram_frees_covered_chunks_and_zeroes_partial() -> None:
    s = RamBlockStore(BS, NUM_BLOCKS, chunk_size=SMALL_CHUNK)  # 8 chunks of 8 blocks
    s.write(0, pattern(NUM_BLOCKS))
    assert s.allocated_chunks == 8
    s.deallocate(4, 20)  # half of chunk 0, all of chunks 1 and 2
    assert s.allocated_chunks == 6
    assert s.read(0, 4) == pattern(4)
    assert s.read(4, 20) == bytes(20 * BS)
    s.write_zeroes(0, 4)  # rest of chunk 0: now all zero, released piecemeal
    assert s.allocated_chunks == 5
    s.write_zeroes(24, 3, deallocate=True)  # partial: chunk stays
    assert s.allocated_chunks == 5
    assert s.read(24, 8) == bytes(3 * BS) + pattern(NUM_BLOCKS)[27 * BS : 32 * BS]


def test_ram_short_last_chunk() -> None:
    s = RamBlockStore(BS, 10, chunk_size=SMALL_CHUNK)  # chunks of 8 and 2 blocks
    s.write(8, pattern(2))
    assert s.allocated_bytes == 2 * BS
    s.write(6, pattern(4, seed=5))
    assert s.read(0, 10) == bytes(6 * BS) + pattern(4, seed=5)
    s.deallocate(8, 2)
    assert s.allocated_chunks == 1


def test_ram_chunk_size_must_be_multiple_of_block() -> None:
    with pytest.raises(ValueError):
        RamBlockStore(4096, 8, chunk_size=2048)
    with pytest.raises(ValueError):
        RamBlockStore(512, 8, chunk_size=1000)


# -- file store ----------------------------------------------------------------------


def test_file_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    with FileBlockStore(path, BS, NUM_BLOCKS) as s:
        s.write(10, pattern(5))
        s.flush()
    assert path.stat().st_size == NUM_BLOCKS * BS
    with FileBlockStore(path, BS, NUM_BLOCKS, create=False) as s:
        assert s.read(10, 5) == pattern(5)
        assert s.read(0, 10) == bytes(10 * BS)


def test_file_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileBlockStore(tmp_path / "absent.img", BS, NUM_BLOCKS, create=False)


def test_file_larger_is_kept_smaller_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    path.write_bytes(pattern(NUM_BLOCKS))
    with FileBlockStore(path, BS, NUM_BLOCKS // 2) as s:  # larger file: used, tail kept
        assert s.read(0, 2) == pattern(2)
        with pytest.raises(BlockRangeError):
            s.read(NUM_BLOCKS // 2, 1)
    assert path.stat().st_size == NUM_BLOCKS * BS
    with pytest.raises(BlockStoreSizeError, match="fewer than"):
        FileBlockStore(path, BS, NUM_BLOCKS * 2)
    assert path.stat().st_size == NUM_BLOCKS * BS  # untouched


def test_file_empty_existing_is_extended(tmp_path: Path) -> None:
    path = tmp_path / "ns.img"
    path.touch()
    with FileBlockStore(path, BS, NUM_BLOCKS):
        pass
    assert path.stat().st_size == NUM_BLOCKS * BS


def test_file_is_sparse_at_1gib(tmp_path: Path) -> None:
    path = tmp_path / "big.img"
    with FileBlockStore(path, BS, GIB // BS) as s:
        s.write(12345, pattern(1))
        s.flush()
        assert s.allocated_bytes < 1 << 20
        assert s.read(12345, 1) == pattern(1)
    st = path.stat()
    assert st.st_size == GIB
    assert st.st_blocks * 512 < 1 << 20


def test_punch_hole_frees_space_and_reads_zero(tmp_path: Path) -> None:
    with FileBlockStore(tmp_path / "ns.img", 4096, 256) as s:
        s.write(0, pattern(256, block_size=4096))
        s.flush()
        before = s.allocated_bytes
        s.deallocate(16, 128)
        assert s.read(16, 128) == bytes(128 * 4096)
        assert s.read(15, 1) == pattern(256, block_size=4096)[15 * 4096 : 16 * 4096]
        if s._mode_supported[block.FALLOC_FL_PUNCH_HOLE]:
            assert s.allocated_bytes <= before - 128 * 4096


@pytest.mark.parametrize("deallocate", [False, True])
def test_fallocate_unsupported_falls_back_to_zero_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deallocate: bool
) -> None:
    calls: list[int] = []

    def no_fallocate(fd: int, mode: int, offset: int, length: int) -> None:
        calls.append(mode)
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(block, "fallocate", no_fallocate)
    with FileBlockStore(tmp_path / "ns.img", BS, NUM_BLOCKS) as s:
        s.write(0, pattern(NUM_BLOCKS))
        for _ in range(2):
            s.write_zeroes(3, 40, deallocate=deallocate)
        assert s.read(0, NUM_BLOCKS) == pattern(3) + bytes(40 * BS) + pattern(NUM_BLOCKS)[43 * BS :]
    assert len(calls) == 1  # unsupported mode remembered, not retried


def test_fallocate_real_error_propagates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int, mode: int, offset: int, length: int) -> None:
        raise OSError(errno.EIO, "media error")

    monkeypatch.setattr(block, "fallocate", broken)
    with FileBlockStore(tmp_path / "ns.img", BS, NUM_BLOCKS) as s, pytest.raises(OSError) as info:
        s.deallocate(0, 1)
    assert info.value.errno == errno.EIO


@pytest.fixture
def sync_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """Count fdatasync calls and record pwritev flags."""
    calls: dict[str, list[object]] = {"fdatasync": [], "pwritev_flags": []}
    real_pwritev = os.pwritev

    def fake_fdatasync(fd: int) -> None:
        calls["fdatasync"].append(fd)

    def spy_pwritev(fd: int, buffers: list[memoryview], offset: int, flags: int = 0) -> int:
        calls["pwritev_flags"].append(flags)
        return real_pwritev(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "fdatasync", fake_fdatasync)
    monkeypatch.setattr(os, "pwritev", spy_pwritev)
    return calls


def test_flush_calls_fdatasync(tmp_path: Path, sync_calls: dict[str, list[object]]) -> None:
    with FileBlockStore(tmp_path / "ns.img", BS, NUM_BLOCKS) as s:
        s.write(0, pattern(1))
        assert sync_calls["fdatasync"] == []
        s.flush()
        assert sync_calls["fdatasync"] == [s.fileno()]
        assert s.stats.flushes == 1


def test_fua_write_uses_rwf_dsync(tmp_path: Path, sync_calls: dict[str, list[object]]) -> None:
    with FileBlockStore(tmp_path / "ns.img", BS, NUM_BLOCKS) as s:
        s.write(0, pattern(2), fua=True)
        assert sync_calls["pwritev_flags"] == [os.RWF_DSYNC]
        assert sync_calls["fdatasync"] == []
        assert s.read(0, 2) == pattern(2)
        assert s.stats.fua_writes == 1


def test_fua_falls_back_to_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_calls: dict[str, list[object]]
) -> None:
    def old_kernel_pwritev(fd: int, buffers: list[memoryview], offset: int, flags: int = 0) -> int:
        sync_calls["pwritev_flags"].append(flags)
        raise OSError(errno.EOPNOTSUPP, "unknown flag")

    monkeypatch.setattr(os, "pwritev", old_kernel_pwritev)
    with FileBlockStore(tmp_path / "ns.img", BS, NUM_BLOCKS) as s:
        s.write(0, pattern(2), fua=True)
        s.write(2, pattern(2), fua=True)
        s.write(4, pattern(2))
        assert sync_calls["pwritev_flags"] == [os.RWF_DSYNC]  # tried once, then remembered
        assert len(sync_calls["fdatasync"]) == 2
        assert s.read(0, 6) == pattern(2) * 3


def test_write_zeroes_fua_syncs(tmp_path: Path, sync_calls: dict[str, list[object]]) -> None:
    with FileBlockStore(tmp_path / "ns.img", BS, NUM_BLOCKS) as s:
        s.write_zeroes(0, 4)
        s.deallocate(0, 4)
        assert sync_calls["fdatasync"] == []
        s.write_zeroes(0, 4, fua=True)
        assert len(sync_calls["fdatasync"]) == 1


def _fsync_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record what ``os.fsync`` is called on (a path for a directory, "file" otherwise)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        target = os.readlink(f"/proc/self/fd/{fd}")
        synced.append(target if os.path.isdir(target) else "file")

    monkeypatch.setattr(os, "fsync", spy)
    return synced


def test_new_file_and_its_directory_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = _fsync_spy(monkeypatch)
    path = tmp_path / "sub" / "ns.img"
    path.parent.mkdir()
    FileBlockStore(path, BS, NUM_BLOCKS).close()
    assert synced == ["file", str(path.parent)]  # inode (size) first, then the name
    synced.clear()
    FileBlockStore(path, BS, NUM_BLOCKS).close()  # reopening an existing file syncs nothing
    assert synced == []
    path.write_bytes(b"")  # an empty existing file gets extended: that is synced too
    FileBlockStore(path, BS, NUM_BLOCKS).close()
    assert synced == ["file", str(path.parent)]
    assert path.stat().st_size == BS * NUM_BLOCKS


def test_create_false_never_creates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = _fsync_spy(monkeypatch)
    with pytest.raises(FileNotFoundError):
        FileBlockStore(tmp_path / "absent.img", BS, NUM_BLOCKS, create=False)
    assert synced == [] and not (tmp_path / "absent.img").exists()


def test_ram_flush_and_fua_are_noops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fdatasync", lambda fd: pytest.fail("RAM store must not sync"))
    s = RamBlockStore(BS, NUM_BLOCKS)
    s.write(0, pattern(1), fua=True)
    s.flush()
    assert not s.volatile_write_cache
    assert s.stats.flushes == 1 and s.stats.fua_writes == 1


def test_stats_count_operations(store: BlockStore) -> None:
    store.write(0, pattern(4))
    store.read(0, 2)
    store.read_into(0, memoryview(bytearray(BS)))
    store.deallocate(0, 1)
    store.write_zeroes(1, 1)
    st = store.stats
    assert (st.writes, st.bytes_written, st.reads, st.bytes_read) == (1, 4 * BS, 2, 3 * BS)
    assert (st.deallocates, st.write_zeroes) == (1, 1)


# -- factory -------------------------------------------------------------------------


def test_factory_builds_stores(tmp_path: Path) -> None:
    ram = open_block_store("ram", size_bytes=GIB)
    assert isinstance(ram, RamBlockStore) and ram.num_blocks == GIB // 512 and ram.block_size == 512
    with open_block_store(BlockStoreKind.FILE, size_bytes=1 << 20, block_size=4096, path=tmp_path / "f") as f:
        assert isinstance(f, FileBlockStore) and f.num_blocks == 256
        assert f.volatile_write_cache


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ram", "size_bytes": 1000}, "multiple of block size"),
        ({"kind": "ram", "size_bytes": 0}, "positive multiple"),
        ({"kind": "ram", "size_bytes": 4096, "block_size": 1000}, "power of two"),
        ({"kind": "ram", "size_bytes": 4096, "block_size": 256}, "power of two"),
        ({"kind": "ram", "size_bytes": 1 << 20, "block_size": 131072}, "power of two"),
        ({"kind": "file", "size_bytes": 4096}, "needs a path"),
        ({"kind": "ram", "size_bytes": 4096, "path": "/tmp/x"}, "takes no path"),
        ({"kind": "nvme", "size_bytes": 4096}, "unknown block store kind"),
    ],
)
def test_factory_errors(kwargs: dict[str, object], message: str) -> None:
    kind = kwargs.pop("kind")
    with pytest.raises(ValueError, match=message):
        open_block_store(kind, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("block_size", [512, 4096, 65536])
def test_legal_block_sizes(block_size: int) -> None:
    s = open_block_store("ram", size_bytes=block_size * 4, block_size=block_size)
    s.write(3, pattern(1, block_size=block_size))
    assert s.read(3, 1) == pattern(1, block_size=block_size)


# -- rough speed (printed with -s, never asserted) ----------------------------------------


def _time_ops(store: BlockStore, ops: int) -> dict[str, float]:
    """Seconds per 128 KiB op for write / read / read_into, after one warm-up pass of writes."""
    nblocks = KIB128 // BS
    span = store.num_blocks // nblocks
    data = pattern(nblocks)
    buf = memoryview(bytearray(KIB128))
    for i in range(span):  # allocate chunks / file blocks first: measure steady state
        store.write(i * nblocks, data)
    ops_by_name: dict[str, Callable[[int], object]] = {
        "write": lambda lba: store.write(lba, data),
        "read": lambda lba: store.read(lba, nblocks),
        "read_into": lambda lba: store.read_into(lba, buf),
    }
    results = {}
    for name, op in ops_by_name.items():
        t0 = time.perf_counter()
        for i in range(ops):
            op((i % span) * nblocks)
        results[name] = (time.perf_counter() - t0) / ops
    return results


def test_speed_report(tmp_path: Path) -> None:
    num_blocks = (64 << 20) // BS
    stores: list[BlockStore] = [
        RamBlockStore(BS, num_blocks),
        FileBlockStore(tmp_path / "speed.img", BS, num_blocks),
    ]
    for store in stores:
        with store:
            results = _time_ops(store, ops=1000)
        line = ", ".join(f"{k} {v * 1e6:.1f} us ({KIB128 / v / 1e9:.2f} GB/s)" for k, v in results.items())
        print(f"\n{type(store).__name__} 128 KiB: {line}")
