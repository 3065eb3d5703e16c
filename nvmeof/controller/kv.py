"""NVMe Key Value command set (CSI 01h): decode, validate, List buffer format.

Key: up to 16 bytes, bytes 0-7 in CDW2-CDW3 and bytes 8-15 in CDW14-CDW15, each dword
little-endian (key byte 0 = least significant byte of CDW2), as xNVMe and SPDK lay it
out.  CDW11 bits 7:0 = key length, bits 15:8 = options; CDW10 = value size (Store) or
host buffer size (Retrieve, List).  Retrieve completes with DW0 = the whole value's
length, so a host can see that its buffer truncated the value.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..errors import (
    DataSglLengthInvalid,
    InvalidField,
    InvalidOpcode,
    KvInvalidKeySize,
    KvInvalidValueSize,
)
from ..wire.constants import KvOpcode, NvmOpcode
from ..wire.layout import Layout
from ..wire.queue_entry import (
    SQE_CDW2,
    SQE_CDW3,
    SQE_CDW10,
    SQE_CDW11,
    SQE_CDW14,
    SQE_CDW15,
    SQE_CID,
    SQE_NSID,
    SQE_OPCODE,
    SQE_SGL_LEN,
)
from .backend import IoCommand

if TYPE_CHECKING:
    from ..transport.controller_side import CommandReceived
    from .controller import Controller
    from .model import Namespace

KEY_MAX = 16
KEY_LENGTH_MASK = 0xFF
OPTIONS_SHIFT = 8
OPTIONS_MASK = 0xFF
STORE_MUST_EXIST = 0x01  # "do not store if the key does not exist"
STORE_MUST_NOT_EXIST = 0x02  # "do not store if the key exists"
STORE_COMPRESS_HINT = 0x04
RETRIEVE_RAW = 0x01
KV_OPCODES = frozenset(int(op) for op in KvOpcode)
_KEY = struct.Struct("<IIII")

LIST_HEADER = Layout("KvListHeader", 4, [("nkeys", "I", 0)])
LIST_ENTRY_HEADER = Layout("KvListEntryHeader", 2, [("key_length", "H", 0)])
LIST_ALIGNMENT = 4


def key_from_sqe(sqe: tuple, length: int) -> bytes:
    return _KEY.pack(sqe[SQE_CDW2], sqe[SQE_CDW3], sqe[SQE_CDW14], sqe[SQE_CDW15])[:length]


def key_to_dwords(key: bytes) -> tuple[int, int, int, int]:
    """(CDW2, CDW3, CDW14, CDW15) carrying ``key``, for hosts."""
    if len(key) > KEY_MAX:
        raise ValueError(f"KV keys are at most {KEY_MAX} bytes")
    return _KEY.unpack(key.ljust(KEY_MAX, b"\0"))


def list_entry_size(key_length: int) -> int:
    raw = LIST_ENTRY_HEADER.size + key_length
    return -(-raw // LIST_ALIGNMENT) * LIST_ALIGNMENT


def pack_list(keys: list[bytes], buffer_size: int) -> bytes:
    """List data: key count, then (u16 length, key, pad to 4) per key, as many as fit."""
    if buffer_size < LIST_HEADER.size:
        return b""
    out = bytearray(LIST_HEADER.size)
    count = 0
    for key in keys:
        size = list_entry_size(len(key))
        if len(out) + size > buffer_size:
            break
        entry = bytearray(size)
        LIST_ENTRY_HEADER.pack_into(entry, 0, key_length=len(key))
        entry[LIST_ENTRY_HEADER.size:LIST_ENTRY_HEADER.size + len(key)] = key
        out += entry
        count += 1
    LIST_HEADER.pack_into(out, 0, nkeys=count)
    return bytes(out)


def unpack_list(data: bytes) -> list[bytes]:
    """Keys of a List buffer (host side)."""
    if len(data) < LIST_HEADER.size:
        return []
    (count,) = LIST_HEADER.struct.unpack_from(data, 0)
    keys: list[bytes] = []
    pos = LIST_HEADER.size
    for _ in range(count):
        (length,) = LIST_ENTRY_HEADER.struct.unpack_from(data, pos)
        start = pos + LIST_ENTRY_HEADER.size
        keys.append(bytes(data[start:start + length]))
        pos += list_entry_size(length)
    return keys


def max_keys_in(buffer_size: int) -> int:
    """Upper bound of keys a List buffer can hold (smallest entry: 1-byte key)."""
    return max(0, (buffer_size - LIST_HEADER.size) // list_entry_size(1))


def decode_kv(ctrl: Controller, qid: int, ev: CommandReceived, ns: Namespace) -> IoCommand:
    sqe = ev.sqe
    opcode = sqe[SQE_OPCODE]
    if opcode == NvmOpcode.FLUSH:  # Flush (00h) is common to every I/O command set (Base spec)
        return IoCommand(opcode, sqe[SQE_NSID], sqe[SQE_CID], qid=qid, cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn)
    if opcode not in KV_OPCODES:
        raise InvalidOpcode(f"opcode {opcode:#x} is not a KV command")
    cdw11 = sqe[SQE_CDW11]
    key_length = cdw11 & KEY_LENGTH_MASK
    options = (cdw11 >> OPTIONS_SHIFT) & OPTIONS_MASK
    min_key = 0 if opcode == KvOpcode.LIST else 1
    if not min_key <= key_length <= min(ns.max_key_size, KEY_MAX):
        raise KvInvalidKeySize(f"key length {key_length} outside {min_key}..{ns.max_key_size}")
    key = key_from_sqe(sqe, key_length)
    common = dict(qid=qid, cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn, key=key, options=options,
                  sqe=sqe)
    nsid, cid = sqe[SQE_NSID], sqe[SQE_CID]
    if opcode == KvOpcode.STORE:
        value_size = sqe[SQE_CDW10]
        if options & STORE_MUST_EXIST and options & STORE_MUST_NOT_EXIST:
            raise InvalidField("Store options 'must exist' and 'must not exist' both set")
        if value_size > ns.max_value_size:
            raise KvInvalidValueSize(f"value of {value_size} bytes exceeds {ns.max_value_size}")
        data = ev.data if ev.data is not None else b""
        if len(data) != value_size:
            raise DataSglLengthInvalid(f"Store value size {value_size} but {len(data)} bytes of data")
        return IoCommand(opcode, nsid, cid, data=data, **common)
    if opcode in (KvOpcode.RETRIEVE, KvOpcode.LIST):
        buffer_size = sqe[SQE_CDW10]
        if buffer_size > sqe[SQE_SGL_LEN]:
            raise DataSglLengthInvalid(f"host buffer size {buffer_size} exceeds the SGL ({sqe[SQE_SGL_LEN]})")
        if buffer_size > ctrl.target.config.mdts_bytes:
            raise InvalidField(f"host buffer of {buffer_size} bytes exceeds MDTS")
        return IoCommand(opcode, nsid, cid, read_length=buffer_size, **common)
    return IoCommand(opcode, nsid, cid, **common)
