"""Encrypted KV namespaces with the inline engine: round trips, the documented construction
against ``cryptography``'s AES-XTS, sealed keys in the log, corruption, restarts, engine
failures, and the builder/config checks."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crc32c import crc32c
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dpu_emu.config import ConfigError
from dpu_emu.keys import KeyManager
from dpu_emu.pipeline import Completion, InlineEngine, Status
from dpu_emu.protect import INTERNAL_ERROR, INTERNAL_ERROR_DNR, ProtectionError, validate_namespace_protection
from dpu_emu.protect.kv import (
    SEALED_KEY_BYTES,
    TWEAK_INFO,
    VALUE_HEADER_BYTES,
    VALUE_UNIT,
    KvSecrets,
    ProtectedKvBackend,
    kv_namespace,
    value_units,
)
from dpu_emu.storage.kv import KvStoreCorrupt, MemoryKvStore
from dpu_emu.storage.kv_file import LOG_NAME, FileKvStore
from nvmeof.controller import kv as kvproto
from nvmeof.controller.backend import IoCommand
from nvmeof.wire.constants import KvOpcode, decode_status

pytestmark = pytest.mark.timeout(60)

KIB = 1024
MIB = 1024 * KIB
MASTER = bytes(range(100, 132))
DATA_KEY = bytes(range(1, 65))
IDENTITY_A = bytes(range(16))
IDENTITY_B = bytes(range(16, 32))
UNRECOVERED = (0, 0x88)
SIZES = (1, 15, 16, 17, 4 * KIB, MIB)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bytes | None]] = []

    def __call__(self, status: int, dw0: int, data: Any) -> None:
        self.calls.append((status, dw0, None if data is None else bytes(data)))

    @property
    def result(self) -> tuple[int, int, bytes | None]:
        assert len(self.calls) == 1, f"done called {len(self.calls)} times"
        return self.calls[0]


def run(backend: Any, opcode: int, key: bytes = b"", data: bytes | None = None, read_length: int = 0,
        options: int = 0) -> tuple[int, int, bytes | None]:
    rec = Recorder()
    backend.execute(IoCommand(opcode, 1, 1, key=key, data=data, read_length=read_length, options=options), rec)
    return rec.result


def store(backend: Any, key: bytes, value: bytes, options: int = 0) -> int:
    return run(backend, KvOpcode.STORE, key, value, options=options)[0]


def retrieve(backend: Any, key: bytes, buffer: int = 2 * MIB) -> tuple[int, int, bytes | None]:
    return run(backend, KvOpcode.RETRIEVE, key, read_length=buffer)


def keys_of(tmp_path: Path) -> KeyManager:
    keys = KeyManager(MASTER, tmp_path / "keys.json")
    keys.import_key(DATA_KEY, "kv")
    return keys


def kv_cfg(tmp_path: Path | None, **extra: Any) -> dict[str, Any]:
    backend = {"kind": "file", "path": str(tmp_path / "kv")} if tmp_path else {"kind": "ram"}
    return {"nsid": 1, "command_set": "kv", "capacity_bytes": 64 * MIB, "max_value_size": MIB,
            "backend": backend, "key": "kv", **extra}


def open_ns(tmp_path: Path, engine: InlineEngine | None = None, identity: bytes = IDENTITY_A,
            file: bool = True) -> ProtectedKvBackend:
    parts = kv_namespace(kv_cfg(tmp_path if file else None), engine=engine or InlineEngine(),
                         keys=keys_of(tmp_path) if not (tmp_path / "keys.json").exists()
                         else KeyManager(MASTER, tmp_path / "keys.json"), identity=identity, name="t")
    assert isinstance(parts.backend, ProtectedKvBackend) and parts.closable is parts.backend
    return parts.backend


def documented_tweak(identity: bytes, key: bytes) -> bytes:
    secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=TWEAK_INFO).derive(DATA_KEY)
    return hmac.new(secret, bytes([len(identity)]) + identity + key, hashlib.sha256).digest()[:16]


def reference_ciphertext(identity: bytes, key: bytes, value: bytes) -> bytes:
    head = b"KVX1" + len(value).to_bytes(4, "little") + bytes(4)
    payload = head + crc32c(head + value).to_bytes(4, "little") + value
    ctx = Cipher(algorithms.AES(DATA_KEY), modes.XTS(documented_tweak(identity, key))).encryptor()
    return ctx.update(payload) + ctx.finalize()


@pytest.mark.parametrize("file", [True, False])
def test_round_trips_of_every_size(tmp_path: Path, file: bool) -> None:
    backend = open_ns(tmp_path, file=file)
    rng = random.Random(5)
    values = {f"k{size}".encode(): rng.randbytes(size) for size in SIZES}
    for key, value in values.items():
        assert store(backend, key, value) == 0
    for key, value in values.items():
        assert retrieve(backend, key) == (0, len(value), value)
        assert run(backend, KvOpcode.EXIST, key)[:2] == (0, len(value))
        assert retrieve(backend, key, 3) == (0, len(value), value[:3])       # short host buffer, DW0 = true length
        stored = backend.store.retrieve(key)
        assert len(stored) == len(value) + VALUE_HEADER_BYTES and value not in stored
    assert store(backend, b"empty", b"") == 0
    assert retrieve(backend, b"empty") == (0, 0, b"")                    # as the plain backend answers
    listed = run(backend, KvOpcode.LIST, b"", read_length=4096)[2]
    assert listed == kvproto.pack_list(sorted([*values, b"empty"]), 4096)
    assert run(backend, KvOpcode.DELETE, b"k1")[0] == 0
    assert decode_status(retrieve(backend, b"k1")[0])[:2] == (0, 0x87)
    backend.flush()
    backend.close()


def test_stored_bytes_match_aes_xts_with_the_documented_tweak(tmp_path: Path) -> None:
    backend = open_ns(tmp_path)
    value = b"the quick brown fox jumps over the lazy dog" * 3
    assert store(backend, b"fox", value) == 0
    assert backend.store.retrieve(b"fox") == reference_ciphertext(IDENTITY_A, b"fox", value)
    backend.close()


def test_tweaks_differ_between_namespaces_and_keys() -> None:
    a = KvSecrets.derive(DATA_KEY, IDENTITY_A)
    b = KvSecrets.derive(DATA_KEY, IDENTITY_B)
    assert a.tweak(b"same") != b.tweak(b"same")
    assert a.tweak(b"same") != a.tweak(b"other")
    assert a.tweak(b"same") == documented_tweak(IDENTITY_A, b"same")
    assert "redacted" in repr(a)


def test_the_same_value_under_two_namespaces_encrypts_differently(tmp_path: Path) -> None:
    engine = InlineEngine()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = open_ns(tmp_path / "a", engine, IDENTITY_A)
    two = open_ns(tmp_path / "b", engine, IDENTITY_B)
    for backend in (one, two):
        assert store(backend, b"k", bytes(64)) == 0
    assert one.store.retrieve(b"k") != two.store.retrieve(b"k")
    one.close()
    two.close()


def test_value_units_cover_the_payload_without_short_units() -> None:
    assert value_units(16) == [(0, 16)]
    assert value_units(VALUE_UNIT + 15) == [(0, VALUE_UNIT + 15)]
    assert value_units(VALUE_UNIT + 16) == [(0, VALUE_UNIT), (VALUE_UNIT, VALUE_UNIT + 16)]
    assert value_units(MIB + 15) == [(0, VALUE_UNIT), (VALUE_UNIT, MIB + 15)]
    assert value_units(MIB + 16) == [(0, VALUE_UNIT), (VALUE_UNIT, MIB), (MIB, MIB + 16)]


def test_the_log_holds_neither_keys_nor_values(tmp_path: Path) -> None:
    backend = open_ns(tmp_path)
    secret_key = b"customer-42-key"
    pattern = b"PLAINTEXT-PATTERN-" * 64
    assert store(backend, secret_key, pattern) == 0
    assert store(backend, b"x", b"tiny") == 0
    assert run(backend, KvOpcode.DELETE, b"x")[0] == 0
    backend.flush()
    raw = (tmp_path / "kv" / LOG_NAME).read_bytes()
    for needle in (secret_key, b"customer", pattern[:16], b"tiny"):
        assert needle not in raw
    backend.close()


def test_restart_rebuilds_the_index_from_sealed_keys(tmp_path: Path) -> None:
    backend = open_ns(tmp_path)
    values = {bytes([i]) * (1 + i % 16): random.Random(i).randbytes(1 + i * 37) for i in range(40)}
    for key, value in values.items():
        assert store(backend, key, value) == 0
    assert run(backend, KvOpcode.DELETE, b"\x00")[0] == 0
    del values[b"\x00"]
    backend.flush()
    backend.close()
    again = open_ns(tmp_path)
    listed = run(again, KvOpcode.LIST, b"", read_length=4096)[2]
    assert listed == kvproto.pack_list(sorted(values), 4096)
    for key, value in values.items():
        assert retrieve(again, key) == (0, len(value), value)
    assert isinstance(again.store, FileKvStore)
    again.store.compact()                                  # sealed keys survive a compaction too
    for key, value in values.items():
        assert retrieve(again, key)[2] == value
    again.close()


def test_corruption_in_the_log_is_an_unrecovered_error(tmp_path: Path) -> None:
    backend = open_ns(tmp_path)
    value = bytes(range(256)) * 4
    assert store(backend, b"victim", value) == 0
    backend.flush()
    log = tmp_path / "kv" / LOG_NAME
    raw = bytearray(log.read_bytes())
    raw[-100] ^= 0x5A                                        # inside the value's ciphertext
    log.write_bytes(raw)
    status, dw0, data = retrieve(backend, b"victim")
    assert decode_status(status)[:2] == UNRECOVERED and data is None
    backend.close()


def test_tampered_ciphertext_fails_the_authenticity_check(tmp_path: Path) -> None:
    """Bytes that pass the store's own checks but do not decrypt to our payload: 88h."""
    backend = open_ns(tmp_path, file=False)
    assert isinstance(backend.store, MemoryKvStore)
    assert store(backend, b"a", b"A" * 100) == 0
    assert store(backend, b"b", b"B" * 100) == 0
    entry_a, entry_b = backend.store._index[b"a"], backend.store._index[b"b"]
    entry_a.handle = entry_b.handle                          # b's ciphertext under key a
    assert decode_status(retrieve(backend, b"a")[0])[:2] == UNRECOVERED
    flipped = bytearray(entry_b.handle)
    flipped[40] ^= 1
    entry_b.handle = bytes(flipped)
    assert decode_status(retrieve(backend, b"b")[0])[:2] == UNRECOVERED
    assert backend.integrity_errors == 2
    backend.close()


