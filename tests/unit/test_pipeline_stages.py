"""Pipeline stages against independent references: RFC 3720 / crcmod for CRC32C, IEEE 1619
(and Gladman's ciphertext-stealing vectors) / ``cryptography`` for AES-256-XTS.

The vector file is transcribed from an independent source (see its ``provenance``);
``cryptography``'s XTS (a new context per data unit) and ``crcmod``'s table-driven
``crc-32c`` are the bit-exact references on random data.
"""

from __future__ import annotations

import ctypes
import json
import random
import struct
from array import array

import crcmod.predefined
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dpu_emu.pipeline import (
    DECRYPT_AND_VERIFY,
    PROTECT_AND_ENCRYPT,
    VERIFY_AND_ENCRYPT,
    IntegrityError,
    Job,
    Stage,
    XtsCipher,
    XtsError,
    check_xts_key,
    crc32c_units,
    crc32c_value,
    generate_xts_key,
    run_chain,
    tweak_from_bytes,
    verify_crc32c_units,
    xts_decrypt,
    xts_encrypt,
)
from dpu_emu.pipeline.protocol import (
    COMPLETION,
    REQUEST,
    MsgKind,
    add_key_request,
    completion,
    job_request,
)
from dpu_emu.pipeline.stages import check_job, crcs_from_bytes, meta_capacity_for
from tests.conftest import VECTORS

pytestmark = pytest.mark.timeout(60)

crcmod_crc32c = crcmod.predefined.mkCrcFun("crc-32c")

RFC3720_B4 = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(0x00, 0x20)), 0x46DD794E),
    (bytes(range(0x1F, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),
]
XTS_VECTORS = json.loads((VECTORS / "ieee1619_xts_aes256.json").read_text())
IEEE = XTS_VECTORS["ieee1619"]
GLADMAN = XTS_VECTORS["gladman"]
TWO_64 = 1 << 64
TWO_128 = 1 << 128


def reference_xts(key: bytes, data: bytes, unit: int, tweak: int, *, decrypt: bool = False) -> bytes:
    """cryptography's XTS, one new context per data unit, tweak + i little-endian."""
    out = bytearray()
    for index, offset in enumerate(range(0, len(data), unit)):
        cipher = Cipher(algorithms.AES(key), modes.XTS(((tweak + index) % TWO_128).to_bytes(16, "little")))
        ctx = cipher.decryptor() if decrypt else cipher.encryptor()
        out += ctx.update(data[offset:offset + unit]) + ctx.finalize()
    return bytes(out)


def unhex(vector: dict[str, str]) -> tuple[bytes, int, bytes, bytes]:
    return (bytes.fromhex(vector["key"]), tweak_from_bytes(bytes.fromhex(vector["tweak"])),
            bytes.fromhex(vector["plaintext"]), bytes.fromhex(vector["ciphertext"]))


# -- CRC32C -------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "expected"), RFC3720_B4,
                         ids=["zeros", "ones", "incrementing", "decrementing", "check-123456789"])
def test_crc32c_rfc3720_vectors(data: bytes, expected: int) -> None:
    assert crc32c_value(data) == expected
    assert crc32c_value(memoryview(bytearray(data))) == expected
    assert list(crc32c_units(data, 0)) == [expected]          # whole value = one unit
    verify_crc32c_units(data, 0, [expected])
    assert crcmod_crc32c(data) == expected


def test_crc32c_per_unit_rfc3720() -> None:
    # The four 32-byte patterns back to back, one CRC per 32-byte unit.
    data = b"".join(d for d, _ in RFC3720_B4[:4])
    expected = [c for _, c in RFC3720_B4[:4]]
    assert list(crc32c_units(data, 32)) == expected
    verify_crc32c_units(data, 32, expected)
    verify_crc32c_units(data, 32, struct.pack("<4I", *expected))   # raw little-endian form


@pytest.mark.parametrize("unit", [512, 4096])
@pytest.mark.parametrize("units", [1, 3, 32])
def test_crc32c_units_match_crcmod(unit: int, units: int) -> None:
    rng = random.Random(unit * 1000 + units)
    data = rng.randbytes(unit * units)
    expected = [crcmod_crc32c(data[i:i + unit]) for i in range(0, len(data), unit)]
    got = crc32c_units(data, unit)
    assert isinstance(got, array) and got.itemsize == 4
    assert list(got) == expected
    verify_crc32c_units(data, unit, got)


