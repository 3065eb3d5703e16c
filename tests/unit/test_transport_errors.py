"""Bad input on a connection: the TermReq bytes we emit, or the non-fatal completion.

Each fatal case asserts the TermReq on the wire (decoded with the TERM_REQ layout and with
spec offsets): C2HTermReq 0x03 from the controller, H2CTermReq 0x02 from the host, the FES
and FEI of the transport spec, a copy of the offending header as data, and the connection
in TERMINATING.  Data digest errors are not fatal: the command completes with Transient
Transport Error (SCT 0, SC 0x22) and the connection keeps going.
"""

from __future__ import annotations

import struct

import pytest

from nvmeof.errors import PduError, PeerTerminated
from nvmeof.transport.connection import ConnectionState, Established, Terminated
from nvmeof.transport.controller_side import CommandFailedInTransport, CommandReceived, ControllerConnection
from nvmeof.transport.host_side import HostConnection, Response
from nvmeof.wire.constants import Fes
from nvmeof.wire.pdu import TERM_REQ

from . import _pdus as p

CID = 0x1234


def ready_controller(dgst: int = 0, **kw: object) -> ControllerConnection:
    conn = ControllerConnection(**kw)  # type: ignore[arg-type]
    events = conn.receive_data(p.icreq(dgst))
    assert isinstance(events[0], Established)
    p.sent(conn)
    return conn


def ready_host(dgst: int = 0, maxh2cdata: int = 131072) -> HostConnection:
    host = HostConnection(hdgst=bool(dgst & 1), ddgst=bool(dgst & 2))
    host.initiate()
    p.sent(host)
    assert isinstance(host.receive_data(p.icresp(dgst, maxh2cdata=maxh2cdata))[0], Established)
    return host


def assert_terminated(conn: object, bad: bytes, fes: int, fei: int | None, *, term_type: int = p.C2H_TERM,
                      copied: int | None = None) -> None:
    """Feed ``bad``; expect exactly one TermReq on the wire and the TERMINATING state."""
    events = conn.receive_data(bad)  # type: ignore[attr-defined]
    assert isinstance(events[-1], Terminated)
    assert isinstance(events[-1].error, PduError) and events[-1].error.fes == fes
    (term,) = p.sent(conn)
    record = TERM_REQ.unpack(term)
    assert record.pdu_type == term_type and record.hlen == 24 and record.flags == 0
    assert record.plen == len(term) <= 24 + 128
    pdu_type, hlen, plen, got_fes, got_fei, data = p.term_fields(term)
    assert (pdu_type, hlen, plen, got_fes) == (term_type, 24, len(term), fes)
    if fei is not None:
        assert got_fei == fei
    if copied is not None:  # the offending PDU header travels back as error data
        assert data == bad[:copied]
    assert conn.state is ConnectionState.TERMINATING  # type: ignore[attr-defined]
    # Once terminating, input is ignored and nothing more is sent.
    assert conn.receive_data(p.no_data_cmd(1)) == []  # type: ignore[attr-defined]
    assert p.sent(conn) == []


# --- controller: header-level errors --------------------------------------------------------------


@pytest.mark.parametrize("pdu_type", [0x08, 0x0A, 0xFF])
def test_unknown_pdu_type(pdu_type: int) -> None:
    bad = struct.pack("<BBBBI", pdu_type, 0, 24, 0, 24) + bytes(16)
    assert_terminated(ControllerConnection(), bad, Fes.INVALID_HEADER_FIELD, 0, copied=8)


@pytest.mark.parametrize("pdu", [p.icresp(), p.capsule_resp(1), p.r2t(1, 0, 0, 4096)],
                         ids=["icresp", "capsule_resp", "r2t"])
def test_pdu_type_of_the_wrong_direction(pdu: bytes) -> None:
    assert_terminated(ready_controller(), pdu, Fes.INVALID_HEADER_FIELD, 0)