def test_wrong_data_key_or_plaintext_log_refuses_to_start(tmp_path: Path) -> None:
    backend = open_ns(tmp_path)
    assert store(backend, b"k", b"v") == 0
    backend.close()
    with pytest.raises(ProtectionError):                     # another namespace identity
        open_ns(tmp_path, identity=IDENTITY_B)
    with pytest.raises(KvStoreCorrupt, match="encrypted keys"):   # opened without its key: no truncation
        FileKvStore(tmp_path / "kv", MIB)
    assert open_ns(tmp_path).store.retrieve(b"k")          # still intact
    plain = FileKvStore(tmp_path / "plain", MIB)
    plain.store(b"k", b"v")
    plain.close()
    cfg = kv_cfg(None)
    cfg["backend"] = {"kind": "file", "path": str(tmp_path / "plain")}
    with pytest.raises(ProtectionError, match="plaintext keys"):
        kv_namespace(cfg, engine=InlineEngine(), keys=KeyManager(MASTER, tmp_path / "keys.json"),
                     identity=IDENTITY_A)


def test_sealed_keys_have_a_fixed_size() -> None:
    codec = KvSecrets.derive(DATA_KEY, IDENTITY_A).key_codec
    for key in (b"a", b"\x80", b"a\x00", bytes(16), b"\x80" * 16):
        sealed = codec.encode(key)
        assert len(sealed) == SEALED_KEY_BYTES and codec.decode(sealed) == key
    with pytest.raises(ValueError):
        codec.decode(bytes(SEALED_KEY_BYTES))


