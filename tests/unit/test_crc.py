"""CRC32C (NVMe/TCP header and data digests) against RFC 3720 and an independent implementation.

RFC 3720 appendix B.4 gives CRC32C results for four 32-byte patterns; "123456789" ->
0xE3069283 is the catalogue check value of CRC-32C.  crcmod's predefined 'crc-32c' is a
separate, table-driven implementation used as the reference on random data.
"""

from __future__ import annotations

import random
import struct

import crcmod.predefined
import pytest

from nvmeof.wire.crc import crc32c, digest_bytes, read_digest

RFC3720_B4 = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(0x00, 0x20)), 0x46DD794E),
    (bytes(range(0x1F, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),
]

reference = crcmod.predefined.mkCrcFun("crc-32c")


@pytest.mark.parametrize(("data", "expected"), RFC3720_B4, ids=["zeros", "ones", "incrementing",
                                                                "decrementing", "check-123456789"])
def test_rfc3720_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c(bytearray(data)) == expected
    assert crc32c(memoryview(data)) == expected
    assert reference(data) == expected  # the reference agrees with the RFC too


@pytest.mark.parametrize(("data", "expected"), RFC3720_B4[:4])
def test_rfc3720_digest_bytes_are_little_endian(data: bytes, expected: int) -> None:
    # RFC 3720 B.4 lists the CRC bytes as they appear on the wire; NVMe/TCP stores the
    # digest little-endian, e.g. zeros -> aa 36 91 8a.
    wire = digest_bytes(data)
    assert wire == struct.pack("<I", expected)
    assert read_digest(b"xx" + wire, 2) == expected


def test_empty_input() -> None:
    assert crc32c(b"") == 0 == reference(b"")


def test_matches_crcmod_on_random_data() -> None:
    rng = random.Random(3720)
    sizes = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 63, 64, 65, 72, 128, 1023, 1024, 4095, 4096, 4097,
             65536, 131072 + 3]
    sizes += [rng.randrange(1, 20000) for _ in range(200)]
    for size in sizes:
        data = rng.randbytes(size)
        assert crc32c(data) == reference(data), size
        assert digest_bytes(data) == struct.pack("<I", reference(data))


def test_continuation_equals_one_pass() -> None:
    rng = random.Random(7)
    for _ in range(50):
        a = rng.randbytes(rng.randrange(0, 300))
        b = rng.randbytes(rng.randrange(0, 300))
        assert crc32c(b, crc32c(a)) == crc32c(a + b) == reference(a + b)


def test_single_bit_flips_change_the_digest() -> None:
    data = bytearray(random.Random(1).randbytes(72))
    base = crc32c(data)
    for bit in range(len(data) * 8):
        data[bit // 8] ^= 1 << (bit % 8)
        assert crc32c(data) != base
        data[bit // 8] ^= 1 << (bit % 8)


def test_not_the_ieee_polynomial() -> None:
    import zlib

    assert crc32c(b"123456789") != zlib.crc32(b"123456789")  # 0xCBF43926 is CRC-32/IEEE
