"""CRC32C (Castagnoli) for NVMe/TCP header and data digests.

The fast path is the ``crc32c`` package (SSE4.2 / hardware CRC instructions, accepts any
buffer); ``crcmod``'s predefined ``crc-32c`` is the independent reference used in tests.
Digests are stored little-endian.
"""

from __future__ import annotations

import struct

from crc32c import crc32c as _crc32c

_DIGEST = struct.Struct("<I")


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C with init 0xFFFFFFFF and final XOR 0xFFFFFFFF; ``value`` continues a previous CRC."""
    return _crc32c(data, value)


def digest_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The 4-byte little-endian digest as it travels on the wire."""
    return _DIGEST.pack(_crc32c(data))


def read_digest(buf: bytes | bytearray | memoryview, offset: int) -> int:
    return int(_DIGEST.unpack_from(buf, offset)[0])
