"""Every wire layout against the numbers of the specifications.

The literal sizes and offsets below are copied from the NVMe/TCP transport spec, the NVMe
base spec and the Fabrics spec (as summarised in shared/reference/nvme-facts.md, section 1
and 2), NOT from nvmeof: that is the point of the test.  Each row is
``field: (offset, width in bytes)``.
"""

from __future__ import annotations

import struct

import pytest

from nvmeof.wire import constants as c
from nvmeof.wire.layout import Layout, c_string, fixed_str
from nvmeof.wire.pdu import (
    C2H_DATA,
    CAPSULE_CMD_HEADER,
    CAPSULE_RESP_HEADER,
    COMMON_HEADER,
    H2C_DATA,
    ICREQ,
    ICRESP,
    R2T,
    TERM_REQ,
)
from nvmeof.wire.queue_entry import (
    CONNECT_CMD,
    CONNECT_DATA,
    CQE,
    FABRICS_CMD,
    PROPERTY_CMD,
    SGL_DESCRIPTOR,
    SQE,
)

CH = {"pdu_type": (0, 1), "flags": (1, 1), "hlen": (2, 1), "pdo": (3, 1), "plen": (4, 4)}

SPEC: dict[str, tuple[Layout, int, dict[str, tuple[int, int]]]] = {
    "CommonHeader": (COMMON_HEADER, 8, CH),
    "ICReq": (ICREQ, 128, {**CH, "pfv": (8, 2), "hpda": (10, 1), "dgst": (11, 1), "maxr2t": (12, 4)}),
    "ICResp": (ICRESP, 128, {**CH, "pfv": (8, 2), "cpda": (10, 1), "dgst": (11, 1),
                             "maxh2cdata": (12, 4)}),
    "TermReq": (TERM_REQ, 24, {**CH, "fes": (8, 2), "fei": (10, 4)}),
    "H2CData": (H2C_DATA, 24, {**CH, "cccid": (8, 2), "ttag": (10, 2), "datao": (12, 4),
                               "datal": (16, 4)}),
    "C2HData": (C2H_DATA, 24, {**CH, "cccid": (8, 2), "datao": (12, 4), "datal": (16, 4)}),
    "R2T": (R2T, 24, {**CH, "cccid": (8, 2), "ttag": (10, 2), "r2to": (12, 4), "r2tl": (16, 4)}),
    "CapsuleCmd": (CAPSULE_CMD_HEADER, 72, {
        **CH, "opcode": (8, 1), "sqe_flags": (9, 1), "cid": (10, 2), "nsid": (12, 4),
        "sgl_addr": (32, 8), "sgl_len": (40, 4), "sgl_type": (47, 1),
        "cdw10": (48, 4), "cdw11": (52, 4), "cdw12": (56, 4), "cdw13": (60, 4),
        "cdw14": (64, 4), "cdw15": (68, 4)}),
    "CapsuleResp": (CAPSULE_RESP_HEADER, 24, {
        **CH, "dw0": (8, 4), "dw1": (12, 4), "sqhd": (16, 2), "sqid": (18, 2), "cid": (20, 2),
        "status": (22, 2)}),
    "SglDescriptor": (SGL_DESCRIPTOR, 16, {"sgl_addr": (0, 8), "sgl_len": (8, 4), "sgl_type": (15, 1)}),
    "Sqe": (SQE, 64, {
        "opcode": (0, 1), "flags": (1, 1), "cid": (2, 2), "nsid": (4, 4), "cdw2": (8, 4),
        "cdw3": (12, 4), "mptr": (16, 8), "sgl_addr": (24, 8), "sgl_len": (32, 4),
        "sgl_type": (39, 1), "cdw10": (40, 4), "cdw11": (44, 4), "cdw12": (48, 4),
        "cdw13": (52, 4), "cdw14": (56, 4), "cdw15": (60, 4)}),
    "Cqe": (CQE, 16, {"dw0": (0, 4), "dw1": (4, 4), "sqhd": (8, 2), "sqid": (10, 2), "cid": (12, 2),
                      "status": (14, 2)}),
    "FabricsCmd": (FABRICS_CMD, 64, {"opcode": (0, 1), "cid": (2, 2), "fctype": (4, 1),
                                     "sgl_addr": (24, 8), "sgl_len": (32, 4), "sgl_type": (39, 1),
                                     "cdw10": (40, 4), "cdw11": (44, 4), "cdw12": (48, 4)}),
    "ConnectCmd": (CONNECT_CMD, 64, {"opcode": (0, 1), "cid": (2, 2), "fctype": (4, 1),
                                     "sgl_len": (32, 4), "sgl_type": (39, 1), "recfmt": (40, 2),
                                     "qid": (42, 2), "sqsize": (44, 2), "cattr": (46, 1),
                                     "kato": (48, 4)}),
    "PropertyCmd": (PROPERTY_CMD, 64, {"opcode": (0, 1), "cid": (2, 2), "fctype": (4, 1),
                                       "attrib": (40, 1), "ofst": (44, 4), "value": (48, 8)}),
    "ConnectData": (CONNECT_DATA, 1024, {"hostid": (0, 16), "cntlid": (16, 2), "subnqn": (256, 256),
                                         "hostnqn": (512, 256)}),
}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_size_matches_spec(name: str) -> None:
    layout, size, _ = SPEC[name]
    assert layout.size == size
    assert layout.struct.size == size