class FailingEngine(InlineEngine):
    def __init__(self, status: Status) -> None:
        super().__init__()
        self.status = status

    def submit_lease(self, lease: Any, job: Any, length: int, done: Any, **kw: Any) -> None:
        lease.release()
        done(Completion(self.status, message="injected"))


@pytest.mark.parametrize(("status", "expected"), [(Status.WORKER_DIED, INTERNAL_ERROR),
                                                  (Status.ENGINE_CLOSED, INTERNAL_ERROR),
                                                  (Status.INVALID_JOB, INTERNAL_ERROR_DNR)])
def test_engine_failures_become_internal_errors(tmp_path: Path, status: Status, expected: int) -> None:
    good = open_ns(tmp_path, file=False)
    assert store(good, b"k", b"value") == 0
    engine = FailingEngine(status)
    key_id = engine.register_key(DATA_KEY)
    backend = ProtectedKvBackend(good.store, engine, key_id, good._secrets, max_value_size=MIB)
    assert run(backend, KvOpcode.STORE, b"n", b"x" * 10) == (expected, 0, None)
    assert run(backend, KvOpcode.RETRIEVE, b"k", read_length=64) == (expected, 0, None)
    assert decode_status(run(backend, KvOpcode.EXIST, b"n")[0])[:2] == (0, 0x87), "nothing landed"
    assert retrieve(good, b"k") == (0, 5, b"value")


