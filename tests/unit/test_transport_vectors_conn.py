"""Our connections driven by the golden captures (tests/vectors/PROVENANCE.md).

* ``ControllerConnection`` gets the host_to_ctrl side of every stream (a real Linux host):
  Established, then one CommandReceived per capsule, an R2T for the R2T write, and never
  a Terminated.  Where the capture's answers can be reproduced (ICResp, C2HData, R2T), our
  bytes are compared with SPDK's / nvmet's.
* ``HostConnection`` submits the same commands (its capsules must equal Linux's bytes) and
  gets the ctrl_to_host side: Established, then one Response per CapsuleResp.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nvmeof.transport.connection import ConnectionState, Established, Event, Terminated
from nvmeof.transport.controller_side import CommandReceived, ControllerConnection
from nvmeof.transport.host_side import HostConnection, Response
from nvmeof.wire.pdu import CAPSULE_RESP_HEADER, ICRESP, R2T
from nvmeof.wire.queue_entry import CONNECT_CMD, SQE

from ._golden import CTRL_TO_HOST, HOST_TO_CTRL, Captured, Stream, streams, with_ttag
from ._pdus import C2H_DATA, CAPSULE_CMD, CAPSULE_RESP, H2C_DATA, sent
from ._pdus import R2T as T_R2T

Feed = Callable[[object, bytes], list[Event]]


def feed_whole(conn: object, raw: bytes) -> list[Event]:
    return conn.receive_data(raw)  # type: ignore[attr-defined]


def feed_bytes(conn: object, raw: bytes) -> list[Event]:
    events: list[Event] = []
    for i in range(len(raw)):
        events += conn.receive_data(raw[i:i + 1])  # type: ignore[attr-defined]
    return events


FEEDS = {"whole": feed_whole, "byte-by-byte": feed_bytes}
STREAMS = list(streams())
STREAM_IDS = [st.name for st in STREAMS]


def _is_r2t_write(cap: Captured) -> bool:
    cmd = SQE.unpack(cap.raw, 8)
    return cmd.sgl_type == 0x5A and cmd.sgl_len > 0 and cmd.opcode & 0x3 == 0x1


def _c2h_payload(st: Stream, cid: int) -> bytes | None:
    pdus = st.find(CTRL_TO_HOST, C2H_DATA, cid)
    return b"".join(p.data for p in pdus) if pdus else None


def _start_controller(st: Stream, feed: Feed) -> ControllerConnection:
    maxh2cdata = ICRESP.unpack(st.icresp.raw).maxh2cdata
    conn = ControllerConnection(maxh2cdata=maxh2cdata, c2h_success=False, c2h_chunk=1 << 20)
    events = feed(conn, st.icreq.raw)
    assert len(events) == 1 and isinstance(events[0], Established)
    assert (events[0].hdgst, events[0].ddgst) == (bool(st.dgst & 1), bool(st.dgst & 2))
    # Same MAXH2CDATA as the real target -> the very same 128 bytes (PFV 0, CPDA 0, DGST echoed).
    assert sent(conn) == [st.icresp.raw]
    assert conn.state is ConnectionState.READY
    return conn


def _same_but_ttag(ours: bytes, theirs: bytes) -> None:
    """An R2T equal to the captured one except the TTAG (and the header digest over it)."""
    a, b = R2T.unpack(ours), R2T.unpack(theirs)
    assert a._replace(ttag=0) == b._replace(ttag=0)
    assert len(ours) == len(theirs)


@pytest.mark.parametrize("mode", sorted(FEEDS))
@pytest.mark.parametrize("st", STREAMS, ids=STREAM_IDS)
def test_controller_accepts_linux_host_stream(st: Stream, mode: str) -> None:
    feed = FEEDS[mode]
    conn = _start_controller(st, feed)
    ttags: dict[int, int] = {}
    received: list[int] = []
    for cap in st.host_to_ctrl[1:]:
        raw = cap.raw
        if cap.pdu_type == H2C_DATA:
            # Our TTAG numbering differs from SPDK's (6) and nvmet's (1): rewrite only the TTAG
            # of the captured H2CData, recomputing its header digest (independent CRC32C).
            raw = with_ttag(cap, ttags[cap.cid])
        events = feed(conn, raw)
        assert not any(isinstance(e, Terminated) for e in events), conn.error
        out = sent(conn)
        if cap.pdu_type == CAPSULE_CMD and _is_r2t_write(cap):
            assert events == [] and len(out) == 1
            (theirs,) = st.find(CTRL_TO_HOST, T_R2T, cap.cid)
            _same_but_ttag(out[0], theirs.raw)
            ttags[cap.cid] = R2T.unpack(out[0]).ttag
            continue
        assert out == []
        assert len(events) == 1 and isinstance(events[0], CommandReceived), events
        event = events[0]
        assert event.cid == cap.cid
        if cap.pdu_type == CAPSULE_CMD:
            assert event.raw == cap.raw[8:72]
            assert event.data == (cap.data or None)
        else:
            assert event.data == cap.data  # the whole write, from the H2CData
        received.append(event.cid)
    assert received == [c.cid for c in st.capsules()]  # the H2CData follows its capsule
    assert conn.state is ConnectionState.READY and conn.error is None


@pytest.mark.parametrize("st", STREAMS, ids=STREAM_IDS)
def test_controller_whole_stream_in_one_call(st: Stream) -> None:
    """All host PDUs in one receive_data: our first TTAG is 0, so the H2CData is
    rewritten to TTAG 0 up front (the emitted R2T must then say 0 as well)."""
    conn = ControllerConnection(maxh2cdata=ICRESP.unpack(st.icresp.raw).maxh2cdata)
    wire = b"".join(with_ttag(p, 0) if p.pdu_type == H2C_DATA else p.raw for p in st.host_to_ctrl)
    events = conn.receive_data(wire)
    assert isinstance(events[0], Established)
    commands = [e for e in events[1:] if isinstance(e, CommandReceived)]
    assert len(commands) == len(events) - 1 == len(st.capsules())
    out = sent(conn)
    assert out[0] == st.icresp.raw
    r2ts = [p for p in out[1:] if p[0] == T_R2T]
    assert len(r2ts) == sum(1 for c in st.capsules() if _is_r2t_write(c))
    assert all(R2T.unpack(p).ttag == 0 for p in r2ts)
    assert conn.state is ConnectionState.READY


@pytest.mark.parametrize("st", STREAMS, ids=STREAM_IDS)
def test_controller_answers_like_the_real_target(st: Stream) -> None:
    """Complete every command with the captured status/result/data: our C2HData PDUs equal
    the target's bytes (same flags: LAST_PDU, digests, no SUCCESS), and each CapsuleResp
    matches in everything but SQHD (SPDK and nvmet count the SQ head differently) and SQID."""
    conn = _start_controller(st, feed_whole)
    ttags: dict[int, int] = {}
    for cap in st.host_to_ctrl[1:]:
        raw = with_ttag(cap, ttags[cap.cid]) if cap.pdu_type == H2C_DATA else cap.raw
        events = conn.receive_data(raw)
        if cap.pdu_type == CAPSULE_CMD and _is_r2t_write(cap):
            ttags[cap.cid] = R2T.unpack(sent(conn)[0]).ttag
            continue
        (event,) = events
        assert isinstance(event, CommandReceived)
        if event.sqe[0] == 0x7F and event.raw[4] == 0x01:  # Fabrics Connect: bind the queue
            connect = CONNECT_CMD.unpack(event.raw)
            conn.bind_queue(connect.qid, connect.sqsize + 1)
        answers = st.find(CTRL_TO_HOST, CAPSULE_RESP, event.cid)
        if not answers:
            continue  # the Asynchronous Event Request stays outstanding
        theirs = CAPSULE_RESP_HEADER.unpack(answers[0].raw)
        payload = _c2h_payload(st, event.cid)
        if payload is None:
            conn.complete(event.cid, theirs.status, theirs.dw0, theirs.dw1)
        else:
            conn.complete_with_data(event.cid, payload, theirs.status, theirs.dw0, theirs.dw1)
        out = sent(conn)
        expected_c2h = [p.raw for p in st.find(CTRL_TO_HOST, C2H_DATA, event.cid)]
        assert out[:-1] == expected_c2h
        ours = CAPSULE_RESP_HEADER.unpack(out[-1])
        assert ours._replace(sqhd=0, sqid=0) == theirs._replace(sqhd=0, sqid=0)
        # nvmet reports the queue's SQID; SPDK leaves the field 0 on every queue.
        assert ours.sqid == conn.qid and theirs.sqid in (0, conn.qid)
        assert len(out[-1]) == len(answers[0].raw)


# --- the host side ---------------------------------------------------------------------------


def _start_host(st: Stream, feed: Feed) -> HostConnection:
    host = HostConnection(hdgst=bool(st.dgst & 1), ddgst=bool(st.dgst & 2))
    host.initiate()
    assert sent(host) == [st.icreq.raw]  # byte-identical to the Linux host's ICReq
    events = feed(host, st.icresp.raw)
    assert len(events) == 1 and isinstance(events[0], Established)
    resp = ICRESP.unpack(st.icresp.raw)
    assert (events[0].hdgst, events[0].ddgst, events[0].maxh2cdata) == (
        bool(resp.dgst & 1), bool(resp.dgst & 2), resp.maxh2cdata)
    assert host.state is ConnectionState.READY
    return host


def _submit_all(st: Stream, host: HostConnection) -> None:
    """Submit the captured commands; each capsule we send must equal the Linux host's."""
    for cap in st.capsules():
        cmd = SQE.unpack(cap.raw, 8)
        sqe = bytearray(cap.raw[8:72])
        if cap.data:
            host.submit(sqe, cap.data)
        elif _is_r2t_write(cap):
            host.submit(sqe, b"".join(p.data for p in st.find(HOST_TO_CTRL, H2C_DATA, cap.cid)))
        else:
            host.submit(sqe, read_length=cmd.sgl_len)
        assert sent(host) == [cap.raw], cap.file


