"""Host-side bookkeeping for the crash tests: distinctive payloads and what may be found after a crash.

Block: every write of an LBA carries (magic, LBA, generation) and a body derived from them,
closed by a CRC-32 (zlib, independent of the target's CRC32C).  Each LBA is written by one
worker at a time, so its generations are ordered.  ``durable[lba]`` is the newest generation
acknowledged before a Flush that was later acknowledged (or acknowledged with FUA): after a
crash the LBA must hold that generation or a later *attempted* one, never older data, never
zeroes once something was durable, never garbage.

KV: every Store or Delete of a key takes the next sequence number of that key; a value carries
(magic, key index, sequence) and a derived body with a CRC-32.  After a crash a key must show
the outcome of its last flushed operation or of a later attempted one: that exact value, or
absence for a Delete.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

BLOCK_MAGIC: Final[bytes] = b"CRASHBLK"
KV_MAGIC: Final[bytes] = b"CRASHKV1"
_BLOCK_HEADER = struct.Struct("<8sIQ")  # magic, lba, generation
_KV_HEADER = struct.Struct("<8sHQ")  # magic, key index, sequence
_CRC = struct.Struct("<I")


class Violation(AssertionError):
    """What the target returned after a crash breaks the durability contract."""


def _body(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def block_payload(lba: int, gen: int, block_size: int) -> bytes:
    head = _BLOCK_HEADER.pack(BLOCK_MAGIC, lba, gen)
    data = head + _body(lba * 1_000_003 + gen, block_size - len(head) - _CRC.size)
    return data + _CRC.pack(zlib.crc32(data))


def kv_key(index: int) -> bytes:
    return b"ck%03d" % index


def kv_value(index: int, seq: int, size: int) -> bytes:
    head = _KV_HEADER.pack(KV_MAGIC, index, seq)
    data = head + _body(index * 1_000_033 + seq, size)
    return data + _CRC.pack(zlib.crc32(data))


@dataclass
class BlockModel:
    num_lbas: int
    block_size: int
    next_gen: list[int] = field(default_factory=list)
    attempted: list[set[int]] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    durable: list[int] = field(default_factory=list)  # 0: nothing durable yet

    def __post_init__(self) -> None:
        self.next_gen = [1] * self.num_lbas
        self.attempted = [set() for _ in range(self.num_lbas)]
        self.acked = [0] * self.num_lbas
        self.durable = [0] * self.num_lbas

    def begin_write(self, lba: int, nblocks: int) -> tuple[list[int], bytes]:
        gens = []
        for i in range(lba, lba + nblocks):
            gens.append(self.next_gen[i])
            self.attempted[i].add(self.next_gen[i])
            self.next_gen[i] += 1
        data = b"".join(block_payload(lba + i, g, self.block_size) for i, g in enumerate(gens))
        return gens, data

    def write_acked(self, lba: int, gens: list[int], fua: bool) -> None:
        for i, gen in enumerate(gens):
            self.acked[lba + i] = gen
            if fua:
                self.durable[lba + i] = max(self.durable[lba + i], gen)

    def flush_acked(self, snapshot: list[int]) -> None:
        """A Flush submitted when ``acked`` was *snapshot* completed successfully."""
        self.durable = [max(d, s) for d, s in zip(self.durable, snapshot, strict=True)]

    def check(self, lba: int, block: bytes) -> int:
        """Verify what LBA *lba* holds after a restart; returns its generation (0 = zeroes)."""
        durable = self.durable[lba]
        if block == bytes(len(block)):
            if durable:
                raise Violation(f"LBA {lba}: zeroes, but generation {durable} was flushed")
            return 0
        magic, found_lba, gen = _BLOCK_HEADER.unpack_from(block)
        if magic != BLOCK_MAGIC or found_lba != lba or gen not in self.attempted[lba]:
            raise Violation(f"LBA {lba}: garbage (magic {magic!r}, lba {found_lba}, generation {gen})")
        if block != block_payload(lba, gen, self.block_size):
            raise Violation(f"LBA {lba}: generation {gen} is damaged")
        if gen < durable:
            raise Violation(f"LBA {lba}: holds generation {gen}, older than the flushed {durable}")
        return gen


DELETED: Final = None


@dataclass
class KvModel:
    num_keys: int
    next_seq: list[int] = field(default_factory=list)
    ops: list[dict[int, int | None]] = field(default_factory=list)  # seq -> value size, or DELETED
    acked: list[int] = field(default_factory=list)
    durable: list[int] = field(default_factory=list)  # 0: the initial state, absent

    def __post_init__(self) -> None:
        self.next_seq = [1] * self.num_keys
        self.ops = [{0: DELETED} for _ in range(self.num_keys)]
        self.acked = [0] * self.num_keys
        self.durable = [0] * self.num_keys

    def begin(self, index: int, size: int | None) -> tuple[int, bytes | None]:
        """Start a Store of *size* value bytes (None: a Delete); (seq, value)."""
        seq = self.next_seq[index]
        self.next_seq[index] += 1
        self.ops[index][seq] = size
        return seq, (None if size is None else kv_value(index, seq, size))

    def acked_op(self, index: int, seq: int) -> None:
        self.acked[index] = seq

    def flush_acked(self, snapshot: list[int]) -> None:
        self.durable = [max(d, s) for d, s in zip(self.durable, snapshot, strict=True)]

    def check(self, index: int, value: bytes | None) -> None:
        """Verify what key *index* retrieves after a restart (None: does not exist)."""
        durable = self.durable[index]
        later = {seq: size for seq, size in self.ops[index].items() if seq >= durable}
        if value is None:
            if DELETED not in later.values():
                raise Violation(f"key {index}: missing, but Store #{durable} was flushed and no later Delete sent")
            return
        magic, found, seq = _KV_HEADER.unpack_from(value) if len(value) >= _KV_HEADER.size else (b"", -1, -1)
        if magic != KV_MAGIC or found != index or seq not in self.ops[index]:
            raise Violation(f"key {index}: garbage value ({len(value)} bytes, magic {magic!r})")
        size = self.ops[index][seq]
        if size is None or value != kv_value(index, seq, size):
            raise Violation(f"key {index}: value of Store #{seq} is damaged")
        if seq < durable:
            raise Violation(f"key {index}: holds Store #{seq}, older than the flushed operation #{durable}")
