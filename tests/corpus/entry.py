"""Corpus entry builder: numbering, expectations, spec references."""

from __future__ import annotations

import re
from typing import Any

from . import wire as w

# Spec references (NVMe/TCP Transport Specification 1.0 = TCP; NVMe over Fabrics = NVMe-oF;
# NVMe Base = Base; KV Command Set 1.0 = KV).  FES values from the C2HTermReq PDU definition.
FES_HDR, FES_SEQ, FES_HDGST, FES_RANGE, FES_LIMIT, FES_PARAM = 1, 2, 3, 4, 5, 6
TCP_CH = "TCP 1.0 PDU Common Header (PDU-TYPE/FLAGS/HLEN/PDO/PLEN) and C2HTermReq FES 01h " \
         "Invalid PDU Header Field, FEI = byte offset of the offending header field"
TCP_SEQ = "TCP 1.0 connection establishment (ICReq first, exactly once) and C2HTermReq FES 02h PDU Sequence Error"
TCP_ICREQ = "TCP 1.0 ICReq PDU (PFV 0h, HPDA 0..31) and C2HTermReq FES 01h, FEI = offset of the field"
TCP_HDGST = "TCP 1.0 Digests: a header digest mismatch is fatal, C2HTermReq FES 03h Header Digest Error"
TCP_DDGST = "TCP 1.0 Digests: a data digest mismatch is not fatal; the command completes with " \
            "Transient Transport Error (SCT 0h, SC 22h)"
TCP_H2C = "TCP 1.0 H2CData PDU (CCCID/TTAG must name an outstanding R2T, DATAL = data length)"
TCP_RANGE = "TCP 1.0 H2CData: DATAO/DATAL must lie inside the R2T's range, in order; " \
            "C2HTermReq FES 04h Data Transfer Out of Range"
TCP_LIMIT = "TCP 1.0 in-capsule data (IOCCSZ) and MAXH2CDATA limits; C2HTermReq FES 05h Data Transfer " \
            "Limit Exceeded"
TCP_SGL = "TCP 1.0 capsule data transfer: in-capsule data needs an SGL Data Block/Offset with offset 0 and " \
          "length = data; Base 'SGL' status codes (SCT 0h SC 0Fh/11h/16h)"
TCP_TERM = "TCP 1.0 H2CTermReq: the receiver closes the connection without answering"
TCP_TRUNC = "TCP 1.0 / TCP transport: a PDU cut by connection loss is discarded; the controller just " \
            "closes (no PDU can be sent on a half-closed peer)"
OF_CONNECT = "NVMe-oF Connect command and response (SCT 1h: 80h Incompatible Format, 82h Connect " \
             "Invalid Parameters)"
OF_SEQ = "NVMe-oF: the first command on a queue is Connect; others get Command Sequence Error (SCT 0h SC 0Ch)"
OF_FCTYPE = "NVMe-oF Fabrics command types: an unsupported FCTYPE is an Invalid Command Opcode (SCT 0h SC 01h)"
OF_PROP = "NVMe-oF Property Get/Set: unknown offset, wrong size or read-only property -> Invalid Field " \
          "in Command (SCT 0h SC 02h)"
BASE_OPC = "Base: unsupported opcode -> Invalid Command Opcode (SCT 0h SC 01h)"
BASE_FIELD = "Base: Invalid Field in Command (SCT 0h SC 02h)"
BASE_NS = "Base: Invalid Namespace or Format (SCT 0h SC 0Bh)"
BASE_LBA = "NVM Command Set: LBA Out of Range (SCT 0h SC 80h)"
BASE_LOG = "Base Get Log Page: unsupported LID -> Invalid Log Page (SCT 1h SC 09h); bad offset -> SC 02h"
BASE_FEAT = "Base Set/Get Features: unsupported FID or value -> Invalid Field (SCT 0h SC 02h); SV set on a " \
            "non-saveable feature -> Feature Identifier Not Saveable (SCT 1h SC 0Dh)"
BASE_CNS = "Base Identify: unsupported CNS/CSI -> Invalid Field in Command (SCT 0h SC 02h)"
BASE_SEQ = "Base: admin commands other than Fabrics while CC.EN=0 / CSTS.RDY=0 -> Command Sequence Error"
BASE_FLAGS = "NVMe-oF: commands use SGLs (PSDT 01b/10b, PRPs are not used over fabrics); fused operations " \
             "unsupported (ONCS/FUSES 0) -> Invalid Field in Command (SCT 0h SC 02h)"
