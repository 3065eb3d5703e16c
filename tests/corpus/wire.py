"""Hand-built NVMe/TCP host-to-controller bytes for the malformed-input corpus.

Independent of ``nvmeof``: every offset is written here from the NVMe/TCP transport
specification 1.0 (common header, ICReq, CapsuleCmd, H2CData, H2CTermReq) and the NVMe
base / NVMe over Fabrics specifications (SQE, Connect, Property Get/Set), and CRC32C is a
table-driven implementation of the Castagnoli polynomial, checked against the RFC 3720
vector at import.  The corpus harnesses also use :func:`redigest` to keep a PDU's digests
as valid (or as invalid) as they were after patching a field the controller chose.
"""

from __future__ import annotations

import struct

# PDU types (TCP 1.0, "PDU Type" table)
ICREQ, ICRESP, H2C_TERM, C2H_TERM, CAPSULE_CMD, CAPSULE_RESP, H2C_DATA, C2H_DATA, R2T = (
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09)
# common header flags
HDGSTF, DDGSTF, LAST_PDU, SUCCESS = 0x01, 0x02, 0x04, 0x08
CH = struct.Struct("<BBBBI")  # type, flags, hlen, pdo, plen
DIGEST = 4
CAPSULE_HLEN, DATA_HLEN, ICREQ_LEN, TERM_HLEN = 72, 24, 128, 24

# SGL descriptor identifiers (byte 15 of the descriptor = SQE byte 39)
SGL_DATA_BLOCK_ADDR, SGL_DATA_BLOCK_OFFSET, SGL_BIT_BUCKET, SGL_SEGMENT = 0x00, 0x01, 0x10, 0x20
SGL_LAST_SEGMENT, SGL_KEYED, SGL_TRANSPORT = 0x30, 0x40, 0x5A
PSDT_SGL = 0x40  # CDW0 bits 15:14 = 01b
FABRICS = 0x7F
FCTYPE_PROPERTY_SET, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET = 0x00, 0x01, 0x04
CONNECT_DATA_LEN = 1024
CNTLID_DYNAMIC = 0xFFFF
# Connect data offsets
CD_CNTLID, CD_SUBNQN, CD_HOSTNQN = 16, 256, 512
# CC: EN | CSS=110b (all I/O command sets) | IOSQES=6 | IOCQES=4
CC_ENABLE = 1 | (6 << 4) | (6 << 16) | (4 << 20)
PROP_CAP, PROP_VS, PROP_CC, PROP_CSTS = 0x00, 0x08, 0x14, 0x1C

SUBNQN = "nqn.2026-11.io.dpu-emu:default"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:5eed0c0a-0000-4000-8000-00000000c0de"
HOSTID = bytes.fromhex("5eed0c0a000040008000000000c0de00")
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
PRELUDE_CID = 0xF000  # prelude commands use CIDs from here; they must all succeed
FOLLOWUP_CID = 0xF0F0


def _table() -> list[int]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_T = _table()


def crc32c(data: bytes | bytearray) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4


def digest(data: bytes | bytearray) -> bytes:
    return struct.pack("<I", crc32c(data))


def pdu(pdu_type: int, psh: bytes, data: bytes = b"", *, dg: int = 0, flags: int = 0,
        hlen: int | None = None, pdo: int | None = None, plen: int | None = None,
        bad_hdgst: bool = False, bad_ddgst: bool = False, hd: bool | None = None,
        dd: bool | None = None) -> bytes:
    """Common header + PSH (+HDGST) (+data +DDGST).  ``dg`` is the negotiated DGST
    (bit0 header, bit1 data); ``hd``/``dd`` override whether digests are carried."""
    use_hd = bool(dg & 1) if hd is None else hd
    use_dd = bool(dg & 2) and bool(data) if dd is None else dd
    if use_hd:
        flags |= HDGSTF
    if use_dd:
        flags |= DDGSTF
    real_hlen = 8 + len(psh)
    hdl = DIGEST if use_hd else 0
    ddl = DIGEST if use_dd else 0
    data_at = real_hlen + hdl if data else 0
    total = real_hlen + hdl + len(data) + ddl
    header = CH.pack(pdu_type, flags, real_hlen if hlen is None else hlen,
                     data_at if pdo is None else pdo, total if plen is None else plen) + psh
    out = bytearray(header)
    if use_hd:
        d = bytearray(digest(header))
        if bad_hdgst:
            d[0] ^= 0xFF
        out += d
    out += data
    if use_dd:
        d = bytearray(digest(data))
        if bad_ddgst:
            d[0] ^= 0xFF
        out += d
    return bytes(out)


