"""File-backed KV store: an append-only log of CRC32C-protected records plus an in-memory index.

Directory layout (``path_dir``)::

    kv.log            the log
    kv.log.compact    compaction output; renamed over kv.log when complete, removed on open
    kv.log.bad-<pos>  bytes cut off the log at offset <pos> by recovery (kept for forensics)
    kv.lock           held with flock(LOCK_EX) while a store has the directory open

Log layout, little-endian: a 16-byte file header (:data:`LOG_MAGIC`, u16 version, u16
flags, zero padding), then records back to back, each a 16-byte header followed by the key and the
value::

    0  u32 magic (RECORD_MAGIC)    4  u8 type (PUT / TOMBSTONE)    5  u8 key length (1..16)
    6  u16 reserved (0)            8  u32 value length (0 for a tombstone)
    12 u32 CRC32C over header bytes 0..11, the key, and the value

A Store appends one PUT record (preceded by TOMBSTONE records for the values it evicts,
in the same write); Delete, eviction and expiry append TOMBSTONEs.  The index maps a key
to (value offset, record CRC); Retrieve is one ``pread`` of the value whose CRC is
recomputed over the header rebuilt from the index, so a flipped bit raises
:class:`~dpu_emu.storage.kv.KvStoreCorrupt` and wrong bytes are never returned.

Sealed keys: a store opened with a :class:`KeyCodec` (an encrypted namespace, see
:mod:`dpu_emu.protect.kv`) writes ``codec.encode(key)`` (exactly ``codec.disk_key_size``
bytes) wherever a record holds a key, and decodes the keys when it rebuilds its index, so
the in-memory index (and List) still holds plaintext keys.  Such a log carries
:data:`FLAG_SEALED_KEYS` in its header: it cannot be opened without a codec (that would
read its records as bad ones), and a log holding plaintext keys cannot be opened with one.
A key that does not decode (wrong data key, foreign log) fails the open.

Durability: writes go to the page cache; :meth:`FileKvStore.flush` (``fdatasync``) makes
every acknowledged Store and Delete durable, as NVMe Flush does.  With
``sync_every_write=True`` every command is synced before it returns.  A failed append is
truncated away, so the log never holds a torn record between good ones while open.

Recovery on open scans the log from the start, replaying PUTs and TOMBSTONEs in order (so
LRU order after a restart is the order of the last Stores, and TTLs restart in full):

* a torn tail (fewer bytes than a header, a record running past the end of the file, a
  final record with a bad CRC, or an all-zero tail) is truncated away;
* a bad record before the end (bad magic, bad header, bad CRC with more data after it)
  stops the scan there: every record before it is kept, the rest of the file is copied
  to ``kv.log.bad-<offset>``, a warning is logged, and the log is truncated.

Compaction, when dead bytes exceed half of a log of at least ``compact_min_bytes``:
live records are copied (CRC-checked) in LRU order into ``kv.log.compact``, which is
fsynced and renamed over the log, then the directory is fsynced.  A live value that fails
its CRC while being copied is dropped (logged); copying it would plant a bad record in
the middle of the new log.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import struct
import time
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from crc32c import crc32c

from dpu_emu.storage.block import fsync_dir
from dpu_emu.storage.kv import (
    DEFAULT_MAX_KEY_SIZE,
    DEFAULT_MAX_VALUE_SIZE,
    MAX_KEY_SIZE,
    MIN_KEY_SIZE,
    KvCapacityExceeded,
    KvEntry,
    KvIoError,
    KvMode,
    KvStore,
    KvStoreCorrupt,
    MemoryKvStore,
    Victims,
)

log = logging.getLogger(__name__)

LOG_NAME = "kv.log"
COMPACT_NAME = "kv.log.compact"
BAD_TAIL_PREFIX = "kv.log.bad-"
LOCK_NAME = "kv.lock"

LOG_MAGIC = b"DPUEMUKV"
LOG_VERSION = 1
_FILE_HEADER = struct.Struct("<8sHH4x")  # magic, version, flags
FILE_HEADER_SIZE = 16
FLAG_SEALED_KEYS = 0x0001
"""Header flag: every key in the log went through a :class:`KeyCodec`."""
FILE_HEADER_BYTES = _FILE_HEADER.pack(LOG_MAGIC, LOG_VERSION, 0)
SEALED_FILE_HEADER_BYTES = _FILE_HEADER.pack(LOG_MAGIC, LOG_VERSION, FLAG_SEALED_KEYS)
MAX_DISK_KEY_SIZE = 255
"""The record's key length is one byte."""

