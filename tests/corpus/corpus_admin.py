"""Corpus entries: Fabrics (Connect, Property Get/Set, FCTYPE) and admin commands."""

from __future__ import annotations

from . import wire as w
from .entry import (
    BASE_AER,
    BASE_CID,
    BASE_CNS,
    BASE_FEAT,
    BASE_FLAGS,
    BASE_LOG,
    BASE_NS,
    BASE_OPC,
    BASE_SEQ,
    OF_CONNECT,
    OF_FCTYPE,
    OF_PROP,
    OF_SEQ,
    Builder,
    status,
)

CID = 0x0020
G, C = 0, 1  # SCT generic / command specific
INVALID_OPCODE, INVALID_FIELD, CID_CONFLICT, SEQUENCE, INVALID_NS = 0x01, 0x02, 0x03, 0x0C, 0x0B
INCOMPATIBLE_FORMAT, CONNECT_INVALID, INVALID_LOG, NOT_SAVEABLE, AER_LIMIT = 0x80, 0x82, 0x09, 0x0D, 0x05
IDENTIFY, GET_LOG, SET_FEATURES, GET_FEATURES, AER, KEEP_ALIVE = 0x06, 0x02, 0x09, 0x0A, 0x0C, 0x18


def _cmd(opcode: int, cid: int = CID, **kw: int) -> bytes:
    return w.capsule(w.sqe(opcode, cid, **kw))


def _identify(cns: int, nsid: int = 0, csi: int = 0) -> bytes:
    return _cmd(IDENTIFY, nsid=nsid, sgl_len=4096, cdw10=cns, cdw11=csi << 24)


def _get_log(lid: int, numd: int = 127, offset: int = 0, csi: int = 0) -> bytes:
    return _cmd(GET_LOG, nsid=0xFFFFFFFF, sgl_len=(numd + 1) * 4, cdw10=lid | ((numd & 0xFFFF) << 16),
                cdw11=numd >> 16, cdw12=offset & 0xFFFFFFFF, cdw13=offset >> 32, cdw14=csi << 24)


def add_all(b: Builder) -> None:
    _connect(b)
    _fabrics(b)
    _admin(b)


def _connect(b: Builder) -> None:
    cat = "connect"
    ic = [w.icreq()]
    ok = w.connect(w.FOLLOWUP_CID)

    def bad(name: str, desc: str, connect: bytes, sc: int, sct: int = C) -> None:
        b.add(name, cat, desc, OF_CONNECT, ic + [connect], status(1, sct, sc), queue="admin", followup=ok)

    for recfmt in (1, 0xFFFF):
        bad(f"connect recfmt {recfmt:#x}", f"Connect RECFMT {recfmt:#x} (only 0)", w.connect(1, recfmt=recfmt),
            INCOMPATIBLE_FORMAT)
    for sqsize in (0, 30, 128, 0xFFFF):
        bad(f"admin connect sqsize {sqsize}", f"admin Connect SQSIZE {sqsize} (31..MQES)",
            w.connect(1, sqsize=sqsize), CONNECT_INVALID)
    for cntlid in (0, 1, 0xFFFE):
        bad(f"admin connect cntlid {cntlid:#x}", f"admin Connect CNTLID {cntlid:#x} on a dynamic-model "
            "subsystem (must be FFFFh)", w.connect(1, cntlid=cntlid), CONNECT_INVALID)
    bad("connect unknown subnqn", "Connect to a subsystem that does not exist",
        w.connect(1, subnqn="nqn.2026-11.io.dpu-emu:nope"), CONNECT_INVALID)
    bad("connect empty subnqn", "Connect with an empty SUBNQN", w.connect(1, subnqn=""), CONNECT_INVALID)
    bad("connect empty hostnqn", "Connect with an empty HOSTNQN", w.connect(1, hostnqn=""), CONNECT_INVALID)
    bad("discovery connect on an io queue", "Connect to the discovery NQN with QID 1",
        w.connect(1, qid=1, subnqn=w.DISCOVERY_NQN), CONNECT_INVALID)
    bad("io connect without admin controller", "I/O Connect naming CNTLID 7FFFh, which does not exist",
        w.connect(1, qid=1, sqsize=63, cntlid=0x7FFF), CONNECT_INVALID)
    b.admin("connect twice on one queue", cat, "a second Connect on a connected admin queue", OF_SEQ,
            [w.connect(CID)], status(CID, G, SEQUENCE))
    io_ok = w.connect(w.FOLLOWUP_CID, qid=1, sqsize=63, cntlid=0)
    io_ok_patch = {"msg": "followup", "at": w.IO_CONNECT_CNTLID_AT, "field": "cntlid"}

    def bad_io(name: str, desc: str, connect: bytes, *, enable: bool = True) -> None:
        b.io(name, cat, desc, OF_CONNECT, [], status(1, C, CONNECT_INVALID), connect=[w.icreq(), connect],
             followup=io_ok if enable else w.connect(w.FOLLOWUP_CID), enable=enable,
             patches=[io_ok_patch] if enable else [])

    for qid in (17, 0x100, 0xFFFF):
        bad_io(f"io connect qid {qid:#x}", f"I/O Connect QID {qid:#x}, above the 16 I/O queues",
               w.connect(1, qid=qid, sqsize=63, cntlid=0))
    for sqsize in (0, 128, 0xFFFF):
        bad_io(f"io connect sqsize {sqsize}", f"I/O Connect SQSIZE {sqsize} (1..MQES)",
               w.connect(1, qid=1, sqsize=sqsize, cntlid=0))
    bad_io("io connect other hostnqn", "I/O Connect for a controller of another host",
           w.connect(1, qid=1, sqsize=63, cntlid=0, hostnqn="nqn.2014-08.org.nvmexpress:uuid:other"))
    bad_io("io connect other hostid", "I/O Connect with a HOSTID differing from the admin Connect",
           w.connect(1, qid=1, sqsize=63, cntlid=0, hostid=bytes(range(16))))
    bad_io("io connect other subnqn", "I/O Connect naming another subsystem",
           w.connect(1, qid=1, sqsize=63, cntlid=0, subnqn="nqn.2026-11.io.dpu-emu:nope"))
    bad_io("io connect before cc.en", "I/O Connect while the controller is not enabled (CC.EN=0)",
           w.connect(1, qid=1, sqsize=63, cntlid=0), enable=False)


