"""DH-HMAC-CHAP computations: RFC 7919 groups, augmented challenge, responses.

Constructions (NVMe Base 2.x "DH-HMAC-CHAP protocol"; Linux drivers/nvme/common/auth.c and
target/auth.c implement the same):

* ffdhe groups: RFC 7919, generator 2.  The prime is built from its defining formula
  ``p = 2^b - 2^(b-64) + (floor(2^(b-130) * e) + X) * 2^64 - 1`` with the RFC's X per group,
  so no 8192-bit hex literal is copied; tests check the RFC's published properties.
* public values and the shared secret are big-endian, padded to the prime's size.
* augmented challenge ``C' = HMAC_H(key = H(shared secret), C)`` (ffdhe groups only; with
  the NULL group the challenge is used as it is).
* host response ``HMAC_H(Kh', C1' || S1 (LE32) || T_ID (LE16) || SC_C (1 byte) || "HostHost"
  || hostnqn || 00h || subsysnqn)``.
* controller response ``HMAC_H(Kc', C2' || S2 || T_ID || SC_C || "Controller" || subsysnqn
  || 00h || hostnqn)``; Kh'/Kc' are the DHHC-1 keys transformed with the host / subsystem NQN.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from functools import cache

from cryptography.hazmat.primitives.asymmetric import dh

from .constants import CONTROLLER_ROLE, HOST_ROLE, DhGroupId, HashId

GENERATOR = 2
# RFC 7919 section A: the X added to floor(2^(b-130) * e) for each group of b bits
_RFC7919_X = {
    DhGroupId.FFDHE2048: (2048, 560316),
    DhGroupId.FFDHE3072: (3072, 2625351),
    DhGroupId.FFDHE4096: (4096, 5736041),
    DhGroupId.FFDHE6144: (6144, 15705020),
    DhGroupId.FFDHE8192: (8192, 10965728),
}
_GUARD_BITS = 64


def _e_scaled(bits: int) -> int:
    """floor(e * 2^bits), from the series sum 1/k! in fixed point with guard bits."""
    one = 1 << (bits + _GUARD_BITS)
    total, term, k = 0, one, 0
    while term:
        total += term
        k += 1
        term //= k
    return total >> _GUARD_BITS


@cache
def ffdhe_prime(group: DhGroupId) -> int:
    bits, x = _RFC7919_X[group]
    return (1 << bits) - (1 << (bits - 64)) + (_e_scaled(bits - 130) + x) * (1 << 64) - 1


def group_size(group: DhGroupId) -> int:
    """Bytes of a public value (DHVLEN) in ``group``; 0 for the NULL group."""
    return 0 if group is DhGroupId.NULL else _RFC7919_X[group][0] // 8


@cache
def _parameters(group: DhGroupId) -> dh.DHParameters:
    return dh.DHParameterNumbers(ffdhe_prime(group), GENERATOR).parameters()


class DhExchange:
    """One ephemeral DH key pair in an ffdhe group."""

    def __init__(self, group: DhGroupId) -> None:
        if group is DhGroupId.NULL:
            raise ValueError("the NULL group has no DH exchange")
        self.group = group
        self.size = group_size(group)
        self._key = _parameters(group).generate_private_key()

    def public_value(self) -> bytes:
        return self._key.public_key().public_numbers().y.to_bytes(self.size, "big")

    def shared_secret(self, peer_value: bytes) -> bytes:
        """Raise ValueError if the peer's value has the wrong size or is out of range."""
        if len(peer_value) != self.size:
            raise ValueError(f"DH value of {len(peer_value)} bytes, expected {self.size}")
        y = int.from_bytes(peer_value, "big")
        p = ffdhe_prime(self.group)
        if not 1 < y < p - 1:
            raise ValueError("DH public value out of range")
        peer = dh.DHPublicNumbers(y, _parameters(self.group).parameter_numbers()).public_key()
        return self._key.exchange(peer).rjust(self.size, b"\0")


def augmented_challenge(hash_id: HashId, shared_secret: bytes | None, challenge: bytes) -> bytes:
    if shared_secret is None:
        return challenge
    name = hash_id.digest_name
    return hmac.new(hashlib.new(name, shared_secret).digest(), challenge, name).digest()


def _response(hash_id: HashId, key: bytes, challenge: bytes, seqnum: int, t_id: int, sc_c: int,
              role: bytes, first_nqn: str, second_nqn: str) -> bytes:
    mac = hmac.new(key, digestmod=hash_id.digest_name)
    mac.update(challenge)
    mac.update(struct.pack("<IHB", seqnum, t_id, sc_c))
    mac.update(role)
    mac.update(first_nqn.encode())
    mac.update(b"\0")
    mac.update(second_nqn.encode())
    return mac.digest()


def host_response(hash_id: HashId, host_key: bytes, challenge: bytes, seqnum: int, t_id: int,
                  hostnqn: str, subnqn: str, sc_c: int = 0) -> bytes:
    """``challenge`` is already augmented; ``host_key`` already transformed."""
    return _response(hash_id, host_key, challenge, seqnum, t_id, sc_c, HOST_ROLE, hostnqn, subnqn)


def controller_response(hash_id: HashId, ctrl_key: bytes, challenge: bytes, seqnum: int, t_id: int,
                        hostnqn: str, subnqn: str, sc_c: int = 0) -> bytes:
    return _response(hash_id, ctrl_key, challenge, seqnum, t_id, sc_c, CONTROLLER_ROLE, subnqn, hostnqn)
