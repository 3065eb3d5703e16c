"""Valid host sequences (fuzz seeds besides the corpus) and small synchronous backends."""

from __future__ import annotations

import struct
from typing import Any

from nvmeof.controller.backend import Done, IoCommand
from nvmeof.wire.constants import KvStatus, NvmOpcode, StatusCodeType, encode_status

from . import wire as w

BLOCK = 512
KV_MAX_KEYS = 256
MUST_EXIST, MUST_NOT_EXIST = 0x01, 0x02
_LBA_RANGE = encode_status(StatusCodeType.GENERIC, 0x80, True)
_NO_KEY = encode_status(StatusCodeType.GENERIC, KvStatus.KEY_DOES_NOT_EXIST, True)
_KEY_EXISTS = encode_status(StatusCodeType.GENERIC, KvStatus.KEY_EXISTS, True)
_CAPACITY = encode_status(StatusCodeType.GENERIC, KvStatus.CAPACITY_EXCEEDED, True)


class FuzzBlockBackend:
    """RAM blocks, completing synchronously."""

    def __init__(self, num_blocks: int) -> None:
        self.data = bytearray(num_blocks * BLOCK)
        self.num_blocks = num_blocks

    def execute(self, cmd: IoCommand, done: Done) -> None:
        start, end = cmd.slba * BLOCK, (cmd.slba + cmd.nlb) * BLOCK
        if cmd.opcode in (NvmOpcode.READ, NvmOpcode.WRITE) and end > len(self.data):
            done(_LBA_RANGE, 0, None)
        elif cmd.opcode == NvmOpcode.WRITE and cmd.data is not None:
            self.data[start:end] = cmd.data
            done(0, 0, None)
        elif cmd.opcode == NvmOpcode.READ:
            done(0, 0, bytes(self.data[start:end]))
        else:
            done(0, 0, None)

    def close(self) -> None:
        pass


class FuzzKvBackend:
    """A dict of at most KV_MAX_KEYS values, completing synchronously."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def execute(self, cmd: IoCommand, done: Done) -> None:
        key, values = cmd.key, self.values
        if cmd.opcode == 0x01:  # Store
            if cmd.options & MUST_EXIST and key not in values:
                done(_NO_KEY, 0, None)
            elif cmd.options & MUST_NOT_EXIST and key in values:
                done(_KEY_EXISTS, 0, None)
            elif key not in values and len(values) >= KV_MAX_KEYS:
                done(_CAPACITY, 0, None)
            else:
                values[key] = bytes(cmd.data or b"")
                done(0, 0, None)
        elif cmd.opcode in (0x02, 0x10, 0x14):  # Retrieve, Delete, Exist
            value = values.get(key)
            if value is None:
                done(_NO_KEY, 0, None)
            elif cmd.opcode == 0x02:
                done(0, len(value), value[:cmd.read_length])
            else:
                if cmd.opcode == 0x10:
                    del values[key]
                done(0, 0, None)
        else:  # List: the count only
            done(0, 0, struct.pack("<I", 0).ljust(min(cmd.read_length, 4), b"\0")[:cmd.read_length] or None)

    def close(self) -> None:
        pass


def _cmd(opcode: int, cid: int, data: bytes = b"", dg: int = 0, **kw: int) -> bytes:
    if data:
        kw.setdefault("sgl_len", len(data))
        kw.setdefault("sgl_type", w.SGL_DATA_BLOCK_OFFSET)
    return w.capsule(w.sqe(opcode, cid, **kw), data, dg=dg)


def _admin_cmds(dg: int) -> list[bytes]:
    return [
        _cmd(0x06, 1, cdw10=1, sgl_len=4096, dg=dg),  # Identify controller
        _cmd(0x06, 2, nsid=1, cdw10=0, sgl_len=4096, dg=dg),  # Identify namespace 1
        _cmd(0x06, 3, cdw10=2, sgl_len=4096, dg=dg),  # active namespace list
        _cmd(0x02, 4, nsid=0xFFFFFFFF, cdw10=0x02 | 127 << 16, sgl_len=512, dg=dg),  # SMART log
        _cmd(0x09, 5, cdw10=0x07, cdw11=0x00030003, dg=dg),  # Set Features Number of Queues
        _cmd(0x0A, 6, cdw10=0x07, dg=dg),  # Get Features
        _cmd(0x18, 7, dg=dg),  # Keep Alive
        _cmd(0x0C, 8, dg=dg),  # AER
        w.prop_get(9, w.PROP_CSTS, dg=dg),
    ]


def _io_cmds(dg: int) -> list[bytes]:
    data = bytes(range(256)) * 16
    key = struct.unpack("<II", b"seedkey1")
    kv = {"nsid": 2, "cdw2": key[0], "cdw3": key[1]}
    return [
        _cmd(0x01, 1, data, dg=dg, nsid=1, cdw10=8, cdw12=7),  # Write 8 blocks in-capsule
        _cmd(0x02, 2, dg=dg, nsid=1, cdw10=8, cdw12=7, sgl_len=4096),  # Read them
        _cmd(0x01, 3, dg=dg, nsid=1, cdw10=16, cdw12=15, sgl_len=8192),  # Write via R2T (TTAG 0)
        w.h2c_data(3, 0, 0, data, last=False, dg=dg),
        w.h2c_data(3, 0, 4096, data, dg=dg),
        _cmd(0x00, 4, dg=dg, nsid=1),  # Flush
        _cmd(0x08, 5, dg=dg, nsid=1, cdw10=32, cdw12=3),  # Write Zeroes
        _cmd(0x09, 6, struct.pack("<IIQ", 0, 8, 64), dg=dg, nsid=1, cdw11=4),  # DSM deallocate
        _cmd(0x01, 7, b"value-of-seedkey", dg=dg, cdw10=16, cdw11=8, **kv),  # KV Store
        _cmd(0x02, 8, dg=dg, cdw10=64, cdw11=8, sgl_len=64, **kv),  # KV Retrieve
        _cmd(0x14, 9, dg=dg, cdw11=8, **kv),  # KV Exist
        _cmd(0x06, 10, dg=dg, nsid=2, cdw10=256, sgl_len=256),  # KV List
        _cmd(0x10, 11, dg=dg, cdw11=8, **kv),  # KV Delete
    ]


def valid_sequences() -> list[tuple[list[bytes], list[bytes] | None, list[dict[str, Any]]]]:
    """(messages, admin association or None, patches) of well-formed sessions."""
    out: list[tuple[list[bytes], list[bytes] | None, list[dict[str, Any]]]] = []
    cntlid = [{"msg": 1, "at": w.IO_CONNECT_CNTLID_AT, "field": "cntlid"}]
    for dg in (0, 1, 2, 3):
        out.append((w.admin_prelude(dg) + _admin_cmds(dg), None, []))
        out.append((w.io_prelude(dg) + _io_cmds(dg), w.admin_prelude(), cntlid))
    return out