@pytest.mark.parametrize("length", [0, 1, 17, 1000, 4096, 65539])
def test_crc32c_whole_value_matches_crcmod(length: int) -> None:
    data = random.Random(length).randbytes(length)
    assert crc32c_value(data) == crcmod_crc32c(data)
    assert list(crc32c_units(data, 0)) == [crcmod_crc32c(data)]


@pytest.mark.parametrize("bad_unit", [0, 5, 7])
def test_crc32c_verify_reports_first_bad_unit(bad_unit: int) -> None:
    data = bytearray(random.Random(bad_unit).randbytes(8 * 512))
    crcs = crc32c_units(data, 512)
    data[bad_unit * 512 + 100] ^= 0x01
    with pytest.raises(IntegrityError) as info:
        verify_crc32c_units(data, 512, crcs)
    assert info.value.unit == bad_unit
    assert info.value.expected == crcs[bad_unit]
    assert info.value.actual == crcmod_crc32c(bytes(data[bad_unit * 512:(bad_unit + 1) * 512]))


def test_crc32c_verify_argument_errors() -> None:
    with pytest.raises(ValueError):
        verify_crc32c_units(bytes(1024), 512, [0])               # too few CRCs
    with pytest.raises(ValueError):
        crc32c_units(bytes(1000), 512)                          # not whole units
    with pytest.raises(ValueError):
        verify_crc32c_units(b"abc", 0, [])                      # nothing to check against
    with pytest.raises(IntegrityError):
        verify_crc32c_units(b"abc", 0, [0])


def test_crcs_from_bytes_is_little_endian() -> None:
    assert list(crcs_from_bytes(bytes.fromhex("aa36918a"))) == [0x8A9136AA]


# -- AES-256-XTS: known answers ----------------------------------------------------------

@pytest.mark.parametrize("vector", IEEE, ids=[f"ieee1619-vector-{v['vector']}" for v in IEEE])
def test_xts_ieee1619_vectors(vector: dict[str, str]) -> None:
    key, tweak, plaintext, ciphertext = unhex(vector)
    assert len(plaintext) == 512
    with XtsCipher(key) as cipher:
        assert cipher.encrypt(plaintext, 512, tweak) == ciphertext
        assert cipher.decrypt(ciphertext, 512, tweak) == plaintext
    assert xts_encrypt(key, plaintext, 0, tweak) == ciphertext      # one unit = whole value
    assert reference_xts(key, plaintext, 512, tweak) == ciphertext  # the reference agrees too


def test_xts_ieee1619_vector_inside_a_multi_unit_buffer() -> None:
    # Vector 10 (sequence number 0xff) as the third unit of a run starting at LBA 0xfd.
    key, tweak, plaintext, ciphertext = unhex(IEEE[0])
    filler = random.Random(10).randbytes(2 * 512)
    out = xts_encrypt(key, filler + plaintext, 512, tweak - 2)
    assert out[1024:] == ciphertext
    assert out[:1024] == reference_xts(key, filler, 512, tweak - 2)


@pytest.mark.parametrize("vector", GLADMAN, ids=[v["vector"].replace(" ", "-") for v in GLADMAN])
def test_xts_ciphertext_stealing_vectors(vector: dict[str, str]) -> None:
    key, tweak, plaintext, ciphertext = unhex(vector)
    job = Job.value((Stage.ENCRYPT,), tweak=bytes.fromhex(vector["tweak"]), key_id=1)
    assert job.tweak == tweak and job.unit_size == 0
    assert xts_encrypt(key, plaintext, 0, tweak) == ciphertext
    assert xts_decrypt(key, ciphertext, 0, tweak) == plaintext


# -- AES-256-XTS: random data against cryptography --------------------------------------

TWEAKS = [0, 1, 0xFFFF_FFFF, 0x1234_5678_9ABC_DEF0, TWO_64 - 2, TWO_64 + 5, TWO_128 - 2]