@pytest.mark.parametrize("mode", sorted(FEEDS))
@pytest.mark.parametrize("st", STREAMS, ids=STREAM_IDS)
def test_host_accepts_target_stream(st: Stream, mode: str) -> None:
    feed = FEEDS[mode]
    host = _start_host(st, feed)
    _submit_all(st, host)
    responses: list[Response] = []
    for cap in st.ctrl_to_host[1:]:
        events = feed(host, cap.raw)
        assert not any(isinstance(e, Terminated) for e in events), host.error
        out = sent(host)
        if cap.pdu_type == T_R2T:
            # We answer the target's R2T with exactly the H2CData the Linux host sent.
            assert out == [p.raw for p in st.find(HOST_TO_CTRL, H2C_DATA, cap.cid)]
        else:
            assert out == []
        if cap.pdu_type == CAPSULE_RESP:
            assert len(events) == 1 and isinstance(events[0], Response)
            responses.append(events[0])
        else:
            assert events == []
    answered = [p for p in st.ctrl_to_host if p.pdu_type == CAPSULE_RESP]
    assert [r.cid for r in responses] == [p.cid for p in answered]
    for response, cap in zip(responses, answered, strict=True):
        cqe = CAPSULE_RESP_HEADER.unpack(cap.raw)
        assert (response.status, response.dw0, response.dw1, response.sqhd) == (
            cqe.status, cqe.dw0, cqe.dw1, cqe.sqhd)
        payload = _c2h_payload(st, cap.cid)
        command = st.capsule(cap.cid)
        is_read = not command.data and not _is_r2t_write(command) and SQE.unpack(command.raw, 8).sgl_len
        if payload is None and is_read and response.status:
            payload = b""  # a read that failed before any data (nvmet: Invalid Opcode)
        assert (None if response.data is None else bytes(response.data)) == payload
    # Only the Asynchronous Event Request (opcode 0x0C) is still outstanding, if any.
    outstanding = {c.cid for c in st.capsules()} - {r.cid for r in responses}
    assert all(st.capsule(cid).raw[8] == 0x0C for cid in outstanding)
    assert host.state is ConnectionState.READY and host.error is None


@pytest.mark.parametrize("st", STREAMS, ids=STREAM_IDS)
def test_host_whole_target_stream_in_one_call(st: Stream) -> None:
    host = _start_host(st, feed_whole)
    _submit_all(st, host)
    events = host.receive_data(b"".join(p.raw for p in st.ctrl_to_host[1:]))
    responses = [e for e in events if isinstance(e, Response)]
    assert len(responses) == len(events)
    assert [e.cid for e in responses] == [p.cid for p in st.ctrl_to_host if p.pdu_type == CAPSULE_RESP]
    assert b"".join(sent(host)) == b"".join(p.raw for p in st.host_to_ctrl if p.pdu_type == H2C_DATA)
