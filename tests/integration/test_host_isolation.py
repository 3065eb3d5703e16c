"""A connection the target terminates does not disturb another host's I/O."""

from __future__ import annotations

import asyncio

import pytest

from nvmeof.errors import PeerTerminated
from nvmeof.host import connect
from nvmeof.wire.constants import Fes, PduType
from nvmeof.wire.pdu import H2C_DATA, build_pdu

from ._support import BLOCK, LOOPBACK, NSID, pattern, run

UNKNOWN_TTAG = 0x7777
ROUNDS = 200


def test_terminated_connection_leaves_others_unaffected(device) -> None:
    async def body() -> None:
        good = await connect(LOOPBACK, device.io_port, device.subnqn)
        bad = await connect(LOOPBACK, device.io_port, device.subnqn)
        stop = asyncio.Event()
        done = 0

        async def steady_io() -> None:
            nonlocal done
            for i in range(ROUNDS):
                data = pattern(i, 16 * BLOCK, salt=99)
                await good.write(NSID, 50_000 + i * 16, data)
                assert await good.read(NSID, 50_000 + i * 16, 16) == data
                done += 1
                if stop.is_set() and done >= ROUNDS // 2:
                    return

        await bad.namespace(NSID)  # cached, so the read below is submitted without awaiting
        io = asyncio.create_task(steady_io())
        try:
            await asyncio.sleep(0.05)
            # An H2CData for a transfer that does not exist, ahead of a real command.
            queue = bad.queue(0)
            header = H2C_DATA.pack(pdu_type=PduType.H2C_DATA, cccid=1, ttag=UNKNOWN_TTAG, datao=0, datal=BLOCK)
            assert queue.transport is not None
            queue.transport.writelines(build_pdu(header, bytes(BLOCK)))
            with pytest.raises(PeerTerminated) as info:
                await bad.read(NSID, 0, 1, queue=0)
            assert info.value.fes == Fes.INVALID_HEADER_FIELD
            with pytest.raises(ConnectionError):
                await bad.read(NSID, 0, 1, queue=0)
            stop.set()
            await io
            assert done >= ROUNDS // 2
            assert good.queue(0).is_open and good.admin.is_open
            await bad.keep_alive()  # only the bad I/O queue died; its admin queue lives on
        finally:
            io.cancel()
            await good.close()
            await bad.close()

    run(body())