def test_type_is_rejected_as_soon_as_the_common_header_is_complete() -> None:
    conn = ControllerConnection()
    assert conn.receive_data(b"\xff\x00\x18\x00\xff\xff\xff") == []  # 7 bytes: nothing yet
    events = conn.receive_data(b"\x7f")  # plen 0x7fffffff is never waited for
    assert isinstance(events[0], Terminated) and conn.state is ConnectionState.TERMINATING


def test_wrong_hlen() -> None:
    bad = p.frame(p.ICREQ, bytes(120), hlen=100)
    assert_terminated(ControllerConnection(), bad, Fes.INVALID_HEADER_FIELD, 2, copied=8)


def test_wrong_hlen_on_a_capsule() -> None:
    bad = p.no_data_cmd(CID, hlen=64)
    assert_terminated(ready_controller(), bad, Fes.INVALID_HEADER_FIELD, 2)


@pytest.mark.parametrize("pdo", [8, 70, 74, 255])
def test_wrong_pdo(pdo: int) -> None:
    bad = p.write_in_capsule(CID, bytes(512), pdo=pdo)
    assert_terminated(ready_controller(), bad, Fes.INVALID_HEADER_FIELD, 3)


def test_pdo_must_leave_room_for_the_header_digest() -> None:
    bad = p.write_in_capsule(CID, bytes(512), hdgst=True, pdo=72)
    assert_terminated(ready_controller(dgst=1), bad, Fes.INVALID_HEADER_FIELD, 3)


@pytest.mark.parametrize("pdu", [p.frame(p.ICREQ, bytes(120), plen=132), p.frame(p.ICREQ, bytes(120), plen=100)],
                         ids=["icreq-with-data", "icreq-shorter-than-header"])
def test_wrong_plen_icreq(pdu: bytes) -> None:
    assert_terminated(ControllerConnection(), pdu, Fes.INVALID_HEADER_FIELD, 4)


def test_wrong_plen_capsule_shorter_than_header() -> None:
    assert_terminated(ready_controller(), p.no_data_cmd(CID, plen=60), Fes.INVALID_HEADER_FIELD, 4)


@pytest.mark.parametrize("plen", [20, 24 + 129])
def test_wrong_plen_term_req(plen: int) -> None:
    bad = p.frame(p.H2C_TERM, struct.pack("<HI10x", 1, 0), plen=plen)
    assert_terminated(ready_controller(), bad, Fes.INVALID_HEADER_FIELD, 4)


def test_hdgst_flag_without_negotiation() -> None:
    assert_terminated(ready_controller(), p.no_data_cmd(CID, hdgst=True), Fes.INVALID_HEADER_FIELD, 1)


def test_missing_hdgst_flag_after_negotiation() -> None:
    assert_terminated(ready_controller(dgst=1), p.no_data_cmd(CID), Fes.INVALID_HEADER_FIELD, 1)


def test_ddgst_flag_without_negotiation() -> None:
    bad = p.write_in_capsule(CID, bytes(64), ddgst=True)
    assert_terminated(ready_controller(), bad, Fes.INVALID_HEADER_FIELD, 1)


def test_missing_ddgst_on_data_after_negotiation() -> None:
    bad = p.write_in_capsule(CID, bytes(64))
    assert_terminated(ready_controller(dgst=2), bad, Fes.INVALID_HEADER_FIELD, 1)


# --- controller: sequence errors ------------------------------------------------------------------


@pytest.mark.parametrize(("pdu", "hlen"), [(p.no_data_cmd(CID), 72), (p.h2c_data(CID, 0, 0, bytes(8)), 24)],
                         ids=["capsule", "h2cdata"])
def test_pdu_before_icreq(pdu: bytes, hlen: int) -> None:
    assert_terminated(ControllerConnection(), pdu, Fes.PDU_SEQUENCE_ERROR, None, copied=hlen)


def test_second_icreq() -> None:
    assert_terminated(ready_controller(), p.icreq(), Fes.PDU_SEQUENCE_ERROR, None, copied=128)


def test_bad_pfv() -> None:
    assert_terminated(ControllerConnection(), p.icreq(pfv=1), Fes.INVALID_HEADER_FIELD, 8, copied=128)


