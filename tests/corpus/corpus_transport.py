"""Corpus entries: NVMe/TCP framing, connection sequence, digests, data transfer, truncation."""

from __future__ import annotations

import struct

from . import wire as w
from .entry import (
    BASE_CID,
    CLOSE,
    FES_HDGST,
    FES_HDR,
    FES_LIMIT,
    FES_RANGE,
    FES_SEQ,
    TCP_CH,
    TCP_DDGST,
    TCP_H2C,
    TCP_HDGST,
    TCP_ICREQ,
    TCP_LIMIT,
    TCP_RANGE,
    TCP_SEQ,
    TCP_SGL,
    TCP_TERM,
    TCP_TRUNC,
    Builder,
    admin_followup,
    status,
    termreq,
)

FEI_TYPE, FEI_FLAGS, FEI_HLEN, FEI_PDO, FEI_PLEN = 0, 1, 2, 3, 4
FEI_PFV, FEI_HPDA = 8, 10
FEI_CCCID, FEI_TTAG, FEI_DATAL = 8, 10, 16
CID = 0x0010
WRITE, READ = 0x01, 0x02
SLBA = 0x4000  # corpus writes land here, away from the healthy connection's range


def _raw(pdu_type: int, hlen: int = 24, plen: int | None = None, flags: int = 0, pdo: int = 0) -> bytes:
    size = hlen if plen is None else plen
    return w.CH.pack(pdu_type, flags, hlen, pdo, size) + bytes(max(0, size - 8))


def _noop(cid: int = CID, dg: int = 0, **kw: object) -> bytes:
    """Keep Alive: an admin command without data."""
    return w.capsule(w.sqe(0x18, cid), dg=dg, **kw)