def _fabrics(b: Builder) -> None:
    cat = "fabrics"
    for fctype in (0x02, 0x03, 0x07, 0x09, 0x7E, 0xC0, 0xFF):
        b.admin(f"fabrics fctype {fctype:#04x}", cat, f"Fabrics command type {fctype:#04x} is not supported",
                OF_FCTYPE, [w.capsule(w.fabrics_sqe(fctype, CID))], status(CID, G, INVALID_OPCODE))
    gets = {"offset 0x4": (0x04, False), "offset 0x30": (0x30, False), "offset 0xffffffff": (0xFFFFFFFF, False),
            "cap as 4 bytes": (w.PROP_CAP, False), "vs as 8 bytes": (w.PROP_VS, True),
            "csts as 8 bytes": (w.PROP_CSTS, True)}
    for name, (ofst, size8) in gets.items():
        b.admin(f"property get {name}", cat, f"Property Get {name}", OF_PROP, [w.prop_get(CID, ofst, size8)],
                status(CID, G, INVALID_FIELD))
    sets = {"cap": (w.PROP_CAP, True), "vs": (w.PROP_VS, False), "csts": (w.PROP_CSTS, False),
            "cc as 8 bytes": (w.PROP_CC, True), "offset 0x1000": (0x1000, False)}
    for name, (ofst, size8) in sets.items():
        b.admin(f"property set {name}", cat, f"Property Set {name}: not a writable 4-byte property", OF_PROP,
                [w.prop_set(CID, ofst, 0, size8)], status(CID, G, INVALID_FIELD))
    for name, cmd in {"get": w.prop_get(CID, w.PROP_CAP, True), "set": w.prop_set(CID, w.PROP_CC, 0)}.items():
        b.io(f"property {name} on an io queue", cat, f"Property {name.title()} on I/O queue 1; properties are "
             "admin-queue commands", OF_FCTYPE + "; NVMe-oF: Property Get/Set are Admin Queue only", [cmd],
             status(CID, G, INVALID_OPCODE))
    ic = [w.icreq()]
    before = {"property get": w.prop_get(CID, w.PROP_CAP, True), "identify": _identify(1),
              "keep alive": _cmd(KEEP_ALIVE), "property set": w.prop_set(CID, w.PROP_CC, w.CC_ENABLE)}
    for name, cmd in before.items():
        b.add(f"{name} before connect", cat, f"{name} as the first command on a queue", OF_SEQ, ic + [cmd],
              status(CID, G, SEQUENCE), queue="admin", followup=w.connect(w.FOLLOWUP_CID))


