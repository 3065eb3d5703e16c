"""Block stores backing NVM command set namespaces.

A block store is a flat array of ``num_blocks`` logical blocks of ``block_size`` bytes.
Two implementations:

* :class:`RamBlockStore`: sparse in memory.  Data lives in fixed-size chunks (1 MiB by
  default) allocated on first write; unwritten chunks read back as zeroes, and
  deallocate / write-zeroes free every chunk they cover whole.
* :class:`FileBlockStore`: a sparse file (or block device) accessed with positional
  ``pread``/``pwrite``.  Flush is ``fdatasync``; an FUA write uses ``pwritev`` with
  ``RWF_DSYNC`` (one syscall, only that range is made durable), falling back to
  ``pwrite`` + ``fdatasync`` where the flag is not supported.  Deallocate punches a hole
  (``fallocate(PUNCH_HOLE|KEEP_SIZE)``), write-zeroes without deallocate uses
  ``fallocate(ZERO_RANGE|KEEP_SIZE)``; both fall back to writing zeroes.

Errors: :class:`BlockRangeError` (a ``ValueError``) for an LBA range outside the store,
which the datapath maps to NVMe "LBA Out of Range"; a plain ``ValueError`` for a data
length that is not a whole number of blocks; ``OSError`` for I/O failures (mapped to a
media error status), including use after :meth:`BlockStore.close`.

Deallocated blocks always read back as zeroes, so a namespace on any store may report
DLFEAT "read returns all zeroes" and Write Zeroes with DEAC support.

Not thread-safe: the device drives a store from one event loop.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 65536
DEFAULT_BLOCK_SIZE = 512
DEFAULT_CHUNK_SIZE = 1 << 20
"""RAM store allocation unit; a multiple of every legal block size."""
ZERO_WRITE_SIZE = 1 << 20
"""Largest single write when zeroes must be written out explicitly."""
ST_BLOCKS_UNIT = 512
"""``st_blocks`` counts 512-byte units on Linux whatever the file system."""

# <linux/falloc.h>
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_UNSUPPORTED_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
"""errno values meaning "this fallocate mode / pwritev flag is not available here"."""


class BlockRangeError(ValueError):
    """An LBA range lies (partly) outside the store: NVMe LBA Out of Range."""


class BlockStoreSizeError(ValueError):
    """An existing backing file or device is too small for the requested geometry."""


class BlockStoreClosedError(OSError):
    """The store was used after :meth:`BlockStore.close`."""

    def __init__(self) -> None:
        super().__init__(errno.EBADF, "block store is closed")


class BlockStoreKind(StrEnum):
    """Backends known to :func:`open_block_store`."""

    RAM = "ram"
    FILE = "file"


@dataclass(slots=True)
class BlockStoreStats:
    """Operation counters; bytes count payload, not zeroed or deallocated ranges."""

    reads: int = 0
    writes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    fua_writes: int = 0
    flushes: int = 0
    write_zeroes: int = 0
    deallocates: int = 0


def validate_block_size(block_size: int) -> None:
    """Raise ``ValueError`` unless *block_size* is a power of two in 512..65536."""
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise ValueError(
            f"block size {block_size} must be a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}"
        )


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    """A flat unsigned-byte view of *data* (no copy)."""
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class BlockStore(ABC):
    """A fixed-size array of logical blocks.

    ``nblocks == 0`` (or empty data) is a no-op as long as ``lba <= num_blocks``.
    """

    volatile_write_cache: bool = False
    """True if writes may sit in a volatile cache until :meth:`flush` (NVMe VWC)."""
    deallocated_reads_zero: bool = True
    """Deallocated blocks read back as zeroes (NVMe DLFEAT bits 2:0 = 001b)."""

    def __init__(self, block_size: int, num_blocks: int) -> None:
        validate_block_size(block_size)
        if num_blocks <= 0:
            raise ValueError(f"number of blocks must be positive, got {num_blocks}")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.stats = BlockStoreStats()
        self._closed = False

    @property
    def size_bytes(self) -> int:
        """Capacity in bytes."""
        return self.block_size * self.num_blocks

    @property
    def closed(self) -> bool:
        return self._closed

    # -- shared checks -------------------------------------------------------------

    def check_range(self, lba: int, nblocks: int) -> None:
        """Raise :class:`BlockRangeError` unless ``[lba, lba + nblocks)`` fits."""
        if lba < 0 or nblocks < 0 or lba + nblocks > self.num_blocks:
            raise BlockRangeError(f"LBA range {lba}+{nblocks} outside namespace of {self.num_blocks} blocks")

    def _blocks_of(self, view: memoryview) -> int:
        """Number of whole blocks in *view*; ``ValueError`` for a partial block."""
        nblocks, rest = divmod(view.nbytes, self.block_size)
        if rest:
            raise ValueError(f"data length {view.nbytes} is not a multiple of block size {self.block_size}")
        return nblocks

    def _check_open(self) -> None:
        if self._closed:
            raise BlockStoreClosedError()

    # -- interface -----------------------------------------------------------------

    def read(self, lba: int, nblocks: int) -> bytes:
        """Return ``nblocks`` blocks starting at ``lba``."""
        self._check_open()
        self.check_range(lba, nblocks)
        self.stats.reads += 1
        self.stats.bytes_read += nblocks * self.block_size
        return self._read(lba * self.block_size, nblocks * self.block_size)

    def read_into(self, lba: int, buf: bytearray | memoryview) -> None:
        """Fill the writable buffer *buf* (a whole number of blocks) from ``lba``."""
        self._check_open()
        view = _byte_view(buf)
        nblocks = self._blocks_of(view)
        self.check_range(lba, nblocks)
        self.stats.reads += 1
        self.stats.bytes_read += view.nbytes
        if nblocks:
            self._read_into(lba * self.block_size, view)

    def write(self, lba: int, data: bytes | bytearray | memoryview, *, fua: bool = False) -> None:
        """Write *data* (a whole number of blocks) at ``lba``; durable on return if *fua*."""
        self._check_open()
        view = _byte_view(data)
        nblocks = self._blocks_of(view)
        self.check_range(lba, nblocks)
        self.stats.writes += 1
        self.stats.bytes_written += view.nbytes
        self.stats.fua_writes += fua
        if nblocks:
            self._write(lba * self.block_size, view, fua)

    def write_zeroes(self, lba: int, nblocks: int, *, deallocate: bool = False, fua: bool = False) -> None:
        """Make the range read as zeroes; *deallocate* lets the store release the space."""
        self._check_open()
        self.check_range(lba, nblocks)
        self.stats.write_zeroes += 1
        if nblocks:
            self._zero(lba * self.block_size, nblocks * self.block_size, deallocate, fua)

    def deallocate(self, lba: int, nblocks: int) -> None:
        """Release the range (Dataset Management deallocate); it then reads as zeroes."""
        self._check_open()
        self.check_range(lba, nblocks)
        self.stats.deallocates += 1
        if nblocks:
            self._zero(lba * self.block_size, nblocks * self.block_size, True, False)

    def flush(self) -> None:
        """Make every completed write durable."""
        self._check_open()
        self.stats.flushes += 1
        self._flush()

    def close(self) -> None:
        """Release resources; idempotent.  Does not flush."""
        if not self._closed:
            self._closed = True
            self._close()

    @property
    @abstractmethod
    def allocated_bytes(self) -> int:
        """Bytes of backing storage actually allocated (sparse accounting)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(block_size={self.block_size}, num_blocks={self.num_blocks})"

    # -- backend hooks: byte offsets, already validated, length > 0 -----------------

    @abstractmethod
    def _read(self, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def _read_into(self, offset: int, view: memoryview) -> None: ...

    @abstractmethod
    def _write(self, offset: int, view: memoryview, fua: bool) -> None: ...

    @abstractmethod
    def _zero(self, offset: int, length: int, deallocate: bool, fua: bool) -> None: ...

    @abstractmethod
    def _flush(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...


class RamBlockStore(BlockStore):
    """Sparse in-memory store: a dict of chunks allocated on first write.

    A 128 KiB aligned access inside one chunk costs one slice copy.  Nothing survives
    the process, so :meth:`flush` and FUA are no-ops and there is no volatile cache.
    """

    def __init__(self, block_size: int, num_blocks: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        super().__init__(block_size, num_blocks)
        if chunk_size < block_size or chunk_size % block_size:
            raise ValueError(f"chunk size {chunk_size} must be a multiple of block size {block_size}")
        self.chunk_size = chunk_size
        self._chunks: dict[int, bytearray] = {}
        self._zero_bytes = bytes(chunk_size)
        self._zero_chunk = memoryview(self._zero_bytes)

    @property
    def allocated_bytes(self) -> int:
        return sum(len(chunk) for chunk in self._chunks.values())

    @property
    def allocated_chunks(self) -> int:
        return len(self._chunks)

    def _chunk_len(self, index: int) -> int:
        """Length of chunk *index*; the last chunk stops at the end of the store."""
        return min(self.chunk_size, self.size_bytes - index * self.chunk_size)

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
        """Split a byte range into ``(chunk index, offset in chunk, offset in range, length)``."""
        done = 0
        while done < length:
            index, start = divmod(offset + done, self.chunk_size)
            n = min(self.chunk_size - start, length - done)
            yield index, start, done, n
            done += n

    def _read(self, offset: int, length: int) -> bytes:
        index, start = divmod(offset, self.chunk_size)
        if start + length <= self.chunk_size:  # fast path: one chunk, one copy
            chunk = self._chunks.get(index)
            return bytes(length) if chunk is None else bytes(memoryview(chunk)[start : start + length])
        parts: list[memoryview] = []
        for index, start, _, n in self._pieces(offset, length):
            chunk = self._chunks.get(index)
            parts.append(self._zero_chunk[:n] if chunk is None else memoryview(chunk)[start : start + n])
        return b"".join(parts)

    def _read_into(self, offset: int, view: memoryview) -> None:
        for index, start, pos, n in self._pieces(offset, view.nbytes):
            chunk = self._chunks.get(index)
            view[pos : pos + n] = (
                self._zero_chunk[:n] if chunk is None else memoryview(chunk)[start : start + n]
            )

    def _write(self, offset: int, view: memoryview, fua: bool) -> None:
        for index, start, pos, n in self._pieces(offset, view.nbytes):
            chunk = self._chunks.get(index)
            if chunk is None:
                chunk_len = self._chunk_len(index)
                if n == chunk_len:  # whole chunk: allocate and copy in one go
                    self._chunks[index] = bytearray(view[pos : pos + n])
                    continue
                chunk = self._chunks[index] = bytearray(chunk_len)
            chunk[start : start + n] = view[pos : pos + n]

    def _zero(self, offset: int, length: int, deallocate: bool, fua: bool) -> None:
        # Zeroed and deallocated ranges are indistinguishable here: always free what we can.
        for index, start, _, n in self._pieces(offset, length):
            chunk = self._chunks.get(index)
            if chunk is None:
                continue
            if n == len(chunk):
                del self._chunks[index]
                continue
            chunk[start : start + n] = self._zero_chunk[:n]
            if self._is_zero(chunk):  # zeroed piecemeal: release it
                del self._chunks[index]

    def _is_zero(self, chunk: bytearray) -> bool:
        """True if *chunk* holds only zeroes (a memcmp, about 25 us per MiB)."""
        return chunk == (self._zero_bytes if len(chunk) == self.chunk_size else bytes(len(chunk)))

    def _flush(self) -> None:
        pass

    def _close(self) -> None:
        self._chunks.clear()


# -- fallocate(2) through libc ---------------------------------------------------------


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    func = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if func is None:
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


_libc_fallocate = _load_fallocate()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """``fallocate(2)``; raises ``OSError`` (``ENOSYS`` where libc lacks it)."""
    if _libc_fallocate is None:
        raise OSError(errno.ENOSYS, "fallocate is not available")
    while _libc_fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """``fsync`` the directory *path*, making the names created or renamed in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_parent_dir(path: str | os.PathLike[str]) -> None:
    """``fsync`` the directory holding *path*, making a new name in it durable."""
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _open_or_create(path: str, flags: int, create: bool) -> tuple[int, bool]:
    """(fd, created): open *path*, creating it (``O_EXCL``, so we know we did) if allowed."""
    if create:
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600), True
        except FileExistsError:
            pass
    return os.open(path, flags), False


class FileBlockStore(BlockStore):
    """Store backed by a sparse regular file or a block device.

    Geometry: a new (or empty) regular file is extended with ``ftruncate`` to
    ``block_size * num_blocks`` bytes, which allocates nothing.  An existing file or
    device at least that large is used as is (extra bytes past the namespace are kept
    and ignored); one that is smaller raises :class:`BlockStoreSizeError` and is left
    untouched.  With ``create=False`` a missing file raises ``FileNotFoundError``.

    The page cache is a volatile write cache: completed writes are durable only after
    :meth:`flush` (``fdatasync``) or when written with ``fua=True``.  A file this store
    creates or extends is ``fsync``ed, and so is its directory, before the constructor
    returns, so the namespace itself survives a crash.
    """

    volatile_write_cache = True

    def __init__(
        self, path: str | os.PathLike[str], block_size: int, num_blocks: int, *, create: bool = True
    ) -> None:
        super().__init__(block_size, num_blocks)
        self.path = os.fspath(path)
        flags = os.O_RDWR | os.O_CLOEXEC
        self._fd, created = _open_or_create(self.path, flags, create)
        try:
            if self._fit_size(create) or created:
                # The new file (its name, its size) must survive a crash like the data
                # written to it later: sync the inode, then the directory entry.
                os.fsync(self._fd)
                fsync_parent_dir(self.path)
        except BaseException:
            os.close(self._fd)
            raise
        self._rwf_dsync = hasattr(os, "RWF_DSYNC") and hasattr(os, "pwritev")
        self._mode_supported = {FALLOC_FL_PUNCH_HOLE: True, FALLOC_FL_ZERO_RANGE: True}

    def _fit_size(self, create: bool) -> bool:
        """Check (or, for a new file, set) the size; True if the file was extended."""
        st = os.fstat(self._fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise ValueError(f"{self.path} is neither a regular file nor a block device")
        current = os.lseek(self._fd, 0, os.SEEK_END)  # st_size is 0 for block devices
        if current >= self.size_bytes:
            return False
        if create and current == 0 and stat.S_ISREG(st.st_mode):
            os.ftruncate(self._fd, self.size_bytes)
            return True
        raise BlockStoreSizeError(
            f"{self.path} holds {current} bytes, fewer than the {self.size_bytes} bytes "
            f"needed for {self.num_blocks} blocks of {self.block_size} bytes"
        )

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    @property
    def allocated_bytes(self) -> int:
        self._check_open()
        return os.fstat(self._fd).st_blocks * ST_BLOCKS_UNIT

    def _read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) == length:
            return data
        buf = bytearray(length)  # short read: rare, finish it the slow way
        self._read_into(offset, memoryview(buf))
        return bytes(buf)

    def _read_into(self, offset: int, view: memoryview) -> None:
        done = 0
        while done < view.nbytes:
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n == 0:
                raise OSError(errno.EIO, f"unexpected end of {self.path} at byte {offset + done}")
            done += n

    def _pwrite_all(self, offset: int, view: memoryview, dsync: bool) -> None:
        done = 0
        while done < view.nbytes:
            if dsync:
                n = os.pwritev(self._fd, [view[done:]], offset + done, os.RWF_DSYNC)
            else:
                n = os.pwrite(self._fd, view[done:], offset + done)
            done += n

    def _write(self, offset: int, view: memoryview, fua: bool) -> None:
        if fua and self._rwf_dsync:
            try:
                self._pwrite_all(offset, view, dsync=True)
                return
            except OSError as exc:
                # Old kernels reject unknown pwritev2 flags with EOPNOTSUPP (or EINVAL).
                if exc.errno not in _UNSUPPORTED_ERRNOS and exc.errno != errno.EINVAL:
                    raise
                self._rwf_dsync = False
        self._pwrite_all(offset, view, dsync=False)
        if fua:
            os.fdatasync(self._fd)

    def _zero(self, offset: int, length: int, deallocate: bool, fua: bool) -> None:
        mode = FALLOC_FL_PUNCH_HOLE if deallocate else FALLOC_FL_ZERO_RANGE
        if not self._try_fallocate(mode, offset, length):
            self._write_zero_bytes(offset, length)
        if fua:
            os.fdatasync(self._fd)

    def _try_fallocate(self, mode: int, offset: int, length: int) -> bool:
        """Zero the range with ``fallocate(mode|KEEP_SIZE)``; False if the mode is unsupported."""
        if not self._mode_supported[mode]:
            return False
        try:
            fallocate(self._fd, mode | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED_ERRNOS:
                raise
            self._mode_supported[mode] = False
            return False
        return True

    def _write_zero_bytes(self, offset: int, length: int) -> None:
        zeroes = memoryview(bytes(min(length, ZERO_WRITE_SIZE)))
        done = 0
        while done < length:
            n = min(length - done, zeroes.nbytes)
            self._pwrite_all(offset + done, zeroes[:n], dsync=False)
            done += n

    def _flush(self) -> None:
        os.fdatasync(self._fd)

    def _close(self) -> None:
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"FileBlockStore({self.path!r}, block_size={self.block_size}, num_blocks={self.num_blocks})"


def open_block_store(
    kind: BlockStoreKind | str,
    *,
    size_bytes: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
    path: str | os.PathLike[str] | None = None,
    create: bool = True,
) -> BlockStore:
    """Build a block store of ``size_bytes`` from a config-level description.

    Raises ``ValueError`` for an unknown kind, a bad block size, a size that is not a
    positive multiple of the block size, a file store without a path, or a RAM store
    given a path.
    """
    try:
        kind = BlockStoreKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in BlockStoreKind)
        raise ValueError(f"unknown block store kind {kind!r}; expected one of: {choices}") from None
    validate_block_size(block_size)
    if size_bytes <= 0 or size_bytes % block_size:
        raise ValueError(f"size {size_bytes} must be a positive multiple of block size {block_size}")
    num_blocks = size_bytes // block_size
    if kind is BlockStoreKind.RAM:
        if path is not None:
            raise ValueError("a RAM block store takes no path")
        return RamBlockStore(block_size, num_blocks)
    if path is None:
        raise ValueError("a file block store needs a path")
    return FileBlockStore(path, block_size, num_blocks, create=create)
