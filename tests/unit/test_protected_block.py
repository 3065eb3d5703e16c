"""Protected block namespaces with the inline engine: the tag table, round trips against
independent references (``cryptography``'s AES-XTS, ``crcmod``'s CRC32C), unwritten and
deallocated blocks, every kind of corruption, engine failures, and the builders."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import crcmod.predefined
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dpu_emu.config import ConfigError
from dpu_emu.datapath import BlockNamespaceBackend
from dpu_emu.keys import KeyManager
from dpu_emu.pipeline import Completion, InlineEngine, ProcessEngine, Status, generate_xts_key
from dpu_emu.protect import (
    INTERNAL_ERROR,
    INTERNAL_ERROR_DNR,
    TAG_BYTES,
    WRITTEN,
    CrcTable,
    FileCrcTable,
    ProtectedBlockBackend,
    ProtectionError,
    RamCrcTable,
    Run,
    TagCorruption,
    decode_tags,
    namespace_backend,
    pack_tags,
    protected_block_backend,
    sidecar_path,
    validate_namespace_protection,
    validate_pipeline_config,
)
from dpu_emu.protect.crc_table import HEADER_BYTES, CrcTableError
from dpu_emu.storage.block import BlockStore, FileBlockStore, RamBlockStore
from nvmeof.controller.backend import IoCommand
from nvmeof.errors import LbaOutOfRange
from nvmeof.wire.constants import NvmOpcode, decode_status

pytestmark = pytest.mark.timeout(60)

crc32c = crcmod.predefined.mkCrcFun("crc-32c")
NUM_BLOCKS = 1024
MEDIA_ERROR = (2, 0x81, False)            # (sct, sc, dnr) of Unrecovered Read Error


def reference_xts(key: bytes, data: bytes, block_size: int, lba: int) -> bytes:
    """AES-256-XTS of each block with tweak = its LBA (little-endian 16 bytes)."""
    out = bytearray()
    for index in range(len(data) // block_size):
        ctx = Cipher(algorithms.AES(key), modes.XTS((lba + index).to_bytes(16, "little"))).encryptor()
        out += ctx.update(data[index * block_size:(index + 1) * block_size]) + ctx.finalize()
    return bytes(out)


class Recorder:
    """A ``done`` callback that insists on being called exactly once."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bytes | None]] = []

    def __call__(self, status: int, dw0: int, data: Any) -> None:
        self.calls.append((status, dw0, None if data is None else bytes(data)))

    @property
    def result(self) -> tuple[int, bytes | None]:
        assert len(self.calls) == 1, f"done called {len(self.calls)} times"
        return self.calls[0][0], self.calls[0][2]


def execute(backend: ProtectedBlockBackend | BlockNamespaceBackend, opcode: int, **fields: Any) -> Recorder:
    rec = Recorder()
    backend.execute(IoCommand(opcode, 1, 1, **fields), rec)
    return rec


def write(backend: Any, slba: int, data: bytes, fua: bool = False) -> None:
    status, _ = execute(backend, NvmOpcode.WRITE, slba=slba, nlb=len(data) // backend.block_size, data=data,
                        fua=fua).result
    assert status == 0


def read(backend: Any, slba: int, nlb: int) -> tuple[int, bytes | None]:
    return execute(backend, NvmOpcode.READ, slba=slba, nlb=nlb).result


def make(block_size: int, encrypted: bool, *, engine: InlineEngine | None = None,
         store: BlockStore | None = None, table: CrcTable | None = None) -> tuple[ProtectedBlockBackend, bytes | None]:
    engine = engine or InlineEngine()
    key = generate_xts_key() if encrypted else None
    key_id = engine.register_key(key) if key else None
    store = store or RamBlockStore(block_size, NUM_BLOCKS)
    table = table or RamCrcTable(store.num_blocks, chunk_tags=64)
    return ProtectedBlockBackend(store, table, engine, key_id), key


GEOMETRIES = [pytest.param(bs, enc, id=f"{bs}-{'xts' if enc else 'crc'}")
              for bs in (512, 4096) for enc in (False, True)]


