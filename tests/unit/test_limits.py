"""Limits that protect the process, sans-IO: PDU length refused from the common header
(before the body is buffered), in-capsule size, R2Ts per connection, memory per connection
(backpressure, never an error) and connections per listener.  PDUs are hand-framed
(tests/unit/_pdus.py, offsets from the spec), not built by our encoder."""

from __future__ import annotations

import struct

import pytest

from nvmeof.target.limits import ConnectionBudget, ListenerGate, max_pdu_data, max_plen
from nvmeof.transport.connection import ConnectionState, Established, Terminated
from nvmeof.transport.controller_side import CommandReceived, ControllerConnection

from . import _pdus as p

FES_INVALID_HEADER_FIELD, FES_DATA_TRANSFER_LIMIT_EXCEEDED = 0x01, 0x05  # NVMe/TCP 1.0, TermReq FES
FEI_PDO, FEI_PLEN = 3, 4  # byte offsets in the common header
MIB = 1 << 20


def ready(dgst: int = 0, **kw: object) -> ControllerConnection:
    conn = ControllerConnection(**kw)  # type: ignore[arg-type]
    assert isinstance(conn.receive_data(p.icreq(dgst))[0], Established)
    p.sent(conn)
    return conn


def common_header(pdu_type: int, flags: int, hlen: int, pdo: int, plen: int) -> bytes:
    return struct.pack("<BBBBI", pdu_type, flags, hlen, pdo, plen)


def assert_refused_from_header(conn: ControllerConnection, header: bytes, fes: int, fei: int) -> None:
    """Only the 8-byte common header is fed: the TermReq must come without the body."""
    events = conn.receive_data(header)
    assert isinstance(events[-1], Terminated)
    (term,) = p.sent(conn)
    pdu_type, hlen, plen, got_fes, got_fei, data = p.term_fields(term)
    assert (pdu_type, hlen, got_fes, got_fei) == (p.C2H_TERM, 24, fes, fei)
    assert data == header  # the offending header (as much as arrived) travels back
    assert conn.state is ConnectionState.TERMINATING
    assert conn.reader.buffered == len(header)


def test_max_plen_per_pdu_type() -> None:
    # CapsuleCmd: 72-byte header + HDGST + at most 124 bytes of PDO padding + data + DDGST
    assert max_plen(p.CAPSULE_CMD, in_capsule_size=8192, maxh2cdata=131072, hdgst=True, ddgst=True) == \
        72 + 4 + 124 + 8192 + 4
    assert max_plen(p.H2C_DATA, in_capsule_size=8192, maxh2cdata=131072, hdgst=False, ddgst=False) == \
        24 + 124 + 131072
    assert max_plen(p.ICREQ, in_capsule_size=8192, maxh2cdata=131072, hdgst=True, ddgst=True) == 128 + 4
    assert max_pdu_data(p.ICREQ, in_capsule_size=8192, maxh2cdata=131072) == 0


@pytest.mark.parametrize("dgst", [0, 3])
def test_capsule_longer_than_in_capsule_size_refused_from_its_header(dgst: int) -> None:
    conn = ready(dgst, in_capsule_size=4096)
    hd = 4 if dgst else 0
    dd = 4 if dgst else 0
    plen = 72 + hd + 4097 + dd  # one byte over IOCCSZ's data
    header = common_header(p.CAPSULE_CMD, dgst & 3, 72, 72 + hd, plen)
    assert_refused_from_header(conn, header, FES_DATA_TRANSFER_LIMIT_EXCEEDED, FEI_PLEN)


def test_capsule_at_in_capsule_size_accepted() -> None:
    conn = ready(in_capsule_size=4096)
    (event,) = conn.receive_data(p.write_in_capsule(7, bytes(4096)))
    assert isinstance(event, CommandReceived) and len(event.data or b"") == 4096


def test_huge_plen_refused_before_buffering() -> None:
    conn = ready()
    header = common_header(p.CAPSULE_CMD, 0, 72, 72, 0xFFFFFFFF)  # a 4 GiB "capsule"
    assert_refused_from_header(conn, header, FES_DATA_TRANSFER_LIMIT_EXCEEDED, FEI_PLEN)
    assert conn.reader.capacity < 1 * MIB


def test_h2c_data_over_maxh2cdata_refused_from_its_header() -> None:
    conn = ready(maxh2cdata=8192)
    conn.receive_data(p.write_r2t(1, 16384))
    p.sent(conn)  # the R2T
    header = common_header(p.H2C_DATA, p.LAST_PDU, 24, 24, 24 + 8192 + 4)
    assert_refused_from_header(conn, header, FES_DATA_TRANSFER_LIMIT_EXCEEDED, FEI_PLEN)


def test_pdo_padding_beyond_the_largest_alignment_refused() -> None:
    conn = ready()
    header = common_header(p.CAPSULE_CMD, 0, 72, 72 + 128, 72 + 128 + 512)  # 128 pad bytes > 124
    assert_refused_from_header(conn, header, FES_INVALID_HEADER_FIELD, FEI_PDO)


def _r2ts(conn: ControllerConnection) -> list[tuple[int, int, int]]:
    """(cccid, ttag, r2tl) of every R2T sent."""
    out = []
    for pdu in p.sent(conn):
        assert pdu[0] == p.R2T
        cccid, ttag, _r2to, r2tl = struct.unpack_from("<HHII", pdu, 8)
        out.append((cccid, ttag, r2tl))
    return out


