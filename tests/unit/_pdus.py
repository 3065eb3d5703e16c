"""Hand-framed PDUs for tests, independent of nvmeof's encoder.

Offsets here are written from the NVMe/TCP transport spec (and nvme-facts.md section 1),
and digests come from crcmod's CRC-32C, so a bug in ``build_pdu`` or the layouts cannot
hide itself.  ``frame`` can also produce malformed PDUs (wrong hlen/pdo/plen, bad
digests) for the error tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from ._golden import ref_digest

ICREQ, ICRESP, H2C_TERM, C2H_TERM, CAPSULE_CMD, CAPSULE_RESP, H2C_DATA, C2H_DATA, R2T = (
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09)
HDGSTF, DDGSTF, LAST_PDU, SUCCESS = 0x01, 0x02, 0x04, 0x08
HLEN = {ICREQ: 128, ICRESP: 128, H2C_TERM: 24, C2H_TERM: 24, CAPSULE_CMD: 72, CAPSULE_RESP: 24,
        H2C_DATA: 24, C2H_DATA: 24, R2T: 24}
SGL_OFFSET, SGL_TRANSPORT = 0x01, 0x5A
OP_WRITE, OP_READ, OP_FLUSH = 0x01, 0x02, 0x00


def frame(pdu_type: int, psh: bytes, data: bytes = b"", *, hdgst: bool = False, ddgst: bool = False,
          flags: int = 0, hlen: int | None = None, pdo: int | None = None, plen: int | None = None,
          bad_hdgst: bool = False, bad_ddgst: bool = False) -> bytes:
    """Common header + ``psh`` (+ HDGST) (+ data + DDGST); overrides make it malformed."""
    real_hlen = 8 + len(psh)
    if hdgst:
        flags |= HDGSTF
    if ddgst and data:
        flags |= DDGSTF
    hd = 4 if hdgst else 0
    dd = 4 if ddgst and data else 0
    data_at = real_hlen + hd if data else 0
    total = real_hlen + hd + len(data) + dd
    header = struct.pack("<BBBBI", pdu_type, flags, real_hlen if hlen is None else hlen,
                         data_at if pdo is None else pdo, total if plen is None else plen) + psh
    out = bytearray(header)
    if hdgst:
        digest = bytearray(ref_digest(header))
        if bad_hdgst:
            digest[0] ^= 0xFF
        out += digest
    out += data
    if dd:
        digest = bytearray(ref_digest(data))
        if bad_ddgst:
            digest[0] ^= 0xFF
        out += digest
    return bytes(out)


def icreq(dgst: int = 0, *, pfv: int = 0, hpda: int = 0, maxr2t: int = 0) -> bytes:
    return frame(ICREQ, struct.pack("<HBBI", pfv, hpda, dgst, maxr2t).ljust(120, b"\0"))


def icresp(dgst: int = 0, *, pfv: int = 0, cpda: int = 0, maxh2cdata: int = 131072) -> bytes:
    return frame(ICRESP, struct.pack("<HBBI", pfv, cpda, dgst, maxh2cdata).ljust(120, b"\0"))


def sqe(opcode: int, cid: int, *, nsid: int = 1, sgl_len: int = 0, sgl_type: int = SGL_TRANSPORT,
        sgl_addr: int = 0, cdw10: int = 0, cdw11: int = 0, cdw12: int = 0, psdt: int = 0x40,
        byte4: int | None = None) -> bytes:
    """64-byte SQE: opcode@0 flags@1 cid@2 nsid@4, SGL addr@24 len@32 id@39, CDW10-12@40."""
    raw = bytearray(64)
    struct.pack_into("<BBHI", raw, 0, opcode, psdt, cid, nsid)
    struct.pack_into("<QI", raw, 24, sgl_addr, sgl_len)
    raw[39] = sgl_type
    struct.pack_into("<III", raw, 40, cdw10, cdw11, cdw12)
    if byte4 is not None:  # Fabrics fctype lives where NSID's low byte is
        raw[4] = byte4
    return bytes(raw)


def capsule(cmd: bytes, data: bytes = b"", **kw: Any) -> bytes:
    return frame(CAPSULE_CMD, cmd, data, **kw)


def write_in_capsule(cid: int, data: bytes, **kw: Any) -> bytes:
    return capsule(sqe(OP_WRITE, cid, sgl_len=len(data), sgl_type=SGL_OFFSET), data, **kw)


def write_r2t(cid: int, length: int, **kw: Any) -> bytes:
    return capsule(sqe(OP_WRITE, cid, sgl_len=length), **kw)


def read_cmd(cid: int, length: int, **kw: Any) -> bytes:
    return capsule(sqe(OP_READ, cid, sgl_len=length), **kw)


def no_data_cmd(cid: int, **kw: Any) -> bytes:
    return capsule(sqe(OP_FLUSH, cid), **kw)


def h2c_data(cccid: int, ttag: int, datao: int, data: bytes, *, last: bool = True,
             datal: int | None = None, **kw: Any) -> bytes:
    psh = struct.pack("<HHII4x", cccid, ttag, datao, len(data) if datal is None else datal)
    return frame(H2C_DATA, psh, data, flags=LAST_PDU if last else 0, **kw)


def c2h_data(cccid: int, datao: int, data: bytes, *, last: bool = True, success: bool = False,
             **kw: Any) -> bytes:
    flags = (LAST_PDU if last else 0) | (SUCCESS if success else 0)
    psh = struct.pack("<H2xII4x", cccid, datao, len(data))
    return frame(C2H_DATA, psh, data, flags=flags, **kw)


def r2t(cccid: int, ttag: int, r2to: int, r2tl: int, **kw: Any) -> bytes:
    return frame(R2T, struct.pack("<HHII4x", cccid, ttag, r2to, r2tl), **kw)


def capsule_resp(cid: int, status: int = 0, *, dw0: int = 0, dw1: int = 0, sqhd: int = 0,
                 sqid: int = 0, **kw: Any) -> bytes:
    psh = struct.pack("<IIHHHH", dw0, dw1, sqhd, sqid, cid, status)
    return frame(CAPSULE_RESP, psh, **kw)


def term_req(pdu_type: int, fes: int, fei: int = 0, data: bytes = b"", *, flags: int = 0) -> bytes:
    psh = struct.pack("<HI10x", fes, fei)
    return frame(pdu_type, psh, data, flags=flags, pdo=0)


# --- reading what a connection sent ------------------------------------------------------


def joined(pieces: Iterable[bytes | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in pieces)


def split(stream: bytes) -> list[bytes]:
    """Cut a byte stream into PDUs by their PLEN (offset 4)."""
    out = []
    pos = 0
    while pos < len(stream):
        (plen,) = struct.unpack_from("<I", stream, pos + 4)
        assert plen >= 8, f"bad plen {plen} at {pos}"
        out.append(stream[pos:pos + plen])
        pos += plen
    assert pos == len(stream), "output ends inside a PDU"
    return out


def sent(conn: object) -> list[bytes]:
    return split(joined(conn.data_to_send()))  # type: ignore[attr-defined]


def term_fields(pdu: bytes) -> tuple[int, int, int, int, int, bytes]:
    """-> (type, hlen, plen, fes, fei, error data) of a TermReq, offsets from the spec."""
    pdu_type, _flags, hlen, _pdo, plen = struct.unpack_from("<BBBBI", pdu, 0)
    fes, fei = struct.unpack_from("<HI", pdu, 8)
    return pdu_type, hlen, plen, fes, fei, pdu[hlen:plen]


def resp_fields(pdu: bytes) -> tuple[int, int, int, int]:
    """-> (cid, status, dw0, sqid) of a CapsuleResp."""
    dw0, _dw1, _sqhd, sqid, cid, status = struct.unpack_from("<IIHHHH", pdu, 8)
    return cid, status, dw0, sqid


def status_sct_sc(status: int) -> tuple[int, int]:
    """CQE status field: bit 0 phase, bits 8:1 SC, 11:9 SCT."""
    return (status >> 9) & 0x7, (status >> 1) & 0xFF


def chunks(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """Split ``data`` at the given positions (sorted, deduplicated, clipped)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    out = []
    prev = 0
    for p in points + [len(data)]:
        out.append(data[prev:p])
        prev = p
    return out