def icreq(dg: int = 0, *, pfv: int = 0, hpda: int = 0, maxr2t: int = 0, dgst: int | None = None,
          **kw: object) -> bytes:
    psh = struct.pack("<HBBI", pfv, hpda, dg if dgst is None else dgst, maxr2t).ljust(120, b"\0")
    return pdu(ICREQ, psh, hd=False, dd=False, **kw)  # type: ignore[arg-type]


def sqe(opcode: int, cid: int, *, nsid: int = 0, flags: int = PSDT_SGL, cdw2: int = 0, cdw3: int = 0,
        sgl_addr: int = 0, sgl_len: int = 0, sgl_type: int = SGL_TRANSPORT, cdw10: int = 0, cdw11: int = 0,
        cdw12: int = 0, cdw13: int = 0, cdw14: int = 0, cdw15: int = 0) -> bytearray:
    """64-byte SQE: OPC@0 FLAGS@1 CID@2 NSID@4 CDW2@8 CDW3@12 MPTR@16 SGL1@24 CDW10..15@40."""
    raw = bytearray(64)
    struct.pack_into("<BBHIII", raw, 0, opcode, flags, cid, nsid, cdw2, cdw3)
    struct.pack_into("<QI", raw, 24, sgl_addr, sgl_len)
    raw[39] = sgl_type
    struct.pack_into("<IIIIII", raw, 40, cdw10, cdw11, cdw12, cdw13, cdw14, cdw15)
    return raw


def fabrics_sqe(fctype: int, cid: int, **kw: int) -> bytearray:
    raw = sqe(FABRICS, cid, **kw)
    raw[4] = fctype  # FCTYPE at byte 4 (where NSID sits in other commands)
    return raw


def capsule(cmd: bytes | bytearray, data: bytes = b"", *, dg: int = 0, **kw: object) -> bytes:
    return pdu(CAPSULE_CMD, bytes(cmd), data, dg=dg, **kw)  # type: ignore[arg-type]


def connect_data(*, cntlid: int = CNTLID_DYNAMIC, subnqn: str = SUBNQN, hostnqn: str = HOSTNQN,
                 hostid: bytes = HOSTID, length: int = CONNECT_DATA_LEN) -> bytes:
    buf = bytearray(CONNECT_DATA_LEN)
    buf[0:16] = hostid
    struct.pack_into("<H", buf, CD_CNTLID, cntlid)
    sub, host = subnqn.encode(), hostnqn.encode()
    buf[CD_SUBNQN:CD_SUBNQN + len(sub)] = sub
    buf[CD_HOSTNQN:CD_HOSTNQN + len(host)] = host
    return bytes(buf[:length])


def connect(cid: int, *, qid: int = 0, sqsize: int = 31, recfmt: int = 0, cattr: int = 0, kato: int = 0,
            dg: int = 0, sgl_len: int | None = None, data: bytes | None = None, flags: int = PSDT_SGL,
            **cd: object) -> bytes:
    """Fabrics Connect: RECFMT@40 QID@42 SQSIZE@44 CATTR@46 KATO@48, 1024 bytes in-capsule."""
    body = connect_data(**cd) if data is None else data  # type: ignore[arg-type]
    cmd = fabrics_sqe(FCTYPE_CONNECT, cid, sgl_len=len(body) if sgl_len is None else sgl_len,
                      sgl_type=SGL_DATA_BLOCK_OFFSET, flags=flags)
    struct.pack_into("<HHHBxI", cmd, 40, recfmt, qid, sqsize, cattr, kato)
    return capsule(cmd, body, dg=dg)