RECORD_MAGIC = 0x3152564B  # b"KVR1" little-endian
_RECORD_HEADER = struct.Struct("<IBBHII")  # magic, type, key length, reserved, value length, crc
_CRC_COVERED = struct.Struct("<IBBHI")  # the header bytes the CRC covers
RECORD_HEADER_SIZE = 16
CRC_OFFSET = 12
_CRC = struct.Struct("<I")

assert _FILE_HEADER.size == FILE_HEADER_SIZE
assert _RECORD_HEADER.size == RECORD_HEADER_SIZE and _CRC_COVERED.size == CRC_OFFSET

DEFAULT_COMPACT_MIN_BYTES = 16 << 20
"""Logs smaller than this are never compacted."""
COMPACT_DEAD_FRACTION = 0.5
"""Compact when dead bytes exceed this fraction of the log."""
COMPACT_RETRY_GROWTH = 2
"""After a failed automatic compaction, wait until the log has grown by this factor."""
COPY_CHUNK = 4 << 20
"""Write size when copying records (compaction) or a bad tail (recovery)."""

_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class KeyCodec(Protocol):
    """Deterministic, reversible transform of keys on their way to and from the log."""

    disk_key_size: int
    """Length of every encoded key (1..255)."""

    def encode(self, key: bytes) -> bytes:
        """The bytes written for *key* (same key -> same bytes)."""
        ...

    def decode(self, stored: bytes) -> bytes:
        """The key back; raises ``ValueError`` if *stored* is not an encoding of ours."""
        ...


class RecordType(IntEnum):
    """Record type byte."""

    PUT = 1
    TOMBSTONE = 2


class LogRef(NamedTuple):
    """Where a value lives in the log, and the CRC of its record."""

    offset: int
    crc: int


class _Scan(NamedTuple):
    """Result of :func:`scan_log`."""

    entries: dict[bytes, tuple[int, LogRef]]  # key -> (value length, ref), in order of last PUT
    end: int  # offset after the last good record
    torn: bool  # True if the bytes after ``end`` look like an interrupted append
    reason: str  # why the scan stopped before the end of the file ("" if it did not)


def record_size(key_length: int, value_length: int) -> int:
    return RECORD_HEADER_SIZE + key_length + value_length


def _record_crc(rtype: RecordType, key: bytes, data: bytes | memoryview) -> tuple[bytes, int]:
    """(header bytes 0..11, CRC) of a record."""
    covered = _CRC_COVERED.pack(RECORD_MAGIC, rtype, len(key), 0, len(data))
    return covered, crc32c(data, crc32c(key, crc32c(covered)))


def _tombstone(key: bytes) -> bytes:
    covered, crc = _record_crc(RecordType.TOMBSTONE, key, b"")
    return covered + _CRC.pack(crc) + key


def _all_zero(view: memoryview) -> bool:
    for i in range(0, len(view), COPY_CHUNK):
        piece = view[i : i + COPY_CHUNK]
        if piece != bytes(len(piece)):
            return False
    return True


