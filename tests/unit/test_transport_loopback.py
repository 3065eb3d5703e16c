"""HostConnection <-> ControllerConnection wired back to back, no sockets.

Bytes move by pulling ``data_to_send()`` from one side and feeding the other, optionally
cut into random chunks.  The controller's "application" is the test: it answers each
CommandReceived with ``complete`` or ``complete_with_data``.
"""

from __future__ import annotations

import itertools
import random

import pytest

from nvmeof.transport.connection import ConnectionState, Established, Event, Terminated
from nvmeof.transport.controller_side import CommandReceived, ControllerConnection
from nvmeof.transport.host_side import HostConnection, Response
from nvmeof.wire.constants import Fes

from . import _pdus as p

DIGESTS = list(itertools.product([False, True], repeat=2))
DIGEST_IDS = [f"hd{int(h)}-dd{int(d)}" for h, d in DIGESTS]


class Wire:
    """Moves bytes between the two ends; records every PDU that crossed."""

    def __init__(self, host: HostConnection, ctrl: ControllerConnection, chunk_seed: int | None = None) -> None:
        self.host = host
        self.ctrl = ctrl
        self.rng = random.Random(chunk_seed) if chunk_seed is not None else None
        self.h2c_pdus: list[bytes] = []
        self.c2h_pdus: list[bytes] = []
        self.host_events: list[Event] = []
        self.ctrl_events: list[Event] = []

    def _deliver(self, raw: bytes, conn: object) -> list[Event]:
        if self.rng is None:
            return conn.receive_data(raw)  # type: ignore[attr-defined]
        events: list[Event] = []
        cuts = [self.rng.randrange(len(raw) + 1) for _ in range(self.rng.randrange(0, 6))]
        for piece in p.chunks(raw, cuts):
            events += conn.receive_data(piece)  # type: ignore[attr-defined]
        return events

    def pump(self) -> None:
        while True:
            to_ctrl = p.joined(self.host.data_to_send())
            to_host = p.joined(self.ctrl.data_to_send())
            if not to_ctrl and not to_host:
                return
            if to_ctrl:
                self.h2c_pdus += p.split(to_ctrl)
                self.ctrl_events += self._deliver(to_ctrl, self.ctrl)
            if to_host:
                self.c2h_pdus += p.split(to_host)
                self.host_events += self._deliver(to_host, self.host)

    def take_ctrl(self) -> list[Event]:
        events, self.ctrl_events = self.ctrl_events, []
        return events

    def take_host(self) -> list[Event]:
        events, self.host_events = self.host_events, []
        return events


def connect(hdgst: bool = False, ddgst: bool = False, chunk_seed: int | None = None,
            **ctrl_options: object) -> Wire:
    host = HostConnection(hdgst=hdgst, ddgst=ddgst)
    ctrl = ControllerConnection(**ctrl_options)  # type: ignore[arg-type]
    wire = Wire(host, ctrl, chunk_seed)
    host.initiate()
    wire.pump()
    (ce,) = wire.take_ctrl()
    (he,) = wire.take_host()
    assert isinstance(ce, Established) and isinstance(he, Established)
    assert (ce.hdgst, ce.ddgst) == (he.hdgst, he.ddgst) == (hdgst, ddgst)
    assert he.maxh2cdata == ctrl.maxh2cdata
    assert host.state is ctrl.state is ConnectionState.READY
    return wire


def only_command(wire: Wire) -> CommandReceived:
    events = wire.take_ctrl()
    assert len(events) == 1 and isinstance(events[0], CommandReceived), events
    return events[0]


def only_response(wire: Wire) -> Response:
    events = wire.take_host()
    assert len(events) == 1 and isinstance(events[0], Response), events
    return events[0]


