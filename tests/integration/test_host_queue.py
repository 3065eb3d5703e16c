"""HostQueue edge cases against a scripted controller that answers only when told to:
deadlines, CID reservation after a timeout, late completions, connection loss, TermReq."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from nvmeof.errors import PeerTerminated
from nvmeof.host import HostQueue
from nvmeof.host import commands as cmds
from nvmeof.wire.constants import CAPSULE_CMD_HLEN, CH_SIZE, Fes, PduType
from nvmeof.wire.pdu import CAPSULE_RESP_HEADER, ICREQ, ICRESP, TERM_REQ
from nvmeof.wire.queue_entry import SQE

from ._support import LOOPBACK, run

MAXH2CDATA = 131072
DEPTH = 4
SHORT_TIMEOUT_S = 0.3


class ScriptedController:
    """Answers ICReq, records every command's CID, completes commands on demand."""

    def __init__(self) -> None:
        self.cids: list[int] = []
        self.arrived = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        icreq = await reader.readexactly(ICREQ.size)
        assert icreq[0] == PduType.ICREQ
        writer.write(ICRESP.pack(pdu_type=PduType.ICRESP, hlen=ICRESP.size, plen=ICRESP.size,
                                 maxh2cdata=MAXH2CDATA))
        try:
            while True:
                pdu = await reader.readexactly(CAPSULE_CMD_HLEN)
                assert pdu[0] == PduType.CAPSULE_CMD
                self.cids.append(SQE.unpack(pdu, CH_SIZE).cid)
                self.arrived.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def complete(self, cid: int, status: int = 0) -> None:
        assert self.writer is not None
        size = CAPSULE_RESP_HEADER.size
        self.writer.write(CAPSULE_RESP_HEADER.pack(pdu_type=PduType.CAPSULE_RESP, hlen=size, plen=size,
                                                   cid=cid, status=status))

    def terminate(self, fes: Fes) -> None:
        assert self.writer is not None
        self.writer.write(TERM_REQ.pack(pdu_type=PduType.C2H_TERM_REQ, hlen=TERM_REQ.size,
                                        plen=TERM_REQ.size, fes=fes))

    async def wait_commands(self, count: int) -> None:
        while len(self.cids) < count:
            self.arrived.clear()
            await self.arrived.wait()


@asynccontextmanager
async def scripted() -> AsyncIterator[tuple[ScriptedController, HostQueue]]:
    ctl = ScriptedController()
    server = await asyncio.start_server(ctl.serve, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    queue = await HostQueue.open(LOOPBACK, port, 1, DEPTH, timeout=SHORT_TIMEOUT_S)
    try:
        yield ctl, queue
    finally:
        await queue.close()
        if ctl.writer is not None:
            ctl.writer.close()
            try:
                await ctl.writer.wait_closed()
            except ConnectionError:
                pass
        server.close()
        await server.wait_closed()


def test_timeout_keeps_the_cid_reserved_until_the_late_completion() -> None:
    async def body() -> None:
        async with scripted() as (ctl, queue):
            with pytest.raises(TimeoutError):
                await queue.submit(cmds.keep_alive())
            assert queue.outstanding == 1  # the controller still owns that CID
            stalled = ctl.cids[0]
            second = asyncio.ensure_future(queue.submit(cmds.keep_alive(), timeout=5.0))
            await ctl.wait_commands(2)
            assert ctl.cids[1] != stalled
            ctl.complete(stalled)  # late: released, not delivered to anybody
            ctl.complete(ctl.cids[1])
            assert (await second).cid == ctl.cids[1]
            assert queue.outstanding == 0

    run(body())


def test_queue_depth_is_bounded_and_the_wait_for_a_slot_times_out() -> None:
    async def body() -> None:
        async with scripted() as (ctl, queue):
            waiting = [asyncio.ensure_future(queue.submit(cmds.keep_alive(), timeout=5.0)) for _ in range(DEPTH)]
            await ctl.wait_commands(DEPTH)
            assert len(set(ctl.cids)) == DEPTH
            with pytest.raises(TimeoutError):
                await queue.submit(cmds.keep_alive())  # no free slot within SHORT_TIMEOUT_S
            for cid in ctl.cids:
                ctl.complete(cid)
            assert sorted(c.cid for c in await asyncio.gather(*waiting)) == sorted(ctl.cids)

    run(body())


def test_connection_loss_fails_every_outstanding_command() -> None:
    async def body() -> None:
        async with scripted() as (ctl, queue):
            waiting = [asyncio.ensure_future(queue.submit(cmds.keep_alive(), timeout=5.0)) for _ in range(3)]
            await ctl.wait_commands(3)
            assert ctl.writer is not None
            ctl.writer.close()
            for fut in waiting:
                with pytest.raises(ConnectionError, match="connection lost"):
                    await fut
            with pytest.raises(ConnectionError):
                await queue.submit(cmds.keep_alive())

    run(body())


def test_term_req_raises_peer_terminated() -> None:
    async def body() -> None:
        async with scripted() as (ctl, queue):
            waiting = asyncio.ensure_future(queue.submit(cmds.keep_alive(), timeout=5.0))
            await ctl.wait_commands(1)
            ctl.terminate(Fes.PDU_SEQUENCE_ERROR)
            with pytest.raises(PeerTerminated) as info:
                await waiting
            assert info.value.fes == Fes.PDU_SEQUENCE_ERROR
            with pytest.raises(ConnectionError):
                await queue.submit(cmds.keep_alive())

    run(body())


def test_protocol_violation_by_the_controller_is_a_connection_error() -> None:
    async def body() -> None:
        async with scripted() as (ctl, queue):
            waiting = asyncio.ensure_future(queue.submit(cmds.keep_alive(), timeout=5.0))
            await ctl.wait_commands(1)
            assert ctl.writer is not None
            ctl.writer.write(bytes([0x42]) + bytes(CH_SIZE - 1))  # no such PDU type
            with pytest.raises(ConnectionError, match="protocol error"):
                await waiting

    run(body())