BASE_CID = "Base: a CID already outstanding on the queue -> Command ID Conflict (SCT 0h SC 03h)"
BASE_AER = "Base Asynchronous Event Request: more than AERL+1 outstanding -> Asynchronous Event Request " \
           "Limit Exceeded (SCT 1h SC 05h)"
BASE_SGLLEN = "Base: data length disagrees with the command -> Data SGL Length Invalid (SCT 0h SC 0Fh)"
BASE_MDTS = "Base: transfer larger than MDTS -> Invalid Field in Command (SCT 0h SC 02h)"
KV_KEY = "KV 1.0: key length 0 or above the maximum -> Invalid Key Size (SCT 0h SC 86h)"
KV_VALUE = "KV 1.0: value larger than the maximum -> Invalid Value Size (SCT 0h SC 85h)"
KV_MISSING = "KV 1.0: Retrieve/Delete/Exist/Store(must exist) on a missing key -> KV Key Does Not Exist " \
             "(SCT 0h SC 87h)"
KV_EXISTS = "KV 1.0 Store 'do not store if the key exists' on an existing key -> Key Exists (SCT 0h SC 89h)"


def termreq(fes: int, fei: int | None = None) -> dict[str, Any]:
    return {"termreq": {"fes": fes, "fei": fei}}


def status(cid: int, sct: int, sc: int) -> dict[str, Any]:
    return {"status": {"cid": cid, "sct": sct, "sc": sc}}


CLOSE: dict[str, Any] = {"close": True}


def admin_followup(dg: int = 0) -> bytes:
    """Property Get CAP (8 bytes): valid on any connected admin queue, enabled or not."""
    return w.prop_get(w.FOLLOWUP_CID, w.PROP_CAP, True, dg=dg)


def io_followup(dg: int = 0) -> bytes:
    """Flush of namespace 1."""
    return w.capsule(w.sqe(0x00, w.FOLLOWUP_CID, nsid=1), dg=dg)


class Builder:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._names: set[str] = set()

    def add(self, name: str, category: str, description: str, spec: str, send: list[bytes],
            expect: dict[str, Any], *, queue: str = "none", followup: bytes | None = None,
            patches: list[dict[str, Any]] | None = None, half_close: bool = False,
            association: list[bytes] | None = None) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        assert slug not in self._names, slug
        self._names.add(slug)
        if "status" in expect and followup is None:
            followup = io_followup() if queue == "io" else admin_followup()
        entry: dict[str, Any] = {
            "id": f"{len(self.entries) + 1:04d}-{slug}", "category": category,
            "description": description, "spec": spec, "queue": queue,
            "send": [m.hex() for m in send], "expect": expect,
        }
        if association:
            entry["association"] = [m.hex() for m in association]
        if patches:
            entry["patches"] = patches
        if half_close:
            entry["half_close"] = True
        if followup is not None:
            entry["followup"] = followup.hex()
        self.entries.append(entry)

    # -- shorthands for the common shapes ------------------------------------------------

    def admin(self, name: str, category: str, description: str, spec: str, cmds: list[bytes],
              expect: dict[str, Any], *, dg: int = 0, enable: bool = True, **kw: Any) -> None:
        """After ICReq + admin Connect (+ CC.EN=1)."""
        send = w.admin_prelude(dg, enable=enable) + cmds
        kw.setdefault("followup", admin_followup(dg) if "status" in expect else None)
        self.add(name, category, description, spec, send, expect, queue="admin", **kw)

    def io(self, name: str, category: str, description: str, spec: str, cmds: list[bytes],
           expect: dict[str, Any], *, dg: int = 0, patches: list[dict[str, Any]] | None = None,
           connect: list[bytes] | None = None, enable: bool = True, **kw: Any) -> None:
        """After an admin association (enabled) and ICReq + I/O Connect on QID 1 (or ``connect``,
        whose message 1 also gets the CNTLID patched in).  ``patches`` count from ``cmds``."""
        prelude = w.io_prelude(dg) if connect is None else connect
        base = len(prelude)
        all_patches: list[dict[str, Any]] = [{"msg": 1, "at": w.IO_CONNECT_CNTLID_AT, "field": "cntlid"}]
        for p in patches or []:
            all_patches.append({**p, "msg": p["msg"] + base if isinstance(p["msg"], int) else p["msg"]})
        kw.setdefault("followup", io_followup(dg) if "status" in expect else None)
        self.add(name, category, description, spec, prelude + cmds, expect, queue="io",
                 association=w.admin_prelude(enable=enable), patches=all_patches, **kw)