def scan_log(buf: memoryview, key_sizes: tuple[int, int] = (MIN_KEY_SIZE, MAX_KEY_SIZE)) -> _Scan:
    """Replay the records of a whole log file held in *buf* (header included); keys in
    the log are ``key_sizes[0]..key_sizes[1]`` bytes long."""
    min_klen, max_klen = key_sizes
    entries: dict[bytes, tuple[int, LogRef]] = {}
    size = len(buf)
    pos = FILE_HEADER_SIZE
    valid_types = {int(t) for t in RecordType}
    while pos < size:
        if size - pos < RECORD_HEADER_SIZE:
            return _Scan(entries, pos, True, f"{size - pos} bytes, less than a record header")
        magic, rtype, klen, reserved, vlen, crc = _RECORD_HEADER.unpack_from(buf, pos)
        if (
            magic != RECORD_MAGIC
            or rtype not in valid_types
            or not min_klen <= klen <= max_klen
            or reserved
            or (rtype == RecordType.TOMBSTONE and vlen)
        ):
            torn = _all_zero(buf[pos:])
            return _Scan(entries, pos, torn, "zero-filled tail" if torn else "bad record header")
        end = pos + record_size(klen, vlen)
        if end > size:
            return _Scan(entries, pos, True, f"record of {end - pos} bytes runs past the end of the file")
        body = pos + RECORD_HEADER_SIZE
        if crc32c(buf[body:end], crc32c(buf[pos : pos + CRC_OFFSET])) != crc:
            return _Scan(entries, pos, end == size, "record CRC mismatch")
        key = bytes(buf[body : body + klen])
        entries.pop(key, None)  # a later PUT makes the key the most recently stored
        if rtype == RecordType.PUT:
            entries[key] = (vlen, LogRef(body + klen, crc))
        pos = end
    return _Scan(entries, pos, False, "")


