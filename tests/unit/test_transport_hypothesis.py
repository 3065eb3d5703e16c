"""Hypothesis drives both connection roles with arbitrary input.

Whatever arrives (random bytes, valid and mutated PDU sequences, mutated golden streams),
in whatever chunking, through ``receive_data`` or ``get_buffer``/``buffer_updated``: no
exception escapes, the state is a ConnectionState, events are of the role's types, and a
Terminated event (at most one, always last) carries a PduError - then our TermReq with the
same FES is the last thing we sent - or a PeerTerminated.  Everything we send parses back
into whole PDUs of our direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from nvmeof.errors import PduError, PeerTerminated
from nvmeof.transport.connection import ConnectionState, Established, Event, Terminated
from nvmeof.transport.controller_side import CommandFailedInTransport, CommandReceived, ControllerConnection
from nvmeof.transport.host_side import HostConnection, Response

from . import _golden as g
from . import _pdus as p

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CTRL_EVENTS = (Established, CommandReceived, CommandFailedInTransport, Terminated)
HOST_EVENTS = (Established, Response, Terminated)
C2H_TYPES = {p.ICRESP, p.C2H_TERM, p.CAPSULE_RESP, p.C2H_DATA, p.R2T}
H2C_TYPES = {p.ICREQ, p.H2C_TERM, p.CAPSULE_CMD, p.H2C_DATA}


# --- driving and checking ---------------------------------------------------------------------


def feed(conn: object, wire: bytes, cuts: list[int], use_get_buffer: list[bool],
         app: Callable[[list[Event]], None]) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    out = bytearray()
    for i, piece in enumerate(p.chunks(wire, cuts)):
        if use_get_buffer and use_get_buffer[i % len(use_get_buffer)]:
            view = conn.get_buffer(len(piece))  # type: ignore[attr-defined]
            view[:len(piece)] = piece
            view.release()
            new = conn.buffer_updated(len(piece))  # type: ignore[attr-defined]
        else:
            new = conn.receive_data(piece)  # type: ignore[attr-defined]
        events += new
        app(new)
        out += p.joined(conn.data_to_send())  # type: ignore[attr-defined]
    return events, bytes(out)


def check(conn: object, events: list[Event], out: bytes, allowed: tuple[type, ...], sent_types: set[int],
          term_type: int) -> None:
    state = conn.state  # type: ignore[attr-defined]
    assert isinstance(state, ConnectionState)
    assert all(isinstance(e, allowed) for e in events), events
    terms = [i for i, e in enumerate(events) if isinstance(e, Terminated)]
    assert len(terms) <= 1 and (not terms or terms[0] == len(events) - 1)
    pdus = p.split(out)  # our output is whole, well-formed PDUs
    assert all(pdu[0] in sent_types for pdu in pdus)
    note_event(f"state {state.name}")
    for kind in {type(e).__name__ for e in events if not isinstance(e, Terminated)}:
        note_event(f"saw {kind}")
    if terms:
        error = events[-1].error  # type: ignore[attr-defined]
        note_event(f"terminated by {type(error).__name__} fes={error.fes}")
        assert isinstance(error, (PduError, PeerTerminated))
        assert state is ConnectionState.TERMINATING
        if isinstance(error, PduError):
            fields = p.term_fields(pdus[-1])
            assert fields[0] == term_type and fields[3] == int(error.fes)
            assert fields[2] == len(pdus[-1]) <= 152
        else:
            assert not pdus or pdus[-1][0] != term_type
    else:
        assert state in (ConnectionState.AWAIT_IC, ConnectionState.READY)
        assert all(pdu[0] != term_type for pdu in pdus)


def controller_app(conn: ControllerConnection, data: st.DataObject) -> Callable[[list[Event]], None]:
    """Answer commands the way a controller would: plain completion or data for reads."""
    def app(events: list[Event]) -> None:
        for event in events:
            if isinstance(event, CommandReceived):
                if event.sqe[0] & 0x3 == 0x2 and data.draw(st.booleans(), label="answer with data"):
                    length = int.from_bytes(event.raw[32:36], "little") % 20000
                    conn.complete_with_data(event.cid, bytes(length), status=data.draw(
                        st.sampled_from([0, 0x4]), label="status"))
                else:
                    conn.complete(event.cid)
    return app


def run_controller(data: st.DataObject, wire: bytes, **options: object) -> None:
    conn = ControllerConnection(**options)  # type: ignore[arg-type]
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    modes = data.draw(st.lists(st.booleans(), max_size=4), label="get_buffer")
    events, out = feed(conn, wire, cuts, modes, controller_app(conn, data))
    check(conn, events, out, CTRL_EVENTS, C2H_TYPES, p.C2H_TERM)


def run_host(data: st.DataObject, wire: bytes, dgst: int, *, icresp_first: bool) -> None:
    host = HostConnection(hdgst=bool(dgst & 1), ddgst=bool(dgst & 2))
    host.initiate()
    out = p.joined(host.data_to_send())
    events: list[Event] = []
    if icresp_first:
        events += host.receive_data(p.icresp(dgst, maxh2cdata=8192))
        host.submit(bytearray(p.sqe(p.OP_READ, 1)), read_length=4096)
        host.submit(bytearray(p.sqe(p.OP_WRITE, 2)), bytes(16384))
        host.submit(bytearray(p.sqe(p.OP_WRITE, 3)), bytes(512))
        host.submit(bytearray(p.sqe(p.OP_READ, 4)), read_length=70000)
        out += p.joined(host.data_to_send())
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    modes = data.draw(st.lists(st.booleans(), max_size=4), label="get_buffer")
    more, sent = feed(host, wire, cuts, modes, lambda _: None)
    check(host, events + more, out + sent, HOST_EVENTS, H2C_TYPES, p.H2C_TERM)


# --- PDU strategies -----------------------------------------------------------------------------

small = st.integers(0, 5)
payload = st.binary(max_size=600)
digest_kw = st.fixed_dictionaries({"hdgst": st.booleans(), "ddgst": st.booleans(),
                                   "bad_hdgst": st.booleans(), "bad_ddgst": st.booleans()})


def _digests(draw: st.DrawFn, dgst: int) -> dict[str, bool]:
    """Mostly the negotiated digests, sometimes anything (including wrong digests)."""
    if draw(st.integers(0, 4)):
        return {"hdgst": bool(dgst & 1), "ddgst": bool(dgst & 2)}
    return draw(digest_kw)


@st.composite
def host_pdu(draw: st.DrawFn, dgst: int) -> bytes:
    kw = _digests(draw, dgst)
    kind = draw(st.sampled_from(["icreq"] + ["write_ic", "write_r2t", "read", "h2c"] * 4 + ["flush", "term", "raw"]))
    cid = draw(small)
    if kind == "icreq":
        return p.icreq(draw(st.integers(0, 3)), pfv=draw(st.sampled_from([0, 0, 1])),
                       hpda=draw(st.sampled_from([0, 31, 32])))
    if kind == "write_ic":
        return p.write_in_capsule(cid, draw(payload), **kw)
    if kind == "write_r2t":
        return p.write_r2t(cid, draw(st.sampled_from([0, 1, 512, 4096, 5000, 20000])), **kw)
    if kind == "read":
        return p.read_cmd(cid, draw(st.sampled_from([0, 512, 4096, 100000])), **kw)
    if kind == "flush":
        return p.no_data_cmd(cid, **kw)
    if kind == "h2c":  # TTAGs 0 and 1 are the ones our controller hands out first
        return p.h2c_data(cid, draw(st.sampled_from([0, 0, 1, 7])), draw(st.sampled_from([0, 0, 512, 1 << 31])),
                          draw(payload), last=draw(st.booleans()), **kw)
    if kind == "term":
        return p.term_req(p.H2C_TERM, draw(st.integers(0, 7)), draw(st.integers(0, 200)),
                          draw(st.binary(max_size=130)), flags=draw(st.integers(0, 15)))
    return draw(st.binary(min_size=1, max_size=200))


def sequence(draw: Callable[..., Any], pdu: st.SearchStrategy[bytes]) -> list[bytes]:
    """A list of PDUs of which at most one is mutated."""
    pdus = draw(st.lists(pdu, max_size=12))
    if pdus and draw(st.booleans()):
        index = draw(st.integers(0, len(pdus) - 1))
        pdus[index] = draw(mutated(pdus[index]))
    return pdus


@st.composite
def ctrl_pdu(draw: st.DrawFn, dgst: int) -> bytes:
    kw = _digests(draw, dgst)
    kind = draw(st.sampled_from(["icresp"] + ["resp", "c2h", "c2h", "r2t"] * 3 + ["term", "raw"]))
    cid = draw(st.sampled_from([1, 2, 3, 4, 0, 5]))  # 1-4 are in flight when icresp_first
    if kind == "icresp":
        return p.icresp(draw(st.integers(0, 3)), cpda=draw(st.sampled_from([0, 0, 1])),
                        maxh2cdata=draw(st.sampled_from([0, 4096, 8192, 4097])))
    if kind == "resp":
        return p.capsule_resp(cid, draw(st.sampled_from([0, 0x44, 0xC002])), **{
            k: v for k, v in kw.items() if k in ("hdgst", "bad_hdgst")})
    if kind == "c2h":
        return p.c2h_data(cid, draw(st.sampled_from([0, 0, 512, 4096, 70000])), draw(payload),
                          last=draw(st.booleans()), success=draw(st.booleans()), **kw)
    if kind == "r2t":
        return p.r2t(cid, draw(small), draw(st.sampled_from([0, 4096, 8192, 20000])),
                     draw(st.sampled_from([0, 512, 8192, 16384, 1 << 20])),
                     **{k: v for k, v in kw.items() if k in ("hdgst", "bad_hdgst")})
    if kind == "term":
        return p.term_req(p.C2H_TERM, draw(st.integers(0, 7)), draw(st.integers(0, 200)),
                          draw(st.binary(max_size=130)), flags=draw(st.integers(0, 15)))
    return draw(st.binary(min_size=1, max_size=200))


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """Zero to three edits: flip a byte, overwrite a common-header field, or truncate."""
    buf = bytearray(raw)
    for _ in range(draw(st.integers(0, 3))):
        if not buf:
            break
        action = draw(st.sampled_from(["flip", "field", "truncate"]))
        if action == "flip":
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= draw(st.integers(1, 255))
        elif action == "field":
            i = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 11, 12]))
            if i < len(buf):
                buf[i] = draw(st.integers(0, 255))
        else:
            del buf[draw(st.integers(0, len(buf) - 1)):]
    return bytes(buf)


# --- the properties ---------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), noise=st.binary(max_size=3000))
def test_controller_random_bytes(data: st.DataObject, noise: bytes) -> None:
    run_controller(data, noise)


@SETTINGS
@given(data=st.data(), dgst=st.integers(0, 3), noise=st.binary(max_size=2000))
def test_controller_random_bytes_after_icreq(data: st.DataObject, dgst: int, noise: bytes) -> None:
    run_controller(data, p.icreq(dgst) + noise)


@SETTINGS
@given(data=st.data(), dgst=st.integers(0, 3))
def test_controller_pdu_sequences(data: st.DataObject, dgst: int) -> None:
    pdus = sequence(data.draw, host_pdu(dgst))
    start = [p.icreq(dgst)] if data.draw(st.integers(0, 5), label="icreq first") else []
    run_controller(data, b"".join(start + pdus), maxh2cdata=4096, in_capsule_size=1024,
                   max_transfer=65536, max_outstanding_r2t=2, c2h_chunk=4096,
                   c2h_success=data.draw(st.booleans(), label="c2h_success"))


@SETTINGS
@given(data=st.data())
def test_controller_mutated_golden_streams(data: st.DataObject) -> None:
    stream = data.draw(st.sampled_from(g.streams()), label="stream")
    pdus = [g.with_ttag(c, 0) if c.pdu_type == p.H2C_DATA else c.raw for c in stream.host_to_ctrl]
    index = data.draw(st.integers(0, len(pdus) - 1), label="mutated pdu")
    pdus[index] = data.draw(mutated(pdus[index]), label="mutation")
    run_controller(data, b"".join(pdus), maxh2cdata=4 << 20)


@SETTINGS
@given(data=st.data(), dgst=st.integers(0, 3), noise=st.binary(max_size=3000),
       icresp_first=st.booleans())
def test_host_random_bytes(data: st.DataObject, dgst: int, noise: bytes, icresp_first: bool) -> None:
    run_host(data, noise, dgst, icresp_first=icresp_first)


@SETTINGS
@given(data=st.data(), dgst=st.integers(0, 3), icresp_first=st.integers(0, 5).map(bool))
def test_host_pdu_sequences(data: st.DataObject, dgst: int, icresp_first: bool) -> None:
    pdus = sequence(data.draw, ctrl_pdu(dgst))
    run_host(data, b"".join(pdus), dgst, icresp_first=icresp_first)


@SETTINGS
@given(data=st.data())
def test_host_mutated_golden_streams(data: st.DataObject) -> None:
    stream = data.draw(st.sampled_from(g.streams()), label="stream")
    host = HostConnection(hdgst=bool(stream.dgst & 1), ddgst=bool(stream.dgst & 2))
    host.initiate()
    events = host.receive_data(stream.icresp.raw)
    for cap in stream.capsules():  # the same commands the Linux host had in flight
        length = int.from_bytes(cap.raw[8 + 32:8 + 36], "little")
        if cap.data:
            host.submit(bytearray(cap.raw[8:72]), cap.data)
        elif cap.raw[8 + 39] == p.SGL_TRANSPORT and cap.raw[8] & 0x3 == 0x1 and length:
            host.submit(bytearray(cap.raw[8:72]), bytes(length))
        else:
            host.submit(bytearray(cap.raw[8:72]), read_length=length)
    out = p.joined(host.data_to_send())
    pdus = [c.raw for c in stream.ctrl_to_host[1:]]
    index = data.draw(st.integers(0, len(pdus) - 1), label="mutated pdu")
    pdus[index] = data.draw(mutated(pdus[index]), label="mutation")
    wire = b"".join(pdus)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    more, sent = feed(host, wire, cuts, [], lambda _: None)
    check(host, events + more, out + sent, HOST_EVENTS, H2C_TYPES, p.H2C_TERM)