@pytest.mark.parametrize("name", sorted(SPEC))
def test_every_field_offset_and_width_matches_spec(name: str) -> None:
    layout, _, fields = SPEC[name]
    for field, (offset, width) in fields.items():
        assert layout.offset_of(field) == offset, f"{name}.{field}"
        code = next(code for f, code, _ in layout.fields if f == field)
        assert struct.calcsize("<" + code) == width, f"{name}.{field} width"


@pytest.mark.parametrize("name", sorted(SPEC))
def test_fields_land_where_the_spec_says(name: str) -> None:
    """Pack each field alone with a distinctive value and find its bytes at the spec offset."""
    layout, size, fields = SPEC[name]
    for field, (offset, width) in fields.items():
        code = next(code for f, code, _ in layout.fields if f == field)
        if code.endswith("s"):
            value: object = bytes((i % 255) + 1 for i in range(width))
            expected = value
        else:
            value = int.from_bytes(bytes(range(0xA1, 0xA1 + width)), "little")
            expected = bytes(range(0xA1, 0xA1 + width))
        raw = layout.pack(**{field: value})
        assert len(raw) == size
        assert raw[offset:offset + width] == expected, f"{name}.{field}"
        assert raw[:offset] == bytes(offset) and raw[offset + width:] == bytes(size - offset - width)
        assert getattr(layout.unpack(raw), field) == value


def test_capsule_headers_embed_sqe_and_cqe_after_the_common_header() -> None:
    for field, off in SQE.offsets.items():
        name = "sqe_flags" if field == "flags" else field
        assert CAPSULE_CMD_HEADER.offset_of(name) == 8 + off
    for field, off in CQE.offsets.items():
        assert CAPSULE_RESP_HEADER.offset_of(field) == 8 + off


def test_transport_constants_match_spec() -> None:
    assert (c.CH_SIZE, c.DIGEST_SIZE, c.ICREQ_SIZE) == (8, 4, 128)
    assert (c.CAPSULE_CMD_HLEN, c.CAPSULE_RESP_HLEN, c.DATA_PDU_HLEN, c.R2T_HLEN, c.TERM_REQ_HLEN) == (
        72, 24, 24, 24, 24)
    assert c.TERM_REQ_MAX_DATA == 128 and c.MIN_MAXH2CDATA == 4096 and c.MAX_HPDA == 31
    assert [int(t) for t in c.PduType] == [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09]
    assert (c.PduFlag.HDGSTF, c.PduFlag.DDGSTF, c.PduFlag.LAST_PDU, c.PduFlag.SUCCESS) == (1, 2, 4, 8)
    assert [int(f) for f in c.Fes] == [1, 2, 3, 4, 5, 6]
    assert (c.SglType.DATA_BLOCK_OFFSET, c.SglType.TRANSPORT_DATA_BLOCK) == (0x01, 0x5A)
    assert (c.NVME_TCP_IO_PORT, c.NVME_TCP_DISCOVERY_PORT) == (4420, 8009)
    assert c.GenericStatus.TRANSIENT_TRANSPORT_ERROR == 0x22


def test_status_field_encoding() -> None:
    # CQE status: bit 0 phase, SC bits 8:1, SCT bits 11:9, DNR bit 15.
    assert c.encode_status(0, 0x22) == 0x44
    assert c.encode_status(1, 0x82, dnr=True) == 0x8000 | (1 << 9) | (0x82 << 1)
    assert c.decode_status(0xC002) == (0, 0x01, True)  # nvmet's Invalid Opcode | More | DNR


# --- the Layout helper itself ----------------------------------------------------------------


def test_layout_inserts_padding_for_reserved_gaps_and_tail() -> None:
    layout = Layout("T", 16, [("a", "B", 0), ("b", "I", 4), ("c", "H", 12)])
    assert layout.struct.format == "<B3xI4xH2x"
    raw = layout.pack(a=1, b=2, c=3)
    assert raw == b"\x01\0\0\0\x02\0\0\0\0\0\0\0\x03\0\0\0"
    assert layout.unpack(raw) == (1, 2, 3)
    assert layout.unpack(b"\xff" * 20 + raw, 20).c == 3


def test_layout_rejects_overlap_and_wrong_sizes() -> None:
    with pytest.raises(AssertionError):
        Layout("Overlap", 8, [("a", "I", 0), ("b", "I", 2)])
    with pytest.raises(AssertionError):
        Layout("TooSmall", 4, [("a", "Q", 0)])


def test_layout_pack_rejects_unknown_fields_and_zero_fills() -> None:
    with pytest.raises(TypeError):
        ICREQ.pack(nonsense=1)
    assert ICREQ.pack() == bytes(128)
    buf = bytearray(b"\xee" * 130)
    TERM_REQ.pack_into(buf, 2, fes=3)
    assert buf[:2] == b"\xee\xee" and buf[2 + 8:2 + 10] == b"\x03\x00"
    assert buf[2 + 14:2 + 24] == bytes(10)  # reserved bytes written as zero


def test_layout_extend_prefixes_clashing_embedded_names() -> None:
    assert "sqe_flags" in CAPSULE_CMD_HEADER.offsets and CAPSULE_CMD_HEADER.offset_of("flags") == 1


def test_fixed_str_and_c_string() -> None:
    assert fixed_str("4420", 8) == b"4420    "
    assert fixed_str(b"ab", 4, b"\0") == b"ab\0\0"
    with pytest.raises(ValueError):
        fixed_str("toolong", 3)
    assert c_string(b"nqn.x\0\0garbage") == "nqn.x"
    assert c_string(b"SPDK  ") == "SPDK"
