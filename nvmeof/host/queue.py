"""One host queue: a TCP connection carrying one NVMe submission/completion queue pair.

Theory of operation
-------------------
:class:`HostQueue` is the asyncio edge around the sans-IO
:class:`~nvmeof.transport.host_side.HostConnection`.  It is an
:class:`asyncio.BufferedProtocol`: the kernel copies received bytes straight into the
framing buffer, every PDU of one read is handled at once, and whatever the connection
wants to send (commands, H2CData answering an R2T) leaves in one ``writelines``.
Submissions made during one event-loop iteration are batched the same way: the first
one schedules a flush with ``call_soon``.

Per command::

    acquire a slot (Semaphore(depth), bounded wait) -> take a CID from the free list
      -> future registered -> SQE queued -> flushed with the batch
      -> Response event -> future resolved -> CID and slot returned

A CID goes back to the free list only when its completion arrives (or the connection is
gone), so an outstanding CID is never reused, not even after the caller gave up waiting
(timeout or cancellation).  Deadlines are enforced by one watchdog per queue that ticks a
few times per timeout and fails expired futures with :class:`TimeoutError`.

Endings: a lost connection fails every outstanding future with :class:`ConnectionError`;
a TermReq from the controller fails them with
:class:`~nvmeof.errors.PeerTerminated`; a protocol violation by the controller makes the
host send an H2CTermReq and fails them with :class:`ConnectionError` (cause: the
:class:`~nvmeof.errors.PduError`).  After that every submission raises ConnectionError.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable

from ..errors import PeerTerminated
from ..transport.connection import Established, Terminated
from ..transport.host_side import HostConnection, Response

log = logging.getLogger("nvmeof.host")

DEFAULT_TIMEOUT_S = 10.0
MAX_PDU_DATA = 4 << 20  # largest data field accepted in one C2HData PDU
WRITE_HIGH_WATER = 4 << 20
WATCHDOG_TICKS_PER_TIMEOUT = 4
WATCHDOG_MIN_TICK_S = 0.05
WATCHDOG_MAX_TICK_S = 0.5
CID_SPACE = 0x10000
_CID_SLICE = slice(2, 4)

Buffer = bytes | bytearray | memoryview


class _Pending:
    """An outstanding command: its future and the loop time it must complete by."""

    __slots__ = ("future", "deadline")

    def __init__(self, future: asyncio.Future[Response], deadline: float) -> None:
        self.future = future
        self.deadline = deadline


class HostQueue(asyncio.BufferedProtocol):
    """Queue ``qid`` of a host controller over its own TCP connection."""

    def __init__(self, qid: int, depth: int, *, hdgst: bool = False, ddgst: bool = False,
                 timeout: float = DEFAULT_TIMEOUT_S, name: str = "") -> None:
        if not 1 <= depth < CID_SPACE:
            raise ValueError(f"queue depth {depth} outside 1..{CID_SPACE - 1}")
        self.qid = qid
        self.depth = depth
        self.timeout = timeout
        self.name = name or f"queue {qid}"
        self.conn = HostConnection(hdgst=hdgst, ddgst=ddgst, max_data=MAX_PDU_DATA)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(depth)
        self._free_cids: deque[int] = deque(range(depth))
        self._pending: dict[int, _Pending] = {}
        self._established: asyncio.Future[Established] = self.loop.create_future()
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self.error: BaseException | None = None  # why the queue is unusable, once it is
        self.on_lost: Callable[[HostQueue, BaseException], None] | None = None
        self.commands = 0

    # -- life cycle ---------------------------------------------------------------------

    @classmethod
    async def open(cls, address: str, port: int, qid: int, depth: int, *, hdgst: bool = False,
                   ddgst: bool = False, timeout: float = DEFAULT_TIMEOUT_S) -> HostQueue:
        """Connect TCP and exchange ICReq/ICResp, all within ``timeout``."""
        loop = asyncio.get_running_loop()
        name = f"{address}:{port} qid {qid}"
        async with asyncio.timeout(timeout):
            _, proto = await loop.create_connection(
                lambda: cls(qid, depth, hdgst=hdgst, ddgst=ddgst, timeout=timeout, name=name), address, port)
            try:
                await proto.established()
            except BaseException:
                proto.abort()
                raise
        return proto

    async def established(self) -> Established:
        return await asyncio.shield(self._established)

    @property
    def is_open(self) -> bool:
        return self.error is None and self.transport is not None

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    @property
    def maxh2cdata(self) -> int:
        return self.conn.maxh2cdata

    @property
    def in_capsule_size(self) -> int:
        return self.conn.in_capsule_size

    @in_capsule_size.setter
    def in_capsule_size(self, size: int) -> None:
        self.conn.in_capsule_size = size

    async def close(self, timeout: float | None = None) -> None:
        """Close the socket and wait (bounded) until the transport is gone."""
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- commands -----------------------------------------------------------------------

    async def submit(self, sqe: bytearray, data: Buffer | None = None, read_length: int = 0,
                     timeout: float | None = None) -> Response:
        """Send one command and wait for its completion (status not checked here).

        ``sqe`` is a 64-byte command whose CID and SGL this method fills in.  Raises
        ConnectionError / PeerTerminated when the queue is gone, TimeoutError when the
        completion does not arrive within ``timeout`` (default: the queue's).
        """
        if self.error is not None:
            raise ConnectionError(f"{self.name}: queue is closed") from self.error
        limit = self.timeout if timeout is None else timeout
        loop = self.loop
        deadline = loop.time() + limit
        slots = self._slots
        if slots.locked() or not self._writable.is_set():
            await self._wait_for_room(deadline)
        else:
            await slots.acquire()  # immediate: a slot is free and nobody waits
        if self.error is not None:
            slots.release()
            raise ConnectionError(f"{self.name}: queue is closed") from self.error
        cid = self._free_cids.popleft()
        sqe[_CID_SLICE] = cid.to_bytes(2, "little")
        try:
            self.conn.submit(sqe, data, read_length)
        except BaseException:
            self._free_cids.append(cid)
            slots.release()
            raise
        future: asyncio.Future[Response] = loop.create_future()
        self._pending[cid] = _Pending(future, deadline)
        self.commands += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self._watchdog is None:
            self._arm_watchdog()
        return await future

    async def _wait_for_room(self, deadline: float) -> None:
        """Take a queue slot and wait until the transport accepts writes, by ``deadline``."""
        acquired = False
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
                acquired = True
                if not self._writable.is_set():
                    await self._writable.wait()
        except BaseException as exc:
            if acquired:
                self._slots.release()
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"{self.name}: no free queue slot within the timeout "
                                   f"({len(self._pending)} commands outstanding)") from None
            raise

    def _release(self, cid: int) -> None:
        self._free_cids.append(cid)
        self._slots.release()

    # -- output -------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        out = self.conn.data_to_send()
        if out and transport is not None and not transport.is_closing():
            transport.writelines(out)

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        local = transport.get_extra_info("sockname")
        if local:
            self.name = f"{self.name} (local port {local[1]})"
        self.conn.initiate()
        self._flush()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        pending = self._pending
        for event in self.conn.buffer_updated(nbytes):
            if type(event) is Response:
                entry = pending.pop(event.cid, None)
                if entry is None:
                    log.warning("%s: completion for CID %d that is not outstanding", self.name, event.cid)
                    continue
                self._release(event.cid)
                if not entry.future.done():
                    entry.future.set_result(event)
            elif isinstance(event, Established):
                if not self._established.done():
                    self._established.set_result(event)
            elif isinstance(event, Terminated):
                self._terminated(event.error)
        self._flush()

    def _terminated(self, error: Exception) -> None:
        if isinstance(error, PeerTerminated):
            log.warning("%s: controller terminated the connection: %s", self.name, error)
            self._fail(error)
        else:
            log.warning("%s: controller violated the protocol, terminating: %s", self.name, error)
            failure = ConnectionError(f"{self.name}: terminated after a protocol error: {error}")
            failure.__cause__ = error
            self._fail(failure)
        self._flush()  # our H2CTermReq, if any
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.closed()
        reason = f": {exc}" if exc else ""
        failure = ConnectionError(f"{self.name}: connection lost{reason}")
        if exc is not None:
            failure.__cause__ = exc
        self._fail(failure)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- failure ------------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        """Make the queue unusable and fail every outstanding command with ``error``."""
        first = self.error is None
        if first:
            self.error = error
        if not self._established.done():
            self._established.set_exception(error)
            self._established.exception()  # retrieved: nobody may be waiting yet
        pending, self._pending = self._pending, {}
        for cid, entry in pending.items():
            self._release(cid)
            if not entry.future.done():
                entry.future.set_exception(error)
        self._writable.set()  # wake submitters; they see self.error
        if first and self.on_lost is not None:
            self.on_lost(self, error)

    # -- deadlines ----------------------------------------------------------------------

    def _arm_watchdog(self) -> None:
        tick = min(max(self.timeout / WATCHDOG_TICKS_PER_TIMEOUT, WATCHDOG_MIN_TICK_S), WATCHDOG_MAX_TICK_S)
        self._watchdog = self.loop.call_later(tick, self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._watchdog = None
        if not self._pending or self.error is not None:
            return  # re-armed by the next submission
        now = self.loop.time()
        for cid, entry in self._pending.items():
            if entry.deadline <= now and not entry.future.done():
                # The CID stays reserved until the controller answers or the queue closes.
                entry.future.set_exception(TimeoutError(
                    f"{self.name}: command {cid} not completed within the timeout"))
        self._arm_watchdog()
