"""DHHC-1 secrets: ``DHHC-1:hh:<base64(key || CRC-32 LE)>:``.

``hh`` selects the key transform: 00 = none (the key is used as it is), 01/02/03 =
HMAC-SHA-256/384/512 keyed with the secret over ``NQN || "NVMe-over-Fabrics"`` (the host
secret is transformed with the host NQN, the controller secret with the subsystem NQN).
The key is 32, 48 or 64 bytes; the CRC-32 (the zlib/IEEE polynomial) of the key follows
it, little-endian.  Same rules as Linux ``drivers/nvme/common/auth.c`` and nvme-cli's
``gen-dhchap-key`` / ``check-dhchap-key``.

A :class:`DhchapKey` never shows its material in ``repr``/``str`` so it cannot leak into a
log line by accident.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
import zlib
from dataclasses import dataclass, field

from .constants import NVMF_MAGIC, HashId

PREFIX = "DHHC-1"
KEY_LENGTHS = (32, 48, 64)
CRC_SIZE = 4
TRANSFORM_NONE = 0


class SecretError(ValueError):
    """A DHHC-1 secret is malformed (the message never contains the secret)."""


@dataclass(frozen=True)
class DhchapKey:
    key: bytes = field(repr=False)
    transform: int = TRANSFORM_NONE  # 0 none, else a HashId

    def __post_init__(self) -> None:
        if len(self.key) not in KEY_LENGTHS:
            raise SecretError(f"DH-HMAC-CHAP key must be 32, 48 or 64 bytes, not {len(self.key)}")
        if self.transform != TRANSFORM_NONE and self.transform not in HashId._value2member_map_:
            raise SecretError(f"DHHC-1 transform {self.transform:02d} unknown (00..03)")

    def __str__(self) -> str:
        return f"DhchapKey(<{len(self.key)} bytes>, transform={self.transform:02d})"

    @classmethod
    def parse(cls, text: str) -> DhchapKey:
        text = text.strip()
        parts = text.split(":")
        # "DHHC-1:hh:b64:" splits into 4 parts, the last empty; the trailing ':' is optional
        if len(parts) == 3:
            parts.append("")
        if len(parts) != 4 or parts[0] != PREFIX or parts[3] != "":
            raise SecretError("a DH-HMAC-CHAP secret has the form DHHC-1:hh:<base64>:")
        if len(parts[1]) != 2 or not parts[1].isdigit():
            raise SecretError("DHHC-1 transform must be two digits 00..03")
        transform = int(parts[1])
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raise SecretError("DHHC-1 secret is not valid base64") from None
        if len(raw) - CRC_SIZE not in KEY_LENGTHS:
            raise SecretError(f"DHHC-1 key must be 32, 48 or 64 bytes, got {max(len(raw) - CRC_SIZE, 0)}")
        key, crc = raw[:-CRC_SIZE], raw[-CRC_SIZE:]
        if struct.unpack("<I", crc)[0] != zlib.crc32(key):
            raise SecretError("DHHC-1 secret CRC mismatch")
        return cls(key, transform)

    def format(self) -> str:
        raw = self.key + struct.pack("<I", zlib.crc32(self.key))
        return f"{PREFIX}:{self.transform:02d}:{base64.b64encode(raw).decode('ascii')}:"

    @classmethod
    def generate(cls, length: int = 32, transform: int = TRANSFORM_NONE) -> DhchapKey:
        return cls(os.urandom(length), transform)

    def transformed(self, nqn: str) -> bytes:
        """The key as used for the HMAC of a response (transformed with ``nqn``)."""
        if self.transform == TRANSFORM_NONE:
            return self.key
        digest = HashId(self.transform).digest_name
        return hmac.new(self.key, nqn.encode() + NVMF_MAGIC, digest).digest()


def validate_secret(text: str) -> DhchapKey:
    """Parse ``text`` or raise :class:`SecretError` (whose message never echoes the secret)."""
    return DhchapKey.parse(text)
