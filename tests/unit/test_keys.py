"""Key management: master key sources, wrapped storage (RFC 3394), fingerprints, atomic
0600 key files, wrong master keys, and key material kept out of files, reprs and logs."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from dpu_emu.keys import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    DuplicateKeyError,
    KeyFileError,
    KeyManager,
    KeyUnwrapError,
    MasterKeyError,
    SecretKey,
    UnknownKeyError,
    fingerprint_of,
    load_master_key,
    parse_master_key,
)
from dpu_emu.pipeline import InlineEngine

pytestmark = pytest.mark.timeout(30)

MASTER = bytes(range(100, 132))
OTHER_MASTER = bytes(range(32))
DATA_KEY = bytes(range(64))                    # halves differ
RFC3394_KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
RFC3394_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
RFC3394_WRAPPED = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")


def spellings(secret: bytes) -> list[bytes]:
    """Ways key material could leak into a text file or a log line."""
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret),
            base64.urlsafe_b64encode(secret)]


def assert_absent(blob: bytes | str, *secrets: bytes) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in secrets:
        for form in spellings(secret):
            assert form not in data


# -- master key ----------------------------------------------------------------------------------

def test_parse_master_key_forms() -> None:
    assert parse_master_key(MASTER.hex(), source="t") == MASTER
    assert parse_master_key(MASTER.hex().upper() + "\n", source="t") == MASTER
    assert parse_master_key(base64.b64encode(MASTER).decode(), source="t") == MASTER
    assert parse_master_key(base64.urlsafe_b64encode(MASTER).rstrip(b"="), source="t") == MASTER
    assert parse_master_key(MASTER, source="t", allow_raw=True) == MASTER
    for bad in ("", "zz" * 32, MASTER.hex()[:-2], base64.b64encode(MASTER + b"x").decode()):
        with pytest.raises(MasterKeyError) as info:
            parse_master_key(bad, source="SRC")
        assert "SRC" in str(info.value) and (not bad or bad not in str(info.value))
    with pytest.raises(MasterKeyError):
        parse_master_key(MASTER, source="t")          # raw bytes only from a file


def test_load_master_key_from_environment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_master_key({MASTER_KEY_ENV: MASTER.hex()}) == MASTER
    key_file = tmp_path / "master.key"
    key_file.write_bytes(MASTER)
    key_file.chmod(0o600)
    assert load_master_key({MASTER_KEY_FILE_ENV: str(key_file)}) == MASTER
    key_file.write_text(base64.b64encode(MASTER).decode() + "\n")
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="dpu_emu.keys"):
        assert load_master_key({MASTER_KEY_FILE_ENV: str(key_file)}) == MASTER
    assert "chmod 600" in caplog.text
    with pytest.raises(MasterKeyError, match="not both"):
        load_master_key({MASTER_KEY_FILE_ENV: str(key_file), MASTER_KEY_ENV: MASTER.hex()})
    with pytest.raises(MasterKeyError, match="no master key"):
        load_master_key({})
    with pytest.raises(MasterKeyError, match="cannot read"):
        load_master_key({MASTER_KEY_FILE_ENV: str(tmp_path / "missing")})
    manager = KeyManager.from_environment(tmp_path / "keys.json", {MASTER_KEY_ENV: MASTER.hex()})
    assert manager.list_keys() == []
    with pytest.raises(MasterKeyError):
        KeyManager(MASTER[:16])


# -- wrapping and the key file ----------------------------------------------------------------------

def test_rfc3394_vector_through_the_library() -> None:
    """RFC 3394 section 4.6 (256-bit data with a 256-bit KEK): our wrapping primitive is standard."""
    assert aes_key_wrap(RFC3394_KEK, RFC3394_KEY) == RFC3394_WRAPPED
    assert aes_key_unwrap(RFC3394_KEK, RFC3394_WRAPPED) == RFC3394_KEY


def test_import_persist_reload_and_unwrap(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    manager = KeyManager(MASTER, path)
    info = manager.import_key(DATA_KEY, "disk-a")
    generated = manager.create()
    assert generated.id.startswith("key-") and len(manager) == 2
    wrapped = aes_key_wrap(MASTER, DATA_KEY)
    assert info.id == "disk-a" and info.fingerprint == hashlib.sha256(wrapped).digest()[:8].hex()
    assert info.fingerprint == fingerprint_of(wrapped)
    assert hashlib.sha256(DATA_KEY).digest()[:8].hex() != info.fingerprint
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"], "no temporary file left behind"
    doc = json.loads(path.read_text())
    entry = next(e for e in doc["keys"] if e["id"] == "disk-a")
    assert base64.b64decode(entry["wrapped"]) == wrapped and entry["fingerprint"] == info.fingerprint
    assert_absent(path.read_bytes(), DATA_KEY, MASTER)
    listing = KeyManager(MASTER, path).list_keys()
    assert [(k.id, k.fingerprint) for k in listing] == sorted([("disk-a", info.fingerprint),
                                                               (generated.id, generated.fingerprint)])
    assert set(listing[0].as_dict()) == {"id", "fingerprint", "created"}
    reloaded = KeyManager(MASTER, path)
    with reloaded.unwrap("disk-a") as secret:
        assert secret.reveal() == DATA_KEY
    with pytest.raises(Exception, match="wiped"):
        secret.reveal()
    assert len(reloaded.unwrap(generated.id).reveal()) == 64
    reloaded.delete(generated.id)
    assert [k.id for k in KeyManager(MASTER, path).list_keys()] == ["disk-a"]
    with pytest.raises(UnknownKeyError):
        reloaded.delete(generated.id)


def test_key_file_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        KeyManager(MASTER, tmp_path / "k.json").create("a")
    finally:
        os.umask(old)
    assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600


def test_wrong_master_key_fails_at_unwrap(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    KeyManager(MASTER, path).import_key(DATA_KEY, "disk-a")
    wrong = KeyManager(OTHER_MASTER, path)
    assert [k.id for k in wrong.list_keys()] == ["disk-a"], "listing needs no unwrap"
    engine = InlineEngine()
    with pytest.raises(KeyUnwrapError, match="wrong master key") as info:
        wrong.register("disk-a", engine)
    assert_absent(str(info.value), DATA_KEY, MASTER, OTHER_MASTER)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not engine.has_key(1)


def test_tampered_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    KeyManager(MASTER, path).import_key(DATA_KEY, "disk-a")
    doc = json.loads(path.read_text())
    doc["keys"][0]["fingerprint"] = "00" * 8
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="fingerprint"):
        KeyManager(MASTER, path)
    wrapped = bytearray(aes_key_wrap(MASTER, DATA_KEY))
    wrapped[20] ^= 1
    doc["keys"][0].update(wrapped=base64.b64encode(bytes(wrapped)).decode(), fingerprint=fingerprint_of(bytes(wrapped)))
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyUnwrapError):
        KeyManager(MASTER, path).unwrap("disk-a")
    for garbage in ("not json", json.dumps({"version": 99, "keys": []}),
                    json.dumps({"version": 1, "keys": [{"id": "a"}]})):
        path.write_text(garbage)
        with pytest.raises(KeyFileError):
            KeyManager(MASTER, path)


def test_invalid_imports_and_ids(tmp_path: Path) -> None:
    manager = KeyManager(MASTER, tmp_path / "keys.json")
    with pytest.raises(ValueError, match="halves"):
        manager.import_key(bytes(32) * 2)
    with pytest.raises(ValueError, match="64 bytes"):
        manager.import_key(DATA_KEY[:32])
    for bad_id in ("", "-x", "a/b", "x" * 65, "white space"):
        with pytest.raises(ValueError, match="key id"):
            manager.create(bad_id)
    manager.import_key(DATA_KEY, "a")
    with pytest.raises(DuplicateKeyError):
        manager.create("a")
    with pytest.raises(DuplicateKeyError, match="already stored as 'a'"):
        manager.import_key(DATA_KEY, "b")
    with pytest.raises(UnknownKeyError):
        manager.unwrap("zz")
    assert len(manager) == 1 and "a" in manager


def test_material_never_in_reprs_logs_or_pickles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        manager = KeyManager(MASTER, tmp_path / "keys.json")
        info = manager.import_key(DATA_KEY, "disk-a")
        engine = InlineEngine()
        key_id = manager.register("disk-a", engine)
        secret = manager.unwrap("disk-a")
    assert engine.has_key(key_id)
    texts = [caplog.text, repr(manager), str(manager), repr(secret), str(secret), repr(info), repr(engine),
             repr(manager.list_keys())]
    for text in texts:
        assert_absent(text, DATA_KEY, MASTER)
    assert "redacted" in repr(secret) and info.fingerprint in repr(secret)
    for obj in (secret, manager):
        with pytest.raises(TypeError):
            pickle.dumps(obj)
    assert isinstance(secret, SecretKey)


def test_in_memory_manager_writes_nothing(tmp_path: Path) -> None:
    manager = KeyManager(MASTER)
    manager.create("a")
    assert manager.path is None and list(tmp_path.iterdir()) == []