def _make_dir_durable(path: Path) -> None:
    """``mkdir -p`` *path*; every directory created is made durable (fsync of its parent)."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _pwritev_all(fd: int, bufs: list[bytes | memoryview], offset: int) -> None:
    """``pwritev`` every buffer, finishing short writes."""
    total = sum(len(b) for b in bufs)
    done = os.pwritev(fd, bufs, offset)
    if done == total:
        return
    _write_all(fd, b"".join(bufs)[done:], offset + done)


class FileKvStore(KvStore[LogRef]):
    """KV store persisted in an append-only log under *path_dir* (see the module docstring).

    With ``create=False`` a missing directory or log raises ``FileNotFoundError``.  A log
    that is not ours raises :class:`KvStoreCorrupt`; a directory already open elsewhere
    raises :class:`KvIoError`.
    """

    def __init__(
        self,
        path_dir: str | os.PathLike[str],
        capacity_bytes: int,
        *,
        max_key_size: int = DEFAULT_MAX_KEY_SIZE,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        max_keys: int | None = None,
        mode: KvMode | str = KvMode.STRICT,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sync_every_write: bool = False,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        create: bool = True,
        key_codec: KeyCodec | None = None,
    ) -> None:
        super().__init__(
            capacity_bytes,
            max_key_size=max_key_size,
            max_value_size=max_value_size,
            max_keys=max_keys,
            mode=mode,
            ttl_s=ttl_s,
            clock=clock,
        )
        self.path = Path(path_dir)
        self.sync_every_write = sync_every_write
        self.compact_min_bytes = compact_min_bytes
        self._fd = -1
        self._end = 0
        self._broken = False
        self._compact_retry_at = 0
        self._codec = key_codec
        if key_codec is not None and not MIN_KEY_SIZE <= key_codec.disk_key_size <= MAX_DISK_KEY_SIZE:
            raise ValueError(f"encoded keys of {key_codec.disk_key_size} bytes do not fit a record")
        self._header = FILE_HEADER_BYTES if key_codec is None else SEALED_FILE_HEADER_BYTES
        if create:
            _make_dir_durable(self.path)
        self._lock_fd = self._lock()
        try:
            entries = self._open_log(create)
            self._load((self._decode(key), length, ref) for key, (length, ref) in entries.items())
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
            os.close(self._lock_fd)
            raise

    # -- open and recovery ----------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.path / LOG_NAME

    @property
    def log_bytes(self) -> int:
        """Current size of the log file."""
        return self._end

    @property
    def dead_bytes(self) -> int:
        """Log bytes not holding a live value (overwritten values, tombstones)."""
        return self._end - FILE_HEADER_SIZE - self._live_bytes()

    def _live_bytes(self) -> int:
        key_bytes = self._key_bytes if self._codec is None else len(self._index) * self._codec.disk_key_size
        return len(self._index) * RECORD_HEADER_SIZE + key_bytes + self._bytes_used

    def _disk_key(self, key: bytes) -> bytes:
        """*key* as the log holds it."""
        return key if self._codec is None else self._codec.encode(key)

    def _decode(self, stored: bytes) -> bytes:
        if self._codec is None:
            return stored
        try:
            return self._codec.decode(stored)
        except ValueError:
            raise KvStoreCorrupt(f"{self.log_path}: a key does not decode: the log was written under another "
                                 "data key or namespace, or is corrupt") from None

    def _lock(self) -> int:
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise KvIoError(f"{self.path} is in use by another KV store") from None
        return fd

    def _open_log(self, create: bool) -> dict[bytes, tuple[int, LogRef]]:
        (self.path / COMPACT_NAME).unlink(missing_ok=True)  # a compaction interrupted before its rename
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        self._fd = os.open(self.log_path, flags, 0o600)
        size = os.fstat(self._fd).st_size
        if size < FILE_HEADER_SIZE:
            head = os.pread(self._fd, size, 0)
            if head != FILE_HEADER_BYTES[:size] and head != self._header[:size]:
                raise KvStoreCorrupt(f"{self.log_path} is not a KV log (bad header)")
            os.ftruncate(self._fd, 0)  # new, or created by a run that died before its header was out
            _write_all(self._fd, self._header, 0)
            os.fsync(self._fd)
            fsync_dir(self.path)
            self._end = FILE_HEADER_SIZE
            return {}
        with mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                magic, version, flags = _FILE_HEADER.unpack_from(buf, 0)
                if magic != LOG_MAGIC:
                    raise KvStoreCorrupt(f"{self.log_path} is not a KV log (bad magic)")
                if version != LOG_VERSION:
                    raise KvStoreCorrupt(f"{self.log_path} has unsupported version {version}")
                flags = self._check_flags(flags, size)
                scan = scan_log(buf, self._key_sizes(flags))
                if scan.end < size and not scan.torn:
                    self._save_bad_tail(buf, scan)
            finally:
                buf.release()
        if scan.end < size:
            if scan.torn:
                log.info(
                    "%s: truncating a torn tail of %d bytes at offset %d (%s)",
                    self.log_path,
                    size - scan.end,
                    scan.end,
                    scan.reason,
                )
            os.ftruncate(self._fd, scan.end)
            os.fsync(self._fd)
        self._end = scan.end
        return scan.entries

    def _check_flags(self, flags: int, size: int) -> int:
        """The header flags this store can work with; refuses a log sealed differently.

        A log holding only its header takes this store's sealing (the header is rewritten)."""
        sealed = bool(flags & FLAG_SEALED_KEYS)
        if flags & ~FLAG_SEALED_KEYS:
            raise KvStoreCorrupt(f"{self.log_path} has unknown header flags {flags:#x}")
        if sealed == (self._codec is not None):
            return flags
        if size == FILE_HEADER_SIZE:
            _write_all(self._fd, self._header, 0)
            os.fsync(self._fd)
            return FLAG_SEALED_KEYS if self._codec is not None else 0
        if sealed:
            raise KvStoreCorrupt(f"{self.log_path} holds encrypted keys: open it with its namespace's data key")
        raise KvStoreCorrupt(f"{self.log_path} already holds plaintext keys; encryption can only be enabled "
                             "on an empty KV namespace")

    def _key_sizes(self, flags: int) -> tuple[int, int]:
        if flags & FLAG_SEALED_KEYS and self._codec is not None:
            return self._codec.disk_key_size, self._codec.disk_key_size
        return MIN_KEY_SIZE, MAX_KEY_SIZE

    def _save_bad_tail(self, buf: memoryview, scan: _Scan) -> None:
        """Copy the log from its first bad record on to a side file, and say so."""
        dropped = len(buf) - scan.end
        side = self.path / f"{BAD_TAIL_PREFIX}{scan.end}"
        fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            for i in range(scan.end, len(buf), COPY_CHUNK):
                _write_all(fd, buf[i : i + COPY_CHUNK], i - scan.end)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning(
            "%s: %s at offset %d; kept the %d values before it, moved the remaining %d bytes to %s",
            self.log_path,
            scan.reason,
            scan.end,
            len(scan.entries),
            dropped,
            side,
        )
        fsync_dir(self.path)

    # -- backend hooks ------------------------------------------------------------------------

    def _append(self, bufs: list[bytes | memoryview]) -> None:
        """Write *bufs* at the end of the log; on failure truncate back and raise."""
        if self._broken:
            raise KvIoError(f"{self.log_path}: a failed append could not be undone; reopen the store")
        start = self._end
        try:
            _pwritev_all(self._fd, bufs, start)
            if self.sync_every_write:
                os.fdatasync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._broken = True
                log.exception("%s: cannot truncate a failed append at offset %d", self.log_path, start)
            if exc.errno in _NO_SPACE_ERRNOS:
                raise KvCapacityExceeded(f"{self.log_path}: file system full") from exc
            raise KvIoError(f"{self.log_path}: append failed: {exc}") from exc
        self._end = start + sum(len(b) for b in bufs)

    def _put(self, key: bytes, data: bytes | memoryview, victims: Victims[LogRef]) -> LogRef:
        tombstones = b"".join(_tombstone(self._disk_key(victim)) for victim, _ in victims)
        key = self._disk_key(key)
        covered, crc = _record_crc(RecordType.PUT, key, data)
        value_offset = self._end + len(tombstones) + RECORD_HEADER_SIZE + len(key)
        bufs: list[bytes | memoryview] = [tombstones] if tombstones else []
        bufs += [covered + _CRC.pack(crc) + key, data]
        self._append(bufs)
        return LogRef(value_offset, crc)

    def _get(self, key: bytes, entry: KvEntry[LogRef]) -> bytes:
        ref, length = entry.handle, entry.length
        try:
            data = os.pread(self._fd, length, ref.offset)
            if len(data) < length:  # only past 2 GiB per call, or a log cut behind our back
                data = self._pread_rest(data, length, ref.offset)
        except OSError as exc:
            raise KvIoError(f"{self.log_path}: read failed: {exc}") from exc
        disk_key = self._disk_key(key)
        covered = _CRC_COVERED.pack(RECORD_MAGIC, RecordType.PUT, len(disk_key), 0, length)
        if crc32c(data, crc32c(disk_key, crc32c(covered))) != ref.crc:
            raise KvStoreCorrupt(f"{self.log_path}: value of key {key.hex()} at offset {ref.offset} fails its CRC")
        return data

    def _pread_rest(self, head: bytes, length: int, offset: int) -> bytes:
        parts = [head]
        done = len(head)
        while done < length:
            part = os.pread(self._fd, length - done, offset + done)
            if not part:
                raise KvIoError(f"{self.log_path}: value at offset {offset} runs past the end of the log")
            parts.append(part)
            done += len(part)
        return b"".join(parts)

    def _remove(self, victims: Victims[LogRef]) -> None:
        self._append([b"".join(_tombstone(self._disk_key(key)) for key, _ in victims)])

    def _after_update(self) -> None:
        size = self._end
        if size < max(self.compact_min_bytes, self._compact_retry_at):
            return
        if self.dead_bytes <= COMPACT_DEAD_FRACTION * size:
            return
        try:
            self.compact()
        except (KvIoError, KvCapacityExceeded) as exc:
            self._compact_retry_at = size * COMPACT_RETRY_GROWTH
            log.warning("%s: compaction failed, retrying at %d bytes: %s", self.log_path, self._compact_retry_at, exc)

    def _flush(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise KvIoError(f"{self.log_path}: flush failed: {exc}") from exc

    def _close(self) -> None:
        try:
            os.close(self._fd)
        finally:
            self._fd = -1
            os.close(self._lock_fd)

    # -- compaction -------------------------------------------------------------------------------

    def compact(self) -> None:
        """Rewrite the log with only the live values; atomic (rename) and durable on return."""
        self._check_open()
        if self._broken:
            raise KvIoError(f"{self.log_path}: a failed append could not be undone; reopen the store")
        tmp = self.path / COMPACT_NAME
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            moved, corrupt, end = self._copy_live(fd)
            os.fsync(fd)
            os.rename(tmp, self.log_path)
        except BaseException as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                if exc.errno in _NO_SPACE_ERRNOS:
                    raise KvCapacityExceeded(f"{self.log_path}: no space to compact") from exc
                raise KvIoError(f"{self.log_path}: compaction failed: {exc}") from exc
            raise
        old_fd, self._fd, self._end = self._fd, fd, end
        os.close(old_fd)
        for entry, ref in moved:
            entry.handle = ref
        for key, entry in corrupt:
            self._unlink(key, entry)
        self._compact_retry_at = 0
        self._stats.compactions += 1
        try:
            fsync_dir(self.path)
        except OSError as exc:
            raise KvIoError(f"{self.path}: fsync of the directory after compaction failed: {exc}") from exc

    def _copy_live(self, fd: int) -> tuple[list[tuple[KvEntry[LogRef], LogRef]], Victims[LogRef], int]:
        """Copy every live record into *fd*; return (new refs, corrupt entries, end)."""
        moved: list[tuple[KvEntry[LogRef], LogRef]] = []
        corrupt: Victims[LogRef] = []
        out = bytearray(self._header)
        written = 0
        for key, entry in self._index.items():  # LRU order, so a reopen keeps it
            ref = entry.handle
            klen = len(key) if self._codec is None else self._codec.disk_key_size
            start = ref.offset - RECORD_HEADER_SIZE - klen
            size = record_size(klen, entry.length)
            record = os.pread(self._fd, size, start)
            if len(record) < size:
                record = self._pread_rest(record, size, start)
            if crc32c(memoryview(record)[RECORD_HEADER_SIZE:], crc32c(record[:CRC_OFFSET])) != ref.crc:
                log.warning("%s: dropping key %s, its value fails its CRC", self.log_path, key.hex())
                corrupt.append((key, entry))
                continue
            moved.append((entry, LogRef(written + len(out) + RECORD_HEADER_SIZE + klen, ref.crc)))
            out += record
            if len(out) >= COPY_CHUNK:
                _write_all(fd, out, written)
                written += len(out)
                out.clear()
        _write_all(fd, out, written)
        return moved, corrupt, written + len(out)

    def __repr__(self) -> str:
        return f"FileKvStore({os.fspath(self.path)!r}, capacity_bytes={self.capacity_bytes}, mode={self.mode.value})"


def open_kv_store(kind: str, *, capacity_bytes: int, path: str | os.PathLike[str] | None = None,
                  **limits: Any) -> KvStore[Any]:
    """A KV store from a config-level description: ``kind`` "ram" (memory) or "file"
    (a directory holding the log); ``limits`` are the KvStore keyword arguments."""
    if kind == "ram":
        if path is not None:
            raise ValueError("a RAM KV store takes no path")
        return MemoryKvStore(capacity_bytes, **limits)
    if kind == "file":
        if path is None:
            raise ValueError("a file KV store needs a directory path")
        return FileKvStore(path, capacity_bytes, **limits)
    raise ValueError(f"unknown KV store kind {kind!r}; expected 'ram' or 'file'")