def test_bad_hpda() -> None:
    assert_terminated(ControllerConnection(), p.icreq(hpda=32), Fes.INVALID_HEADER_FIELD, 10)


def test_header_digest_error() -> None:
    bad = p.no_data_cmd(CID, hdgst=True, bad_hdgst=True)
    assert_terminated(ready_controller(dgst=1), bad, Fes.HEADER_DIGEST_ERROR, None, copied=72)


def test_header_digest_error_on_h2cdata() -> None:
    conn = ready_controller(dgst=3)
    conn.receive_data(p.write_r2t(CID, 4096, hdgst=True))
    ttag = struct.unpack_from("<H", p.sent(conn)[0], 10)[0]
    bad = p.h2c_data(CID, ttag, 0, bytes(4096), hdgst=True, ddgst=True, bad_hdgst=True)
    assert_terminated(conn, bad, Fes.HEADER_DIGEST_ERROR, None)


def test_host_term_req_ends_the_connection_without_an_answer() -> None:
    conn = ready_controller()
    events = conn.receive_data(p.term_req(p.H2C_TERM, Fes.UNSUPPORTED_PARAMETER, 7, bytes(24)))
    assert len(events) == 1 and isinstance(events[0].error, PeerTerminated)  # type: ignore[attr-defined]
    assert (events[0].error.fes, events[0].error.fei) == (6, 7)  # type: ignore[attr-defined]
    assert conn.state is ConnectionState.TERMINATING and p.sent(conn) == []


def test_term_req_with_digest_flags_is_still_a_term_req() -> None:
    """TermReqs never carry digests (Linux and SPDK ignore the flags): a stray HDGSTF
    must not make us check a digest over the next PDU's bytes."""
    conn = ready_controller(dgst=1)
    term = p.term_req(p.H2C_TERM, Fes.PDU_SEQUENCE_ERROR, flags=p.HDGSTF)
    events = conn.receive_data(term + p.no_data_cmd(1, hdgst=True))
    assert len(events) == 1 and isinstance(events[0].error, PeerTerminated)  # type: ignore[attr-defined]
    assert p.sent(conn) == []


# --- controller: data transfer errors -------------------------------------------------------------


def _r2t_for(conn: ControllerConnection, length: int, **kw: object) -> int:
    assert conn.receive_data(p.write_r2t(CID, length, **kw)) == []
    (r2t,) = p.sent(conn)
    assert r2t[0] == p.R2T
    return int(struct.unpack_from("<H", r2t, 10)[0])


def test_h2cdata_with_unknown_ttag() -> None:
    conn = ready_controller()
    ttag = _r2t_for(conn, 4096)
    assert_terminated(conn, p.h2c_data(CID, ttag + 1, 0, bytes(4096)), Fes.INVALID_HEADER_FIELD, 10,
                      copied=24)


def test_h2cdata_without_any_r2t() -> None:
    assert_terminated(ready_controller(), p.h2c_data(CID, 0, 0, bytes(16)), Fes.INVALID_HEADER_FIELD, 10)


def test_h2cdata_with_wrong_cccid() -> None:
    conn = ready_controller()
    ttag = _r2t_for(conn, 4096)
    assert_terminated(conn, p.h2c_data(CID + 1, ttag, 0, bytes(4096)), Fes.INVALID_HEADER_FIELD, 8)


@pytest.mark.parametrize(("datao", "size"), [(4096, 16), (4000, 200), (8, 64)])
def test_h2cdata_out_of_range_datao(datao: int, size: int) -> None:
    conn = ready_controller()
    ttag = _r2t_for(conn, 4096)
    # FEI is only defined for FES 1/6 (SPDK leaves it 0 otherwise), so it is not pinned here.
    assert_terminated(conn, p.h2c_data(CID, ttag, datao, bytes(size)), Fes.DATA_TRANSFER_OUT_OF_RANGE, None,
                      copied=24)


def test_h2cdata_datal_disagrees_with_plen() -> None:
    conn = ready_controller()
    ttag = _r2t_for(conn, 4096)
    bad = p.h2c_data(CID, ttag, 0, bytes(4096), datal=4000)
    assert_terminated(conn, bad, Fes.INVALID_HEADER_FIELD, 16)