@pytest.mark.parametrize("unit", [512, 4096])
@pytest.mark.parametrize("tweak", TWEAKS, ids=[hex(t) for t in TWEAKS])
def test_xts_units_match_reference(unit: int, tweak: int) -> None:
    rng = random.Random(unit ^ tweak)
    key = generate_xts_key(rng.randbytes)
    data = rng.randbytes(4 * unit)      # 4 units: crosses 2^64 (and wraps at 2^128) where chosen
    expected = reference_xts(key, data, unit, tweak)
    with XtsCipher(key) as cipher:
        assert cipher.encrypt(data, unit, tweak) == expected
        buf = bytearray(data)
        cipher.encrypt_into(memoryview(buf), unit, tweak)
        assert buf == expected
        cipher.decrypt_into(buf, unit, tweak)
        assert buf == data
        assert cipher.decrypt(expected, unit, tweak) == reference_xts(key, expected, unit, tweak, decrypt=True)


def test_xts_at_address_matches_buffer_path() -> None:
    key = generate_xts_key()
    data = random.Random(3).randbytes(8 * 512)
    raw = ctypes.create_string_buffer(data, len(data))
    with XtsCipher(key) as cipher:
        cipher.encrypt_at(ctypes.addressof(raw), len(data), 512, 77)
        assert raw.raw == cipher.encrypt(data, 512, 77) == reference_xts(key, data, 512, 77)
        cipher.decrypt_at(ctypes.addressof(raw), len(data), 512, 77)
        assert raw.raw == data


@pytest.mark.parametrize("length", [16, 17, 31, 100, 4095, 5000, 65536 + 7])
def test_xts_kv_values_of_any_length(length: int) -> None:
    rng = random.Random(length)
    key, tweak16, value = generate_xts_key(rng.randbytes), rng.randbytes(16), rng.randbytes(length)
    tweak = tweak_from_bytes(tweak16)
    sealed = xts_encrypt(key, value, 0, tweak)
    assert sealed == reference_xts(key, value, length, tweak)
    assert xts_decrypt(key, sealed, 0, tweak) == value


# -- keys and argument errors -----------------------------------------------------------

def test_generate_xts_key() -> None:
    keys = {generate_xts_key() for _ in range(8)}
    assert len(keys) == 8
    for key in keys:
        assert len(key) == 64 and key[:32] != key[32:]
        assert check_xts_key(key) == key


def test_generate_xts_key_retries_equal_halves() -> None:
    draws = [bytes(64), b"\x07" * 64, bytes(range(64))]
    calls = []

    def source(n: int) -> bytes:
        calls.append(n)
        return draws[len(calls) - 1]

    assert generate_xts_key(source) == bytes(range(64))
    assert calls == [64, 64, 64]


@pytest.mark.parametrize("key", [bytes(64), b"\xaa" * 64, bytes(32), bytes(65), b""],
                         ids=["ieee-vector-1-zero-key", "equal-halves", "short", "long", "empty"])
def test_bad_keys_rejected(key: bytes) -> None:
    with pytest.raises(ValueError):
        check_xts_key(key)
    with pytest.raises(ValueError):
        XtsCipher(key)


def test_xts_argument_errors() -> None:
    with XtsCipher(generate_xts_key()) as cipher:
        with pytest.raises(ValueError):
            cipher.encrypt(bytes(15), 15, 0)                  # shorter than one AES block
        with pytest.raises(ValueError):
            cipher.encrypt(bytes(1000), 512, 0)               # not whole units
        with pytest.raises(ValueError):
            cipher.encrypt(bytes(512), 512, TWO_128)          # tweak out of range
        with pytest.raises(TypeError):
            cipher.encrypt_into(memoryview(bytes(512)), 512, 0)   # read-only
        with pytest.raises(ValueError):
            tweak_from_bytes(bytes(15))
        assert "AES-256-XTS" in repr(cipher)
    with pytest.raises(XtsError):
        cipher.encrypt(bytes(512), 512, 0)                    # closed


def test_repr_never_shows_key() -> None:
    key = generate_xts_key()
    with XtsCipher(key) as cipher:
        assert key.hex() not in repr(cipher) and key.hex()[:16] not in repr(cipher)


# -- chains -------------------------------------------------------------------------------

def _ciphers(key: bytes) -> XtsCipher:
    return XtsCipher(key)


