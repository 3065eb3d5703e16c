"""DH-HMAC-CHAP (NVMe TP 8006, NVMe Base 2.x "Authentication") identifiers.

Values from the NVMe Base specification, as also spelled by Linux ``include/linux/nvme.h``
and SPDK ``nvmf_spec.h``.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

# Authentication Send / Receive (Fabrics command types 05h / 06h) security protocol fields
SECP_DHCHAP = 0xE9  # NVMe In-Band Authentication security protocol
SPSP0_DHCHAP = 0x01
SPSP1_DHCHAP = 0x01

# Connect response DW0: AUTHREQ bits (ATR: authentication required, ASCR: secure channel required)
AUTHREQ_ATR = 1 << 17
AUTHREQ_ASCR = 1 << 18

DHCHAP_AUTH_ID = 0x01  # protocol descriptor AUTHID for DH-HMAC-CHAP
SC_C_NONE = 0x00  # Negotiate SC_C: no secure channel concatenation
DESCRIPTOR_HASH_SLOTS = 30  # idlist[0..29] hash ids, idlist[30..59] DH group ids
DESCRIPTOR_IDLIST_SIZE = 60
NVMF_MAGIC = b"NVMe-over-Fabrics"  # key transform suffix
HOST_ROLE = b"HostHost"
CONTROLLER_ROLE = b"Controller"


class AuthType(IntEnum):
    COMMON = 0x00
    DHCHAP = 0x01


class AuthMessage(IntEnum):
    NEGOTIATE = 0x00
    CHALLENGE = 0x01
    REPLY = 0x02
    SUCCESS1 = 0x03
    SUCCESS2 = 0x04
    FAILURE2 = 0xF0
    FAILURE1 = 0xF1


class HashId(IntEnum):
    SHA256 = 0x01
    SHA384 = 0x02
    SHA512 = 0x03

    @property
    def digest_name(self) -> str:
        return _HASH_NAMES[self]

    @property
    def length(self) -> int:
        return hashlib.new(_HASH_NAMES[self]).digest_size

    @property
    def label(self) -> str:
        return f"hmac({_HASH_NAMES[self]})"


_HASH_NAMES = {HashId.SHA256: "sha256", HashId.SHA384: "sha384", HashId.SHA512: "sha512"}


class DhGroupId(IntEnum):
    NULL = 0x00
    FFDHE2048 = 0x01
    FFDHE3072 = 0x02
    FFDHE4096 = 0x03
    FFDHE6144 = 0x04
    FFDHE8192 = 0x05

    @property
    def label(self) -> str:
        return "null" if self is DhGroupId.NULL else self.name.lower()


class FailureReason(IntEnum):
    FAILED = 0x01


class FailureExplanation(IntEnum):
    """Reason code explanations (reason code 01h, authentication failure)."""

    FAILED = 0x01
    NOT_USABLE = 0x02  # authentication protocol not usable
    CONCAT_MISMATCH = 0x03  # secure channel concatenation mismatch
    HASH_UNUSABLE = 0x04
    DHGROUP_UNUSABLE = 0x05
    INCORRECT_PAYLOAD = 0x06
    INCORRECT_MESSAGE = 0x07


def hash_by_name(name: str) -> HashId:
    """'sha256', 'hmac(sha256)' or 'SHA-256' -> HashId."""
    key = name.lower().replace("-", "").removeprefix("hmac(").removesuffix(")")
    for hid, digest in _HASH_NAMES.items():
        if digest == key:
            return hid
    raise ValueError(f"unknown DH-HMAC-CHAP hash {name!r} (sha256, sha384, sha512)")


def dhgroup_by_name(name: str) -> DhGroupId:
    key = name.lower()
    for gid in DhGroupId:
        if gid.label == key:
            return gid
    raise ValueError(f"unknown DH group {name!r} (null, ffdhe2048, ffdhe3072, ffdhe4096, ffdhe6144, ffdhe8192)")
