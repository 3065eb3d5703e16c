"""Offload stages as pure functions over buffers, and the job that chains them.

A payload is a sequence of *data units*: the logical blocks of a block namespace, or one
unit spanning a whole KV value (``unit_size == 0``).  The same unit size drives both
engines' stages:

* CRC32C generate / verify: one 32-bit CRC per unit (``crc32c`` package, hardware CRC;
  ``crcmod``'s predefined ``crc-32c`` is the reference in tests).  CRC values live in a
  separate *metadata* area as native ``uint32`` (never on the wire), so a chain can verify
  the CRCs the caller supplied or return the CRCs it generated.
* AES-256-XTS encrypt / decrypt: data unit ``i`` uses tweak ``tweak + i`` (block: the
  starting LBA; KV: a caller-chosen 16-byte value), see :mod:`.xts`.

A :class:`Job` names the chain, e.g. ``(CRC_GENERATE, ENCRYPT)`` on write and
``(DECRYPT, CRC_VERIFY)`` on read; :func:`run_chain` runs it in place and is shared by the
inline engine and the worker processes, so both compute exactly the same bytes.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import Final, NamedTuple

from crc32c import crc32c as _crc32c

from .errors import IntegrityError
from .xts import TWEAK_LIMIT, XTS_MAX_UNIT, XTS_MIN_UNIT, XtsCipher, tweak_from_bytes

Buffer = bytes | bytearray | memoryview

CRC_BYTES = 4                  # one CRC32C value per data unit in the metadata area
MIN_CRC_UNIT = 512             # smallest block size: sizes the metadata area of a slot
MAX_STAGES = 4                 # stages per job (fixed-size descriptor)
WHOLE_PAYLOAD = 0              # unit_size meaning "the whole payload is one data unit"
_CRC_FORMAT: Final = "I"       # native uint32 (the metadata area never leaves this host)


class Stage(IntEnum):
    """One offload step; values travel as one byte in the worker descriptor."""

    CRC_GENERATE = 1   # metadata[i] = CRC32C(unit i)
    CRC_VERIFY = 2     # raise IntegrityError unless metadata[i] == CRC32C(unit i) for all i
    ENCRYPT = 3        # AES-256-XTS encrypt every unit in place
    DECRYPT = 4        # AES-256-XTS decrypt every unit in place


CRYPTO_STAGES = frozenset({Stage.ENCRYPT, Stage.DECRYPT})
CRC_STAGES = frozenset({Stage.CRC_GENERATE, Stage.CRC_VERIFY})

# Typical chains.  Writes protect then encrypt; reads decrypt then check.
PROTECT_AND_ENCRYPT = (Stage.CRC_GENERATE, Stage.ENCRYPT)
VERIFY_AND_ENCRYPT = (Stage.CRC_VERIFY, Stage.ENCRYPT)
DECRYPT_AND_VERIFY = (Stage.DECRYPT, Stage.CRC_VERIFY)


class Job(NamedTuple):
    """What to do to one payload.  A NamedTuple: cheap to build per I/O.

    ``unit_size`` 0 means one data unit spanning the whole payload (KV values);
    ``key_id`` is what the engine's ``register_key`` returned (0 = no key);
    ``tweak`` is the XTS data unit sequence number of the first unit.
    """

    stages: tuple[Stage, ...]
    unit_size: int = WHOLE_PAYLOAD
    key_id: int = 0
    tweak: int = 0

    @classmethod
    def block(cls, stages: Iterable[Stage], *, lba: int, block_size: int, key_id: int = 0) -> Job:
        """A job over logical blocks: one unit per block, tweak = LBA of the first block."""
        return cls(tuple(stages), block_size, key_id, lba)

    @classmethod
    def value(cls, stages: Iterable[Stage], *, tweak: Buffer | int = 0, key_id: int = 0) -> Job:
        """A job over one KV value: a single unit, tweak = a caller-chosen 16-byte value."""
        number = tweak if isinstance(tweak, int) else tweak_from_bytes(tweak)
        return cls(tuple(stages), WHOLE_PAYLOAD, key_id, number)


def unit_count(length: int, unit_size: int) -> int:
    """Number of data units of a payload (a whole-payload unit counts once, even if empty)."""
    return 1 if unit_size == WHOLE_PAYLOAD else length // unit_size


def meta_capacity_for(capacity: int) -> int:
    """Bytes of CRC metadata a slot of ``capacity`` data bytes carries."""
    return max(1, capacity // MIN_CRC_UNIT) * CRC_BYTES


_chain_cache: dict[tuple[int, ...], tuple[bool, bool]] = {}


def chain_kind(stages: tuple[int, ...]) -> tuple[bool, bool]:
    """``(has_crc, has_crypto)`` of a validated chain (memoised: chains are few)."""
    kind = _chain_cache.get(stages)
    if kind is None:
        if not stages or len(stages) > MAX_STAGES:
            raise ValueError(f"a job has 1..{MAX_STAGES} stages, got {len(stages)}")
        for stage in stages:
            if stage not in Stage._value2member_map_:
                raise ValueError(f"unknown stage {stage!r}")
        kind = (any(s in CRC_STAGES for s in stages), any(s in CRYPTO_STAGES for s in stages))
        _chain_cache[tuple(stages)] = kind
    return kind


def check_job(job: Job, length: int, *, capacity: int, meta_capacity: int) -> int:
    """Validate a job for a payload of ``length`` bytes; return its unit count.

    Raises ``ValueError`` for anything the engine could not run: these are bugs or
    configuration errors of the caller, detected before any work is queued.
    """
    has_crc, has_crypto = chain_kind(job.stages)
    if length > capacity:
        raise ValueError(f"payload of {length} bytes exceeds the {capacity}-byte buffer")
    unit = job.unit_size
    if unit == WHOLE_PAYLOAD:
        units = 1
    elif unit < 0 or length == 0 or length % unit:
        raise ValueError(f"{length} bytes is not a whole, non-zero number of {unit}-byte units")
    else:
        units = length // unit
    if has_crc and units * CRC_BYTES > meta_capacity:
        raise ValueError(f"{units} CRCs do not fit the {meta_capacity}-byte metadata area "
                         f"(units must be >= {MIN_CRC_UNIT} bytes)")
    if has_crypto:
        effective = unit or length
        if not XTS_MIN_UNIT <= effective <= XTS_MAX_UNIT:
            raise ValueError(f"XTS data unit of {effective} bytes is outside [{XTS_MIN_UNIT}, {XTS_MAX_UNIT}]")
        if job.key_id <= 0:
            raise ValueError("an encrypt/decrypt stage needs a registered key id")
        if not 0 <= job.tweak < TWEAK_LIMIT:
            raise ValueError("XTS tweak must be in [0, 2**128)")
    return units


# -- CRC32C -----------------------------------------------------------------------------

def crc32c_value(data: Buffer) -> int:
    """CRC32C of a whole buffer (init and final XOR 0xFFFFFFFF, as NVMe/TCP and RFC 3720)."""
    return _crc32c(data)


def crc32c_units_into(data: Buffer, unit_size: int, out: memoryview | array) -> int:
    """Write one CRC32C per data unit into ``out`` (uint32 items); return the unit count."""
    view = memoryview(data).cast("B")
    length = view.nbytes
    if unit_size == WHOLE_PAYLOAD:
        out[0] = _crc32c(view)
        return 1
    if unit_size < 0 or length % unit_size:
        raise ValueError(f"{length} bytes is not a whole number of {unit_size}-byte units")
    crc = _crc32c
    for index, offset in enumerate(range(0, length, unit_size)):
        out[index] = crc(view[offset:offset + unit_size])
    return length // unit_size


def crc32c_units(data: Buffer, unit_size: int) -> array:
    """One CRC32C per data unit, as an ``array('I')`` (``unit_size`` 0: one for the whole)."""
    out = array(_CRC_FORMAT, bytes(CRC_BYTES * unit_count(len(memoryview(data).cast("B")), unit_size)))
    crc32c_units_into(data, unit_size, out)
    return out


def crc32c_mismatch(data: Buffer, unit_size: int, expected: Sequence[int]) -> tuple[int, int, int] | None:
    """First data unit whose CRC32C differs from ``expected``: ``(unit, expected, actual)``."""
    view = memoryview(data).cast("B")
    if unit_size == WHOLE_PAYLOAD:
        if not len(expected):
            raise ValueError("no CRC to check the value against")
        actual = _crc32c(view)
        return None if actual == expected[0] else (0, expected[0], actual)
    length = view.nbytes
    if unit_size < 0 or length % unit_size:
        raise ValueError(f"{length} bytes is not a whole number of {unit_size}-byte units")
    if len(expected) < length // unit_size:
        raise ValueError(f"{length // unit_size} units but only {len(expected)} CRCs to check")
    crc = _crc32c
    for index, offset in enumerate(range(0, length, unit_size)):
        actual = crc(view[offset:offset + unit_size])
        if actual != expected[index]:
            return index, expected[index], actual
    return None


def verify_crc32c_units(data: Buffer, unit_size: int, expected: Sequence[int] | Buffer) -> None:
    """Raise :class:`IntegrityError` at the first unit whose CRC32C is not the expected one.

    ``expected`` is a sequence of ints or the raw little-endian uint32 bytes.
    """
    values = crcs_from_bytes(expected) if isinstance(expected, bytes | bytearray) else expected
    bad = crc32c_mismatch(data, unit_size, values)
    if bad is not None:
        raise IntegrityError(*bad)


def crcs_from_bytes(raw: Buffer) -> array:
    """Little-endian uint32 CRCs (e.g. protection information read from disk) as an array."""
    out = array(_CRC_FORMAT)
    out.frombytes(bytes(raw))
    if out.itemsize != CRC_BYTES:  # pragma: no cover - every supported platform has 4-byte 'I'
        raise RuntimeError("array('I') is not 32-bit on this platform")
    return out


# -- AES-256-XTS convenience (tests, tools); engines use XtsCipher directly --------------

def xts_encrypt(key: bytes | XtsCipher, data: Buffer, unit_size: int, tweak: int) -> bytes:
    """Encrypt ``data`` as consecutive data units (``unit_size`` 0: one unit) from ``tweak``."""
    unit = unit_size or len(data)
    if isinstance(key, XtsCipher):
        return key.encrypt(data, unit, tweak)
    with XtsCipher(key) as cipher:
        return cipher.encrypt(data, unit, tweak)


def xts_decrypt(key: bytes | XtsCipher, data: Buffer, unit_size: int, tweak: int) -> bytes:
    unit = unit_size or len(data)
    if isinstance(key, XtsCipher):
        return key.decrypt(data, unit, tweak)
    with XtsCipher(key) as cipher:
        return cipher.decrypt(data, unit, tweak)


# -- the chain --------------------------------------------------------------------------

def run_chain(job: Job, data: memoryview, meta: memoryview, cipher: XtsCipher | None,
              *, address: int | None = None) -> int:
    """Run ``job``'s stages in order, in place over ``data``; return the unit count.

    ``data`` is exactly the payload (writable); ``meta`` is the writable metadata area
    (uint32 CRCs: read by CRC_VERIFY, written by CRC_GENERATE); ``cipher`` is the key's
    cipher when the chain encrypts or decrypts; ``address`` is ``data``'s address when the
    caller already knows it (the workers' shared memory), saving a ctypes export per stage.
    Raises :class:`IntegrityError` from CRC_VERIFY; stages after it do not run.
    """
    length = data.nbytes
    unit = job.unit_size
    units = unit_count(length, unit)
    crcs = meta[:units * CRC_BYTES].cast(_CRC_FORMAT)
    try:
        for stage in job.stages:
            if stage == Stage.CRC_GENERATE:
                crc32c_units_into(data, unit, crcs)
            elif stage == Stage.CRC_VERIFY:
                bad = crc32c_mismatch(data, unit, crcs)
                if bad is not None:
                    raise IntegrityError(*bad)
            else:
                if cipher is None:
                    raise ValueError("encrypt/decrypt stage without a key")
                xts_unit = unit or length
                if address is None:
                    (cipher.encrypt_into if stage == Stage.ENCRYPT else cipher.decrypt_into)(data, xts_unit, job.tweak)
                elif stage == Stage.ENCRYPT:
                    cipher.encrypt_at(address, length, xts_unit, job.tweak)
                else:
                    cipher.decrypt_at(address, length, xts_unit, job.tweak)
    finally:
        crcs.release()
    return units
