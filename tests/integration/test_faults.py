"""Fault injection seen by the host library (nvmeof.host) against an in-process device: each of
the six fault types shows exactly the injected behaviour, count and probability semantics
hold, and clearing the faults restores normal behaviour.  Timing: delays are checked as "at
least N ms" next to an undelayed baseline measured in the same test, never as absolute bounds."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from dpu_emu import config as cfgmod
from nvmeof.errors import NvmeStatus
from nvmeof.host import commands as cmds
from nvmeof.host import connect, discover
from nvmeof.wire.constants import AdminOpcode, GenericStatus, MediaStatus, NvmOpcode, StatusCodeType

from ._support import BLOCK, LOOPBACK, NSID, pattern, run
from .conftest import RunningDevice

DELAY_MS = 300
SHORT_TIMEOUT_S = 0.5
SEED = 1234
PROBABILITY = 0.5
DRAWS = 24


def add_fault(dev: RunningDevice, spec: dict[str, Any]) -> str:
    return str(dev.call_soon(lambda: dev.device.faults.create(spec)).id)


def fault(dev: RunningDevice, fault_id: str) -> Any:
    return dev.call_soon(lambda: dev.device.faults.get(fault_id))


def clear(dev: RunningDevice) -> None:
    dev.call_soon(dev.device.faults.clear)


def test_delay_holds_completions_at_least_the_delay(device: RunningDevice) -> None:
    data = pattern(1, BLOCK)

    async def timed_read(ctrl: Any) -> float:
        start = time.monotonic()
        assert await ctrl.read(NSID, 0, 1) == data
        return time.monotonic() - start

    async def body() -> tuple[float, float, float]:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            await ctrl.write(NSID, 0, data)
            baseline = min([await timed_read(ctrl) for _ in range(3)])
            add_fault(device, {"type": "delay", "match": {"queue": "io", "opcodes": [NvmOpcode.READ]},
                               "params": {"delay_ms": DELAY_MS}})
            delayed = await timed_read(ctrl)
            clear(device)
            after = await timed_read(ctrl)
            return baseline, delayed, after

    baseline, delayed, after = run(body())
    print(f"read baseline {baseline * 1000:.1f} ms, delayed {delayed * 1000:.1f} ms, after clear "
          f"{after * 1000:.1f} ms")
    assert delayed >= DELAY_MS / 1000
    assert delayed >= baseline + DELAY_MS / 1000 * 0.9
    assert after < delayed


def test_status_is_returned_exactly_and_count_is_honoured(device: RunningDevice) -> None:
    fid = add_fault(device, {"type": "status", "count": 2,
                             "match": {"subsystem": device.subnqn, "nsid": NSID, "opcodes": [NvmOpcode.READ]},
                             "params": {"sct": StatusCodeType.MEDIA_ERROR, "sc": MediaStatus.UNRECOVERED_READ_ERROR,
                                        "dnr": True}})

    async def body() -> list[tuple[int, int, bool] | None]:
        results: list[tuple[int, int, bool] | None] = []
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            await ctrl.write(NSID, 8, pattern(2, BLOCK))  # writes do not match
            for _ in range(3):
                try:
                    assert await ctrl.read(NSID, 8, 1) == pattern(2, BLOCK)
                    results.append(None)
                except NvmeStatus as err:
                    results.append((err.sct, err.sc, err.dnr))
        return results

    injected = (StatusCodeType.MEDIA_ERROR, MediaStatus.UNRECOVERED_READ_ERROR, True)
    assert run(body()) == [injected, injected, None]
    view = fault(device, fid)
    assert (view.matched, view.injected, view.exhausted) == (3, 2, True)


def test_drop_connection_after_exactly_k_commands(device: RunningDevice) -> None:
    k = 3
    fid = add_fault(device, {"type": "drop_connection", "count": 1, "match": {"queue": "io"},
                             "params": {"after_commands": k}})

    async def body() -> int:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            served = 0
            with pytest.raises(ConnectionError):
                for _ in range(k + 2):
                    await ctrl.read(NSID, 0, 1)
                    served += 1
            assert not ctrl.queue(0).is_open
            await ctrl.identify_controller()  # the admin queue is untouched
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as again:  # budget spent
            for _ in range(k + 2):
                await again.read(NSID, 0, 1)
        return served

    assert run(body()) == k
    view = fault(device, fid)
    assert view.injected == 1 and view.exhausted


def test_drop_mid_batch_runs_nothing_after_the_dropped_command(device: RunningDevice) -> None:
    """Pipelined writes: the first K complete and are applied, the rest are never executed."""
    k, total, base = 2, 5, 64
    old, new = pattern(5, BLOCK), pattern(6, BLOCK)

    async def body() -> list[bool]:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            for i in range(total):
                await ctrl.write(NSID, base + i, old)
            add_fault(device, {"type": "drop_connection", "count": 1, "match": {"queue": "io"},
                               "params": {"after_commands": k}})
            results = await asyncio.gather(*(ctrl.write(NSID, base + i, new) for i in range(total)),
                                           return_exceptions=True)
            assert [r is None for r in results] == [True] * k + [False] * (total - k), results
            assert all(isinstance(r, ConnectionError) for r in results[k:])
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as again:
            return [await again.read(NSID, base + i, 1) == new for i in range(total)]

    assert run(body()) == [True] * k + [False] * (total - k)


def test_c2h_data_digest_corruption_is_detected_by_the_host(device: RunningDevice) -> None:
    data = pattern(3, 4 * BLOCK)
    fid = add_fault(device, {"type": "corrupt_c2h_digest", "count": 1, "match": {"queue": "io"}})

    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as plain:  # no digests: no match
            await plain.write(NSID, 16, data)
            assert await plain.read(NSID, 16, 4) == data
        assert fault(device, fid).matched == 0
        async with await connect(LOOPBACK, device.io_port, device.subnqn, ddgst=True) as ctrl:
            await ctrl.write(NSID, 16, data)  # a write returns no data: no match
            with pytest.raises(NvmeStatus) as caught:
                await ctrl.read(NSID, 16, 4)
            assert (caught.value.sct, caught.value.sc) == (StatusCodeType.GENERIC, GenericStatus.DATA_TRANSFER_ERROR)
            assert await ctrl.read(NSID, 16, 4) == data  # count 1: the retry is clean

    run(body())
    view = fault(device, fid)
    assert (view.matched, view.injected) == (2, 1)


def test_ignored_keep_alive_times_out_at_the_host(device: RunningDevice) -> None:
    fid = add_fault(device, {"type": "ignore_keep_alive", "match": {"subsystem": device.subnqn}})

    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, kato_ms=60_000) as ctrl:
            with pytest.raises(TimeoutError):
                await ctrl.admin.submit(cmds.keep_alive(), timeout=SHORT_TIMEOUT_S)
            await ctrl.identify_controller()  # other admin commands are answered
            view = fault(device, fid)
            assert (view.matched, view.injected) == (1, 1)
            clear(device)
            done = await ctrl.admin.submit(cmds.keep_alive(), timeout=SHORT_TIMEOUT_S * 4)
            assert done.status == 0

    run(body())


def test_refused_connections_on_one_listener_while_the_other_works(device: RunningDevice) -> None:
    ports = cfgmod.ports(device.device.cfg)
    discovery_only = next(p.portid for p in ports if p.discovery and not p.io)
    fid = add_fault(device, {"type": "refuse_connection", "count": 2, "match": {"listener": discovery_only}})

    async def body() -> None:
        for _ in range(2):
            with pytest.raises((ConnectionError, OSError)):
                await discover(LOOPBACK, device.discovery_port, timeout=2.0)
            async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:  # the other listener
                await ctrl.read(NSID, 0, 1)
        assert [e.subnqn for e in await discover(LOOPBACK, device.discovery_port)]  # count spent

    run(body())
    view = fault(device, fid)
    assert (view.matched, view.injected) == (3, 2)


def test_command_fault_on_one_listener_leaves_the_other_path_alone(device: RunningDevice) -> None:
    """A listener-scoped status fault fails Get Log Page only on connections that came in there."""
    ports = cfgmod.ports(device.device.cfg)
    io_port = next(p.portid for p in ports if p.io)
    discovery_only = next(p.portid for p in ports if p.discovery and not p.io)
    fid = add_fault(device, {"type": "status", "match": {"listener": discovery_only, "queue": "admin",
                                                         "opcodes": [AdminOpcode.GET_LOG_PAGE]},
                             "params": {"sct": StatusCodeType.GENERIC, "sc": GenericStatus.INTERNAL_ERROR}})

    async def body() -> None:
        with pytest.raises(NvmeStatus) as failed:
            await discover(LOOPBACK, device.discovery_port, timeout=2.0)
        assert (failed.value.sct, failed.value.sc) == (StatusCodeType.GENERIC, GenericStatus.INTERNAL_ERROR)
        assert [e.subnqn for e in await discover(LOOPBACK, device.io_port)]  # listener io_port: untouched

    run(body())
    assert io_port != discovery_only
    view = fault(device, fid)
    assert view.injected == view.matched >= 1


def test_probability_is_reproducible_with_a_seed(device: RunningDevice) -> None:
    fid = add_fault(device, {"type": "status", "probability": PROBABILITY, "seed": SEED,
                             "match": {"queue": "admin", "opcodes": [AdminOpcode.GET_FEATURES]},
                             "params": {"sc": GenericStatus.INVALID_FIELD}})
    draws = random.Random(SEED)
    expected = [draws.random() < PROBABILITY for _ in range(DRAWS)]

    async def body() -> list[bool]:
        failed = []
        async with await connect(LOOPBACK, device.io_port, device.subnqn) as ctrl:
            for _ in range(DRAWS):
                try:
                    await ctrl.get_features(0x07)  # Number of Queues
                    failed.append(False)
                except NvmeStatus as err:
                    assert err.sc == GenericStatus.INVALID_FIELD
                    failed.append(True)
        return failed

    assert run(body()) == expected
    view = fault(device, fid)
    assert (view.matched, view.injected) == (DRAWS, sum(expected))
    assert 0 < sum(expected) < DRAWS


def test_nothing_is_injected_without_faults_and_after_clear(device: RunningDevice) -> None:
    assert device.device.faults.active is False
    add_fault(device, {"type": "status", "params": {"sc": GenericStatus.INTERNAL_ERROR}})
    add_fault(device, {"type": "refuse_connection"})
    clear(device)
    assert device.device.faults.active is False

    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, ddgst=True) as ctrl:
            await ctrl.write(NSID, 32, pattern(4, BLOCK))
            assert await ctrl.read(NSID, 32, 1) == pattern(4, BLOCK)

    run(body())