def _write_ic(cid: int, data: bytes, *, dg: int = 0, sgl_type: int = w.SGL_DATA_BLOCK_OFFSET,
              sgl_len: int | None = None, sgl_addr: int = 0, slba: int = SLBA, **kw: object) -> bytes:
    nlb = max(1, len(data) // 512)
    cmd = w.sqe(WRITE, cid, nsid=1, sgl_type=sgl_type, sgl_len=len(data) if sgl_len is None else sgl_len,
                sgl_addr=sgl_addr, cdw10=slba, cdw12=nlb - 1)
    return w.capsule(cmd, data, dg=dg, **kw)


def _write_r2t(cid: int, length: int, *, dg: int = 0, slba: int = SLBA) -> bytes:
    cmd = w.sqe(WRITE, cid, nsid=1, sgl_len=length, cdw10=slba, cdw12=length // 512 - 1)
    return w.capsule(cmd, dg=dg)


def _read(cid: int, length: int = 512, *, dg: int = 0, sgl_type: int = w.SGL_TRANSPORT, **kw: object) -> bytes:
    cmd = w.sqe(READ, cid, nsid=1, sgl_len=length, sgl_type=sgl_type, cdw10=SLBA, cdw12=length // 512 - 1)
    return w.capsule(cmd, dg=dg, **kw)


def _ttag(msg: int, xor: int = 0) -> dict[str, object]:
    patch: dict[str, object] = {"msg": msg, "at": 10, "field": "ttag"}
    if xor:
        patch["xor"] = xor
    return patch


def add_all(b: Builder) -> None:
    _types(b)
    _lengths(b)
    _flags(b)
    _sequence(b)
    _digests(b)
    _h2c(b)
    _capsule_data(b)
    _truncation(b)


def _types(b: Builder) -> None:
    cat = "pdu-type"
    for t in (0x08, 0x0A, 0x0B, 0x0F, 0x10, 0x40, 0x7F, 0x80, 0xFE, 0xFF):
        b.add(f"unknown type {t:#04x} before icreq", cat, f"PDU type {t:#04x} is not defined", TCP_CH,
              [_raw(t)], termreq(FES_HDR, FEI_TYPE))
    for t in (0x08, 0x0A, 0x0C, 0x20, 0x84, 0xFF):
        b.add(f"unknown type {t:#04x} after icreq", cat, f"PDU type {t:#04x} after a valid ICReq", TCP_CH,
              [w.icreq(), _raw(t)], termreq(FES_HDR, FEI_TYPE))
    for t in (0x08, 0x0D, 0x11, 0xF0):
        b.admin(f"unknown type {t:#04x} on a live queue", cat, f"PDU type {t:#04x} after Connect", TCP_CH,
                [_raw(t)], termreq(FES_HDR, FEI_TYPE))
    c2h = {"icresp": _raw(w.ICRESP, 128), "c2htermreq": _raw(w.C2H_TERM), "capsuleresp": _raw(w.CAPSULE_RESP),
           "c2hdata": _raw(w.C2H_DATA, 24, 40, flags=w.LAST_PDU, pdo=24), "r2t": _raw(w.R2T)}
    for name, bad in c2h.items():
        desc = f"the host sends {name}, a controller-to-host PDU type"
        b.add(f"host sends {name} before icreq", cat, desc, TCP_CH, [bad], termreq(FES_HDR, FEI_TYPE))
        b.add(f"host sends {name} after icreq", cat, desc, TCP_CH, [w.icreq(), bad], termreq(FES_HDR, FEI_TYPE))
        b.admin(f"host sends {name} after connect", cat, desc, TCP_CH, [bad], termreq(FES_HDR, FEI_TYPE))


def _lengths(b: Builder) -> None:
    cat = "pdu-length"
    for hlen in (0, 8, 24, 127, 129, 255):
        b.add(f"icreq hlen {hlen}", cat, f"ICReq with HLEN {hlen} (must be 128)", TCP_CH,
              [w.icreq(hlen=hlen)], termreq(FES_HDR, FEI_HLEN))
    for hlen in (0, 24, 64, 71, 73, 128):
        b.add(f"capsule hlen {hlen}", cat, f"CapsuleCmd with HLEN {hlen} (must be 72)", TCP_CH,
              [w.icreq(), _noop(hlen=hlen)], termreq(FES_HDR, FEI_HLEN))
    for hlen in (8, 23, 25, 72):
        b.admin(f"h2cdata hlen {hlen}", cat, f"H2CData with HLEN {hlen} (must be 24)", TCP_CH,
                [w.h2c_data(CID, 0, 0, bytes(16), hlen=hlen)], termreq(FES_HDR, FEI_HLEN))
    for hlen in (8, 23, 25, 128):
        b.add(f"h2ctermreq hlen {hlen}", cat, f"H2CTermReq with HLEN {hlen} (must be 24)", TCP_CH,
              [w.icreq(), w.term_req(1, hlen=hlen)], termreq(FES_HDR, FEI_HLEN))
    for plen in (0, 8, 127, 129, 132, 0xFFFFFFFF):
        b.add(f"icreq plen {plen}", cat, f"ICReq with PLEN {plen} (must be 128, no data)", TCP_CH,
              [w.icreq(plen=plen)], termreq(FES_HDR, FEI_PLEN))
    for plen in (0, 8, 71):
        b.add(f"capsule plen {plen}", cat, f"CapsuleCmd with PLEN {plen}, shorter than its header", TCP_CH,
              [w.icreq(), _noop(plen=plen)], termreq(FES_HDR, FEI_PLEN))
    b.add("capsule plen leaves no room for hdgst", cat, "header digest negotiated but PLEN 76 - 4", TCP_CH,
          [w.icreq(1), _noop(dg=1, plen=72)], termreq(FES_HDR, FEI_PLEN))
    for plen in (0, 23):
        b.admin(f"h2cdata plen {plen}", cat, f"H2CData with PLEN {plen}, shorter than its header", TCP_CH,
                [w.h2c_data(CID, 0, 0, b"", plen=plen)], termreq(FES_HDR, FEI_PLEN))
    for plen in (23, 153, 4096, 0xFFFFFFFF):
        b.add(f"h2ctermreq plen {plen}", cat, f"H2CTermReq with PLEN {plen} (24..152)", TCP_CH,
              [w.icreq(), w.term_req(1, plen=plen)], termreq(FES_HDR, FEI_PLEN))
    data = bytes(range(16))
    for pdo in (0, 8, 64, 70, 71, 73, 74, 87, 88, 92):
        b.add(f"capsule pdo {pdo} with data", cat, f"CapsuleCmd with 16 data bytes and PDO {pdo} "
              "(must be >= 72, dword aligned, inside PLEN 88)", TCP_CH,
              [w.icreq(), _noop(pdo=pdo, data=data)], termreq(FES_HDR, FEI_PDO))
    for pdo in (8, 24, 76, 255):
        b.add(f"capsule pdo {pdo} without data", cat, f"CapsuleCmd without data and PDO {pdo} (0 or 72)",
              TCP_CH, [w.icreq(), _noop(pdo=pdo)], termreq(FES_HDR, FEI_PDO))
    b.add("capsule pdo overlaps hdgst", cat, "header digest negotiated, data at PDO 72 (must be >= 76)", TCP_CH,
          [w.icreq(1), _noop(dg=1, pdo=72, data=data)], termreq(FES_HDR, FEI_PDO))
    b.add("no-data capsule pdo 72 with hdgst", cat, "header digest negotiated, no data, PDO 72 (0 or 76)",
          TCP_CH, [w.icreq(1), _noop(dg=1, pdo=72)], termreq(FES_HDR, FEI_PDO))
    for pdo in (0, 8, 20, 26):
        b.admin(f"h2cdata pdo {pdo}", cat, f"H2CData with 16 data bytes at PDO {pdo} (>= 24, aligned)", TCP_CH,
                [w.h2c_data(CID, 0, 0, data, pdo=pdo)], termreq(FES_HDR, FEI_PDO))


def _flags(b: Builder) -> None:
    cat = "pdu-flags"
    for f in (0x01, 0x02, 0x04, 0x08, 0x80):
        b.add(f"icreq flags {f:#04x}", cat, f"ICReq with FLAGS {f:#04x} (ICReq has no flags)", TCP_CH,
              [w.icreq(flags=f)], termreq(FES_HDR, FEI_FLAGS))
    for f in (0x04, 0x08, 0x10, 0x20, 0x40, 0x80):
        b.add(f"capsule flags {f:#04x}", cat, f"CapsuleCmd with FLAGS {f:#04x} (only HDGSTF/DDGSTF exist)",
              TCP_CH, [w.icreq(), _noop(flags=f)], termreq(FES_HDR, FEI_FLAGS))
    for f in (0x08, 0x10, 0x80):
        b.admin(f"h2cdata flags {f:#04x}", cat, f"H2CData with FLAGS {f:#04x} (SUCCESS is C2HData only)", TCP_CH,
                [w.h2c_data(CID, 0, 0, bytes(16), flags=f)], termreq(FES_HDR, FEI_FLAGS))
    d16 = bytes(16)
    cases = [
        ("capsule hdgstf not negotiated", 0, _noop(hd=True)),
        ("h2cdata hdgstf not negotiated", 0, w.h2c_data(CID, 0, 0, d16, hd=True)),
        ("capsule without hdgstf when negotiated", 1, _noop(dg=1, hd=False)),
        ("h2cdata without hdgstf when negotiated", 1, w.h2c_data(CID, 0, 0, d16, dg=1, hd=False)),
        ("capsule ddgstf not negotiated", 0, _noop(data=d16, dd=True)),
        ("h2cdata ddgstf not negotiated", 0, w.h2c_data(CID, 0, 0, d16, dd=True)),
        ("capsule data without ddgstf when negotiated", 2, _noop(dg=2, data=d16, dd=False)),
        ("h2cdata without ddgstf when negotiated", 2, w.h2c_data(CID, 0, 0, d16, dg=2, dd=False)),
        ("ddgstf on a capsule without data", 2, _noop(dg=2, flags=w.DDGSTF)),
    ]
    for name, dg, bad in cases:
        b.add(name, cat, f"{name}: the digest flags must match the ICReq negotiation (DGST={dg})", TCP_CH,
              [w.icreq(dg), bad], termreq(FES_HDR, FEI_FLAGS))


def _sequence(b: Builder) -> None:
    cat = "sequence"
    before = {"connect": w.connect(1), "keep alive": _noop(), "h2cdata": w.h2c_data(CID, 0, 0, bytes(16))}
    for name, bad in before.items():
        b.add(f"{name} before icreq", cat, f"{name} before the ICReq/ICResp exchange", TCP_SEQ, [bad],
              termreq(FES_SEQ))
    b.add("second icreq after icreq", cat, "a second ICReq on an initialised connection", TCP_SEQ,
          [w.icreq(), w.icreq()], termreq(FES_SEQ))
    b.admin("second icreq after connect", cat, "ICReq after Connect", TCP_SEQ, [w.icreq()], termreq(FES_SEQ),
            enable=False)
    b.admin("second icreq after enable", cat, "ICReq on an enabled admin queue", TCP_SEQ, [w.icreq()],
            termreq(FES_SEQ))
    b.admin("second icreq with digests", cat, "ICReq again on a digest connection", TCP_SEQ, [w.icreq(3)],
            termreq(FES_SEQ), dg=3)
    b.io("second icreq on an io queue", cat, "ICReq on a connected I/O queue", TCP_SEQ, [w.icreq()],
         termreq(FES_SEQ))
    b.add("h2ctermreq before icreq", cat, "the host terminates before initialising", TCP_TERM,
          [w.term_req(1)], CLOSE)
    for pfv in (1, 0x100, 0xFFFF):
        b.add(f"icreq pfv {pfv:#x}", cat, f"ICReq PFV {pfv:#x} (only 0 is defined)", TCP_ICREQ,
              [w.icreq(pfv=pfv)], termreq(FES_HDR, FEI_PFV))
    for hpda in (32, 64, 255):
        b.add(f"icreq hpda {hpda}", cat, f"ICReq HPDA {hpda} (0..31)", TCP_ICREQ, [w.icreq(hpda=hpda)],
              termreq(FES_HDR, FEI_HPDA))
    ok = {"maxr2t 1": w.icreq(maxr2t=1), "maxr2t max": w.icreq(maxr2t=0xFFFFFFFF), "hpda 31": w.icreq(hpda=31),
          "reserved dgst bits": w.icreq(dgst=0xFC)}
    for name, good in ok.items():
        b.add(f"icreq {name} is accepted", cat, f"ICReq with {name}: a valid value (reserved bits ignored), "
              "the Connect that follows succeeds", TCP_ICREQ, [good, w.connect(1)], status(1, 0, 0),
              queue="admin", followup=admin_followup())


def _digests(b: Builder) -> None:
    cat = "digest"
    b.add("hdgst error on connect", cat, "header digest of the admin Connect is wrong", TCP_HDGST,
          [w.icreq(1), w.capsule(w.connect(1, dg=1)[8:72], w.connect_data(), dg=1, bad_hdgst=True)],
          termreq(FES_HDGST))
    b.admin("hdgst error on property set", cat, "header digest of Property Set CC is wrong", TCP_HDGST,
            [w.capsule(w.prop_set(CID, w.PROP_CC, w.CC_ENABLE)[8:72], dg=1, bad_hdgst=True)],
            termreq(FES_HDGST), dg=1, enable=False)
    b.admin("hdgst error on keep alive", cat, "header digest of a Keep Alive is wrong", TCP_HDGST,
            [_noop(dg=3, bad_hdgst=True)], termreq(FES_HDGST), dg=3)
    b.io("hdgst error on read", cat, "header digest of a Read is wrong", TCP_HDGST,
         [_read(CID, dg=1, bad_hdgst=True)], termreq(FES_HDGST), dg=1)
    b.io("hdgst error on h2cdata", cat, "header digest of the H2CData answering an R2T is wrong", TCP_HDGST,
         [_write_r2t(CID, 4096, dg=3), w.h2c_data(CID, 0, 0, bytes(4096), dg=3, bad_hdgst=True)],
         termreq(FES_HDGST), dg=3, patches=[_ttag(1)])
    b.add("ddgst error on connect data", cat, "data digest of the Connect data is wrong: Connect fails with "
          "Transient Transport Error, a correct Connect then succeeds", TCP_DDGST,
          [w.icreq(2), w.capsule(w.connect(1)[8:72], w.connect_data(), dg=2, bad_ddgst=True)],
          status(1, 0, 0x22), queue="admin", followup=w.connect(w.FOLLOWUP_CID, dg=2))
    b.io("ddgst error on in-capsule write", cat, "data digest of an in-capsule Write is wrong", TCP_DDGST,
         [_write_ic(CID, b"\xa5" * 512, dg=2, bad_ddgst=True)], status(CID, 0, 0x22), dg=2)
    b.io("ddgst error with both digests", cat, "data digest wrong, header digest right", TCP_DDGST,
         [_write_ic(CID, b"\x5a" * 1024, dg=3, bad_ddgst=True)], status(CID, 0, 0x22), dg=3)
    b.io("ddgst error on h2cdata", cat, "data digest of the only H2CData is wrong", TCP_DDGST,
         [_write_r2t(CID, 4096, dg=2), w.h2c_data(CID, 0, 0, b"\x11" * 4096, dg=2, bad_ddgst=True)],
         status(CID, 0, 0x22), dg=2, patches=[_ttag(1)])
    b.io("ddgst error on first of two h2cdata", cat, "first H2CData of two has a bad data digest; the "
         "transfer still ends and the command fails", TCP_DDGST,
         [_write_r2t(CID, 8192, dg=2), w.h2c_data(CID, 0, 0, b"\x22" * 4096, dg=2, last=False, bad_ddgst=True),
          w.h2c_data(CID, 0, 4096, b"\x33" * 4096, dg=2)], status(CID, 0, 0x22), dg=2,
         patches=[_ttag(1), _ttag(2)])
    kv = w.sqe(0x01, CID, nsid=2, sgl_type=w.SGL_DATA_BLOCK_OFFSET, sgl_len=64, cdw2=0x6B726F63, cdw10=64,
               cdw11=4)
    b.io("ddgst error on kv store", cat, "data digest of a KV Store value is wrong", TCP_DDGST,
         [w.capsule(kv, bytes(64), dg=2, bad_ddgst=True)], status(CID, 0, 0x22), dg=2)


def _h2c(b: Builder) -> None:
    cat = "h2cdata"
    d = bytes(4096)
    b.io("h2cdata without r2t", cat, "H2CData while no R2T is outstanding", TCP_H2C,
         [w.h2c_data(CID, 0, 0, d)], termreq(FES_HDR, FEI_TTAG))
    b.admin("h2cdata on the admin queue", cat, "H2CData with no write outstanding", TCP_H2C,
            [w.h2c_data(CID, 0x77, 0, d)], termreq(FES_HDR, FEI_TTAG))
    r2t = [_write_r2t(CID, 4096)]
    b.io("h2cdata wrong ttag", cat, "H2CData names a TTAG the controller did not issue", TCP_H2C,
         r2t + [w.h2c_data(CID, 0, 0, d)], termreq(FES_HDR, FEI_TTAG), patches=[_ttag(1, 0x0100)])
    b.io("h2cdata wrong cccid", cat, "H2CData's CCCID is not the command of the R2T", TCP_H2C,
         r2t + [w.h2c_data(CID + 1, 0, 0, d)], termreq(FES_HDR, FEI_CCCID), patches=[_ttag(1)])
    b.io("h2cdata datal disagrees with plen", cat, "DATAL 100 but 4096 data bytes", TCP_H2C,
         r2t + [w.h2c_data(CID, 0, 0, d, datal=100)], termreq(FES_HDR, FEI_DATAL), patches=[_ttag(1)])
    ranges = {"gap at start": (512, 512), "offset at end": (4096, 512), "beyond r2t": (0, 8192),
              "straddles end": (3584, 1024)}
    for name, (datao, size) in ranges.items():
        b.io(f"h2cdata {name}", cat, f"H2CData DATAO {datao} DATAL {size} for an R2T of 4096 bytes", TCP_RANGE,
             r2t + [w.h2c_data(CID, 0, datao, bytes(size))], termreq(FES_RANGE), patches=[_ttag(1)])
    b.io("h2cdata resends an offset", cat, "second H2CData repeats DATAO 0", TCP_RANGE,
         r2t + [w.h2c_data(CID, 0, 0, bytes(2048), last=False), w.h2c_data(CID, 0, 0, bytes(2048))],
         termreq(FES_RANGE), patches=[_ttag(1), _ttag(2)])
    b.io("h2cdata after the transfer ended", cat, "a further H2CData after the last one: its TTAG is no "
         "longer outstanding", TCP_H2C, r2t + [w.h2c_data(CID, 0, 0, d), w.h2c_data(CID, 0, 0, d)],
         termreq(FES_HDR, FEI_TTAG), patches=[_ttag(1), _ttag(2)])
    reuse = {"flush": w.capsule(w.sqe(0x00, CID, nsid=1)), "in-capsule write": _write_ic(CID, bytes(512)),
             "read": _read(CID)}
    for name, second in reuse.items():
        b.io(f"{name} reusing the cid of a write awaiting data", cat, f"a {name} with the CID of a Write whose "
             "H2CData has not arrived yet; the Write then completes normally", BASE_CID,
             r2t + [second, w.h2c_data(CID, 0, 0, d)], status(CID, 0, 0x03), patches=[_ttag(2)])
    b.io("h2cdata above maxh2cdata", cat, "H2CData of 131076 bytes; MAXH2CDATA is 131072", TCP_LIMIT,
         [_write_r2t(CID, 262144), w.h2c_data(CID, 0, 0, bytes(131076))], termreq(FES_LIMIT),
         patches=[_ttag(1)])


def _capsule_data(b: Builder) -> None:
    cat = "capsule-data"
    b.io("in-capsule data above ioccsz", cat, "8704 bytes in-capsule; the limit is 8192", TCP_LIMIT,
         [_write_ic(CID, bytes(8704))], termreq(FES_LIMIT))
    b.io("in-capsule data above every limit", cat, "131076 bytes in one capsule", TCP_LIMIT,
         [_write_ic(CID, bytes(131076))], termreq(FES_LIMIT))
    d = b"\x3c" * 512
    for name, t in {"transport": w.SGL_TRANSPORT, "keyed": w.SGL_KEYED, "address": w.SGL_DATA_BLOCK_ADDR,
                    "segment": w.SGL_SEGMENT}.items():
        b.io(f"in-capsule data with {name} sgl", cat, f"in-capsule data but SGL1 identifier {t:#04x}", TCP_SGL,
             [_write_ic(CID, d, sgl_type=t)], status(CID, 0, 0x11))
    for off in (4, 0xFFFFFFFF):
        b.io(f"in-capsule offset {off:#x}", cat, f"in-capsule SGL offset {off:#x} (must be 0)", TCP_SGL,
             [_write_ic(CID, d, sgl_addr=off)], status(CID, 0, 0x16))
    for length in (256, 1024):
        b.io(f"in-capsule sgl length {length}", cat, f"SGL length {length} for 512 in-capsule bytes", TCP_SGL,
             [_write_ic(CID, d, sgl_len=length)], status(CID, 0, 0x0F))
    for t in (0x00, 0x10, 0x20, 0x30, 0x40, 0xFF):
        b.io(f"read with sgl identifier {t:#04x}", cat, f"Read whose SGL1 identifier is {t:#04x}; NVMe/TCP "
             "takes transport data blocks (5Ah) only", TCP_SGL, [_read(CID, sgl_type=t)], status(CID, 0, 0x11))


def _truncation(b: Builder) -> None:
    cat = "truncated"
    icreq = w.icreq()
    cases = {
        "icreq cut at 4 bytes": [icreq[:4]],
        "icreq cut after the common header": [icreq[:8]],
        "icreq cut at 64 bytes": [icreq[:64]],
        "capsule header cut": [icreq, _noop()[:40]],
        "connect data cut": [icreq, w.connect(1)[:600]],
    }
    for name, send in cases.items():
        b.add(name, cat, f"{name}, then the host closes its side", TCP_TRUNC, send, CLOSE, half_close=True)
    b.io("write data cut", cat, "in-capsule Write cut in its data, then the host closes", TCP_TRUNC,
         [_write_ic(CID, bytes(4096))[:1000]], CLOSE, half_close=True)
    b.io("h2cdata cut", cat, "H2CData cut in its data, then the host closes", TCP_TRUNC,
         [_write_r2t(CID, 4096), w.h2c_data(CID, 0, 0, bytes(4096))[:2000]], CLOSE, half_close=True,
         patches=[_ttag(1)])
    b.add("close right after icreq", cat, "ICReq, then the host closes", TCP_TRUNC, [icreq], CLOSE,
          half_close=True)
    b.add("h2ctermreq after icreq", cat, "the host terminates after ICReq", TCP_TERM, [icreq, w.term_req(2)],
          CLOSE)
    b.admin("h2ctermreq after connect", cat, "the host terminates an admin queue", TCP_TERM,
            [w.term_req(1, 2)], CLOSE)
    b.admin("h2ctermreq with error data", cat, "H2CTermReq carrying 128 bytes of offending header", TCP_TERM,
            [w.term_req(3, 0, bytes(range(128)))], CLOSE)
    b.io("h2ctermreq on an io queue", cat, "H2CTermReq FES 06h on an I/O queue", TCP_TERM,
         [w.term_req(6, 8, struct.pack("<I", 0))], CLOSE)
