"""dpu_emu.protect.intent: a protected file namespace killed between its data and tag writes.

The crash is simulated by doing the first half of an update by hand (the intent record and the
data, as ``_store_written`` does) and reopening without the second half.  The intended tags come
from a real protected write of the same data elsewhere, not from the code under test.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dpu_emu.pipeline import InlineEngine, generate_xts_key
from dpu_emu.protect import ProtectedBlockBackend, protected_block_backend
from dpu_emu.protect.crc_table import TAG_BYTES, sidecar_path
from dpu_emu.protect.intent import (
    INTENT_SUFFIX,
    RECORD_HEADER_BYTES,
    IntentKind,
    LandingIntent,
    decode_intent,
    encode_intent,
)
from dpu_emu.storage.block import FileBlockStore
from nvmeof.wire.constants import NvmOpcode, decode_status

from .test_protected_block import MEDIA_ERROR, execute, read, write

BS = 4096
BLOCKS = 64
SPARE = 60  # where the reference write lands


def test_record_round_trip_and_every_torn_or_damaged_record_is_ignored() -> None:
    tags = bytes(range(3 * TAG_BYTES))
    record = encode_intent(IntentKind.WRITE, 7, 3, tags)
    assert len(record) == RECORD_HEADER_BYTES + len(tags)
    assert decode_intent(record) == (IntentKind.WRITE, 7, 3, tags)
    assert decode_intent(encode_intent(IntentKind.ZERO, 5, 1000)) == (IntentKind.ZERO, 5, 1000, b"")
    assert decode_intent(record + b"stale tail of a longer record") == (IntentKind.WRITE, 7, 3, tags)
    for cut in range(len(record)):
        assert decode_intent(record[:cut]) is None, cut
    for pos in range(len(record)):
        damaged = bytearray(record)
        damaged[pos] ^= 0x10
        assert decode_intent(bytes(damaged)) is None, pos


class Namespace:
    def __init__(self, tmp_path: Path, encrypted: bool) -> None:
        self.engine = InlineEngine()
        self.key_id = self.engine.register_key(generate_xts_key()) if encrypted else None
        self.path = tmp_path / "ns.img"

    def open(self) -> ProtectedBlockBackend:
        return protected_block_backend(FileBlockStore(self.path, BS, BLOCKS), self.engine, key_id=self.key_id)


@pytest.mark.parametrize("nblocks", [1, 3])
def test_data_landed_tags_did_not_the_tags_are_completed(tmp_path: Path, nblocks: int,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    ns = Namespace(tmp_path, encrypted=False)
    old = random.Random(1).randbytes(nblocks * BS)
    new = random.Random(2).randbytes(nblocks * BS)
    backend = ns.open()
    write(backend, 10, old)
    backend.flush()
    backend.close()
    # Without the record the block reads as a media error: what the intent is for.
    backend = ns.open()
    write(backend, SPARE, new)
    tags = backend.crc_table.get(SPARE, nblocks)
    backend.close()
    with FileBlockStore(ns.path, BS, BLOCKS) as store:
        store.write(10, new)
    backend = ns.open()
    assert decode_status(read(backend, 10, nblocks)[0]) == MEDIA_ERROR
    backend.close()
    intent = LandingIntent(sidecar_path(ns.path) + INTENT_SUFFIX)
    intent.note_write(10, tags)
    intent.close()
    backend = ns.open()
    assert read(backend, 10, nblocks) == (0, new)
    backend.close()
    assert "completed the integrity tags" in caplog.text
    backend = ns.open()  # a stale record changes nothing
    assert read(backend, 10, nblocks) == (0, new)
    backend.close()


def test_data_that_did_not_land_keeps_the_old_block(tmp_path: Path) -> None:
    ns = Namespace(tmp_path, encrypted=False)
    old, new = random.Random(3).randbytes(BS), random.Random(4).randbytes(BS)
    backend = ns.open()
    write(backend, 5, old)
    write(backend, SPARE, new)
    tags = backend.crc_table.get(SPARE, 1)
    backend.close()
    intent = LandingIntent(sidecar_path(ns.path) + INTENT_SUFFIX)
    intent.note_write(5, tags)  # killed right after the record: the data never landed
    intent.close()
    backend = ns.open()
    assert read(backend, 5, 1) == (0, old)
    backend.close()


def test_damaged_data_is_never_blessed(tmp_path: Path) -> None:
    ns = Namespace(tmp_path, encrypted=False)
    new = random.Random(5).randbytes(BS)
    backend = ns.open()
    write(backend, SPARE, new)
    tags = backend.crc_table.get(SPARE, 1)
    backend.close()
    intent = LandingIntent(sidecar_path(ns.path) + INTENT_SUFFIX)
    intent.note_write(3, tags)
    intent.close()
    damaged = bytearray(new)
    damaged[100] ^= 1
    with FileBlockStore(ns.path, BS, BLOCKS) as store:
        store.write(3, damaged)
    backend = ns.open()
    assert decode_status(read(backend, 3, 1)[0]) == MEDIA_ERROR
    backend.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_zeroed_data_with_stale_tags_reads_as_zeroes(tmp_path: Path, encrypted: bool) -> None:
    ns = Namespace(tmp_path, encrypted)
    backend = ns.open()
    write(backend, 20, random.Random(6).randbytes(4 * BS))
    backend.flush()
    backend.close()
    intent = LandingIntent(sidecar_path(ns.path) + INTENT_SUFFIX)
    intent.note_zero(21, 2)  # Write Zeroes killed after the data, before the tags
    intent.close()
    with FileBlockStore(ns.path, BS, BLOCKS) as store:
        store.write_zeroes(21, 2)
    backend = ns.open()
    assert read(backend, 21, 2) == (0, bytes(2 * BS))
    assert read(backend, 20, 1)[0] == 0 and read(backend, 23, 1)[0] == 0
    backend.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_every_protected_write_and_zero_is_recorded_first(tmp_path: Path, encrypted: bool) -> None:
    ns = Namespace(tmp_path, encrypted)
    backend = ns.open()
    intent_path = Path(sidecar_path(ns.path) + INTENT_SUFFIX)
    write(backend, 30, random.Random(7).randbytes(2 * BS))
    record = decode_intent(intent_path.read_bytes())
    assert record is not None and record[:3] == (IntentKind.WRITE, 30, 2)
    assert record.tags == backend.crc_table.get(30, 2)
    assert execute(backend, NvmOpcode.WRITE_ZEROES, slba=31, nlb=1).result[0] == 0
    zero = decode_intent(intent_path.read_bytes())
    assert zero is not None and zero[:3] == (IntentKind.ZERO, 31, 1)
    assert execute(backend, NvmOpcode.DATASET_MANAGEMENT, ranges=[(40, 3)], deallocate=True).result[0] == 0
    dealloc = decode_intent(intent_path.read_bytes())
    assert dealloc is not None and dealloc[:3] == (IntentKind.ZERO, 40, 3)
    backend.close()
