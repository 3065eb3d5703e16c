"""Association life cycle through nvmeof.host: connect (digests), identify, keep-alive,
shutdown and reconnect, Connect errors."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from nvmeof.errors import NvmeStatus
from nvmeof.host import HostController, connect
from nvmeof.wire.constants import CommandSpecificStatus, ControllerType, Csi, FeatureId, NsIdType, StatusCodeType
from nvmeof.wire.layout import c_string

from ._support import BLOCK, LOOPBACK, NSID, pattern, run

GIB = 1 << 30
KEEP_ALIVE_TEST_KATO_MS = 1000
TEARDOWN_DEADLINE_S = 3.0
POLL_S = 0.05


@pytest.mark.parametrize("hdgst", [False, True], ids=["nohd", "hd"])
@pytest.mark.parametrize("ddgst", [False, True], ids=["nodd", "dd"])
def test_connect_with_digests(device, hdgst: bool, ddgst: bool) -> None:
    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, hdgst=hdgst, ddgst=ddgst) as ctrl:
            for queue in (ctrl.admin, *ctrl.io_queues):
                assert (queue.conn.hdgst, queue.conn.ddgst) == (hdgst, ddgst)
            small = pattern(1, 8 * BLOCK)  # in-capsule
            large = pattern(2, 512 * 1024)  # R2T + several H2CData, several C2HData back
            await ctrl.write(NSID, 0, small)
            await ctrl.write(NSID, 64, large)
            assert await ctrl.read(NSID, 0, 8) == small
            assert await ctrl.read(NSID, 64, len(large) // BLOCK) == large

    run(body())


def test_identify_controller(device) -> None:
    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            ident = await ctrl.identify_controller()
            assert ident.cntlid == ctrl.cntlid
            assert c_string(ident.subnqn) == device.subnqn
            assert ctrl.model == "dpu-emu"
            assert ctrl.serial == "DPUEMU0001"
            assert ctrl.hostid == uuid.UUID(ctrl.hostnqn.rsplit(":", 1)[1]).bytes  # derived as nvme-cli does
            assert ident.cntrltype == ControllerType.IO
            assert ident.kas > 0
            assert ident.ioccsz >= 4 and ident.iorcsz >= 1
            assert ctrl.io_in_capsule_size == ident.ioccsz * 16 - 64
            assert ctrl.io_queues[0].in_capsule_size == ctrl.io_in_capsule_size
            assert await ctrl.get_features(FeatureId.KEEP_ALIVE_TIMER) == ctrl.kato_ms

    run(body())


def test_identify_namespace(device) -> None:
    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            active = await ctrl.active_namespaces()
            assert NSID in active and active == sorted(active)
            ns = await ctrl.identify_namespace(NSID)
            info = await ctrl.namespace(NSID)
            assert info.block_size == BLOCK
            assert ns.nsze == ns.ncap == GIB // BLOCK
            assert info.size_bytes == GIB
            descriptors = dict(await ctrl.ns_descriptors(NSID))
            assert NsIdType.NGUID in descriptors
            assert descriptors[NsIdType.CSI] == bytes([Csi.NVM])

    run(body())


def test_connect_to_unknown_subsystem_is_refused(device) -> None:
    async def body() -> NvmeStatus:
        with pytest.raises(NvmeStatus) as info:
            await connect(LOOPBACK, device.io_port, "nqn.2026-11.io.dpu-emu:no-such-subsystem")
        return info.value

    err = run(body())
    assert err.sct == StatusCodeType.COMMAND_SPECIFIC
    assert err.sc == CommandSpecificStatus.CONNECT_INVALID_PARAMETERS


def test_keep_alive_expiry_tears_down_the_association(device) -> None:
    async def body() -> float:
        ctrl = await connect(LOOPBACK, device.io_port, device.subnqn, kato_ms=KEEP_ALIVE_TEST_KATO_MS)
        try:
            await ctrl.write(NSID, 0, pattern(3, BLOCK))
            ctrl.stop_keep_alive()
            loop = asyncio.get_running_loop()
            start = loop.time()
            while ctrl.admin.is_open and loop.time() - start < TEARDOWN_DEADLINE_S:
                await asyncio.sleep(POLL_S)
            elapsed = loop.time() - start
            with pytest.raises(ConnectionError):
                await ctrl.read(NSID, 0, 1)
            with pytest.raises(ConnectionError):
                await ctrl.keep_alive()
            return elapsed
        finally:
            await ctrl.close()

    elapsed = run(body())
    assert elapsed < TEARDOWN_DEADLINE_S


def test_keep_alive_keeps_the_association(device) -> None:
    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, kato_ms=KEEP_ALIVE_TEST_KATO_MS) as c:
            await asyncio.sleep(2.5 * KEEP_ALIVE_TEST_KATO_MS / 1000)
            assert c.admin.is_open
            await c.read(NSID, 0, 1)

    run(body())


def test_disconnect_and_reconnect_keeps_data(device) -> None:
    data = pattern(4, 64 * 1024)

    async def first() -> int:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            await ctrl.write(NSID, 1000, data)
            return ctrl.cntlid

    async def second() -> HostController:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, nr_io_queues=2) as ctrl:
            assert await ctrl.read(NSID, 1000, len(data) // BLOCK) == data
            return ctrl

    run(first())
    ctrl = run(second())
    assert not ctrl.admin.is_open and not any(q.is_open for q in ctrl.io_queues)
