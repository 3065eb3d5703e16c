"""Who must authenticate, with which secrets, hashes and DH groups (one host entry)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

from .constants import DhGroupId, HashId
from .secret import DhchapKey

DEFAULT_HASHES: tuple[HashId, ...] = (HashId.SHA256, HashId.SHA384, HashId.SHA512)
DEFAULT_DHGROUPS: tuple[DhGroupId, ...] = (
    DhGroupId.NULL, DhGroupId.FFDHE2048, DhGroupId.FFDHE3072, DhGroupId.FFDHE4096,
    DhGroupId.FFDHE6144, DhGroupId.FFDHE8192)


@dataclass(frozen=True)
class AuthPolicy:
    """DH-HMAC-CHAP settings of one host on one subsystem.

    ``hashes`` / ``dhgroups`` are in order of preference (the controller picks the first
    one the host also offers), like nvmet's per-host ``dhchap_hash`` / ``dhchap_dhgroup``.
    A ``ctrl_key`` allows bidirectional authentication when the host asks for it.
    """

    host_key: DhchapKey = field(repr=False)
    ctrl_key: DhchapKey | None = field(default=None, repr=False)
    hashes: tuple[HashId, ...] = DEFAULT_HASHES
    dhgroups: tuple[DhGroupId, ...] = DEFAULT_DHGROUPS

    def __post_init__(self) -> None:
        if not self.hashes:
            raise ValueError("at least one DH-HMAC-CHAP hash must be allowed")
        if not self.dhgroups:
            raise ValueError("at least one DH group must be allowed")

    @property
    def bidirectional(self) -> bool:
        return self.ctrl_key is not None


_seq = itertools.count(int.from_bytes(os.urandom(4), "little") or 1)


def next_seqnum() -> int:
    """A non-zero 32-bit sequence number (0 means 'no bidirectional authentication')."""
    while True:
        value = next(_seq) & 0xFFFFFFFF
        if value:
            return value
