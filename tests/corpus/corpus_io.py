"""Corpus entries: NVM and Key Value I/O commands with bad fields (the connection lives on)."""

from __future__ import annotations

import struct

from . import wire as w
from .entry import (
    BASE_FIELD,
    BASE_LBA,
    BASE_MDTS,
    BASE_NS,
    BASE_OPC,
    BASE_SGLLEN,
    KV_EXISTS,
    KV_KEY,
    KV_MISSING,
    KV_VALUE,
    Builder,
    status,
)

CID = 0x0040
G = 0
INVALID_OPCODE, INVALID_FIELD, INVALID_NS, SGL_LENGTH, LBA_RANGE = 0x01, 0x02, 0x0B, 0x0F, 0x80
KV_VALUE_SIZE, KV_KEY_SIZE, KV_NO_KEY, KV_KEY_EXISTS = 0x85, 0x86, 0x87, 0x89
FLUSH, WRITE, READ, WRITE_ZEROES, DSM = 0x00, 0x01, 0x02, 0x08, 0x09
STORE, RETRIEVE, LIST, DELETE, EXIST = 0x01, 0x02, 0x06, 0x10, 0x14
MUST_EXIST, MUST_NOT_EXIST = 0x01, 0x02
NS_BLOCKS = (1 << 30) // 512  # namespace 1 of the default configuration: 1 GiB of 512-byte blocks
KV_NSID, KV_MAX_VALUE = 2, 1 << 20
SLBA = 0x8000


def _cmd(opcode: int, nsid: int = 1, cid: int = CID, data: bytes = b"", **kw: int) -> bytes:
    if data:
        kw.setdefault("sgl_len", len(data))
        kw.setdefault("sgl_type", w.SGL_DATA_BLOCK_OFFSET)
    return w.capsule(w.sqe(opcode, cid, nsid=nsid, **kw), data)


def _rw(opcode: int, slba: int, nlb: int, *, nsid: int = 1, data: bytes = b"", sgl_len: int | None = None) -> bytes:
    length = nlb * 512 if sgl_len is None else sgl_len
    return _cmd(opcode, nsid, data=data, sgl_len=length if not data else len(data), cdw10=slba & 0xFFFFFFFF,
                cdw11=slba >> 32, cdw12=nlb - 1)


def _key_dwords(key: bytes) -> dict[str, int]:
    c2, c3, c14, c15 = struct.unpack("<IIII", key[:16].ljust(16, b"\0"))
    return {"cdw2": c2, "cdw3": c3, "cdw14": c14, "cdw15": c15}


def _kv(opcode: int, key: bytes, *, klen: int | None = None, options: int = 0, cdw10: int = 0,
        data: bytes = b"", cid: int = CID, sgl_len: int = 0) -> bytes:
    kw = _key_dwords(key)
    kw["cdw11"] = (len(key) if klen is None else klen) | options << 8
    kw["cdw10"] = cdw10
    if not data:
        kw["sgl_len"] = sgl_len
    return _cmd(opcode, KV_NSID, cid, data, **kw)


def add_all(b: Builder) -> None:
    _nvm(b)
    _kv_entries(b)


def _nvm(b: Builder) -> None:
    cat = "io-nvm"
    for opc in (0x03, 0x04, 0x05, 0x0A, 0x0C, 0x0D, 0x11, 0x15, 0x80, 0xFF):
        b.io(f"io opcode {opc:#04x}", cat, f"I/O opcode {opc:#04x} is not supported on an NVM namespace",
             BASE_OPC, [_cmd(opc)], status(CID, G, INVALID_OPCODE))
    for nsid in (0, 3, 0x401, 0xFFFFFFFE, 0xFFFFFFFF):
        b.io(f"read nsid {nsid:#x}", cat, f"Read of NSID {nsid:#x}, not an active namespace", BASE_NS,
             [_rw(READ, 0, 1, nsid=nsid)], status(CID, G, INVALID_NS))
    b.io("flush nsid 3", cat, "Flush of the inactive NSID 3", BASE_NS, [_cmd(FLUSH, nsid=3)],
         status(CID, G, INVALID_NS))
    b.io("write zeroes nsid 0", cat, "Write Zeroes with NSID 0", BASE_NS, [_cmd(WRITE_ZEROES, nsid=0)],
         status(CID, G, INVALID_NS))
    lba = {"read at the end": _rw(READ, NS_BLOCKS, 1), "read across the end": _rw(READ, NS_BLOCKS - 1, 2),
           "read at lba 2^32": _rw(READ, 1 << 32, 1), "read at the last u64 lba": _rw(READ, (1 << 64) - 1, 1),
           "write at the end": _rw(WRITE, NS_BLOCKS, 1, data=b"\x77" * 512),
           "write zeroes across the end": _cmd(WRITE_ZEROES, cdw10=NS_BLOCKS - 4, cdw12=7),
           "dsm range beyond the end": _cmd(DSM, data=struct.pack("<IIQ", 0, 16, NS_BLOCKS - 8), cdw10=0,
                                            cdw11=0x4)}
    for name, cmd in lba.items():
        b.io(f"{name}", cat, f"{name} of the namespace ({NS_BLOCKS} blocks)", BASE_LBA, [cmd],
             status(CID, G, LBA_RANGE))
    b.io("read buffer smaller than nlb", cat, "Read of 8 blocks into a 512-byte SGL", BASE_SGLLEN,
         [_rw(READ, SLBA, 8, sgl_len=512)], status(CID, G, SGL_LENGTH))
    b.io("write data shorter than nlb", cat, "Write of 2 blocks carrying 512 bytes in-capsule", BASE_SGLLEN,
         [_rw(WRITE, SLBA, 2, data=b"\x66" * 512)], status(CID, G, SGL_LENGTH))
    b.io("dsm with too few ranges", cat, "Dataset Management of 3 ranges carrying 1 range", BASE_SGLLEN,
         [_cmd(DSM, data=struct.pack("<IIQ", 0, 1, SLBA), cdw10=2, cdw11=0x4)], status(CID, G, SGL_LENGTH))
    b.io("read above mdts", cat, "Read of 65536 blocks (32 MiB); MDTS is 1 MiB", BASE_MDTS,
         [_rw(READ, SLBA, 0x10000)], status(CID, G, INVALID_FIELD))