@pytest.mark.parametrize("unit", [512, 4096])
def test_chain_protect_encrypt_then_decrypt_verify(unit: int) -> None:
    rng = random.Random(unit)
    key, plain = generate_xts_key(rng.randbytes), rng.randbytes(8 * unit)
    buf = bytearray(plain)
    meta = bytearray(meta_capacity_for(len(buf)))
    with _ciphers(key) as cipher:
        write = Job.block(PROTECT_AND_ENCRYPT, lba=1000, block_size=unit, key_id=1)
        assert run_chain(write, memoryview(buf), memoryview(meta), cipher) == 8
        assert bytes(buf) == reference_xts(key, plain, unit, 1000)
        crcs = array("I", bytes(meta[:32]))
        assert list(crcs) == [crcmod_crc32c(plain[i:i + unit]) for i in range(0, len(plain), unit)]
        read = Job.block(DECRYPT_AND_VERIFY, lba=1000, block_size=unit, key_id=1)
        assert run_chain(read, memoryview(buf), memoryview(meta), cipher) == 8
        assert bytes(buf) == plain
        # Same ciphertext read back at the wrong LBA decrypts to garbage: caught by the CRC.
        buf[:] = reference_xts(key, plain, unit, 1000)
        with pytest.raises(IntegrityError) as info:
            run_chain(read._replace(tweak=1001), memoryview(buf), memoryview(meta), cipher)
        assert info.value.unit == 0


def test_chain_verify_then_encrypt_stops_on_bad_crc() -> None:
    key, plain = generate_xts_key(), random.Random(9).randbytes(4 * 512)
    meta = bytearray(meta_capacity_for(len(plain)))
    meta[:16] = crc32c_units(plain, 512).tobytes()
    buf = bytearray(plain)
    job = Job.block(VERIFY_AND_ENCRYPT, lba=0, block_size=512, key_id=1)
    with XtsCipher(key) as cipher:
        run_chain(job, memoryview(buf), memoryview(meta), cipher)
        assert bytes(buf) == reference_xts(key, plain, 512, 0)
        buf[:] = plain
        buf[3 * 512] ^= 0xFF
        with pytest.raises(IntegrityError) as info:
            run_chain(job, memoryview(buf), memoryview(meta), cipher)
        assert info.value.unit == 3
        assert buf[:512] == plain[:512]      # nothing was encrypted after the failed check


def test_check_job_rejects_what_cannot_run() -> None:
    ok = Job.block(PROTECT_AND_ENCRYPT, lba=0, block_size=512, key_id=1)
    assert check_job(ok, 4096, capacity=4096, meta_capacity=32) == 8
    bad = [
        (Job(()), 512),                                                     # no stage
        (Job((Stage.CRC_GENERATE,) * 5), 512),                              # too many stages
        (Job((9,)), 512),                                                   # type: ignore[arg-type]
        (ok, 8192),                                                         # larger than the buffer
        (ok, 1000),                                                         # not whole blocks
        (Job.block((Stage.CRC_GENERATE,), lba=0, block_size=16), 4096),     # CRCs do not fit
        (Job.value((Stage.ENCRYPT,), key_id=1), 15),                        # KV value < 16 bytes
        (Job.value((Stage.ENCRYPT,)), 64),                                  # no key
        (Job((Stage.ENCRYPT,), 512, 1, TWO_128), 512),                      # tweak out of range
    ]
    for job, length in bad:
        with pytest.raises(ValueError):
            check_job(job, length, capacity=4096, meta_capacity=32)


# -- descriptors ----------------------------------------------------------------------------

def test_descriptor_layouts() -> None:
    assert REQUEST.size == REQUEST.struct.size == 64
    assert COMPLETION.size == COMPLETION.struct.size == 16
    job = Job.block(PROTECT_AND_ENCRYPT, lba=TWO_64 + 3, block_size=4096, key_id=7)
    raw = job_request(42, job, 8192, 16384, 128, 0x1000, 0x9000)
    fields = REQUEST.unpack(raw)
    assert fields.kind == MsgKind.JOB and fields.job_id == 42 and fields.key_id == 7
    assert fields.stages[:fields.nstages] == bytes(PROTECT_AND_ENCRYPT)
    assert (fields.length, fields.unit_size, fields.capacity, fields.meta_capacity) == (8192, 4096, 16384, 128)
    assert (fields.data_off, fields.meta_off) == (0x1000, 0x9000)
    assert fields.tweak_lo | fields.tweak_hi << 64 == TWO_64 + 3
    key = generate_xts_key()
    message = add_key_request(3, key)
    assert len(message) == 64 + 64 and message[64:] == key and REQUEST.unpack(message).length == 64
    assert COMPLETION.unpack(completion(5, 1, 9)) == (5, 1, 9)
