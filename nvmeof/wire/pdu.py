"""NVMe/TCP PDU layouts (TCP transport spec 1.0, figures for each PDU type).

Each header is declared once; encoders build whole PDUs (common header, PDU-specific
header, optional header digest, data, optional data digest) and the framing module
decodes them.
"""

from __future__ import annotations

from .constants import (
    CAPSULE_CMD_HLEN,
    CAPSULE_RESP_HLEN,
    CH_SIZE,
    DATA_PDU_HLEN,
    DIGEST_SIZE,
    F_DDGSTF,
    F_HDGSTF,
    ICREQ_SIZE,
    R2T_HLEN,
    TERM_REQ_HLEN,
    PduFlag,
    PduType,
)
from .crc import digest_bytes
from .layout import Layout
from .queue_entry import CQE, SQE

COMMON_HEADER = Layout("CommonHeader", CH_SIZE, [
    ("pdu_type", "B", 0),
    ("flags", "B", 1),
    ("hlen", "B", 2),
    ("pdo", "B", 3),
    ("plen", "I", 4),
])

ICREQ = COMMON_HEADER.extend("ICReq", ICREQ_SIZE, [
    ("pfv", "H", 8),
    ("hpda", "B", 10),
    ("dgst", "B", 11),
    ("maxr2t", "I", 12),
])

ICRESP = COMMON_HEADER.extend("ICResp", ICREQ_SIZE, [
    ("pfv", "H", 8),
    ("cpda", "B", 10),
    ("dgst", "B", 11),
    ("maxh2cdata", "I", 12),
])

TERM_REQ = COMMON_HEADER.extend("TermReq", TERM_REQ_HLEN, [
    ("fes", "H", 8),
    ("fei", "I", 10),
])

H2C_DATA = COMMON_HEADER.extend("H2CData", DATA_PDU_HLEN, [
    ("cccid", "H", 8),
    ("ttag", "H", 10),
    ("datao", "I", 12),
    ("datal", "I", 16),
])

C2H_DATA = COMMON_HEADER.extend("C2HData", DATA_PDU_HLEN, [
    ("cccid", "H", 8),
    ("datao", "I", 12),
    ("datal", "I", 16),
])

R2T = COMMON_HEADER.extend("R2T", R2T_HLEN, [
    ("cccid", "H", 8),
    ("ttag", "H", 10),
    ("r2to", "I", 12),
    ("r2tl", "I", 16),
])

CAPSULE_CMD_HEADER = COMMON_HEADER.extend("CapsuleCmd", CAPSULE_CMD_HLEN, embed=(SQE, CH_SIZE))
CAPSULE_RESP_HEADER = COMMON_HEADER.extend("CapsuleResp", CAPSULE_RESP_HLEN, embed=(CQE, CH_SIZE))

# PDU-specific header lengths (hlen) by type; what each direction may carry.
HLEN: dict[int, int] = {
    PduType.ICREQ: ICREQ_SIZE,
    PduType.ICRESP: ICREQ_SIZE,
    PduType.H2C_TERM_REQ: TERM_REQ_HLEN,
    PduType.C2H_TERM_REQ: TERM_REQ_HLEN,
    PduType.CAPSULE_CMD: CAPSULE_CMD_HLEN,
    PduType.CAPSULE_RESP: CAPSULE_RESP_HLEN,
    PduType.H2C_DATA: DATA_PDU_HLEN,
    PduType.C2H_DATA: DATA_PDU_HLEN,
    PduType.R2T: R2T_HLEN,
}
HEADER_DIGEST_TYPES = frozenset(
    {PduType.CAPSULE_CMD, PduType.CAPSULE_RESP, PduType.H2C_DATA, PduType.C2H_DATA, PduType.R2T}
)
DATA_DIGEST_TYPES = frozenset({PduType.CAPSULE_CMD, PduType.H2C_DATA, PduType.C2H_DATA})
HOST_TO_CONTROLLER = frozenset(
    {PduType.ICREQ, PduType.H2C_TERM_REQ, PduType.CAPSULE_CMD, PduType.H2C_DATA}
)
CONTROLLER_TO_HOST = frozenset(
    {PduType.ICRESP, PduType.C2H_TERM_REQ, PduType.CAPSULE_RESP, PduType.C2H_DATA, PduType.R2T}
)
# Term requests may carry the offending header as data, nothing else without a data field does.
DATA_TYPES = DATA_DIGEST_TYPES | {PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ}

# Flags each PDU type may carry (TermReqs: none are checked, as SPDK and Linux do).
VALID_FLAGS: dict[int, int] = {
    PduType.ICREQ: 0,
    PduType.ICRESP: 0,
    PduType.CAPSULE_CMD: int(PduFlag.HDGSTF | PduFlag.DDGSTF),
    PduType.CAPSULE_RESP: int(PduFlag.HDGSTF),
    PduType.R2T: int(PduFlag.HDGSTF),
    PduType.H2C_DATA: int(PduFlag.HDGSTF | PduFlag.DDGSTF | PduFlag.LAST_PDU),
    PduType.C2H_DATA: int(PduFlag.HDGSTF | PduFlag.DDGSTF | PduFlag.LAST_PDU | PduFlag.SUCCESS),
}

TERM_REQ_TYPES = frozenset({PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ})

_CH = COMMON_HEADER.struct


def build_pdu(
    header: bytes | bytearray,
    data: bytes | bytearray | memoryview | None = None,
    *,
    hdgst: bool = False,
    ddgst: bool = False,
    extra_flags: int = 0,
    data_alignment: int = 4,
) -> list[bytes | memoryview]:
    """Frame one PDU.

    ``header`` is the PDU header (common header + PDU-specific part, ``hlen`` bytes) with
    the common-header fields other than flags/hlen/pdo/plen already filled (they are
    rewritten here).  ``data_alignment`` is the peer's PDU data alignment in bytes
    ((HPDA or CPDA + 1) * 4): pad bytes go between the header (digest) and the data.
    Returns the pieces to write, so payloads are never copied.
    """
    hlen = len(header)
    pdu_type = header[0]
    flags = extra_flags
    use_hd = hdgst and pdu_type in HEADER_DIGEST_TYPES
    use_dd = ddgst and data is not None and len(data) > 0 and pdu_type in DATA_DIGEST_TYPES
    if use_hd:
        flags |= F_HDGSTF
    if use_dd:
        flags |= F_DDGSTF
    pdo = 0
    plen = hlen + (DIGEST_SIZE if use_hd else 0)
    pad = 0
    if data is not None and len(data) > 0:
        if pdu_type in TERM_REQ_TYPES:  # error data follows the header; PDO stays 0 (as SPDK sends)
            plen += len(data)
        else:
            pad = -plen % data_alignment
            pdo = plen + pad
            plen = pdo + len(data) + (DIGEST_SIZE if use_dd else 0)
    hdr = bytearray(header)
    _CH.pack_into(hdr, 0, pdu_type, flags, hlen, pdo, plen)
    pieces: list[bytes | memoryview] = [bytes(hdr)]
    if use_hd:
        pieces.append(digest_bytes(hdr))
    if pad:
        pieces.append(bytes(pad))
    if data is not None and len(data) > 0:
        pieces.append(data if isinstance(data, bytes | memoryview) else bytes(data))
        if use_dd:
            pieces.append(digest_bytes(data))
    return pieces