def _admin(b: Builder) -> None:
    cat = "admin"
    flags = {"prp psdt 00b": 0x00, "reserved psdt 11b": 0xC0, "fused first": 0x41, "fused second": 0x42}
    for name, f in flags.items():
        b.admin(f"keep alive with {name}", cat, f"Keep Alive with CDW0 FLAGS {f:#04x}", BASE_FLAGS,
                [w.capsule(w.sqe(KEEP_ALIVE, CID, flags=f))], status(CID, G, INVALID_FIELD))
    b.add("connect with prp psdt", cat, "Connect whose FLAGS say PRP (PSDT 00b)", BASE_FLAGS,
          [w.icreq(), w.connect(1, flags=0)], status(1, G, INVALID_FIELD), queue="admin",
          followup=w.connect(w.FOLLOWUP_CID))
    for opc in (0x00, 0x01, 0x03, 0x04, 0x05, 0x10, 0x11, 0x80, 0x81, 0xC0, 0xFF):
        b.admin(f"admin opcode {opc:#04x}", cat, f"admin opcode {opc:#04x} is not supported over this "
                "controller", BASE_OPC, [_cmd(opc)], status(CID, G, INVALID_OPCODE))
    for name, cmd in {"identify": _identify(1), "get log page": _get_log(2), "keep alive": _cmd(KEEP_ALIVE)}.items():
        b.admin(f"{name} before cc.en", cat, f"{name} after Connect but before CC.EN=1", BASE_SEQ, [cmd],
                status(CID, G, SEQUENCE), enable=False)
    for cns in (0x04, 0x09, 0x10, 0x11, 0x12, 0x13, 0x1F, 0xFF):
        b.admin(f"identify cns {cns:#04x}", cat, f"Identify CNS {cns:#04x} is not supported", BASE_CNS,
                [_identify(cns)], status(CID, G, INVALID_FIELD))
    for csi in (0x02, 0x07, 0xFF):
        b.admin(f"identify io command set csi {csi:#04x}", cat, f"Identify CNS 06h for command set {csi:#x}",
                BASE_CNS, [_identify(0x06, csi=csi)], status(CID, G, INVALID_FIELD))
    for nsid in (0, 0x401, 0xFFFFFFFE):
        b.admin(f"identify namespace nsid {nsid:#x}", cat, f"Identify CNS 00h for NSID {nsid:#x}", BASE_NS,
                [_identify(0x00, nsid)], status(CID, G, INVALID_NS))
    b.admin("ns descriptors of an inactive nsid", cat, "Identify CNS 03h for an inactive NSID 1000", BASE_NS,
            [_identify(0x03, 1000)], status(CID, G, INVALID_NS))
    for lid in (0x06, 0x07, 0x08, 0x0D, 0x70, 0x80, 0xC0, 0xFF):
        b.admin(f"get log page lid {lid:#04x}", cat, f"Get Log Page LID {lid:#04x} is not supported here",
                BASE_LOG, [_get_log(lid)], status(CID, C, INVALID_LOG))
    logs = {"offset not dword aligned": _get_log(0x02, offset=2), "offset beyond the page": _get_log(0x02,
            offset=0x100000), "length above mdts": _get_log(0x02, numd=0x100000),
            "effects log of csi 2": _get_log(0x05, csi=2)}
    for name, cmd in logs.items():
        b.admin(f"get log page {name}", cat, f"Get Log Page: {name}", BASE_LOG, [cmd], status(CID, G, INVALID_FIELD))
    for fid in (0x00, 0x0C, 0x10, 0x7F, 0x80, 0xFF):
        b.admin(f"set features fid {fid:#04x}", cat, f"Set Features FID {fid:#04x} is not supported", BASE_FEAT,
                [_cmd(SET_FEATURES, cdw10=fid)], status(CID, G, INVALID_FIELD))
        b.admin(f"get features fid {fid:#04x}", cat, f"Get Features FID {fid:#04x} is not supported", BASE_FEAT,
                [_cmd(GET_FEATURES, cdw10=fid)], status(CID, G, INVALID_FIELD))
    feats = {"number of queues 65536": (0x07, 0xFFFF), "number of cq 65536": (0x07, 0xFFFF0000),
             "power state 1": (0x02, 1)}
    for name, (fid, value) in feats.items():
        b.admin(f"set features {name}", cat, f"Set Features {name}", BASE_FEAT,
                [_cmd(SET_FEATURES, cdw10=fid, cdw11=value)], status(CID, G, INVALID_FIELD))
    b.admin("set features save", cat, "Set Features Arbitration with SV=1", BASE_FEAT,
            [_cmd(SET_FEATURES, cdw10=0x01 | 1 << 31)], status(CID, C, NOT_SAVEABLE))
    for sel in (4, 7):
        b.admin(f"get features sel {sel}", cat, f"Get Features SEL {sel} is reserved", BASE_FEAT,
                [_cmd(GET_FEATURES, cdw10=0x07 | sel << 8)], status(CID, G, INVALID_FIELD))
    aers = [_cmd(AER, cid=0x30 + i) for i in range(4)]
    b.admin("fifth async event request", cat, "five AERs outstanding; AERL is 3 (4 requests)", BASE_AER,
            aers + [_cmd(AER, cid=CID)], status(CID, C, AER_LIMIT))
    b.admin("cid of an outstanding aer reused", cat, "Keep Alive reusing the CID of an outstanding AER",
            BASE_CID, [_cmd(AER, cid=CID), _cmd(KEEP_ALIVE, cid=CID)], status(CID, G, CID_CONFLICT))
