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

from ..controller.model import Listener, Target
from ..controller.session import QueueSession

log = logging.getLogger("nvmeof.target")

KEEP_ALIVE_TICK_S = 0.1
WRITE_HIGH_WATER = 4 * 1024 * 1024


class _QueueProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: NvmeTcpServer, listener: Listener) -> None:
        self.server = server
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.session: QueueSession | None = None
        self._flush_scheduled = False
        self._closing = False

    # -- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
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
        self.session = session
        self.server.sessions.add(self)
        log.debug("connection from %s:%s on %s:%s", peer[0], peer[1], local[0], local[1])

    def get_buffer(self, sizehint: int) -> memoryview:
        assert self.session is not None
        return self.session.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        session = self.session
        assert session is not None
        session.buffer_updated(nbytes)
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.sessions.discard(self)
        if self.session is not None:
            self.session.connection_lost()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

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
            self.transport.writelines(out)

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