def test_h2cdata_over_maxh2cdata() -> None:
    conn = ready_controller(maxh2cdata=4096, in_capsule_size=8192)
    ttag = _r2t_for(conn, 8192)
    bad = p.h2c_data(CID, ttag, 0, bytes(8192))
    assert_terminated(conn, bad, Fes.DATA_TRANSFER_LIMIT_EXCEEDED, None)


def test_in_capsule_data_over_the_limit() -> None:
    conn = ready_controller(in_capsule_size=4096)
    assert_terminated(conn, p.write_in_capsule(CID, bytes(8192)), Fes.DATA_TRANSFER_LIMIT_EXCEEDED, None,
                      copied=72)


def test_pdu_data_over_the_reader_limit() -> None:
    conn = ready_controller(maxh2cdata=4096, in_capsule_size=4096)
    bad = p.write_in_capsule(CID, bytes(4100))
    assert_terminated(conn, bad, Fes.DATA_TRANSFER_LIMIT_EXCEEDED, None)


def _assert_transient_transport_error(conn: ControllerConnection, events: list, cid: int) -> None:
    assert len(events) == 1 and isinstance(events[0], CommandFailedInTransport)
    assert events[0].cid == cid
    (resp,) = p.sent(conn)
    got_cid, status, _, _ = p.resp_fields(resp)
    assert got_cid == cid
    assert p.status_sct_sc(status) == (0, 0x22)  # Transient Transport Error
    assert not status & 0x8000  # DNR clear: the host may retry
    assert conn.state is ConnectionState.READY


def test_data_digest_error_in_capsule_is_not_fatal() -> None:
    conn = ready_controller(dgst=3)
    bad = p.write_in_capsule(CID, b"x" * 4096, hdgst=True, ddgst=True, bad_ddgst=True)
    _assert_transient_transport_error(conn, conn.receive_data(bad), CID)
    events = conn.receive_data(p.write_in_capsule(CID + 1, b"y" * 512, hdgst=True, ddgst=True))
    assert len(events) == 1 and isinstance(events[0], CommandReceived) and events[0].data == b"y" * 512


def test_data_digest_error_on_h2cdata_is_not_fatal() -> None:
    conn = ready_controller(dgst=3, maxh2cdata=4096)
    ttag = _r2t_for(conn, 8192, hdgst=True)
    first = p.h2c_data(CID, ttag, 0, b"a" * 4096, last=False, hdgst=True, ddgst=True, bad_ddgst=True)
    assert conn.receive_data(first) == []  # the transfer goes on to its end
    second = p.h2c_data(CID, ttag, 4096, b"b" * 4096, hdgst=True, ddgst=True)
    _assert_transient_transport_error(conn, conn.receive_data(second), CID)
    # The TTAG is free again and the next command is processed normally.
    ttag2 = _r2t_for(conn, 4096, hdgst=True)
    events = conn.receive_data(p.h2c_data(CID, ttag2, 0, b"c" * 4096, hdgst=True, ddgst=True))
    assert len(events) == 1 and isinstance(events[0], CommandReceived) and events[0].data == b"c" * 4096


def test_in_capsule_sgl_errors_complete_the_command() -> None:
    conn = ready_controller()
    bad_len = p.capsule(p.sqe(p.OP_WRITE, CID, sgl_len=100, sgl_type=p.SGL_OFFSET), bytes(64))
    (event,) = conn.receive_data(bad_len)
    assert isinstance(event, CommandFailedInTransport) and event.error.sc == 0x0F  # Data SGL Length Invalid
    bad_type = p.capsule(p.sqe(p.OP_WRITE, CID, sgl_len=64, sgl_type=p.SGL_TRANSPORT), bytes(64))
    (event,) = conn.receive_data(bad_type)
    assert isinstance(event, CommandFailedInTransport) and event.error.sc == 0x11  # SGL Descriptor Type Invalid
    assert len(p.sent(conn)) == 2 and conn.state is ConnectionState.READY


