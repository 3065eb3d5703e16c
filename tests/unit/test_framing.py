"""PduReader on hand-framed PDUs: buffering, growth, padding, digests, errors.

The golden captures go through the reader in test_transport_vectors.py; these tests cover
what the captures do not show (several PDUs per read, PDUs larger than the buffer, PDO
padding, digest mismatches, the reader after an error).
"""

from __future__ import annotations

import random
import struct

import pytest

from nvmeof.errors import PduError, ProtocolMisuse
from nvmeof.transport.framing import PduReader
from nvmeof.wire.constants import Fes
from nvmeof.wire.pdu import CONTROLLER_TO_HOST, HOST_TO_CONTROLLER

from . import _pdus as p


def ctrl_reader(hdgst: bool = False, ddgst: bool = False, max_data: int = 1 << 20) -> PduReader:
    reader = PduReader(HOST_TO_CONTROLLER, max_data)
    reader.hdgst, reader.ddgst = hdgst, ddgst
    return reader


def host_reader(hdgst: bool = False, ddgst: bool = False) -> PduReader:
    reader = PduReader(CONTROLLER_TO_HOST, 1 << 20)
    reader.hdgst, reader.ddgst = hdgst, ddgst
    return reader


def drain(reader: PduReader) -> list:
    out = []
    while (pdu := reader.next_pdu()) is not None:
        out.append(pdu)
    return out


def test_nothing_until_the_common_header_is_complete() -> None:
    reader = ctrl_reader()
    reader.receive_data(b"\x04\x00\x48")
    assert reader.next_pdu() is None and reader.buffered == 3


@pytest.mark.parametrize(("hdgst", "ddgst"), [(False, False), (True, False), (False, True), (True, True)])
def test_several_pdus_in_one_read(hdgst: bool, ddgst: bool) -> None:
    pdus = [p.no_data_cmd(1, hdgst=hdgst), p.write_in_capsule(2, b"abcd" * 100, hdgst=hdgst, ddgst=ddgst),
            p.h2c_data(3, 0, 0, b"q" * 4096, hdgst=hdgst, ddgst=ddgst), p.read_cmd(4, 512, hdgst=hdgst)]
    reader = ctrl_reader(hdgst, ddgst)
    reader.receive_data(b"".join(pdus))
    got = drain(reader)
    assert [g.pdu_type for g in got] == [4, 4, 6, 4]
    assert [g.data for g in got] == [None, b"abcd" * 100, b"q" * 4096, None]
    assert all(g.data_digest_ok for g in got)
    assert [g.plen for g in got] == [len(x) for x in pdus]
    assert got[0].header == pdus[0][:72]  # header without its digest
    assert reader.buffered == 0


def test_pdu_larger_than_the_initial_buffer_and_split_reads() -> None:
    data = random.Random(5).randbytes(1 << 20)
    pdu = p.h2c_data(9, 0, 0, data, hdgst=True, ddgst=True)
    reader = ctrl_reader(True, True, max_data=1 << 20)
    rng = random.Random(6)
    pos = 0
    got = []
    while pos < len(pdu):
        n = rng.randrange(1, 200_000)
        reader.receive_data(pdu[pos:pos + n])
        pos += n
        got += drain(reader)
    assert len(got) == 1 and got[0].data == data and got[0].data_digest_ok


def test_header_checked_early_survives_buffer_compaction() -> None:
    """The big PDU's header is validated while it sits deep in the buffer; the buffer
    is then regrown/compacted and the PDU must still come out intact."""
    small = [p.write_in_capsule(i, bytes(4000)) for i in range(60)]
    big = p.h2c_data(77, 1, 0, b"B" * 300_000)
    reader = ctrl_reader()
    reader.receive_data(b"".join(small) + big[:100])
    assert len(drain(reader)) == 60
    assert reader.buffered == 100
    reader.receive_data(big[100:])
    (got,) = drain(reader)
    assert got.data == b"B" * 300_000


def test_get_buffer_and_buffer_updated() -> None:
    wire = b"".join(p.no_data_cmd(i) for i in range(1000))
    reader = ctrl_reader()
    pos = 0
    count = 0
    while pos < len(wire):
        view = reader.get_buffer(-1)
        assert len(view) >= 64 * 1024
        n = min(5000, len(wire) - pos)
        view[:n] = wire[pos:pos + n]
        view.release()
        reader.buffer_updated(n)
        pos += n
        count += len(drain(reader))
    assert count == 1000


def test_delivered_data_does_not_alias_the_buffer() -> None:
    reader = ctrl_reader()
    reader.receive_data(p.write_in_capsule(1, b"first" * 10))
    (first,) = drain(reader)
    reader.receive_data(p.write_in_capsule(2, b"secnd" * 10))
    drain(reader)
    assert first.data == b"first" * 10 and isinstance(first.data, bytes)


