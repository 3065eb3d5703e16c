"""Sans-IO NVMe/TCP connection: what both roles share.

Theory of operation
-------------------
A connection is fed bytes (:meth:`receive_data`) and returns events; whatever it wants
to send accumulates and is pulled with :meth:`data_to_send`.  There is no socket, no
clock and no thread here.  States::

    AWAIT_IC     -- controller: waiting for ICReq / host: ICReq sent, waiting for ICResp
    READY        -- capsules and data PDUs flow
    TERMINATING  -- a TermReq was sent or received; nothing more is accepted
    CLOSED       -- the transport is gone

Only the transitions in ``_TRANSITIONS`` exist; anything else raises ProtocolMisuse.
A PDU that breaks a rule makes the connection queue a TermReq carrying the FES/FEI of
the :class:`PduError` and move to TERMINATING (the edge then flushes and closes).
"""

from __future__ import annotations

from enum import Enum

from ..errors import PduError, PeerTerminated, ProtocolMisuse
from ..wire.constants import Fes, PduType
from ..wire.pdu import TERM_REQ, build_pdu
from .framing import Pdu, PduReader

DWORD = 4


class ConnectionState(Enum):
    AWAIT_IC = "await_ic"
    READY = "ready"
    TERMINATING = "terminating"
    CLOSED = "closed"


_TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.AWAIT_IC: frozenset({ConnectionState.READY, ConnectionState.TERMINATING,
                                         ConnectionState.CLOSED}),
    ConnectionState.READY: frozenset({ConnectionState.TERMINATING, ConnectionState.CLOSED}),
    ConnectionState.TERMINATING: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}


# --- events ------------------------------------------------------------------------------


class Event:
    __slots__ = ()


class Established(Event):
    """The ICReq/ICResp exchange is complete."""

    __slots__ = ("hdgst", "ddgst", "maxh2cdata")

    def __init__(self, hdgst: bool, ddgst: bool, maxh2cdata: int) -> None:
        self.hdgst = hdgst
        self.ddgst = ddgst
        self.maxh2cdata = maxh2cdata

    def __repr__(self) -> str:
        return f"Established(hdgst={self.hdgst}, ddgst={self.ddgst}, maxh2cdata={self.maxh2cdata})"


class Terminated(Event):
    """The connection is over: ``error`` says why (PduError we sent, PeerTerminated...)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Terminated({self.error!r})"


class TcpConnection:
    """State, framing and output buffering shared by both roles."""

    accept: frozenset[int] = frozenset()
    term_req_type: PduType = PduType.C2H_TERM_REQ

    def __init__(self, max_data: int) -> None:
        self.state = ConnectionState.AWAIT_IC
        self.reader = PduReader(self.accept, max_data)
        self.hdgst = False
        self.ddgst = False
        self._out: list[bytes | memoryview] = []
        self._out_bytes = 0
        self.error: Exception | None = None
        self.peer_data_alignment = DWORD  # bytes; from the peer's HPDA/CPDA
        self.stalled = False  # the last process() stopped early because input_held()

    # -- state ----------------------------------------------------------------------

    def _move(self, new: ConnectionState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise ProtocolMisuse(f"connection cannot go from {self.state.name} to {new.name}")
        self.state = new

    @property
    def open(self) -> bool:
        return self.state in (ConnectionState.AWAIT_IC, ConnectionState.READY)

    def closed(self) -> None:
        """The transport is gone (EOF or socket error)."""
        if self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.CLOSED

    # -- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        if not self.open:
            return []
        self.reader.receive_data(data)
        return self.process()

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> list[Event]:
        self.reader.buffer_updated(nbytes)
        return self.process() if self.open else []

    def process(self) -> list[Event]:
        """Handle every whole PDU buffered so far."""
        events: list[Event] = []
        reader = self.reader
        try:
            self.stalled = False
            while self.open:
                if self.input_held():  # PDUs may be left in the buffer: the edge calls again
                    self.stalled = True
                    break
                pdu = reader.next_pdu()
                if pdu is None:
                    break
                if pdu.pdu_type == PduType.H2C_TERM_REQ or pdu.pdu_type == PduType.C2H_TERM_REQ:
                    fes, fei = TERM_REQ.struct.unpack_from(pdu.header)[5:7]
                    self._move(ConnectionState.TERMINATING)
                    self.error = PeerTerminated(fes, fei)
                    events.append(Terminated(self.error))
                    break
                self.handle_pdu(pdu, events)
        except PduError as exc:
            self.fail(exc, events)
        return events

    def handle_pdu(self, pdu: Pdu, events: list[Event]) -> None:
        raise NotImplementedError  # each role defines it

    def input_held(self) -> bool:
        """True while the connection takes no more PDUs (backpressure); the edge calls
        :meth:`process` again once it may have changed.  Never, unless a role says so."""
        return False

    def fail(self, exc: PduError, events: list[Event]) -> None:
        """Queue a TermReq for ``exc`` and stop accepting input."""
        if not self.open:
            return
        header = TERM_REQ.pack(pdu_type=self.term_req_type, fes=int(exc.fes), fei=exc.fei)
        self._send(build_pdu(header, exc.header or None))
        self._move(ConnectionState.TERMINATING)
        self.error = exc
        events.append(Terminated(exc))

    def terminate(self, fes: Fes, fei: int = 0, message: str = "") -> list[Event]:
        """Terminate on our own initiative (for example an unsupported parameter)."""
        events: list[Event] = []
        self.fail(PduError(fes, fei, message), events)
        return events

    # -- output ---------------------------------------------------------------------

    def _send(self, pieces: list[bytes | memoryview]) -> None:
        self._out.extend(pieces)
        for piece in pieces:
            self._out_bytes += len(piece)

    def data_to_send(self) -> list[bytes | memoryview]:
        """Everything queued since the last call, as a list for ``writelines``/``sendmsg``."""
        out = self._out
        self._out = []
        self._out_bytes = 0
        return out

    @property
    def pending_output(self) -> int:
        return self._out_bytes

    def pdu(self, header: bytes | bytearray, data: bytes | bytearray | memoryview | None = None,
            extra_flags: int = 0) -> None:
        self._send(build_pdu(header, data, hdgst=self.hdgst, ddgst=self.ddgst, extra_flags=extra_flags,
                             data_alignment=self.peer_data_alignment))