def flags_of(pdus: list[bytes], pdu_type: int) -> list[int]:
    return [pdu[1] for pdu in pdus if pdu[0] == pdu_type]


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS, ids=DIGEST_IDS)
def test_ic_exchange_every_digest_combination(hdgst: bool, ddgst: bool) -> None:
    wire = connect(hdgst, ddgst)
    assert wire.h2c_pdus[0][11] == wire.c2h_pdus[0][11] == int(hdgst) | int(ddgst) << 1


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS, ids=DIGEST_IDS)
def test_in_capsule_write(hdgst: bool, ddgst: bool) -> None:
    wire = connect(hdgst, ddgst)
    payload = random.Random(1).randbytes(4096)
    wire.host.submit(bytearray(p.sqe(p.OP_WRITE, 11)), payload)
    wire.pump()
    cmd = only_command(wire)
    assert cmd.cid == 11 and cmd.data == payload
    assert cmd.raw[39] == p.SGL_OFFSET and int.from_bytes(cmd.raw[32:36], "little") == 4096
    capsule = wire.h2c_pdus[-1]
    assert capsule[0] == p.CAPSULE_CMD and capsule[1] == (1 if hdgst else 0) | (2 if ddgst else 0)
    wire.ctrl.complete(11, dw0=0xABCD)
    wire.pump()
    resp = only_response(wire)
    assert (resp.cid, resp.status, resp.dw0, resp.data) == (11, 0, 0xABCD, None)
    assert wire.host.outstanding == 0


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS, ids=DIGEST_IDS)
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_r2t_write_of_300k_with_64k_maxh2cdata(hdgst: bool, ddgst: bool, chunked: bool) -> None:
    wire = connect(hdgst, ddgst, chunk_seed=7 if chunked else None, maxh2cdata=65536)
    payload = random.Random(2).randbytes(300 * 1024)
    wire.host.submit(bytearray(p.sqe(p.OP_WRITE, 0x2001)), payload)
    wire.pump()
    cmd = only_command(wire)
    assert cmd.cid == 0x2001 and cmd.data == payload
    h2c = [pdu for pdu in wire.h2c_pdus if pdu[0] == p.H2C_DATA]
    assert len(h2c) == 5  # ceil(300 KiB / 64 KiB)
    sizes = [int.from_bytes(pdu[16:20], "little") for pdu in h2c]
    offsets = [int.from_bytes(pdu[12:16], "little") for pdu in h2c]
    assert sizes == [65536] * 4 + [300 * 1024 - 4 * 65536]
    assert offsets == [0, 65536, 131072, 196608, 262144]
    assert [f & p.LAST_PDU for f in flags_of(h2c, p.H2C_DATA)] == [0, 0, 0, 0, p.LAST_PDU]
    assert all(bool(f & p.HDGSTF) == hdgst and bool(f & p.DDGSTF) == ddgst for f in flags_of(h2c, p.H2C_DATA))
    (r2t,) = [pdu for pdu in wire.c2h_pdus if pdu[0] == p.R2T]
    assert int.from_bytes(r2t[16:20], "little") == 300 * 1024
    wire.ctrl.complete(0x2001)
    wire.pump()
    assert only_response(wire).status == 0


@pytest.mark.parametrize(("hdgst", "ddgst"), DIGESTS, ids=DIGEST_IDS)
@pytest.mark.parametrize("c2h_success", [True, False], ids=["success-flag", "capsule-resp"])
def test_read_over_several_c2hdata(hdgst: bool, ddgst: bool, c2h_success: bool) -> None:
    wire = connect(hdgst, ddgst, c2h_chunk=65536, c2h_success=c2h_success)
    wire.ctrl.bind_queue(1, 128, sq_flow_control=False)  # SUCCESS needs SQ flow control disabled
    payload = random.Random(3).randbytes(200_000)
    wire.host.submit(bytearray(p.sqe(p.OP_READ, 42)), read_length=len(payload))
    wire.pump()
    cmd = only_command(wire)
    assert cmd.data is None and int.from_bytes(cmd.raw[32:36], "little") == len(payload)
    wire.ctrl.complete_with_data(42, payload)
    wire.pump()
    resp = only_response(wire)
    assert resp.cid == 42 and resp.status == 0 and bytes(resp.data or b"") == payload
    c2h_flags = flags_of(wire.c2h_pdus, p.C2H_DATA)
    assert len(c2h_flags) == 4  # 3 x 64 KiB + the rest
    assert [f & (p.LAST_PDU | p.SUCCESS) for f in c2h_flags[:-1]] == [0, 0, 0]
    last = c2h_flags[-1]
    assert last & p.LAST_PDU
    assert bool(last & p.SUCCESS) == c2h_success
    resps = [pdu for pdu in wire.c2h_pdus if pdu[0] == p.CAPSULE_RESP]
    assert len(resps) == (0 if c2h_success else 1)
    assert wire.host.outstanding == 0