def _kv_entries(b: Builder) -> None:
    cat = "io-kv"
    val = b"corpus-value-16b"
    bad_keys = {"store key length 0": _kv(STORE, b"k", klen=0, cdw10=16, data=val),
                "store key length 17": _kv(STORE, b"k" * 16, klen=17, cdw10=16, data=val),
                "store key length 255": _kv(STORE, b"k" * 16, klen=255, cdw10=16, data=val),
                "retrieve key length 0": _kv(RETRIEVE, b"k", klen=0, cdw10=64, sgl_len=64),
                "retrieve key length 17": _kv(RETRIEVE, b"k" * 16, klen=17, cdw10=64, sgl_len=64),
                "delete key length 17": _kv(DELETE, b"k" * 16, klen=17),
                "exist key length 0": _kv(EXIST, b"k", klen=0),
                "list key length 17": _kv(LIST, b"k" * 16, klen=17, cdw10=64, sgl_len=64)}
    for name, cmd in bad_keys.items():
        b.io(f"kv {name}", cat, f"KV {name}", KV_KEY, [cmd], status(CID, G, KV_KEY_SIZE))
    for size in (KV_MAX_VALUE + 1, 1 << 31):
        b.io(f"kv store value size {size}", cat, f"KV Store of a {size}-byte value; the namespace maximum is "
             f"{KV_MAX_VALUE}", KV_VALUE, [_kv(STORE, b"corpus-big", cdw10=size)], status(CID, G, KV_VALUE_SIZE))
    missing = {"retrieve": _kv(RETRIEVE, b"corpus-miss-r", cdw10=64, sgl_len=64),
               "delete": _kv(DELETE, b"corpus-miss-d"), "exist": _kv(EXIST, b"corpus-miss-e"),
               "store must exist": _kv(STORE, b"corpus-miss-s", options=MUST_EXIST, cdw10=16, data=val)}
    for name, cmd in missing.items():
        b.io(f"kv {name} of a missing key", cat, f"KV {name} of a key never stored", KV_MISSING, [cmd],
             status(CID, G, KV_NO_KEY))
    first = _kv(STORE, b"corpus-exists", cdw10=16, data=val, cid=0x41)
    b.io("kv store must not exist on an existing key", cat, "KV Store 'must not exist' after a Store of the "
         "same key", KV_EXISTS, [first, _kv(STORE, b"corpus-exists", options=MUST_NOT_EXIST, cdw10=16, data=val)],
         status(CID, G, KV_KEY_EXISTS))
    b.io("kv store with both options", cat, "KV Store with 'must exist' and 'must not exist' both set",
         BASE_FIELD, [_kv(STORE, b"corpus-opts", options=MUST_EXIST | MUST_NOT_EXIST, cdw10=16, data=val)],
         status(CID, G, INVALID_FIELD))
    b.io("kv store value size disagrees with data", cat, "KV Store value size 32 with 16 bytes of data",
         BASE_SGLLEN, [_kv(STORE, b"corpus-vsz", cdw10=32, data=val)], status(CID, G, SGL_LENGTH))
    b.io("kv retrieve buffer larger than sgl", cat, "KV Retrieve host buffer 4096 into a 64-byte SGL",
         BASE_SGLLEN, [_kv(RETRIEVE, b"corpus-buf", cdw10=4096, sgl_len=64)], status(CID, G, SGL_LENGTH))
    b.io("kv retrieve buffer above mdts", cat, "KV Retrieve with a 2 MiB buffer; MDTS is 1 MiB", BASE_MDTS,
         [_kv(RETRIEVE, b"corpus-mdts", cdw10=2 << 20, sgl_len=2 << 20)], status(CID, G, INVALID_FIELD))
    for opc in (0x03, 0x05, 0x09, 0x80, 0xFF):
        b.io(f"kv namespace opcode {opc:#04x}", cat, f"opcode {opc:#04x} is not a KV command", BASE_OPC,
             [_kv(opc, b"corpus-op")], status(CID, G, INVALID_OPCODE))
