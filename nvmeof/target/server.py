"""The asyncio edge of the target: sockets in, sans-IO sessions, sockets out.

One :class:`asyncio.BufferedProtocol` per TCP connection receives straight into the
session's framing buffer, handles every PDU of that read, and answers with one
``writelines``.  Completions that arrive later (from the device's pipeline) are flushed
once per loop iteration.  When the transport's write buffer fills, reading pauses, so a
host that does not read its data cannot make the target buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from ..controller import faults
from ..controller.model import Listener, Target
from ..controller.session import QueueSession
from ..transport.connection import ConnectionState
from .capture import CaptureStatus, ListenerCapture, TcpStream
from .limits import ListenerGate

log = logging.getLogger("nvmeof.target")

KEEP_ALIVE_TICK_S = 0.1
WRITE_HIGH_WATER = 4 * 1024 * 1024
BUDGET_POLL_S = 0.01  # while a connection is over its memory budget, how often the socket backlog is re-read


class _QueueProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: NvmeTcpServer, listener: Listener) -> None:
        self.server = server
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.session: QueueSession | None = None
        self._flush_scheduled = False
        self._closing = False
        self._gate: ListenerGate | None = None
        self._icreq_timer: asyncio.TimerHandle | None = None
        self._held = False  # reading paused: over the connection's memory budget
        self._write_paused = False  # reading paused: the transport's write buffer is full
        self._budget_poll: asyncio.TimerHandle | None = None
        self.capture: TcpStream | None = None
        self._rx: memoryview | None = None

    # -- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        hooks = faults.hooks_of(self.server.target)
        if hooks.active and hooks.refuse_connection(self.listener.portid):
            log.info("fault injection: connection refused on listener %d", self.listener.portid)
            self._closing = True
            transport.abort()
            return
        gate = self.server.gate(self.listener.portid)
        if not gate.acquire():  # over the listener's connection limit: closed at once, counted
            self._closing = True
            transport.abort()
            return
        self._gate = gate
        cfg = self.server.target.config
        if cfg.icreq_timeout_s > 0:
            self._icreq_timer = asyncio.get_running_loop().call_later(cfg.icreq_timeout_s, self._icreq_deadline)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        local = transport.get_extra_info("sockname") or ("", 0)
        peer = transport.get_extra_info("peername") or ("", 0)
        session = QueueSession(self.server.target, local_addr=(str(local[0]), str(local[1])),
                               peer_addr=(str(peer[0]), str(peer[1])))
        session.wakeup = self._schedule_flush
        session.close = self._close
        session.call_later = asyncio.get_running_loop().call_later
        self.session = session
        self.server.sessions.add(self)
        capture = self.server.captures.get(self.listener.portid)
        if capture is not None:
            self.capture = capture.stream((str(peer[0]), int(peer[1])), (str(local[0]), int(local[1])))
        log.debug("connection from %s:%s on %s:%s", peer[0], peer[1], local[0], local[1])

    def get_buffer(self, sizehint: int) -> memoryview:
        assert self.session is not None
        if self.capture is not None:
            self._rx = self.session.get_buffer(sizehint)
            return self._rx
        return self.session.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        session = self.session
        assert session is not None
        if self.capture is not None and self._rx is not None:
            self.capture.received(self._rx[:nbytes])
        session.buffer_updated(nbytes)
        self._flush()
        if session.conn.stalled:
            self._check_budget()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.sessions.discard(self)
        if self._gate is not None:
            self._gate.release()
            self._gate = None
        if self._icreq_timer is not None:
            self._icreq_timer.cancel()
            self._icreq_timer = None
        if self._budget_poll is not None:
            self._budget_poll.cancel()
            self._budget_poll = None
        if self.capture is not None:
            self.capture.closed()
            self.capture = None
        if self.session is not None:
            self.session.connection_lost()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self._closing and not self._held:
            self.transport.resume_reading()

    # -- limits ---------------------------------------------------------------------

    def _icreq_deadline(self) -> None:
        self._icreq_timer = None
        if self.session is not None and self.session.conn.state is ConnectionState.AWAIT_IC:
            self.server.icreq_timeouts += 1
            log.info("closing connection from %s: no ICReq within %ss", self.session.peer_addr[0],
                     self.server.target.config.icreq_timeout_s)
            self._close("ICReq deadline")

    def _check_budget(self) -> None:
        """Pause reading while the connection is over its memory budget (backpressure, not an
        error); once under it again, take the PDUs left in the receive buffer and read on."""
        session, transport = self.session, self.transport
        if session is None or transport is None:
            return
        conn = session.conn
        while not self._closing and conn.open:
            conn.backlog = transport.get_write_buffer_size()
            if conn.input_held():
                if not self._held:
                    self._held = True
                    self.server.budget_pauses += 1
                    transport.pause_reading()
                if self._budget_poll is None:
                    self._budget_poll = asyncio.get_running_loop().call_later(BUDGET_POLL_S, self._poll_budget)
                return
            if self._held:
                self._held = False
                if not self._write_paused:
                    transport.resume_reading()
            if not conn.stalled:
                return
            session.buffer_updated(0)  # the PDUs left in the receive buffer
            self._flush()

    def _poll_budget(self) -> None:
        self._budget_poll = None
        if self._held:
            self._check_budget()

    # -- session hooks --------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.session is None or self.transport is None:
            return
        out = self.session.data_to_send()
        if out and not self.transport.is_closing():
            if self.capture is not None:
                self.capture.sent(out)
            self.transport.writelines(out)
        self.session.conn.backlog = self.transport.get_write_buffer_size()
        if self._held and not self.session.conn.input_held():
            self._check_budget()

    def _close(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        log.debug("closing connection: %s", reason)
        self._flush()
        if self.transport is not None:
            self.transport.close()


class NvmeTcpServer:
    """Serves a :class:`Target` on any number of listeners."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.servers: dict[int, asyncio.Server] = {}
        self.sessions: set[_QueueProtocol] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.gates: dict[int, ListenerGate] = {}  # connections per listener
        self.captures: dict[int, ListenerCapture] = {}  # active packet captures per listener
        self.icreq_timeouts = 0  # connections closed for sending no ICReq in time
        self.budget_pauses = 0  # times a connection's reading paused over its memory budget

    def gate(self, portid: int) -> ListenerGate:
        gate = self.gates.get(portid)
        if gate is None:
            limit = self.target.config.max_connections_per_listener

            def refused(count: int, limit: int, portid: int = portid) -> None:
                log.warning("listener %d: connection refused, %d connections is the limit (%d refused so far)",
                            portid, limit, count)
            gate = self.gates[portid] = ListenerGate(limit, self.target.clock, refused)
        return gate

    # -- packet capture ---------------------------------------------------------------

    def start_capture(self, portid: int, path: str, *, name: str, max_bytes: int, max_packets: int) -> CaptureStatus:
        """Capture listener ``portid``'s connections (those open now start mid-stream)."""
        if portid not in self.servers:
            raise KeyError(portid)
        old = self.captures.get(portid)
        if old is not None and old.active:
            raise RuntimeError(f"listener {portid} is already capturing to {old.name}")
        capture = ListenerCapture(path, name=name, max_bytes=max_bytes, max_packets=max_packets)
        self.captures[portid] = capture
        for proto in self.sessions:
            if proto.listener.portid == portid and proto.session is not None and proto.transport is not None:
                local = proto.transport.get_extra_info("sockname") or ("", 0)
                peer = proto.transport.get_extra_info("peername") or ("", 0)
                proto.capture = capture.stream((str(peer[0]), int(peer[1])), (str(local[0]), int(local[1])))
        return capture.status()

    def stop_capture(self, portid: int) -> CaptureStatus:
        capture = self.captures.pop(portid)
        for proto in self.sessions:
            if proto.capture is not None and proto.capture.capture is capture:
                proto.capture = None
        return capture.stop()

    async def listen(self, listener: Listener) -> tuple[str, int]:
        """Start listening; with ``trsvcid`` "0" an ephemeral port is chosen and recorded."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _QueueProtocol(self, listener), listener.traddr,
                                          int(listener.trsvcid), reuse_address=True)
        host, port = server.sockets[0].getsockname()[:2]
        listener.trsvcid = str(port)
        self.servers[listener.portid] = server
        self.target.add_listener(listener)
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._keep_alive_ticker(), name="nvmeof-keepalive")
        log.info("listening on %s:%s (port id %d%s%s)", host, port, listener.portid,
                 ", discovery" if listener.discovery else "", ", I/O" if listener.io else "")
        return str(host), int(port)

    async def stop_listener(self, portid: int) -> None:
        if portid in self.captures:
            self.stop_capture(portid)
        server = self.servers.pop(portid)
        server.close()
        await server.wait_closed()
        self.target.remove_listener(portid)

    async def _keep_alive_ticker(self) -> None:
        while True:
            await asyncio.sleep(KEEP_ALIVE_TICK_S)
            now = self.target.clock()
            for ctrl in self._all_controllers():
                ctrl.handle_timeout(now)

    def _all_controllers(self) -> list[Any]:
        ctrls: list[Any] = list(self.target.discovery_controllers.values())
        for sub in self.target.subsystems.values():
            ctrls.extend(sub.controllers.values())
        return ctrls

    async def close(self) -> None:
        for portid in list(self.captures):
            self.stop_capture(portid)
        for portid in list(self.servers):
            server = self.servers.pop(portid)
            server.close()
        for proto in list(self.sessions):
            proto._close("target shutting down")
        for ctrl in self._all_controllers():
            ctrl.release("target shutting down")
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None
        await asyncio.sleep(0)