# -- the tag table ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ram", "file"])
def test_crc_table_round_trip_and_format(kind: str, tmp_path: Path) -> None:
    table: CrcTable = (RamCrcTable(5000, chunk_tags=128) if kind == "ram"
                       else FileCrcTable(tmp_path / "t.crc", 5000, 512))
    assert table.get(0, 5000) == bytes(5000 * TAG_BYTES) and table.allocated_bytes <= HEADER_BYTES
    crcs = [0, 0xFFFFFFFF, 0xE3069283] + [random.Random(1).getrandbits(32) for _ in range(300)]
    table.set(120, pack_tags_input(crcs))                       # spans chunk boundaries
    assert [table.tag(120 + i) for i in range(len(crcs))] == [c | WRITTEN for c in crcs]
    assert table.tag(119) == 0 and table.tag(120 + len(crcs)) == 0
    got, runs = decode_tags(table.get(100, 400))
    assert runs == [Run(0, 20, False), Run(20, 20 + len(crcs), True), Run(20 + len(crcs), 400, False)]
    assert got[20 * 4:(20 + len(crcs)) * 4] == b"".join(c.to_bytes(4, "little") for c in crcs)
    table.clear(121, 2, durable=True)
    assert table.tag(121) == table.tag(122) == 0 and table.tag(123) == crcs[3] | WRITTEN
    table.clear(0, 5000)
    assert table.get(0, 5000) == bytes(5000 * TAG_BYTES)
    if kind == "ram":
        assert table.allocated_bytes == 0, "chunks cleared whole are freed"
    with pytest.raises(ValueError):
        table.get(4999, 2)
    table.flush()
    table.close()
    with pytest.raises(OSError):
        table.get(0, 1)


def pack_tags_input(crcs: list[int]) -> bytes:
    return b"".join(c.to_bytes(4, "little") for c in crcs)