def test_r2ts_per_connection_capped_later_commands_wait_in_order() -> None:
    conn = ready(max_outstanding_r2t=2)
    events = conn.receive_data(b"".join(p.write_r2t(cid, 4096) for cid in (10, 11, 12, 13)))
    assert events == []  # no error: the commands wait for their R2T
    first = _r2ts(conn)
    assert [c for c, _, _ in first] == [10, 11]
    cid, ttag, _ = first[0]
    (done,) = conn.receive_data(p.h2c_data(cid, ttag, 0, bytes(4096)))
    assert isinstance(done, CommandReceived) and done.cid == 10
    assert [c for c, _, _ in _r2ts(conn)] == [12]  # the next in order, one slot freed
    cid, ttag, _ = first[1]
    conn.receive_data(p.h2c_data(cid, ttag, 0, bytes(4096)))
    assert [c for c, _, _ in _r2ts(conn)] == [13]


def test_pending_h2c_memory_bounded_by_the_connection_budget() -> None:
    conn = ready(max_connection_memory=2 * MIB, max_transfer=MIB, maxh2cdata=MIB)
    conn.receive_data(b"".join(p.write_r2t(cid, MIB) for cid in range(1, 5)))
    (first,) = _r2ts(conn)  # receive buffer + 1 MiB fits, a second 1 MiB would not
    assert first[0] == 1
    assert conn.memory_used() <= 2 * MIB
    conn.receive_data(p.h2c_data(1, first[1], 0, bytes(MIB)))
    assert [c for c, _, _ in _r2ts(conn)] == [2]


def test_one_transfer_always_allowed_even_above_the_budget() -> None:
    budget = ConnectionBudget(limit=MIB, max_r2t=4)
    assert budget.may_start_transfer(used=10 * MIB, length=MIB, active=0)
    assert not budget.may_start_transfer(used=10 * MIB, length=MIB, active=1)
    assert not budget.may_start_transfer(used=0, length=1, active=4)
    assert ConnectionBudget(limit=0, max_r2t=4).may_start_transfer(used=1 << 40, length=MIB, active=3)


def test_host_that_never_reads_stops_being_read() -> None:
    """Reads whose data the host does not take: the connection stops taking PDUs once the
    owed data passes the budget; the rest stays unparsed until output drains."""
    conn = ready(max_connection_memory=2 * MIB, max_transfer=MIB)
    n = 64
    events = conn.receive_data(b"".join(p.read_cmd(cid, 128 * 1024) for cid in range(n)))
    taken = [e.cid for e in events]
    assert all(isinstance(e, CommandReceived) for e in events)
    assert 0 < len(taken) < n and conn.input_held()
    assert conn.memory_used() <= 2 * MIB + 128 * 1024  # at most one command over
    for cid in taken:  # the device answers; the output stays unsent (the host does not read)
        conn.complete_with_data(cid, bytes(128 * 1024))
    assert conn.input_held() and conn.process() == []
    conn.data_to_send()  # the host reads everything
    more = conn.process()
    assert [e.cid for e in more][:1] == [len(taken)]  # resumes in order, nothing lost


def test_listener_gate_counts_refusals_and_logs_once_per_burst() -> None:
    now = [0.0]
    logged: list[tuple[int, int]] = []
    gate = ListenerGate(2, lambda: now[0], lambda count, limit: logged.append((count, limit)))
    assert gate.acquire() and gate.acquire()
    for _ in range(5):
        assert not gate.acquire()
        now[0] += 0.1
    assert gate.refused == 5 and logged == [(1, 2)]
    now[0] += 60
    assert not gate.acquire()
    assert logged == [(1, 2), (6, 2)]
    gate.release()
    assert gate.acquire() and gate.active == 2
    assert ListenerGate(0, lambda: 0.0).acquire()  # 0 = unlimited


@pytest.mark.parametrize("transport,message", [
    ({"icreq_timeout_s": -1}, "transport.icreq_timeout_s"),
    ({"max_r2t_per_connection": 0}, "transport.max_r2t_per_connection"),
    ({"max_r2t_per_connection": True}, "transport.max_r2t_per_connection"),
    ({"max_connections_per_listener": "8"}, "transport.max_connections_per_listener"),
    ({"max_connection_memory": 4096}, "transport.max_connection_memory"),
    ({"max_connection_memory": 2 * MIB, "mdts_bytes": 4 * MIB}, "below 4194304"),
])
def test_limit_configuration_errors_name_the_field(transport: dict, message: str) -> None:
    from dpu_emu import config as cfgmod

    cfg = cfgmod.default_config()
    cfg["transport"].update(transport)
    with pytest.raises(cfgmod.ConfigError, match=message):
        cfgmod.validate_config(cfg)


def test_default_configuration_carries_the_limits() -> None:
    from dpu_emu import config as cfgmod
    from nvmeof.controller.model import TargetConfig

    transport = cfgmod.default_config()["transport"]
    cfgmod.validate_config(cfgmod.default_config())
    limits = TargetConfig(**transport)
    assert (limits.max_r2t_per_connection, limits.max_connection_memory, limits.max_connections_per_listener,
            limits.icreq_timeout_s) == (64, 64 * MIB, 1024, 10)


def test_writes_waiting_for_an_r2t_are_bounded_by_the_sq_size() -> None:
    """A host cannot have more commands outstanding than its SQ has entries: a flood of
    writes waiting for R2Ts (each held in memory) is a fatal transport error, not a leak."""
    conn = ready(max_outstanding_r2t=1)
    conn.bind_queue(1, 4)
    assert conn.receive_data(b"".join(p.write_r2t(cid, 4096) for cid in range(5))) == []  # 1 R2T + 4 wait
    assert len(_r2ts(conn)) == 1
    events = conn.receive_data(p.write_r2t(5, 4096))
    assert isinstance(events[-1], Terminated)
    (term,) = p.sent(conn)
    assert p.term_fields(term)[:4] == (p.C2H_TERM, 24, len(term), FES_DATA_TRANSFER_LIMIT_EXCEEDED)
