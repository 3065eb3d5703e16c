"""Loading the captured PDUs of tests/vectors (see tests/vectors/PROVENANCE.md).

The captures are the oracle: this module only reads them, splitting each manifest into
TCP streams with their two directions in wire order.  Field decoding for assertions uses
``struct`` with offsets written from the spec, or our layouts where the point is to check
that the layouts decode real bytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import crcmod.predefined

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
SPDK = "linux-host-spdk-target"
NVMET = "linux61-host-nvmet-target/connect-io"
CAPTURES = (SPDK, NVMET)

HOST_TO_CTRL = "host_to_ctrl"
CTRL_TO_HOST = "ctrl_to_host"

# Independent CRC32C (crcmod's table-driven implementation), for recomputing digests.
_crc32c_ref = crcmod.predefined.mkCrcFun("crc-32c")


def ref_digest(data: bytes) -> bytes:
    return struct.pack("<I", _crc32c_ref(data))


@dataclass(frozen=True)
class Captured:
    capture: str
    file: str
    stream: int
    port: int
    direction: str
    pdu_type: int
    flags: int
    hlen: int
    pdo: int
    plen: int
    sha256: str
    raw: bytes = field(repr=False)

    @property
    def hdgst(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def ddgst(self) -> bool:
        return bool(self.flags & 0x02)

    @property
    def header(self) -> bytes:
        return self.raw[:self.hlen]

    @property
    def data(self) -> bytes:
        """The PDU data (between PDO and the optional data digest); b'' when none."""
        if self.pdo == 0 or self.plen == self.pdo:
            return b""
        end = self.plen - (4 if self.ddgst else 0)
        return self.raw[self.pdo:end]

    @property
    def cid(self) -> int:
        """CID of a CapsuleCmd/CapsuleResp, CCCID of a data PDU or R2T."""
        if self.pdu_type == 0x04:
            return int(struct.unpack_from("<H", self.raw, 8 + 2)[0])
        if self.pdu_type == 0x05:
            return int(struct.unpack_from("<H", self.raw, 8 + 12)[0])
        return int(struct.unpack_from("<H", self.raw, 8)[0])


@dataclass
class Stream:
    capture: str
    stream: int
    port: int
    host_to_ctrl: list[Captured]
    ctrl_to_host: list[Captured]

    @property
    def name(self) -> str:
        return f"{self.capture.split('/')[0]}-stream{self.stream:02d}"

    @property
    def icreq(self) -> Captured:
        return self.host_to_ctrl[0]

    @property
    def icresp(self) -> Captured:
        return self.ctrl_to_host[0]

    @property
    def dgst(self) -> int:
        """The DGST byte of the stream's ICReq (bit 0 HDGST, bit 1 DDGST)."""
        return self.icreq.raw[11]

    def capsules(self) -> list[Captured]:
        return [p for p in self.host_to_ctrl if p.pdu_type == 0x04]

    def capsule(self, cid: int) -> Captured:
        return next(p for p in self.capsules() if p.cid == cid)

    def find(self, direction: str, pdu_type: int, cid: int) -> list[Captured]:
        pdus = self.host_to_ctrl if direction == HOST_TO_CTRL else self.ctrl_to_host
        return [p for p in pdus if p.pdu_type == pdu_type and p.cid == cid]


@cache
def manifest(capture: str) -> dict:
    return json.loads((VECTORS / capture / "manifest.json").read_text())


@cache
def load(capture: str) -> tuple[Captured, ...]:
    folder = VECTORS / capture
    out = []
    for entry in manifest(capture)["pdus"]:
        out.append(Captured(
            capture=capture, file=entry["file"], stream=entry["tcp_stream"],
            port=entry["server_port"], direction=entry["direction"], pdu_type=entry["pdu_type"],
            flags=entry["flags"], hlen=entry["hlen"], pdo=entry["pdo"], plen=entry["plen"],
            sha256=entry["sha256"], raw=(folder / entry["file"]).read_bytes()))
    return tuple(out)


def _order(pdu: Captured) -> str:
    return pdu.file  # streamNN_direction_III_type.bin: file names sort in wire order


@cache
def streams() -> tuple[Stream, ...]:
    found: dict[tuple[str, int], Stream] = {}
    for capture in CAPTURES:
        for pdu in load(capture):
            key = (capture, pdu.stream)
            st = found.setdefault(key, Stream(capture, pdu.stream, pdu.port, [], []))
            (st.host_to_ctrl if pdu.direction == HOST_TO_CTRL else st.ctrl_to_host).append(pdu)
    for st in found.values():
        st.host_to_ctrl.sort(key=_order)
        st.ctrl_to_host.sort(key=_order)
    return tuple(found[k] for k in sorted(found))


def stream(capture: str, number: int) -> Stream:
    return next(s for s in streams() if s.capture == capture and s.stream == number)


def all_pdus() -> list[Captured]:
    return [p for capture in CAPTURES for p in load(capture)]


def with_ttag(pdu: Captured, ttag: int) -> bytes:
    """A captured H2CData with only its TTAG (offset 10) rewritten; the header digest, if
    present, is recomputed with the independent CRC32C.  Data and data digest are kept."""
    raw = bytearray(pdu.raw)
    struct.pack_into("<H", raw, 10, ttag)
    if pdu.hdgst:
        raw[pdu.hlen:pdu.hlen + 4] = ref_digest(bytes(raw[:pdu.hlen]))
    return bytes(raw)