def test_ram_table_is_lazy_for_a_large_namespace() -> None:
    table = RamCrcTable((1 << 30) // 512)                     # 1 GiB of 512-byte blocks
    assert table.allocated_bytes == 0
    table.set(1_000_000, pack_tags_input([7]))
    assert 0 < table.allocated_bytes <= 1 << 20


def test_file_table_is_sparse_persistent_and_bound(tmp_path: Path) -> None:
    path = tmp_path / "ns.img.crc"
    blocks = (1 << 30) // 512
    table = FileCrcTable(path, blocks, 512, binding=b"k1")
    assert table.created and path.stat().st_size == HEADER_BYTES + blocks * TAG_BYTES
    assert table.allocated_bytes < 1 << 20                      # a hole, not 16 MiB
    assert path.stat().st_mode & 0o777 == 0o600
    table.set(blocks - 1, pack_tags_input([0x1234]), durable=True)
    table.close()
    again = FileCrcTable(path, blocks, 512, binding=b"k1")
    assert not again.created and again.tag(blocks - 1) == 0x1234 | WRITTEN
    again.clear(0, blocks)                                      # punches a hole
    assert again.tag(blocks - 1) == 0
    again.close()
    with pytest.raises(CrcTableError, match="binding"):
        FileCrcTable(path, blocks, 512, binding=b"k2")
    with pytest.raises(CrcTableError, match="blocks"):
        FileCrcTable(path, blocks // 2, 512, binding=b"k1")
    with pytest.raises(CrcTableError, match="blocks"):
        FileCrcTable(path, blocks // 8, 4096, binding=b"k1")
    other = tmp_path / "junk"
    other.write_bytes(b"x" * HEADER_BYTES)
    with pytest.raises(CrcTableError, match="not a dpu-emu"):
        FileCrcTable(other, 8, 512)


@pytest.mark.parametrize("byte", range(TAG_BYTES))
@pytest.mark.parametrize("written", [True, False])
def test_every_single_byte_corruption_of_a_tag_is_caught(byte: int, written: bool) -> None:
    """A corrupt tag either fails decode_tags or changes what the read path will check."""
    raw = bytearray(pack_tags(pack_tags_input([0xA5A5A5A5, 0x0BADF00D, 0]))) if written else bytearray(24)
    raw[TAG_BYTES + byte] ^= 0x01
    try:
        crcs, runs = decode_tags(raw)
    except TagCorruption as exc:
        assert exc.index == 1
        return
    # Only a written block's CRC bytes, or an unwritten block's WRITTEN bit, can change
    # without breaking the format; the read path then catches them as a CRC mismatch.
    if written:
        assert byte < 4 and crcs[4:8] != (0x0BADF00D).to_bytes(4, "little")
    else:
        assert byte == 4 and runs == [Run(0, 1, False), Run(1, 2, True), Run(2, 3, False)]


def test_pack_tags_matches_the_integer_format() -> None:
    crcs = [0, 1, 0xFFFFFFFF]
    raw = pack_tags(pack_tags_input(crcs))
    assert [int.from_bytes(raw[i * 8:(i + 1) * 8], "little") for i in range(3)] == [c | WRITTEN for c in crcs]


# -- round trips ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("block_size", "encrypted"), GEOMETRIES)
def test_round_trip_and_what_lands_in_the_store(block_size: int, encrypted: bool) -> None:
    backend, key = make(block_size, encrypted)
    rng = random.Random(block_size)
    data = rng.randbytes(block_size * 24)
    write(backend, 100, data)
    stored = backend.store.read(100, 24)
    expected = reference_xts(key, data, block_size, 100) if key else data
    assert stored == expected
    for i in range(24):            # tags: CRC32C of what is stored (the ciphertext), WRITTEN set
        assert backend.crc_table.tag(100 + i) == crc32c(stored[i * block_size:(i + 1) * block_size]) | WRITTEN
    assert read(backend, 100, 24) == (0, data)
    assert read(backend, 107, 3) == (0, data[7 * block_size:10 * block_size])
    # mixed ranges: unwritten blocks read as zeroes around the written ones
    status, got = read(backend, 90, 40)
    assert status == 0 and got == bytes(10 * block_size) + data + bytes(6 * block_size)
    assert backend.stats.unwritten_blocks_read == 16


@pytest.mark.parametrize(("block_size", "encrypted"), GEOMETRIES)
def test_unwritten_deallocated_and_zeroed_blocks_read_as_zeroes(block_size: int, encrypted: bool) -> None:
    backend, _ = make(block_size, encrypted)
    assert read(backend, 0, 8) == (0, bytes(8 * block_size))
    data = random.Random(3).randbytes(block_size * 16)
    write(backend, 0, data)
    assert execute(backend, NvmOpcode.DATASET_MANAGEMENT, ranges=[(2, 3), (10, 1)], deallocate=True).result[0] == 0
    assert execute(backend, NvmOpcode.WRITE_ZEROES, slba=12, nlb=2, fua=True).result[0] == 0
    assert execute(backend, NvmOpcode.WRITE_ZEROES, slba=14, nlb=1, deallocate=True).result[0] == 0
    expected = bytearray(data)
    for lba in (2, 3, 4, 10, 12, 13, 14):
        expected[lba * block_size:(lba + 1) * block_size] = bytes(block_size)
        assert backend.crc_table.tag(lba) == 0
    assert read(backend, 0, 16) == (0, bytes(expected))
    write(backend, 3, data[:block_size])                         # written again after deallocate
    assert read(backend, 3, 1) == (0, data[:block_size])
    assert execute(backend, NvmOpcode.FLUSH).result[0] == 0


@pytest.mark.parametrize(("block_size", "encrypted"), GEOMETRIES)
def test_flipped_byte_in_the_store_is_a_media_error_never_data(block_size: int, encrypted: bool) -> None:
    backend, _ = make(block_size, encrypted)
    data = random.Random(4).randbytes(block_size * 8)
    write(backend, 40, data)
    raw = bytearray(backend.store.read(45, 1))
    raw[block_size // 3] ^= 0x10
    backend.store.write(45, raw)
    for slba, nlb in ((45, 1), (40, 8), (30, 20)):
        status, got = read(backend, slba, nlb)
        assert decode_status(status) == MEDIA_ERROR and got is None
    assert read(backend, 40, 5) == (0, data[:5 * block_size]), "the blocks around it still read"
    assert read(backend, 46, 2) == (0, data[6 * block_size:])
    assert backend.stats.integrity_errors == 3


@pytest.mark.parametrize(("block_size", "encrypted"), GEOMETRIES)
def test_non_zero_data_under_an_unwritten_tag_is_a_media_error(block_size: int, encrypted: bool) -> None:
    backend, _ = make(block_size, encrypted)
    backend.store.write(7, b"\x01" + bytes(block_size - 1))      # behind the table's back
    assert decode_status(read(backend, 7, 1)[0]) == MEDIA_ERROR
    assert decode_status(read(backend, 0, 16)[0]) == MEDIA_ERROR
    assert read(backend, 8, 4) == (0, bytes(4 * block_size))


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("byte", range(TAG_BYTES))
def test_flipped_byte_in_the_crc_table_is_a_media_error(byte: int, encrypted: bool) -> None:
    backend, _ = make(512, encrypted)
    table = backend.crc_table
    assert isinstance(table, RamCrcTable)
    data = random.Random(5).randbytes(512 * 4)
    write(backend, 8, data)
    table.inject_fault(9, byte, 0x01)          # a written block
    table.inject_fault(20, byte, 0x01)         # an unwritten block
    assert decode_status(read(backend, 9, 1)[0]) == MEDIA_ERROR
    assert decode_status(read(backend, 20, 1)[0]) == MEDIA_ERROR
    assert decode_status(read(backend, 8, 16)[0]) == MEDIA_ERROR
    assert read(backend, 10, 2) == (0, data[1024:3072])


@pytest.mark.parametrize("encrypted", [False, True])
def test_file_backed_namespace_survives_reopen(tmp_path: Path, encrypted: bool) -> None:
    engine = InlineEngine()
    key = generate_xts_key()
    key_id = engine.register_key(key) if encrypted else None
    path = tmp_path / "ns.img"

    def open_backend() -> ProtectedBlockBackend:
        return protected_block_backend(FileBlockStore(path, 4096, 256), engine, key_id=key_id)

    backend = open_backend()
    assert Path(sidecar_path(path)).exists()
    data = random.Random(6).randbytes(4096 * 3)
    write(backend, 250, data[:4096 * 3], fua=True)
    write(backend, 0, data[:4096])
    backend.flush()
    backend.close()
    backend = open_backend()
    assert read(backend, 250, 3) == (0, data)
    assert read(backend, 0, 2) == (0, data[:4096] + bytes(4096))
    blob = path.read_bytes()
    assert (data[:4096] in blob) != encrypted
    # flip a byte in the sidecar under block 251's CRC
    with open(sidecar_path(path), "r+b") as fh:
        fh.seek(HEADER_BYTES + 251 * TAG_BYTES)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x80]))
    assert decode_status(read(backend, 251, 1)[0]) == MEDIA_ERROR
    assert read(backend, 250, 1) == (0, data[:4096])
    backend.close()


# -- splitting, deferred completions, engine failures ------------------------------------------

class DeferredEngine(InlineEngine):
    """The inline engine, but every job runs only when the test says so (like a worker)."""

    def __init__(self, max_payload: int | None = None) -> None:
        super().__init__()
        if max_payload is not None:
            self.max_payload = max_payload
        self.queue: list[Callable[[], None]] = []

    def submit_lease(self, lease: Any, job: Any, length: int, done: Any, **kw: Any) -> None:
        self.queue.append(lambda: InlineEngine.submit_lease(self, lease, job, length, done, **kw))

    def run_all(self) -> int:
        count = 0
        while self.queue:
            self.queue.pop(0)()
            count += 1
        return count


@pytest.mark.parametrize("encrypted", [False, True])
def test_deferred_completions_and_commands_split_into_several_jobs(encrypted: bool) -> None:
    engine = DeferredEngine(max_payload=4 * 512)
    backend, key = make(512, encrypted, engine=engine)
    data = random.Random(7).randbytes(512 * 10)
    rec = Recorder()
    backend.execute(IoCommand(NvmOpcode.WRITE, 1, 1, slba=3, nlb=10, data=data), rec)
    assert rec.calls == [] and len(engine.queue) == 3           # 4 + 4 + 2 blocks
    assert engine.run_all() == 3 and rec.result == (0, None)
    assert backend.store.read(3, 10) == (reference_xts(key, data, 512, 3) if key else data)
    rec = Recorder()
    backend.execute(IoCommand(NvmOpcode.READ, 1, 2, slba=0, nlb=16), rec)
    assert rec.calls == [] and engine.run_all() == 3
    assert rec.result == (0, bytes(1536) + data + bytes(1536))


class FailingEngine(InlineEngine):
    def __init__(self, status: Status) -> None:
        super().__init__()
        self.status = status

    def submit_lease(self, lease: Any, job: Any, length: int, done: Any, **kw: Any) -> None:
        lease.release()
        done(Completion(self.status, message="injected"))


@pytest.mark.parametrize(("status", "expected"), [(Status.WORKER_DIED, INTERNAL_ERROR),
                                                  (Status.WORKER_ERROR, INTERNAL_ERROR),
                                                  (Status.ENGINE_CLOSED, INTERNAL_ERROR),
                                                  (Status.INVALID_JOB, INTERNAL_ERROR_DNR)])
@pytest.mark.parametrize("encrypted", [False, True])
def test_engine_failures_become_internal_errors(status: Status, expected: int, encrypted: bool) -> None:
    good, _ = make(512, encrypted)
    write(good, 0, bytes(range(256)) * 4)
    engine = FailingEngine(status)
    key_id = engine.register_key(generate_xts_key()) if encrypted else None
    backend = ProtectedBlockBackend(good.store, good.crc_table, engine, key_id)
    assert execute(backend, NvmOpcode.WRITE, slba=4, nlb=1, data=bytes(512)).result == (expected, None)
    assert backend.crc_table.tag(4) == 0, "nothing landed"
    assert read(backend, 0, 2) == (expected, None)
    assert read(backend, 0, 8) == (expected, None)             # mixed: the gather path
    assert read(backend, 4, 2) == (0, bytes(1024)), "unwritten blocks never need the engine"
    sct, sc, dnr = decode_status(expected)
    assert (sct, sc) == (0, 6) and dnr == (status == Status.INVALID_JOB)


def test_closed_engine_and_out_of_range() -> None:
    backend, _ = make(512, True)
    assert execute(backend, NvmOpcode.READ, slba=NUM_BLOCKS - 1, nlb=2).result[0] == LbaOutOfRange().status
    assert execute(backend, NvmOpcode.WRITE, slba=NUM_BLOCKS, nlb=1, data=bytes(512)).result[0] == \
        LbaOutOfRange().status
    write(backend, 0, bytes(512))
    backend.engine.close()
    assert execute(backend, NvmOpcode.WRITE, slba=1, nlb=1, data=bytes(512)).result[0] == INTERNAL_ERROR
    assert read(backend, 0, 1)[0] == INTERNAL_ERROR


@pytest.mark.parametrize("encrypted", [False, True])
def test_an_engine_that_was_never_started_fails_commands_not_the_caller(encrypted: bool) -> None:
    engine = ProcessEngine(workers=1)
    key_id = engine.register_key(generate_xts_key()) if encrypted else None
    store = RamBlockStore(512, 64)
    table = RamCrcTable(64)
    table.set(0, pack_tags_input([0]))
    backend = ProtectedBlockBackend(store, table, engine, key_id)
    assert execute(backend, NvmOpcode.WRITE, slba=1, nlb=1, data=bytes(512)).result == (INTERNAL_ERROR_DNR, None)
    assert read(backend, 0, 1) == (INTERNAL_ERROR_DNR, None)
    assert read(backend, 0, 4) == (INTERNAL_ERROR_DNR, None)
    engine.close()


# -- builders and configuration -------------------------------------------------------------------

MASTER = bytes(range(32))


def test_namespace_backend_from_config(tmp_path: Path) -> None:
    engine = InlineEngine()
    keys = KeyManager(MASTER, tmp_path / "keys.json")
    info = keys.create("k1")
    keys.create("k2")
    plain = namespace_backend(RamBlockStore(512, 64), {"nsid": 1}, engine=engine, keys=keys)
    assert isinstance(plain, BlockNamespaceBackend)
    crc = namespace_backend(RamBlockStore(512, 64), {"nsid": 2, "integrity": True}, engine=engine, keys=None)
    assert isinstance(crc, ProtectedBlockBackend) and not crc.encrypted
    path = tmp_path / "ns3.img"
    ns3 = {"nsid": 3, "key": "k1", "backend": {"kind": "file", "path": str(path)}}
    enc = namespace_backend(FileBlockStore(path, 512, 64), ns3, engine=engine, keys=keys)
    assert isinstance(enc, ProtectedBlockBackend) and enc.encrypted and engine.has_key(enc.key_id or 0)
    write(enc, 0, b"secret!!" * 64)
    enc.flush()
    enc.close()
    assert not engine.has_key(enc.key_id or 0), "the backend owned its key"
    assert info.fingerprint in repr(keys.info("k1"))
    for other, message in (({**ns3, "key": "k2"}, "another key"),            # the table is bound to k1
                           ({"nsid": 3, "integrity": True}, "another key"),  # ... not to plain CRC
                           ({"nsid": 3}, "has an integrity table")):          # ... nor unprotected
        with FileBlockStore(path, 512, 64) as store, pytest.raises(ProtectionError, match=message):
            namespace_backend(store, other, engine=engine, keys=keys)
    with pytest.raises(ProtectionError, match="no data key"):
        namespace_backend(RamBlockStore(512, 64), {"nsid": 4, "key": "nope"}, engine=engine, keys=keys)
    with pytest.raises(ProtectionError, match="keys_file"):
        namespace_backend(RamBlockStore(512, 64), {"nsid": 4, "key": "k1"}, engine=engine, keys=None)
    with pytest.raises(ProtectionError, match="pipeline"):
        namespace_backend(RamBlockStore(512, 64), {"nsid": 4, "integrity": True}, engine=None, keys=None)
    wrong = KeyManager(bytes(32), tmp_path / "keys.json")
    with pytest.raises(ProtectionError, match="wrong master key"):
        namespace_backend(RamBlockStore(512, 64), {"nsid": 5, "key": "k1"}, engine=engine, keys=wrong)
    used = tmp_path / "used.img"
    used.write_bytes(b"\x01" * 512 * 64)
    with FileBlockStore(used, 512, 64) as store, pytest.raises(ProtectionError, match="already holds data"):
        namespace_backend(store, {"nsid": 6, "integrity": True}, engine=engine, keys=None)
    assert not Path(sidecar_path(used)).exists()


@pytest.mark.parametrize(("ns", "message"), [
    ({"integrity": "yes"}, "true or false"),
    ({"key": ""}, "data key"),
    ({"key": "k", "integrity": False}, "always has integrity"),
    ({"integrity": True, "command_set": "kv"}, "NVM namespaces only"),
    ({"integrity": True, "integrity_path": "/x", "backend": {"kind": "ram"}}, "file-backed"),
])
def test_namespace_protection_validation(ns: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_namespace_protection(ns, "ns")


def test_pipeline_validation() -> None:
    validate_pipeline_config({"pipeline": {"engine": "inline"}, "keys_file": "/k.json"})
    validate_pipeline_config({"pipeline": {"engine": "process", "workers": 2}})
    validate_namespace_protection({"key": "k1", "backend": {"kind": "file", "path": "/x"},
                                   "integrity_path": "/x.crc"}, "ns")
    for bad in ({"pipeline": {"engine": "gpu"}}, {"pipeline": {"workers": 0}}, {"pipeline": {"threads": 1}},
                {"pipeline": []}, {"keys_file": 3}):
        with pytest.raises(ConfigError):
            validate_pipeline_config(bad)