def test_terminate_on_our_own_initiative() -> None:
    conn = ready_controller()
    events = conn.terminate(Fes.UNSUPPORTED_PARAMETER, 9)
    assert isinstance(events[0], Terminated)
    (term,) = p.sent(conn)
    assert p.term_fields(term)[:5] == (p.C2H_TERM, 24, 24, 6, 9)
    assert conn.state is ConnectionState.TERMINATING


# --- host side ------------------------------------------------------------------------------------


def _host_rejects(resp: bytes, fes: int, fei: int, dgst: int = 0) -> None:
    host = HostConnection(hdgst=bool(dgst & 1), ddgst=bool(dgst & 2))
    host.initiate()
    p.sent(host)
    assert_terminated(host, resp, fes, fei, term_type=p.H2C_TERM, copied=128)


@pytest.mark.parametrize(("asked", "answered"), [(0, 1), (0, 2), (3, 1), (3, 0), (1, 3), (2, 0)])
def test_host_rejects_icresp_with_changed_digests(asked: int, answered: int) -> None:
    _host_rejects(p.icresp(answered), Fes.INVALID_HEADER_FIELD, 11, dgst=asked)


@pytest.mark.parametrize("cpda", [1, 31])
def test_host_rejects_icresp_with_cpda(cpda: int) -> None:
    _host_rejects(p.icresp(cpda=cpda), Fes.INVALID_HEADER_FIELD, 10)


@pytest.mark.parametrize("maxh2cdata", [0, 4092, 4097, 8190])
def test_host_rejects_icresp_with_bad_maxh2cdata(maxh2cdata: int) -> None:
    _host_rejects(p.icresp(maxh2cdata=maxh2cdata), Fes.INVALID_HEADER_FIELD, 12)


def test_host_rejects_icresp_with_pfv() -> None:
    _host_rejects(p.icresp(pfv=1), Fes.INVALID_HEADER_FIELD, 8)


def test_host_rejects_pdu_before_icresp() -> None:
    host = HostConnection()
    host.initiate()
    p.sent(host)
    assert_terminated(host, p.capsule_resp(1), Fes.PDU_SEQUENCE_ERROR, None, term_type=p.H2C_TERM)


def test_host_rejects_second_icresp_and_host_only_types() -> None:
    assert_terminated(ready_host(), p.icresp(), Fes.PDU_SEQUENCE_ERROR, None, term_type=p.H2C_TERM)
    assert_terminated(ready_host(), p.icreq(), Fes.INVALID_HEADER_FIELD, 0, term_type=p.H2C_TERM)
    assert_terminated(ready_host(), p.no_data_cmd(1), Fes.INVALID_HEADER_FIELD, 0, term_type=p.H2C_TERM)


def test_host_rejects_c2hdata_and_r2t_for_unknown_commands() -> None:
    assert_terminated(ready_host(), p.c2h_data(7, 0, bytes(16)), Fes.INVALID_HEADER_FIELD, 8,
                      term_type=p.H2C_TERM)
    assert_terminated(ready_host(), p.r2t(7, 0, 0, 16), Fes.INVALID_HEADER_FIELD, 8, term_type=p.H2C_TERM)


def test_host_rejects_c2hdata_out_of_range_and_success_without_last() -> None:
    host = ready_host()
    host.submit(bytearray(p.sqe(p.OP_READ, 5)), read_length=4096)
    p.sent(host)
    assert_terminated(host, p.c2h_data(5, 4000, bytes(200)), Fes.DATA_TRANSFER_OUT_OF_RANGE, 12,
                      term_type=p.H2C_TERM)
    host = ready_host()
    host.submit(bytearray(p.sqe(p.OP_READ, 5)), read_length=4096)
    p.sent(host)
    bad = p.c2h_data(5, 0, bytes(4096), last=False, success=True)
    assert_terminated(host, bad, Fes.INVALID_HEADER_FIELD, 1, term_type=p.H2C_TERM)