def prop_get(cid: int, ofst: int, size8: bool = False, *, dg: int = 0) -> bytes:
    cmd = fabrics_sqe(FCTYPE_PROPERTY_GET, cid)
    cmd[40] = 1 if size8 else 0  # ATTRIB: 0 = 4 bytes, 1 = 8 bytes
    struct.pack_into("<I", cmd, 44, ofst)
    return capsule(cmd, dg=dg)


def prop_set(cid: int, ofst: int, value: int, size8: bool = False, *, dg: int = 0) -> bytes:
    cmd = fabrics_sqe(FCTYPE_PROPERTY_SET, cid)
    cmd[40] = 1 if size8 else 0
    struct.pack_into("<IQ", cmd, 44, ofst, value)
    return capsule(cmd, dg=dg)


def h2c_data(cccid: int, ttag: int, datao: int, data: bytes, *, last: bool = True,
             datal: int | None = None, dg: int = 0, flags: int = 0, **kw: object) -> bytes:
    """H2CData PSH: CCCID@8 TTAG@10 DATAO@12 DATAL@16, 4 reserved."""
    psh = struct.pack("<HHII4x", cccid, ttag, datao, len(data) if datal is None else datal)
    return pdu(H2C_DATA, psh, data, dg=dg, flags=flags | (LAST_PDU if last else 0), **kw)  # type: ignore[arg-type]


def term_req(fes: int, fei: int = 0, data: bytes = b"", **kw: object) -> bytes:
    """H2CTermReq: FES@8 FEI@10, reserved to 24; PDO 0; never carries digests."""
    return pdu(H2C_TERM, struct.pack("<HI10x", fes, fei), data, hd=False, dd=False, pdo=0,
               **kw)  # type: ignore[arg-type]


# --- preludes -------------------------------------------------------------------------------------


def admin_prelude(dg: int = 0, *, enable: bool = True) -> list[bytes]:
    """ICReq, admin Connect (dynamic controller), Property Set CC.EN=1 (CSS all I/O sets)."""
    out = [icreq(dg), connect(PRELUDE_CID + 1, dg=dg)]
    if enable:
        out.append(prop_set(PRELUDE_CID + 2, PROP_CC, CC_ENABLE, dg=dg))
    return out


IO_CONNECT_CID = PRELUDE_CID + 3
IO_CONNECT_CNTLID_AT = CAPSULE_HLEN + CD_CNTLID  # in the PDU, without header digest


def io_prelude(dg: int = 0, *, qid: int = 1, sqsize: int = 63) -> list[bytes]:
    """ICReq and an I/O queue Connect whose CNTLID (0 here) the harness patches in."""
    return [icreq(dg), connect(IO_CONNECT_CID, qid=qid, sqsize=sqsize, cntlid=0, dg=dg)]


# --- used by the harnesses ------------------------------------------------------------------------


def redigest(original: bytes, patched: bytearray) -> bytes:
    """Recompute the digests of ``patched`` that were valid in ``original`` (a bad digest stays bad)."""
    _t, flags, hlen, pdo, plen = CH.unpack_from(original, 0)
    if flags & HDGSTF and len(original) >= hlen + DIGEST:
        if original[hlen:hlen + DIGEST] == digest(original[:hlen]):
            patched[hlen:hlen + DIGEST] = digest(patched[:hlen])
    if flags & DDGSTF and pdo and len(original) == plen:
        body, new = original[pdo:plen - DIGEST], patched[pdo:plen - DIGEST]
        if original[plen - DIGEST:plen] == digest(body):
            patched[plen - DIGEST:plen] = digest(new)
    return bytes(patched)


def patch_u16(message: bytes, at: int, value: int) -> bytes:
    """Set a 16-bit field at ``at`` (offset in the PDU without header digest; shifted past
    the HDGST when the field lies in the data) and keep the digests as valid as they were."""
    _t, flags, hlen, _pdo, _plen = CH.unpack_from(message, 0)
    if at >= hlen and flags & HDGSTF:
        at += DIGEST
    buf = bytearray(message)
    struct.pack_into("<H", buf, at, value)
    return redigest(message, buf)