class DeferredEngine(InlineEngine):
    def __init__(self) -> None:
        super().__init__()
        self.queue: list[Callable[[], None]] = []

    def submit_lease(self, lease: Any, job: Any, length: int, done: Any, **kw: Any) -> None:
        self.queue.append(lambda: InlineEngine.submit_lease(self, lease, job, length, done, **kw))

    def run_all(self) -> int:
        count = 0
        while self.queue:
            self.queue.pop(0)()
            count += 1
        return count


def test_deferred_completions_and_multi_unit_values(tmp_path: Path) -> None:
    engine = DeferredEngine()
    backend = open_ns(tmp_path, engine)
    value = random.Random(3).randbytes(MIB)
    rec = Recorder()
    backend.execute(IoCommand(KvOpcode.STORE, 1, 1, key=b"big", data=value), rec)
    assert rec.calls == [] and engine.run_all() == 3 and rec.result == (0, 0, None)     # 1 MiB + header
    rec = Recorder()
    backend.execute(IoCommand(KvOpcode.RETRIEVE, 1, 2, key=b"big", read_length=2 * MIB), rec)
    assert rec.calls == [] and engine.run_all() == 3
    assert rec.result == (0, MIB, value)
    backend.close()


def test_store_checks_and_options(tmp_path: Path) -> None:
    backend = open_ns(tmp_path, file=False)
    assert decode_status(store(backend, b"k", bytes(MIB + 1)))[:2] == (0, 0x85)
    assert store(backend, b"k", bytes(MIB)) == 0                      # the full size fits despite the header
    assert decode_status(store(backend, b"k", b"x", kvproto.STORE_MUST_NOT_EXIST))[:2] == (0, 0x89)
    assert decode_status(store(backend, b"z", b"x", kvproto.STORE_MUST_EXIST))[:2] == (0, 0x87)
    assert decode_status(store(backend, b"k", b"x", 3))[:2] == (0, 0x02)
    assert retrieve(backend, b"k")[1] == MIB


def test_config_accepts_a_key_on_kv_namespaces_only_as_documented() -> None:
    validate_namespace_protection({"command_set": "kv", "key": "kv"}, "ns")
    validate_namespace_protection({"command_set": "kv", "key": "kv", "integrity": True}, "ns")
    for bad in ({"command_set": "kv", "integrity": True}, {"command_set": "kv", "key": "kv", "integrity": False},
                {"command_set": "kv", "key": "kv", "integrity_path": "/x"}, {"command_set": "kv", "key": ""}):
        with pytest.raises(ConfigError):
            validate_namespace_protection(bad, "ns")


def test_builder_needs_engine_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ProtectionError, match="pipeline"):
        kv_namespace(kv_cfg(None), engine=None, keys=keys_of(tmp_path), identity=IDENTITY_A)
    with pytest.raises(ProtectionError, match="keys_file"):
        kv_namespace(kv_cfg(None), engine=InlineEngine(), keys=None, identity=IDENTITY_A)
    with pytest.raises(ProtectionError, match="no data key"):
        kv_namespace(kv_cfg(None, key="nope"), engine=InlineEngine(), keys=KeyManager(MASTER, tmp_path / "keys.json"),
                     identity=IDENTITY_A)
    engine = InlineEngine()
    plain = kv_namespace({k: v for k, v in kv_cfg(None).items() if k != "key"}, engine=engine, keys=None,
                         identity=IDENTITY_A)
    assert plain.closable is plain.store and not engine._keys
