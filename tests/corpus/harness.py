"""What the corpus harnesses share: loading entries, patching, reading answers, judging outcomes.

PDUs from the controller are parsed with the spec's offsets (common header, CapsuleResp
CQE, R2T, C2HTermReq), independently of nvmeof's decoders.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import wire as w

ENTRIES_DIR = Path(__file__).with_name("entries")
C2H_TYPES = frozenset({w.ICRESP, w.C2H_TERM, w.CAPSULE_RESP, w.C2H_DATA, w.R2T})
MAX_TERM_PLEN = 152
ADMIN_CONNECT_CID = w.PRELUDE_CID + 1


def load_entries() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(ENTRIES_DIR.glob("*.json"))]


def messages(entry: dict[str, Any], key: str = "send") -> list[bytes]:
    return [bytes.fromhex(h) for h in entry.get(key, [])]


def split_pdus(stream: bytes | bytearray) -> tuple[list[bytes], int]:
    """Whole PDUs in ``stream`` (by PLEN at offset 4) and how many bytes were consumed."""
    out: list[bytes] = []
    pos = 0
    while len(stream) - pos >= 8:
        (plen,) = struct.unpack_from("<I", stream, pos + 4)
        assert plen >= 8, f"PDU with PLEN {plen} from the controller"
        if len(stream) - pos < plen:
            break
        out.append(bytes(stream[pos:pos + plen]))
        pos += plen
    return out, pos


def status_of(cqe_status: int) -> tuple[int, int]:
    """CQE status field (DW3 bits 31:16): bit 0 phase, bits 8:1 SC, bits 11:9 SCT."""
    return (cqe_status >> 9) & 0x7, (cqe_status >> 1) & 0xFF


@dataclass
class Answers:
    """What the controller sent on one connection, parsed."""

    pdus: list[bytes] = field(default_factory=list)
    completions: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # cid -> [(status, dw0)]
    r2t_ttags: list[int] = field(default_factory=list)
    term: bytes | None = None
    after_term: int = 0

    def add(self, pdu: bytes) -> None:
        assert pdu[0] in C2H_TYPES, f"controller sent PDU type {pdu[0]:#x}"
        if self.term is not None:
            self.after_term += 1
        self.pdus.append(pdu)
        t, flags, hlen, pdo = pdu[0], pdu[1], pdu[2], pdu[3]
        if t == w.CAPSULE_RESP:
            dw0, _dw1, _sqhd, _sqid, cid, st = struct.unpack_from("<IIHHHH", pdu, 8)
            self.completions.setdefault(cid, []).append((st, dw0))
        elif t == w.C2H_DATA and flags & w.SUCCESS:
            (cid,) = struct.unpack_from("<H", pdu, 8)
            self.completions.setdefault(cid, []).append((0, 0))
        elif t == w.R2T:
            self.r2t_ttags.append(struct.unpack_from("<H", pdu, 10)[0])
        elif t == w.C2H_TERM:
            self.term = pdu
        del hlen, pdo

    def status(self, cid: int) -> tuple[int, int] | None:
        got = self.completions.get(cid)
        return None if not got else status_of(got[0][0])


def cntlid_from(answers: Answers) -> int:
    got = answers.completions.get(ADMIN_CONNECT_CID)
    assert got and got[0][0] == 0, f"admin association failed: {got}"
    return got[0][1] & 0xFFFF


def patch(entry: dict[str, Any], which: int | str, message: bytes, *, cntlid: int | None,
          ttag: int | None) -> bytes:
    for p in entry.get("patches", []):
        if p["msg"] != which:
            continue
        if p["field"] == "cntlid":
            assert cntlid is not None
            message = w.patch_u16(message, p["at"], cntlid)
        else:
            assert ttag is not None, "TTAG patch without an R2T"
            message = w.patch_u16(message, p["at"], ttag ^ p.get("xor", 0))
    return message


def wants_ttag(entry: dict[str, Any], which: int) -> bool:
    return any(p["msg"] == which and p["field"] == "ttag" for p in entry.get("patches", []))


def check(entry: dict[str, Any], answers: Answers, closed: bool, followup_sent: bool) -> None:
    """Assert the entry's expected outcome (and that every prelude command succeeded)."""
    expect = entry["expect"]
    for cid, got in answers.completions.items():
        if cid >= w.PRELUDE_CID:
            assert all(st == 0 for st, _ in got), f"prelude/followup command {cid:#x} failed: {got}"
    if "termreq" in expect:
        term = answers.term
        assert term is not None, f"no C2HTermReq; got types {[p[0] for p in answers.pdus]}"
        assert answers.after_term == 0, "the controller sent PDUs after its C2HTermReq"
        _t, flags, hlen, pdo, plen = w.CH.unpack_from(term, 0)
        fes, fei = struct.unpack_from("<HI", term, 8)
        assert (hlen, flags, pdo) == (w.TERM_HLEN, 0, 0) and plen == len(term) <= MAX_TERM_PLEN
        assert fes == expect["termreq"]["fes"], f"FES {fes} != {expect['termreq']['fes']}"
        if expect["termreq"]["fei"] is not None:
            assert fei == expect["termreq"]["fei"], f"FEI {fei} != {expect['termreq']['fei']}"
        assert closed, "the connection stayed open after the C2HTermReq"
    elif "status" in expect:
        want = expect["status"]
        assert answers.term is None, f"unexpected C2HTermReq FES {struct.unpack_from('<H', answers.term, 8)[0]}"
        got = answers.status(want["cid"])
        assert got == (want["sct"], want["sc"]), f"CID {want['cid']:#x}: status {got} != {want['sct'], want['sc']}"
        assert not closed, "the connection closed after a command-level error"
        assert followup_sent and answers.status(w.FOLLOWUP_CID) == (0, 0), "the follow-up command failed"
    else:
        assert answers.term is None, "C2HTermReq where the spec says to just close"
        assert closed, "the connection was not closed"
