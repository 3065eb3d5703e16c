"""Per-LBA integrity tags of a protected block namespace.

Theory of operation
-------------------
Every logical block has one 64-bit *tag*, little-endian::

    bits 31..0   CRC32C of the block as stored (the ciphertext on an encrypted namespace)
    bit  32      WRITTEN: the block holds data written through the pipeline
    bits 63..33  reserved, always zero

A tag of 0 means "never written, or deallocated / zeroed since": such a block must read
back as zeroes and must *be* zero in the store.  Because WRITTEN is a bit of its own,
"unwritten" is never confused with a block whose CRC happens to be 0.  Any other value
(reserved bits set, or an unwritten tag whose CRC half is not zero) is a corrupt tag.

Tags are handled in bulk as raw bytes (8 per block) so that a whole command is decoded
with a few C-level operations (strided slices, ``bytes.count``/``find``), never a Python
loop per block:

* :func:`pack_tags` turns the ``array('I')`` of CRCs a CRC_GENERATE stage returned into
  the raw tags of written blocks;
* :func:`decode_tags` checks a range of raw tags and cuts it into *runs* of written and
  unwritten blocks, returning the CRCs of the range as little-endian uint32 bytes.

Two tables:

* :class:`RamCrcTable`: chunks of :data:`RAM_CHUNK_TAGS` tags allocated on first write
  (a 1 GiB namespace of 512-byte blocks needs at most 16 MiB, and nothing up front);
  chunks cleared whole are freed.
* :class:`FileCrcTable`: a sparse sidecar file (by convention ``<data path>.crc``): a
  4 KiB header (magic, version, geometry, a *binding* such as the key fingerprint, so a
  table is never used with another namespace or key), then the tags at
  ``HEADER_BYTES + 8 * lba``.  ``pread``/``pwrite``; ``durable=True`` writes use
  ``RWF_DSYNC`` (fallback ``fdatasync``); :meth:`CrcTable.flush` is ``fdatasync``; large
  clears punch holes.

Not thread-safe: driven from the device's event loop, like the block stores.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from nvmeof.wire.layout import Layout

from ..storage.block import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, BlockRangeError, fallocate

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("dpu_emu.protect.crc_table assumes a little-endian host (tags are native uint64)")

log = logging.getLogger("dpu_emu.protect.crc_table")

Buffer = bytes | bytearray | memoryview

TAG_BYTES: Final = 8
CRC_BYTES: Final = 4
WRITTEN: Final = 1 << 32                 # the WRITTEN bit of a tag (as a 64-bit integer)
WRITTEN_WORD: Final = 1                  # the high uint32 of a written block's tag
FLAG_OFFSET: Final = 4                   # byte of a tag that holds the WRITTEN bit
RESERVED_BYTES_PER_TAG: Final = 3        # bytes 5..7 of a tag, always zero
RAM_CHUNK_TAGS: Final = 32 * 1024        # 256 KiB of tags per RAM chunk
HEADER_BYTES: Final = 4096               # file table header (one page: tags stay page aligned)
PUNCH_MIN_BYTES: Final = 64 * 1024       # clears at least this large punch a hole in the file
ZERO_CHUNK_BYTES: Final = 1 << 20
BINDING_BYTES: Final = 32
FORMAT_VERSION: Final = 1
MAGIC: Final = b"DPUEMU-CRCTABLE\0"
CRC_TABLE_SUFFIX: Final = ".crc"

HEADER = Layout("CrcTableHeader", HEADER_BYTES, [
    ("magic", "16s", 0),
    ("version", "I", 16),
    ("tag_bytes", "I", 20),
    ("block_size", "I", 24),
    ("num_blocks", "Q", 32),
    ("binding", f"{BINDING_BYTES}s", 40),   # e.g. the data key's fingerprint; zeroes: plain
])

_ZEROES = bytes(ZERO_CHUNK_BYTES)
_ones = array("I", [WRITTEN_WORD]) * 4096     # grown on demand by _ones_view


class CrcTableError(Exception):
    """A table file that does not belong to this namespace (geometry, binding) or is damaged."""


class TagCorruption(Exception):
    """A tag that no write could have produced; ``index`` is its block within the range."""

    def __init__(self, index: int, message: str = "") -> None:
        super().__init__(message or f"corrupt integrity tag at block {index} of the range")
        self.index = index


class Run(NamedTuple):
    """Blocks ``[start, end)`` of a range (relative to its first LBA), all written or not."""

    start: int
    end: int
    written: bool


@dataclass(slots=True)
class CrcTableStats:
    gets: int = 0
    sets: int = 0
    clears: int = 0
    flushes: int = 0


def is_zero(data: Buffer) -> bool:
    """True if every byte of ``data`` is zero (memcmp against a zero buffer, no copy)."""
    view = memoryview(data).cast("B")
    step = ZERO_CHUNK_BYTES
    for offset in range(0, view.nbytes, step):
        if not _ZEROES.startswith(view[offset:offset + step]):
            return False
    return True


def _ones_view(count: int) -> memoryview:
    global _ones
    if len(_ones) < count:
        _ones = array("I", [WRITTEN_WORD]) * max(count, 2 * len(_ones))
    return memoryview(_ones)[:count]


def pack_tags(crcs: array | Buffer) -> bytearray:
    """Raw tags of written blocks with these CRC32C values (``array('I')`` or LE uint32 bytes)."""
    view = memoryview(crcs)
    if view.format != "I":
        view = view.cast("B").cast("I")
    count = len(view)
    out = bytearray(count * TAG_BYTES)
    words = memoryview(out).cast("I")
    words[0::2] = view
    words[1::2] = _ones_view(count)
    return out


def decode_tags(raw: Buffer) -> tuple[bytes, list[Run]]:
    """Check a range of raw tags; return its CRCs (LE uint32 bytes) and its runs.

    Raises :class:`TagCorruption` for reserved bits set, a WRITTEN byte other than 0/1,
    or an unwritten tag with a non-zero CRC half.
    """
    words = memoryview(raw).cast("B").cast("I")
    count = len(words) // 2
    high = words[1::2].tobytes()
    crcs = words[0::2].tobytes()
    flags = high[0::4]
    written = flags.count(1)
    unwritten = flags.count(0)
    if written + unwritten != count or high.count(0) != RESERVED_BYTES_PER_TAG * count + unwritten:
        raise TagCorruption(_first_bad_high(high))
    if written == count:
        return crcs, [Run(0, count, True)]
    if unwritten == count:
        if not is_zero(crcs):
            raise TagCorruption(_first_nonzero(crcs, CRC_BYTES))
        return crcs, [Run(0, count, False)]
    runs: list[Run] = []
    pos = 0
    find = flags.find
    while pos < count:
        if flags[pos]:
            end = find(b"\0", pos)
            end = count if end < 0 else end
            runs.append(Run(pos, end, True))
        else:
            end = find(b"\1", pos)
            end = count if end < 0 else end
            lows = memoryview(crcs)[pos * CRC_BYTES:end * CRC_BYTES]
            if not is_zero(lows):
                raise TagCorruption(pos + _first_nonzero(lows, CRC_BYTES))
            runs.append(Run(pos, end, False))
        pos = end
    return crcs, runs


def _first_bad_high(high: bytes) -> int:
    """Index of the first tag whose high word is neither 0 nor WRITTEN_WORD (error path)."""
    words = memoryview(high).cast("I")
    for index, word in enumerate(words):
        if word not in (0, WRITTEN_WORD):
            return index
    return 0


def _first_nonzero(data: Buffer, unit: int) -> int:
    view = memoryview(data).cast("B")
    for index in range(view.nbytes // unit):
        if not is_zero(view[index * unit:(index + 1) * unit]):
            return index
    return 0


class CrcTable(ABC):
    """One tag per block of a namespace of ``num_blocks`` blocks; see the module docstring."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError(f"number of blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self.stats = CrcTableStats()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self, lba: int, nblocks: int) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "integrity table is closed")
        if lba < 0 or nblocks < 0 or lba + nblocks > self.num_blocks:
            raise BlockRangeError(f"LBA range {lba}+{nblocks} outside integrity table of {self.num_blocks} blocks")

    def get(self, lba: int, nblocks: int) -> bytes:
        """Raw tags of ``nblocks`` blocks from ``lba`` (8 bytes each; see :func:`decode_tags`)."""
        self._check(lba, nblocks)
        self.stats.gets += 1
        if not nblocks:
            return b""
        return self._read(lba * TAG_BYTES, nblocks * TAG_BYTES)

    def tag(self, lba: int) -> int:
        """One block's tag as an integer (tests, tools)."""
        return int.from_bytes(self.get(lba, 1), "little")

    def set(self, lba: int, crcs: array | Buffer, *, durable: bool = False) -> None:
        """Mark blocks from ``lba`` written with these CRC32C values (one per block)."""
        raw = pack_tags(crcs)
        self.set_raw(lba, raw, durable=durable)

    def set_raw(self, lba: int, raw: Buffer, *, durable: bool = False) -> None:
        """Store raw tags (8 bytes per block) from ``lba``."""
        view = memoryview(raw).cast("B")
        if view.nbytes % TAG_BYTES:
            raise ValueError(f"{view.nbytes} bytes is not a whole number of {TAG_BYTES}-byte tags")
        self._check(lba, view.nbytes // TAG_BYTES)
        self.stats.sets += 1
        if view.nbytes:
            self._write(lba * TAG_BYTES, view, durable)

    def clear(self, lba: int, nblocks: int, *, durable: bool = False) -> None:
        """Forget ``nblocks`` blocks from ``lba``: they read back as zeroes from now on."""
        self._check(lba, nblocks)
        self.stats.clears += 1
        if nblocks:
            self._zero(lba * TAG_BYTES, nblocks * TAG_BYTES, durable)

    def flush(self) -> None:
        """Make every completed set/clear durable."""
        if self._closed:
            raise OSError(errno.EBADF, "integrity table is closed")
        self.stats.flushes += 1
        self._flush()

    def close(self) -> None:
        """Release resources (idempotent; does not flush)."""
        if not self._closed:
            self._closed = True
            self._close()

    @property
    @abstractmethod
    def allocated_bytes(self) -> int:
        """Bytes of memory or disk the tags actually occupy."""

    @abstractmethod
    def _read(self, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def _write(self, offset: int, view: memoryview, durable: bool) -> None: ...

    @abstractmethod
    def _zero(self, offset: int, length: int, durable: bool) -> None: ...

    @abstractmethod
    def _flush(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_blocks={self.num_blocks})"


class RamCrcTable(CrcTable):
    """Tags in memory, in chunks of :data:`RAM_CHUNK_TAGS` allocated on first write."""

    def __init__(self, num_blocks: int, *, chunk_tags: int = RAM_CHUNK_TAGS) -> None:
        super().__init__(num_blocks)
        if chunk_tags <= 0:
            raise ValueError("chunk_tags must be positive")
        self.chunk_bytes = chunk_tags * TAG_BYTES
        self._chunks: dict[int, bytearray] = {}

    @property
    def allocated_bytes(self) -> int:
        return sum(len(c) for c in self._chunks.values())

    def _pieces(self, offset: int, length: int) -> Iterator[tuple[int, int, int, int]]:
        """``(chunk index, offset in chunk, offset in range, length)`` for a byte range."""
        done = 0
        size = self.chunk_bytes
        while done < length:
            index, start = divmod(offset + done, size)
            n = min(size - start, length - done)
            yield index, start, done, n
            done += n

    def _read(self, offset: int, length: int) -> bytes:
        index, start = divmod(offset, self.chunk_bytes)
        if start + length <= self.chunk_bytes:          # one chunk: one copy
            chunk = self._chunks.get(index)
            return bytes(length) if chunk is None else bytes(memoryview(chunk)[start:start + length])
        out = bytearray(length)
        for index, start, pos, n in self._pieces(offset, length):
            chunk = self._chunks.get(index)
            if chunk is not None:
                out[pos:pos + n] = memoryview(chunk)[start:start + n]
        return bytes(out)

    def _write(self, offset: int, view: memoryview, durable: bool) -> None:
        for index, start, pos, n in self._pieces(offset, view.nbytes):
            chunk = self._chunks.get(index)
            if chunk is None:
                chunk = self._chunks[index] = bytearray(self.chunk_bytes)
            chunk[start:start + n] = view[pos:pos + n]

    def _zero(self, offset: int, length: int, durable: bool) -> None:
        for index, start, _, n in self._pieces(offset, length):
            chunk = self._chunks.get(index)
            if chunk is None:
                continue
            if n == self.chunk_bytes:
                del self._chunks[index]
                continue
            chunk[start:start + n] = _ZEROES[:n] if n <= ZERO_CHUNK_BYTES else bytes(n)
            if is_zero(chunk):
                del self._chunks[index]

    def _flush(self) -> None:
        pass

    def _close(self) -> None:
        self._chunks.clear()

    def inject_fault(self, lba: int, byte: int, xor: int = 0xFF) -> None:
        """Flip bits of byte ``byte`` (0..7) of one block's tag (fault injection)."""
        index, start = divmod(lba * TAG_BYTES + byte, self.chunk_bytes)
        chunk = self._chunks.setdefault(index, bytearray(self.chunk_bytes))
        chunk[start] ^= xor


class FileCrcTable(CrcTable):
    """Tags in a sparse sidecar file behind a header that binds it to one namespace.

    A missing or empty file is created (header written and made durable, tags a hole).
    An existing one must carry the same block size, block count and ``binding``, else
    :class:`CrcTableError`: a table is never silently reused for other data or another key.
    """

    def __init__(self, path: str | os.PathLike[str], num_blocks: int, block_size: int, *,
                 binding: bytes = b"", create: bool = True) -> None:
        super().__init__(num_blocks)
        if len(binding) > BINDING_BYTES:
            raise ValueError(f"binding is at most {BINDING_BYTES} bytes")
        self.path = os.fspath(path)
        self.block_size = block_size
        self.binding = binding.ljust(BINDING_BYTES, b"\0")
        self.created = False
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        self._fd = os.open(self.path, flags, 0o600)
        try:
            self._open_header()
        except BaseException:
            os.close(self._fd)
            raise
        self._rwf_dsync = hasattr(os, "RWF_DSYNC") and hasattr(os, "pwritev")
        self._punch = True

    @property
    def size_bytes(self) -> int:
        return HEADER_BYTES + self.num_blocks * TAG_BYTES

    def _open_header(self) -> None:
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            raise CrcTableError(f"{self.path}: integrity table must be a regular file")
        if st.st_size == 0:
            header = HEADER.pack(magic=MAGIC, version=FORMAT_VERSION, tag_bytes=TAG_BYTES,
                                 block_size=self.block_size, num_blocks=self.num_blocks, binding=self.binding)
            os.pwrite(self._fd, header, 0)
            os.ftruncate(self._fd, self.size_bytes)
            os.fsync(self._fd)
            _fsync_dir(self.path)
            self.created = True
            return
        raw = os.pread(self._fd, HEADER_BYTES, 0)
        if len(raw) < HEADER_BYTES:
            raise CrcTableError(f"{self.path}: truncated integrity table header")
        hdr = HEADER.unpack(raw)
        if hdr.magic != MAGIC or hdr.version != FORMAT_VERSION or hdr.tag_bytes != TAG_BYTES:
            raise CrcTableError(f"{self.path}: not a dpu-emu integrity table (version {FORMAT_VERSION})")
        if hdr.block_size != self.block_size or hdr.num_blocks != self.num_blocks:
            raise CrcTableError(f"{self.path}: table is for {hdr.num_blocks} blocks of {hdr.block_size} bytes, "
                                f"the namespace has {self.num_blocks} of {self.block_size}")
        if hdr.binding != self.binding:
            raise CrcTableError(f"{self.path}: table was written for another key or protection mode "
                                "(binding differs); refusing to use it")
        if st.st_size < self.size_bytes:
            raise CrcTableError(f"{self.path}: holds {st.st_size} bytes, fewer than the {self.size_bytes} needed")

    @property
    def allocated_bytes(self) -> int:
        return os.fstat(self._fd).st_blocks * 512

    def _read(self, offset: int, length: int) -> bytes:
        position = HEADER_BYTES + offset
        data = os.pread(self._fd, length, position)
        while len(data) < length:
            more = os.pread(self._fd, length - len(data), position + len(data))
            if not more:
                raise OSError(errno.EIO, f"unexpected end of {self.path} at byte {position + len(data)}")
            data += more
        return data

    def _pwrite_all(self, position: int, view: memoryview, dsync: bool) -> None:
        done = 0
        while done < view.nbytes:
            if dsync:
                done += os.pwritev(self._fd, [view[done:]], position + done, os.RWF_DSYNC)
            else:
                done += os.pwrite(self._fd, view[done:], position + done)

    def _write(self, offset: int, view: memoryview, durable: bool) -> None:
        position = HEADER_BYTES + offset
        if durable and self._rwf_dsync:
            try:
                self._pwrite_all(position, view, dsync=True)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                self._rwf_dsync = False
        self._pwrite_all(position, view, dsync=False)
        if durable:
            os.fdatasync(self._fd)

    def _zero(self, offset: int, length: int, durable: bool) -> None:
        position = HEADER_BYTES + offset
        if length >= PUNCH_MIN_BYTES and self._punch:
            try:
                fallocate(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, position, length)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                self._punch = False
            else:
                if durable:
                    os.fdatasync(self._fd)
                return
        done = 0
        while done < length:
            n = min(length - done, ZERO_CHUNK_BYTES)
            self._pwrite_all(position + done, memoryview(_ZEROES)[:n], dsync=False)
            done += n
        if durable:
            os.fdatasync(self._fd)

    def _flush(self) -> None:
        os.fdatasync(self._fd)

    def _close(self) -> None:
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"FileCrcTable({self.path!r}, num_blocks={self.num_blocks})"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sidecar_path(data_path: str | os.PathLike[str]) -> str:
    """The conventional integrity table path of a file-backed namespace."""
    return os.fspath(data_path) + CRC_TABLE_SUFFIX
