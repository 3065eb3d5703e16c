"""Crash consistency of a protected file namespace: the landing intent of its last data + tag update.

A protected write lands with two writes, the data into the block store, then the tags into
the :class:`~.crc_table.FileCrcTable`; Write Zeroes and Deallocate likewise zero the data,
then clear the tags.  A process killed between the two leaves blocks whose tag does not
describe their data, which would read as Unrecovered Read Error although the block holds
either its old or its new content, complete.

The backend lands one update at a time, synchronously, so at most one can be interrupted.
Before each, it records the update in a one-record sidecar (``<table>.intent``) with a
plain ``pwrite`` (no sync: a killed process loses nothing from the page cache; a power loss
may lose the record, see below)::

    0  8s magic "DPUINTN1"   8  u8 kind (1 = write, 2 = zero)   9  3 bytes zero
    12 u32 block count       16 u64 first LBA                   24 u32 CRC32C of bytes 0..23
    28 4 bytes zero          32 the raw tags to be set (write only: 8 bytes per block)

:func:`replay_intent`, at open, repairs each block of the recorded range whose tag differs
from the intended one *only if* the block's data proves the update landed: its CRC32C
equals the intended tag's CRC (write), or it is all zeroes (zero).  Anything else is left
as it is, so damaged data is still reported, never blessed.  A stale record (its update
completed long ago) changes nothing.  Power loss is not covered: nothing orders the record
before the data on disk without a sync per write.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from array import array
from enum import IntEnum
from typing import Final, NamedTuple

from crc32c import crc32c

from ..storage.block import BlockStore, fsync_parent_dir
from .crc_table import TAG_BYTES, Buffer, CrcTable, is_zero, pack_tags

log = logging.getLogger("dpu_emu.protect.intent")

INTENT_SUFFIX: Final = ".intent"
INTENT_MAGIC: Final = b"DPUINTN1"
_HEAD = struct.Struct("<8sB3xIQ")  # magic, kind, count, lba
_CRC = struct.Struct("<I4x")
RECORD_HEADER_BYTES: Final = _HEAD.size + _CRC.size
REPLAY_CHUNK_BLOCKS: Final = 4096
_UNWRITTEN_TAG: Final = bytes(TAG_BYTES)

assert RECORD_HEADER_BYTES == 32


class IntentKind(IntEnum):
    WRITE = 1
    ZERO = 2


class Intent(NamedTuple):
    kind: IntentKind
    lba: int
    nblocks: int
    tags: bytes  # raw tags (write), empty (zero)


def encode_intent(kind: IntentKind, lba: int, count: int, tags: Buffer = b"") -> bytes:
    head = _HEAD.pack(INTENT_MAGIC, kind, count, lba)
    return head + _CRC.pack(crc32c(tags, crc32c(head))) + bytes(tags)


def decode_intent(raw: bytes) -> Intent | None:
    """The record in *raw*, or None if there is none or it is torn / not ours."""
    if len(raw) < RECORD_HEADER_BYTES:
        return None
    magic, kind, count, lba = _HEAD.unpack_from(raw)
    if magic != INTENT_MAGIC or kind not in {k.value for k in IntentKind}:
        return None
    if raw[9:12] != bytes(3) or raw[_HEAD.size + 4:RECORD_HEADER_BYTES] != bytes(4):  # reserved bytes
        return None
    tags = raw[RECORD_HEADER_BYTES:RECORD_HEADER_BYTES + (count * TAG_BYTES if kind == IntentKind.WRITE else 0)]
    if kind == IntentKind.WRITE and len(tags) != count * TAG_BYTES:
        return None
    (crc,) = _CRC.unpack_from(raw, _HEAD.size)
    if crc32c(tags, crc32c(raw[:_HEAD.size])) != crc:
        return None
    return Intent(IntentKind(kind), lba, count, bytes(tags))


class LandingIntent:
    """The one-record intent file of a protected file namespace (created on open)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        flags = os.O_RDWR | os.O_CLOEXEC
        try:
            self._fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            fsync_parent_dir(self.path)
        except FileExistsError:
            self._fd = os.open(self.path, flags)

    def note_write(self, lba: int, tags: Buffer) -> None:
        """Record that ``tags`` are about to be set from ``lba`` (after their data lands)."""
        self._put(encode_intent(IntentKind.WRITE, lba, len(tags) // TAG_BYTES, tags))

    def note_zero(self, lba: int, count: int) -> None:
        """Record that ``count`` blocks from ``lba`` are about to be zeroed, then their tags cleared."""
        self._put(encode_intent(IntentKind.ZERO, lba, count))

    def _put(self, record: bytes) -> None:
        if self._fd < 0:
            raise OSError(errno.EBADF, "intent file is closed")
        done = 0
        while done < len(record):
            done += os.pwrite(self._fd, record[done:], done)

    def pending(self) -> Intent | None:
        size = os.fstat(self._fd).st_size
        return decode_intent(os.pread(self._fd, size, 0)) if size else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def replay_intent(intent: LandingIntent, store: BlockStore, table: CrcTable, name: str = "") -> int:
    """Finish the tag half of an update whose data half provably landed; returns the blocks repaired."""
    record = intent.pending()
    if record is None or record.nblocks == 0:
        return 0
    if record.lba + record.nblocks > store.num_blocks:
        log.warning("%s: ignoring an intent record for LBA %d+%d beyond the namespace", name, record.lba,
                    record.nblocks)
        return 0
    bs = store.block_size
    repaired = 0
    for first in range(0, record.nblocks, REPLAY_CHUNK_BLOCKS):
        n = min(REPLAY_CHUNK_BLOCKS, record.nblocks - first)
        lba = record.lba + first
        tags = table.get(lba, n)
        if record.kind == IntentKind.ZERO and is_zero(tags):
            continue
        if record.kind == IntentKind.WRITE and tags == record.tags[first * TAG_BYTES:(first + n) * TAG_BYTES]:
            continue
        data = store.read(lba, n)
        for i in range(n):
            tag = tags[i * TAG_BYTES:(i + 1) * TAG_BYTES]
            block = data[i * bs:(i + 1) * bs]
            if record.kind == IntentKind.ZERO:
                if tag != _UNWRITTEN_TAG and is_zero(block):
                    table.clear(lba + i, 1)
                    repaired += 1
                continue
            want = record.tags[(first + i) * TAG_BYTES:(first + i + 1) * TAG_BYTES]
            if tag != want and pack_tags(array("I", [crc32c(block)])) == want:
                table.set_raw(lba + i, want)
                repaired += 1
    if repaired:
        table.flush()
        log.warning("%s: completed the integrity tags of %d block(s) of an update interrupted by a crash "
                    "(LBA %d+%d)", name, repaired, record.lba, record.nblocks)
    return repaired
