"""NVM I/O through nvmeof.host: data paths (in-capsule, R2T, multi-PDU C2H), Flush,
Write Zeroes, Deallocate, range errors, and a parallel write/verify workload."""

from __future__ import annotations

import asyncio
import random
from collections import deque

import pytest

from nvmeof.errors import NvmeStatus
from nvmeof.host import connect
from nvmeof.wire.constants import GenericStatus, PduType, StatusCodeType

from ._support import BLOCK, LOOPBACK, NSID, count_received_pdus, count_sent_pdus, pattern, run

KIB = 1024
MIB = 1024 * KIB
MAXH2CDATA = 128 * KIB


def test_write_larger_than_in_capsule_uses_r2t(make_device) -> None:
    dev = make_device({**_default(), "transport": {"maxh2cdata": MAXH2CDATA}})
    data = pattern(10, MIB)

    async def body() -> None:
        async with await connect(LOOPBACK, dev.io_port, dev.subnqn) as ctrl:
            queue = ctrl.queue(0)
            assert queue.maxh2cdata == MAXH2CDATA
            assert len(data) > queue.in_capsule_size
            sent = count_sent_pdus(queue)
            await ctrl.write(NSID, 2048, data, queue=0)
            assert sent[PduType.H2C_DATA] == MIB // MAXH2CDATA
            assert await ctrl.read(NSID, 2048, MIB // BLOCK) == data

    run(body())


def test_read_larger_than_maxh2cdata(make_device) -> None:
    dev = make_device({**_default(), "transport": {"maxh2cdata": MAXH2CDATA}})
    data = pattern(11, MIB)

    async def body() -> None:
        async with await connect(LOOPBACK, dev.io_port, dev.subnqn) as ctrl:
            await ctrl.write(NSID, 8192, data)
            received = count_received_pdus(ctrl.queue(0))
            assert await ctrl.read(NSID, 8192, MIB // BLOCK, queue=0) == data
            assert received[PduType.C2H_DATA] >= MIB // MAXH2CDATA

    run(body())


def test_small_write_goes_in_capsule(device) -> None:
    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            queue = ctrl.queue(0)
            sent = count_sent_pdus(queue)
            data = pattern(12, queue.in_capsule_size)
            await ctrl.write(NSID, 0, data, queue=0)
            assert sent[PduType.H2C_DATA] == 0 and sent[PduType.CAPSULE_CMD] == 1
            assert await ctrl.read(NSID, 0, len(data) // BLOCK) == data

    run(body())


def test_flush(device) -> None:
    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            await ctrl.write(NSID, 0, pattern(13, 4 * KIB), fua=True)
            await ctrl.flush(NSID)
            await ctrl.flush()  # NSID FFFFFFFFh: every namespace

    run(body())


@pytest.mark.parametrize("deallocate", [False, True], ids=["plain", "deac"])
def test_write_zeroes(device, deallocate: bool) -> None:
    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            data = pattern(14, 64 * BLOCK)
            await ctrl.write(NSID, 4096, data)
            await ctrl.write_zeroes(NSID, 4096 + 16, 32, deallocate=deallocate)
            got = await ctrl.read(NSID, 4096, 64)
            assert got[:16 * BLOCK] == data[:16 * BLOCK]
            assert got[16 * BLOCK:48 * BLOCK] == bytes(32 * BLOCK)
            assert got[48 * BLOCK:] == data[48 * BLOCK:]

    run(body())


def test_deallocate_reads_back_zero(device) -> None:
    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            data = pattern(15, 256 * BLOCK)
            await ctrl.write(NSID, 10_000, data)
            await ctrl.deallocate(NSID, [(10_000, 64), (10_128, 128)])
            got = await ctrl.read(NSID, 10_000, 256)
            assert got[:64 * BLOCK] == bytes(64 * BLOCK)
            assert got[64 * BLOCK:128 * BLOCK] == data[64 * BLOCK:128 * BLOCK]
            assert got[128 * BLOCK:] == bytes(128 * BLOCK)

    run(body())


def test_io_beyond_namespace_end_is_lba_out_of_range(device) -> None:
    async def body() -> list[NvmeStatus]:
        errors: list[NvmeStatus] = []
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            last = (await ctrl.namespace(NSID)).num_blocks - 1
            for attempt in (ctrl.read(NSID, last, 2), ctrl.write(NSID, last + 1, bytes(BLOCK)),
                            ctrl.write_zeroes(NSID, last, 8)):
                with pytest.raises(NvmeStatus) as info:
                    await attempt
                errors.append(info.value)
            await ctrl.read(NSID, last, 1)  # the last block itself is fine; the queue lives on
        return errors

    for err in run(body()):
        assert (err.sct, err.sc) == (StatusCodeType.GENERIC, GenericStatus.LBA_OUT_OF_RANGE)


@pytest.mark.slow
def test_four_queues_qd64_random_write_then_verify_256mib(device) -> None:
    queues, depth, io_size, total = 4, 64, 128 * KIB, 256 * MIB
    slots = random.Random(20261127).sample(range(MIB * 1024 // io_size), total // io_size)
    per_io = io_size // BLOCK

    async def workers(ctrl, work) -> None:  # type: ignore[no-untyped-def]
        todo = deque(slots)

        async def worker(q: int) -> None:
            while todo:
                await work(todo.popleft(), q)

        await asyncio.gather(*(worker(q) for q in range(queues) for _ in range(depth)))

    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, nr_io_queues=queues,
                                 queue_size=depth) as ctrl:
            assert len(ctrl.io_queues) == queues
            before = sum(q.commands for q in ctrl.io_queues)  # the Connect commands

            async def write(slot: int, q: int) -> None:
                await ctrl.write(NSID, slot * per_io, pattern(slot, io_size, salt=7), queue=q)

            async def verify(slot: int, q: int) -> None:
                data = await ctrl.read(NSID, slot * per_io, per_io, queue=q)
                assert data == pattern(slot, io_size, salt=7), f"slot {slot} corrupted"

            await workers(ctrl, write)
            await workers(ctrl, verify)
            assert sum(q.commands for q in ctrl.io_queues) - before == 2 * len(slots)

    run(body(), timeout=240)


def _default() -> dict:
    from dpu_emu.config import default_config

    return default_config()


@pytest.mark.parametrize("disable_sqflow", [False, True], ids=["sqflow", "no-sqflow"])
def test_read_completion_with_and_without_sq_flow_control(device, disable_sqflow: bool) -> None:
    """Without SQ flow control the target ends a read with C2HData SUCCESS, no CapsuleResp."""

    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, disable_sqflow=disable_sqflow) as ctrl:
            data = pattern(16, 64 * KIB)
            await ctrl.write(NSID, 20_000, data)
            received = count_received_pdus(ctrl.queue(0))
            assert await ctrl.read(NSID, 20_000, len(data) // BLOCK, queue=0) == data
            assert received[PduType.CAPSULE_RESP] == (0 if disable_sqflow else 1)

    run(body())