def test_pdo_padding_after_the_header_is_skipped() -> None:
    # CPDA-style alignment: data may start after padding following header (+ digest).
    raw = p.sqe(p.OP_WRITE, 1, sgl_len=8, sgl_type=p.SGL_OFFSET)
    header = struct.pack("<BBBBI", p.CAPSULE_CMD, 0, 72, 80, 80 + 8) + raw
    reader = ctrl_reader()
    reader.receive_data(header + b"\xee" * 8 + b"DATA1234")
    (got,) = drain(reader)
    assert got.pdo == 80 and got.data == b"DATA1234"


def test_pdu_without_data_may_state_pdo_equal_to_its_header() -> None:
    reader = ctrl_reader(hdgst=True)
    reader.receive_data(p.no_data_cmd(1, hdgst=True, pdo=76) + p.no_data_cmd(2, hdgst=True, pdo=0))
    assert [g.data for g in drain(reader)] == [None, None]


def test_data_digest_mismatch_is_reported_not_raised() -> None:
    reader = host_reader(True, True)
    bad = p.c2h_data(1, 0, b"x" * 100, hdgst=True, ddgst=True, bad_ddgst=True)
    good = p.c2h_data(2, 0, b"y" * 100, hdgst=True, ddgst=True)
    reader.receive_data(bad + good)
    first, second = drain(reader)
    assert first.data == b"x" * 100 and not first.data_digest_ok
    assert second.data == b"y" * 100 and second.data_digest_ok


def test_data_digest_covers_unaligned_lengths() -> None:
    reader = host_reader(False, True)
    reader.receive_data(p.c2h_data(1, 0, b"odd", ddgst=True))
    (got,) = drain(reader)
    assert got.data == b"odd" and got.data_digest_ok


def test_header_digest_error_carries_the_header() -> None:
    reader = ctrl_reader(hdgst=True)
    bad = p.read_cmd(1, 4096, hdgst=True, bad_hdgst=True)
    reader.receive_data(bad)
    with pytest.raises(PduError) as info:
        reader.next_pdu()
    assert info.value.fes == Fes.HEADER_DIGEST_ERROR and info.value.header == bad[:72]


def test_reader_is_dead_after_an_error() -> None:
    reader = ctrl_reader()
    reader.receive_data(b"\x05" + bytes(23))  # CapsuleResp sent to a controller
    with pytest.raises(PduError) as info:
        reader.next_pdu()
    assert (info.value.fes, info.value.fei) == (Fes.INVALID_HEADER_FIELD, 0)
    assert len(info.value.header) == 8  # hlen cannot be trusted: only the common header
    with pytest.raises(ProtocolMisuse):
        reader.next_pdu()


def test_term_req_with_error_data() -> None:
    reader = host_reader(hdgst=True, ddgst=True)
    header_copy = bytes(range(72))
    reader.receive_data(p.term_req(p.C2H_TERM, 1, 3, header_copy))
    (got,) = drain(reader)
    assert got.pdu_type == p.C2H_TERM and got.data == header_copy and got.plen == 24 + 72


def test_term_req_with_stray_digest_flag_at_the_very_end_of_the_buffer() -> None:
    """Regression: HDGSTF on a TermReq made the reader read a 'digest' past the PDU; when
    the TermReq ended exactly at the end of the receive buffer that was a struct.error.
    The data fills the reader's initial 256 KiB buffer exactly."""
    term = p.term_req(p.H2C_TERM, 2, 0, flags=p.HDGSTF)
    data = bytes(256 * 1024 - len(term) - 24)
    reader = ctrl_reader(max_data=1 << 20)
    reader.receive_data(p.h2c_data(1, 0, 0, data) + term)
    h2c, got = drain(reader)
    assert h2c.data == data and got.pdu_type == p.H2C_TERM and got.plen == 24


def test_max_data_limit() -> None:
    reader = ctrl_reader(max_data=4096)
    reader.receive_data(p.write_in_capsule(1, bytes(4096)))
    assert drain(reader)[0].data == bytes(4096)
    reader.receive_data(p.write_in_capsule(1, bytes(4100))[:8])  # decided from the common header
    with pytest.raises(PduError) as info:
        reader.next_pdu()
    assert info.value.fes == Fes.DATA_TRANSFER_LIMIT_EXCEEDED


@pytest.mark.parametrize(("pdu", "fei"), [
    (p.frame(p.CAPSULE_CMD, bytes(64), b"data", pdo=73), 3),  # not dword aligned
    (p.frame(p.CAPSULE_CMD, bytes(64), b"data", pdo=76), 3),  # plen leaves no data after pdo
    (p.frame(p.ICREQ, bytes(120), b"data"), 4),  # ICReq carries no data
    (p.frame(p.CAPSULE_CMD, bytes(64), plen=72, pdo=36), 3),
    (p.frame(p.CAPSULE_CMD, bytes(64), flags=p.DDGSTF), 1),
], ids=["pdo-unaligned", "pdo-past-data", "data-on-icreq", "pdo-inside-header", "ddgstf-no-data"])
def test_common_header_rules(pdu: bytes, fei: int) -> None:
    reader = ctrl_reader()
    reader.receive_data(pdu)
    with pytest.raises(PduError) as info:
        reader.next_pdu()
    assert (info.value.fes, info.value.fei) == (Fes.INVALID_HEADER_FIELD, fei)
