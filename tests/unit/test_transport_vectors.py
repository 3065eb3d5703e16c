"""Golden PDUs captured between real Linux hosts and SPDK / nvmet (tests/vectors/PROVENANCE.md).

* every PDU of every stream goes through ``PduReader`` whole, byte by byte and with the
  first bytes of the next PDU trailing behind it;
* the facts the captures were made to show are decoded with our layouts and asserted;
* ``ControllerConnection`` and ``HostConnection`` are driven with each side of every
  stream (see test_transport_vectors_conn.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from nvmeof.transport.framing import Pdu, PduReader
from nvmeof.wire.constants import DISCOVERY_NQN, CommandSpecificStatus, GenericStatus, decode_status
from nvmeof.wire.layout import c_string
from nvmeof.wire.pdu import (
    C2H_DATA,
    CAPSULE_CMD_HEADER,
    CAPSULE_RESP_HEADER,
    CONTROLLER_TO_HOST,
    H2C_DATA,
    HOST_TO_CONTROLLER,
    ICREQ,
    ICRESP,
    R2T,
)
from nvmeof.wire.queue_entry import CONNECT_CMD, CONNECT_DATA, PROPERTY_CMD, SQE

from ._golden import (
    CTRL_TO_HOST,
    HOST_TO_CTRL,
    NVMET,
    SPDK,
    VECTORS,
    Captured,
    Stream,
    all_pdus,
    ref_digest,
    stream,
    streams,
)
from ._pdus import CAPSULE_CMD, CAPSULE_RESP
from ._pdus import H2C_DATA as T_H2C
from ._pdus import R2T as T_R2T

MAGIC = b"dpu-emu golden vector block 0001"
HOSTNQN_UUID_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"
SIDES = [(st, d) for st in streams() for d in (HOST_TO_CTRL, CTRL_TO_HOST)]
SIDE_IDS = [f"{st.name}-{d}" for st, d in SIDES]


def _pdus(st: Stream, direction: str) -> list[Captured]:
    return st.host_to_ctrl if direction == HOST_TO_CTRL else st.ctrl_to_host


def _reader(direction: str) -> PduReader:
    accept = HOST_TO_CONTROLLER if direction == HOST_TO_CTRL else CONTROLLER_TO_HOST
    return PduReader(accept, max_data=4 << 20)


def _check(got: Pdu | None, cap: Captured) -> None:
    assert got is not None, cap.file
    assert (got.pdu_type, got.flags, got.hlen, got.pdo, got.plen) == (
        cap.pdu_type, cap.flags, cap.hlen, cap.pdo, cap.plen), cap.file
    assert got.header == cap.header
    assert (got.data or b"") == cap.data
    assert got.data_digest_ok, cap.file


def _negotiate(reader: PduReader, st: Stream, cap: Captured) -> None:
    """After the IC exchange the reader expects the digests the ICReq asked for."""
    if cap.pdu_type in (0x00, 0x01):
        reader.hdgst = bool(st.dgst & 0x1)
        reader.ddgst = bool(st.dgst & 0x2)


# --- the vectors themselves -------------------------------------------------------------------


@pytest.mark.parametrize("cap", all_pdus(), ids=lambda c: f"{c.capture.split('/')[0]}/{c.file}")
def test_vector_matches_its_manifest(cap: Captured) -> None:
    assert hashlib.sha256(cap.raw).hexdigest() == cap.sha256
    assert len(cap.raw) == cap.plen
    assert tuple(cap.raw[:4]) == (cap.pdu_type, cap.flags, cap.hlen, cap.pdo)
    assert int.from_bytes(cap.raw[4:8], "little") == cap.plen
    if cap.hdgst:  # digests checked with the independent CRC32C, not ours
        assert cap.raw[cap.hlen:cap.hlen + 4] == ref_digest(cap.header)
    if cap.ddgst:
        assert cap.raw[-4:] == ref_digest(cap.data)


def test_every_stream_starts_with_the_ic_exchange() -> None:
    assert len(streams()) == 8
    for st in streams():
        assert st.icreq.pdu_type == 0x00 and st.icresp.pdu_type == 0x01
        assert st.icreq.raw[11] == st.icresp.raw[11], "controllers echo the host's digest choice"


# --- PduReader: whole, byte by byte, with trailing bytes --------------------------------------


@pytest.mark.parametrize(("st", "direction"), SIDES, ids=SIDE_IDS)
def test_reader_whole_pdus(st: Stream, direction: str) -> None:
    reader = _reader(direction)
    for cap in _pdus(st, direction):
        reader.receive_data(cap.raw)
        _check(reader.next_pdu(), cap)
        assert reader.next_pdu() is None and reader.buffered == 0
        _negotiate(reader, st, cap)


@pytest.mark.parametrize(("st", "direction"), SIDES, ids=SIDE_IDS)
def test_reader_byte_by_byte(st: Stream, direction: str) -> None:
    reader = _reader(direction)
    for cap in _pdus(st, direction):
        raw = cap.raw
        for i in range(len(raw) - 1):
            reader.receive_data(raw[i:i + 1])
            assert reader.next_pdu() is None
        reader.receive_data(raw[-1:])
        _check(reader.next_pdu(), cap)
        assert reader.buffered == 0
        _negotiate(reader, st, cap)


@pytest.mark.parametrize("trailing", [1, 7, 8, 23])
@pytest.mark.parametrize(("st", "direction"), SIDES, ids=SIDE_IDS)
def test_reader_with_trailing_bytes(st: Stream, direction: str, trailing: int) -> None:
    """Each feed ends ``trailing`` bytes into the next PDU; those bytes stay buffered."""
    pdus = _pdus(st, direction)
    wire = b"".join(p.raw for p in pdus)
    reader = _reader(direction)
    fed = 0
    end = 0
    for cap in pdus:
        end += cap.plen
        target = min(end + trailing, len(wire))
        reader.receive_data(wire[fed:target])
        fed = target
        _check(reader.next_pdu(), cap)
        _negotiate(reader, st, cap)  # before looking at the next header, as a connection does
        assert reader.next_pdu() is None
        assert reader.buffered == fed - end
    assert reader.buffered == 0


@pytest.mark.parametrize(("st", "direction"), SIDES, ids=SIDE_IDS)
def test_reader_whole_direction_in_one_call(st: Stream, direction: str) -> None:
    reader = _reader(direction)
    pdus = _pdus(st, direction)
    reader.receive_data(b"".join(p.raw for p in pdus))
    for cap in pdus:
        _check(reader.next_pdu(), cap)
        _negotiate(reader, st, cap)
    assert reader.next_pdu() is None and reader.buffered == 0


@pytest.mark.parametrize(("st", "direction"), SIDES, ids=SIDE_IDS)
def test_reader_through_get_buffer(st: Stream, direction: str) -> None:
    """The asyncio BufferedProtocol path: write into get_buffer(), then buffer_updated()."""
    reader = _reader(direction)
    wire = b"".join(p.raw for p in _pdus(st, direction))
    got: list[Pdu] = []
    pdus = iter(_pdus(st, direction))
    pos = 0
    while pos < len(wire):
        view = reader.get_buffer(1000)
        n = min(len(view), 1000, len(wire) - pos)
        view[:n] = wire[pos:pos + n]
        view.release()
        reader.buffer_updated(n)
        pos += n
        while (pdu := reader.next_pdu()) is not None:
            cap = next(pdus)
            _check(pdu, cap)
            got.append(pdu)
            _negotiate(reader, st, cap)
    assert len(got) == len(_pdus(st, direction))


# --- facts the captures show ---------------------------------------------------------------


def _connect(st: Stream) -> tuple[Any, Any]:
    cap = st.capsules()[0]
    return CONNECT_CMD.unpack(cap.raw, 8), CONNECT_DATA.unpack(cap.data)


def test_icreq_icresp_fields() -> None:
    spdk_admin = stream(SPDK, 1)
    req = ICREQ.unpack(spdk_admin.icreq.raw)
    assert (req.pdu_type, req.hlen, req.pdo, req.plen) == (0x00, 128, 0, 128)
    assert (req.pfv, req.hpda, req.dgst, req.maxr2t) == (0, 0, 0x3, 0)  # nvme connect -g -G
    resp = ICRESP.unpack(spdk_admin.icresp.raw)
    assert (resp.pfv, resp.cpda, resp.dgst, resp.maxh2cdata) == (0, 0, 0x3, 131072)
    for number in range(5):
        nvmet = ICRESP.unpack(stream(NVMET, number).icresp.raw)
        assert (nvmet.cpda, nvmet.dgst, nvmet.maxh2cdata) == (0, 0, 4 << 20)  # README: 4 MiB, CPDA 0
    assert stream(SPDK, 0).dgst == 0 and stream(SPDK, 2).dgst == 3


def test_connect_on_the_discovery_port() -> None:
    st = stream(SPDK, 0)
    assert st.port == 8009
    cmd, data = _connect(st)
    assert (cmd.opcode, cmd.fctype, cmd.sgl_type, cmd.sgl_len) == (0x7F, 0x01, 0x01, 1024)
    assert (cmd.recfmt, cmd.qid, cmd.sqsize, cmd.kato) == (0, 0, 31, 0)
    assert c_string(data.subnqn) == DISCOVERY_NQN
    assert c_string(data.hostnqn).startswith(HOSTNQN_UUID_PREFIX)
    assert data.cntlid == 0xFFFF  # dynamic controller model


def test_connect_admin_then_io_queue_uses_the_returned_cntlid() -> None:
    for capture, admin, io_queues in ((SPDK, 1, [2]), (NVMET, 2, [3, 4])):
        cmd, data = _connect(stream(capture, admin))
        assert (cmd.qid, cmd.sqsize, data.cntlid) == (0, 31, 0xFFFF)
        hostnqn = c_string(data.hostnqn)
        assert hostnqn.startswith(HOSTNQN_UUID_PREFIX)
        # The hostnqn's UUID is the HOSTID field (a 16-byte UUID), as nvme-cli derives it.
        assert hostnqn[len(HOSTNQN_UUID_PREFIX):].replace("-", "") == data.hostid.hex()
        resp = CAPSULE_RESP_HEADER.unpack(stream(capture, admin).find(CTRL_TO_HOST, CAPSULE_RESP, 0)[0].raw)
        cntlid = resp.dw0 & 0xFFFF
        for qid, number in enumerate(io_queues, start=1):
            io_cmd, io_data = _connect(stream(capture, number))
            assert (io_cmd.qid, io_cmd.sqsize, io_cmd.kato) == (qid, 127, 0)
            assert io_data.cntlid == cntlid
            assert c_string(io_data.subnqn) == c_string(data.subnqn)
    assert _connect(stream(SPDK, 1))[0].kato == 5000  # Linux default KATO, ms
    assert c_string(_connect(stream(SPDK, 1))[1].subnqn) == "nqn.2016-06.io.spdk:cnode1"
    assert c_string(_connect(stream(NVMET, 2))[1].subnqn) == "nqn.2026-11.io.vmi:ref1"


def test_property_get_and_set_after_connect() -> None:
    st = stream(SPDK, 0)
    caps = st.capsules()
    get_cap = PROPERTY_CMD.unpack(caps[1].raw, 8)
    assert (get_cap.opcode, get_cap.fctype, get_cap.attrib, get_cap.ofst) == (0x7F, 0x04, 1, 0x00)
    set_cc = PROPERTY_CMD.unpack(caps[5].raw, 8)
    assert (set_cc.fctype, set_cc.attrib, set_cc.ofst) == (0x00, 0, 0x14)
    assert set_cc.value & 0x1 == 1 and (set_cc.value >> 16) & 0xF == 6  # EN=1, IOSQES=6
    get_csts = PROPERTY_CMD.unpack(caps[6].raw, 8)
    assert (get_csts.fctype, get_csts.ofst) == (0x04, 0x1C)
    csts = CAPSULE_RESP_HEADER.unpack(st.find(CTRL_TO_HOST, CAPSULE_RESP, get_csts.cid)[0].raw)
    assert csts.dw0 & 0x1 == 1  # CSTS.RDY


def test_cids_carry_a_generation_counter_in_the_top_bits() -> None:
    for capture, number in ((SPDK, 0), (SPDK, 1), (NVMET, 2)):
        cids = [cap.cid for cap in stream(capture, number).capsules()]
        assert cids[:8] == [0, 1, 4096, 4097, 8192, 8193, 12288, 12289]
        assert {cid >> 12 for cid in cids} >= {0, 1, 2, 3}
        assert all(cid & 0xFFF < 128 for cid in cids)  # the tag part stays below the queue depth


def test_in_capsule_write_and_read_back() -> None:
    st = stream(SPDK, 2)
    write = next(c for c in st.capsules() if c.raw[8] == 0x01 and c.data)
    cmd = SQE.unpack(write.raw, 8)
    assert (cmd.opcode, cmd.nsid, cmd.cdw10, cmd.cdw12 & 0xFFFF) == (0x01, 1, 8, 0)  # LBA 8, 1 block
    assert (cmd.sgl_type, cmd.sgl_addr, cmd.sgl_len) == (0x01, 0, 4096)
    assert write.flags == 0x3 and write.pdo == 72 + 4  # HDGST then data, then DDGST
    assert write.data.startswith(MAGIC) and len(write.data) == 4096
    read = next(c for c in st.capsules() if c.raw[8] == 0x02 and SQE.unpack(c.raw, 8).cdw10 == 8)
    (c2h,) = st.find(CTRL_TO_HOST, 0x07, read.cid)
    hdr = C2H_DATA.unpack(c2h.raw)
    assert (hdr.datao, hdr.datal, hdr.flags) == (0, 4096, 0x4 | 0x3)  # LAST_PDU, no SUCCESS
    assert c2h.data == write.data


def test_r2t_then_h2cdata_of_16k() -> None:
    st = stream(SPDK, 2)
    write = next(c for c in st.capsules() if c.raw[8] == 0x01 and not c.data)
    cmd = SQE.unpack(write.raw, 8)
    assert (cmd.sgl_type, cmd.sgl_len, cmd.cdw10, cmd.cdw12) == (0x5A, 16384, 64, 3)  # 4 x 4 KiB at 64
    (r2t_cap,) = st.find(CTRL_TO_HOST, T_R2T, write.cid)
    r2t = R2T.unpack(r2t_cap.raw)
    assert (r2t.flags, r2t.plen, r2t.r2to, r2t.r2tl) == (0x1, 28, 0, 16384)
    (h2c_cap,) = st.find(HOST_TO_CTRL, T_H2C, write.cid)
    h2c = H2C_DATA.unpack(h2c_cap.raw)
    assert (h2c.ttag, h2c.datao, h2c.datal) == (r2t.ttag, 0, 16384)
    assert h2c.flags == 0x4 | 0x3 and h2c.pdo == 28 and h2c.plen == 28 + 16384 + 4
    assert st.ctrl_to_host.index(r2t_cap) < st.ctrl_to_host.index(
        st.find(CTRL_TO_HOST, CAPSULE_RESP, write.cid)[0])


def test_nvmet_128k_write_by_r2t_and_read_back() -> None:
    st = stream(NVMET, 4)
    write = next(c for c in st.capsules() if c.raw[8] == 0x01 and not c.data)
    (r2t_cap,) = st.find(CTRL_TO_HOST, T_R2T, write.cid)
    (h2c_cap,) = st.find(HOST_TO_CTRL, T_H2C, write.cid)
    r2t, h2c = R2T.unpack(r2t_cap.raw), H2C_DATA.unpack(h2c_cap.raw)
    assert r2t.r2tl == h2c.datal == 128 * 1024 and h2c.ttag == r2t.ttag and h2c.flags == 0x4
    read = next(c for c in st.capsules() if c.raw[8] == 0x02 and SQE.unpack(c.raw, 8).sgl_len == 131072)
    assert SQE.unpack(read.raw, 8).cdw10 == SQE.unpack(write.raw, 8).cdw10  # same SLBA
    (c2h,) = st.find(CTRL_TO_HOST, 0x07, read.cid)
    assert c2h.data == h2c_cap.data


def test_nvmet_answers_unknown_io_opcodes_with_invalid_opcode() -> None:
    st = stream(NVMET, 4)
    for cap in st.capsules():
        if cap.raw[8] in (0x81, 0x82):
            resp = CAPSULE_RESP_HEADER.unpack(st.find(CTRL_TO_HOST, CAPSULE_RESP, cap.cid)[0].raw)
            sct, sc, dnr = decode_status(resp.status)
            assert (sct, sc, dnr) == (0, GenericStatus.INVALID_OPCODE, True)
            assert sc != CommandSpecificStatus.INCOMPATIBLE_FORMAT


def test_nvmet_identify_and_discovery_pages_match_the_saved_copies() -> None:
    folder = VECTORS / "linux61-host-nvmet-target"
    st = stream(NVMET, 2)
    identify = next(c for c in st.capsules() if c.raw[8] == 0x06 and SQE.unpack(c.raw, 8).cdw10 == 1)
    (c2h,) = st.find(CTRL_TO_HOST, 0x07, identify.cid)
    id_ctrl = (folder / "id-ctrl.bin").read_bytes()
    assert c2h.data == id_ctrl
    assert int.from_bytes(id_ctrl[78:80], "little") == 1  # CNTLID = the Connect's answer
    assert c_string(id_ctrl[768:1024]) == "nqn.2026-11.io.vmi:ref1"  # SUBNQN
    log = (folder / "discovery-log.bin").read_bytes()
    assert len(log) == 3072 and int.from_bytes(log[8:16], "little") == 2  # NUMREC
    disc = stream(NVMET, 0)
    big = next(c for c in disc.capsules() if c.raw[8] == 0x02 and SQE.unpack(c.raw, 8).sgl_len == 3072)
    assert disc.find(CTRL_TO_HOST, 0x07, big.cid)[0].data == log


def test_layouts_decode_every_captured_header() -> None:
    """Each captured header decodes with our layout and re-encodes to the same bytes."""
    layouts = {0x00: ICREQ, 0x01: ICRESP, CAPSULE_CMD: CAPSULE_CMD_HEADER, CAPSULE_RESP: CAPSULE_RESP_HEADER,
               T_H2C: H2C_DATA, 0x07: C2H_DATA, T_R2T: R2T}
    for cap in all_pdus():
        layout = layouts[cap.pdu_type]
        record = layout.unpack(cap.raw)
        assert layout.pack(**record._asdict()) == cap.header, cap.file