def test_host_rejects_r2t_beyond_the_write() -> None:
    host = ready_host()
    host.submit(bytearray(p.sqe(p.OP_WRITE, 5)), bytes(16384))
    p.sent(host)
    assert_terminated(host, p.r2t(5, 3, 8192, 16384), Fes.DATA_TRANSFER_OUT_OF_RANGE, None,
                      term_type=p.H2C_TERM)


def test_host_c2h_data_digest_error_fails_only_that_read() -> None:
    host = ready_host(dgst=3)
    host.submit(bytearray(p.sqe(p.OP_READ, 5)), read_length=64)
    host.submit(bytearray(p.sqe(p.OP_READ, 6)), read_length=64)
    p.sent(host)
    bad = p.c2h_data(5, 0, b"z" * 64, success=True, hdgst=True, ddgst=True, bad_ddgst=True)
    (event,) = host.receive_data(bad)
    assert isinstance(event, Response) and event.cid == 5
    assert p.status_sct_sc(event.status) == (0, 0x04)  # Data Transfer Error, as Linux reports it
    good = p.c2h_data(6, 0, b"w" * 64, hdgst=True, ddgst=True) + p.capsule_resp(6, hdgst=True)
    (event,) = host.receive_data(good)
    assert isinstance(event, Response) and event.data is not None
    assert event.cid == 6 and event.status == 0 and bytes(event.data) == b"w" * 64
    assert host.state is ConnectionState.READY


def test_host_peer_term_req() -> None:
    host = ready_host()
    (event,) = host.receive_data(p.term_req(p.C2H_TERM, Fes.HEADER_DIGEST_ERROR, 0, bytes(72)))
    assert isinstance(event, Terminated) and isinstance(event.error, PeerTerminated)
    assert event.error.fes == 3 and host.state is ConnectionState.TERMINATING and p.sent(host) == []
    with pytest.raises(ConnectionError):
        host.submit(bytearray(p.sqe(p.OP_FLUSH, 1)))


@pytest.mark.parametrize("bad_flag", [p.LAST_PDU, p.SUCCESS], ids=["last-pdu", "success"])
def test_capsule_with_flags_of_a_data_pdu_is_invalid_header_field(bad_flag: int) -> None:
    conn = ready_controller()
    cmd = p.sqe(0x02, CID, sgl_len=4096)
    bad = p.frame(p.CAPSULE_CMD, cmd, flags=bad_flag)
    assert_terminated(conn, bad, Fes.INVALID_HEADER_FIELD, 1)


def test_h2c_data_with_success_flag_is_invalid_header_field() -> None:
    conn = ready_controller()
    conn.receive_data(p.write_r2t(CID, 4096))
    p.sent(conn)  # the R2T
    bad = p.frame(p.H2C_DATA, struct.pack("<HHII4x", CID, 0, 0, 4096), b"\0" * 4096,
                  flags=p.LAST_PDU | p.SUCCESS)
    assert_terminated(conn, bad, Fes.INVALID_HEADER_FIELD, 1)


def test_c2h_data_honours_the_host_pdu_data_alignment() -> None:
    """HPDA=1 asks for data on 8-byte boundaries: C2HData (hlen 24 + HDGST 4) gets 4 pad bytes."""
    conn = ControllerConnection()
    assert isinstance(conn.receive_data(p.icreq(1, hpda=1))[0], Established)
    p.sent(conn)
    conn.receive_data(p.read_cmd(CID, 4096, hdgst=True))
    payload = bytes(range(256)) * 16
    conn.complete_with_data(CID, payload)
    c2h, _resp = p.split(p.joined(conn.data_to_send()))
    pdo = c2h[3]
    assert pdo == 32 and pdo % 8 == 0
    assert c2h[pdo:pdo + 4096] == payload


def test_term_req_carries_the_offending_header_after_its_own_with_pdo_zero() -> None:
    conn = ready_controller()
    bad = p.frame(0x08, b"\0" * 16)  # 08h is no PDU type
    conn.receive_data(bad)
    (term,) = p.sent(conn)
    assert term[3] == 0  # PDO
    # the header of an unknown type has no known length: the 8-byte common header travels back
    assert int.from_bytes(term[4:8], "little") == len(term) == 24 + 8
    assert term[24:] == bad[:8]