def test_read_completed_with_an_error_status_always_sends_capsule_resp() -> None:
    wire = connect(c2h_success=True)
    wire.host.submit(bytearray(p.sqe(p.OP_READ, 3)), read_length=4096)
    wire.pump()
    only_command(wire)
    unrecovered_read_error = (0x2 << 9) | (0x81 << 1)  # SCT 2 (media), SC 0x81
    wire.ctrl.complete_with_data(3, bytes(4096), status=unrecovered_read_error)
    wire.pump()
    resp = only_response(wire)
    assert resp.status == unrecovered_read_error and bytes(resp.data or b"") == bytes(4096)
    assert not flags_of(wire.c2h_pdus, p.C2H_DATA)[-1] & p.SUCCESS


def test_read_with_no_data_and_success_optimisation_still_completes() -> None:
    wire = connect(c2h_success=True)
    wire.host.submit(bytearray(p.sqe(p.OP_READ, 4)), read_length=512)
    wire.pump()
    only_command(wire)
    wire.ctrl.complete_with_data(4, b"")
    wire.pump()
    resp = only_response(wire)
    assert resp.cid == 4 and resp.status == 0


def test_many_commands_interleaved_with_random_chunking() -> None:
    rng = random.Random(11)
    wire = connect(True, True, chunk_seed=12, maxh2cdata=8192, c2h_chunk=5000)
    expected: dict[int, bytes] = {}
    for cid in range(1, 25):
        size = rng.choice([0, 100, 4096, 9000, 40000])
        if cid % 2:  # write
            data = rng.randbytes(size) if size else b""
            wire.host.submit(bytearray(p.sqe(p.OP_WRITE if size else p.OP_FLUSH, cid)), data or None)
            expected[cid] = data
        else:
            wire.host.submit(bytearray(p.sqe(p.OP_READ, cid)), read_length=size)
            expected[cid] = rng.randbytes(size)
    for _ in range(10):
        wire.pump()
        for event in wire.take_ctrl():
            assert isinstance(event, CommandReceived)
            if event.cid % 2:
                assert (event.data or b"") == expected[event.cid]
                wire.ctrl.complete(event.cid)
            else:
                wire.ctrl.complete_with_data(event.cid, expected[event.cid])
    responses = {r.cid: r for r in wire.take_host() if isinstance(r, Response)}
    assert sorted(responses) == list(range(1, 25))
    for cid, resp in responses.items():
        assert resp.status == 0
        if cid % 2 == 0:
            assert bytes(resp.data or b"") == expected[cid]
    assert wire.host.outstanding == 0
    assert wire.host.state is wire.ctrl.state is ConnectionState.READY


def test_termination_crosses_the_wire() -> None:
    wire = connect()
    events = wire.ctrl.terminate(Fes.UNSUPPORTED_PARAMETER, 0)
    assert isinstance(events[0], Terminated)
    wire.pump()
    (event,) = wire.take_host()
    assert isinstance(event, Terminated) and event.error.fes == 6  # type: ignore[attr-defined]
    assert wire.host.state is wire.ctrl.state is ConnectionState.TERMINATING


def test_success_flag_not_used_while_sq_flow_control_is_on() -> None:
    """The Linux host never disables SQ flow control, so it always gets a CapsuleResp
    (with SQHD), as from the Linux target and SPDK in the captures."""
    wire = connect(False, False, c2h_chunk=65536, c2h_success=True)
    payload = random.Random(4).randbytes(10_000)
    wire.host.submit(bytearray(p.sqe(p.OP_READ, 7)), read_length=len(payload))
    wire.pump()
    only_command(wire)
    wire.ctrl.complete_with_data(7, payload)
    wire.pump()
    assert bytes(only_response(wire).data or b"") == payload
    (last,) = flags_of(wire.c2h_pdus, p.C2H_DATA)
    assert last & p.LAST_PDU and not last & p.SUCCESS
    assert len([pdu for pdu in wire.c2h_pdus if pdu[0] == p.CAPSULE_RESP]) == 1
