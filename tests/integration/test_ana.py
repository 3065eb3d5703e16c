"""ANA multipath end to end on 127.0.0.1: one device, two I/O listeners (ports), a host
with ``connect_multipath`` over both, ANA states switched over REST while I/O runs
(zero failed I/O), a lost connection, and the Path Related Status a plain single-path
controller sees."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvmeof.errors import NvmeStatus
from nvmeof.host import connect
from nvmeof.host.multipath import MultipathController, connect_multipath
from tests.api.conftest import LOOPBACK, SUBNQN, ApiDevice, small_config

MIB = 1 << 20
BLOCK = 512
PORT_A, PORT_B = 1, 3
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:33333333-3333-4333-8333-333333333333"
RUN_TIMEOUT_S = 90.0
WAIT_S = 10.0
MAX_OPS = 20_000
OPS_PER_PHASE = 60  # I/O completed in each phase before the next switch
SLOTS = 64  # distinct 4 KiB extents the load writes and verifies


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiDevice]:
    cfg = small_config()
    cfg["ports"].append({"portid": PORT_B, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": LOOPBACK,
                                                    "trsvcid": "0"}, "discovery": False, "io": True})
    dev = ApiDevice(cfg, tmp_path, None)
    assert dev.client.post("/v1/subsystems", json={"nqn": SUBNQN, "allow_any_host": True}).status_code == 201
    resp = dev.client.post(f"/v1/subsystems/{SUBNQN}/namespaces", json={"size_bytes": 4 * MIB})
    assert resp.status_code == 201
    yield dev
    dev.stop()


def port_of(api: ApiDevice, portid: int) -> int:
    return int(api.device.bound[portid][1])


async def set_state(api: ApiDevice, portid: int, state: str, grpid: int = 1) -> None:
    resp = await asyncio.to_thread(api.client.put, f"/v1/subsystems/{SUBNQN}/ana/{grpid}/listeners/{portid}",
                                   json={"state": state})
    assert resp.status_code == 200, resp.text


async def until(predicate: Any, what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(0.01)


class Load:
    """Write-then-read-back of distinct extents; counts completed and failed operations."""

    def __init__(self, mp: MultipathController) -> None:
        self.mp = mp
        self.done = 0
        self.failed: list[BaseException] = []
        self.mismatches = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        for i in range(MAX_OPS):
            if self.stop.is_set():
                return
            slot = i % SLOTS
            data = (i.to_bytes(4, "little") + os.urandom(4)) * (4096 // 8)
            try:
                await self.mp.write(1, slot * 8, data)
                if await self.mp.read(1, slot * 8, 8) != data:
                    self.mismatches += 1
            except Exception as exc:  # every failure is counted and reported
                self.failed.append(exc)
            self.done += 1

    async def advance(self, ops: int = OPS_PER_PHASE) -> None:
        target = self.done + ops
        await until(lambda: self.done >= target or self.failed, f"{ops} more operations")


def test_failover_over_rest_with_zero_failed_io(api: ApiDevice) -> None:
    async def body() -> None:
        paths = [(LOOPBACK, port_of(api, PORT_A)), (LOOPBACK, port_of(api, PORT_B))]
        async with await connect_multipath(paths, SUBNQN, hostnqn=HOSTNQN) as mp:
            a, b = mp.paths
            assert [p.state for p in mp.paths] == ["optimized", "optimized"]
            assert a.connected and b.connected and a.ctrl and b.ctrl and a.ctrl.cntlid != b.ctrl.cntlid
            load = Load(mp)
            task = asyncio.create_task(load.run())
            try:
                await load.advance()
                assert a.io_count and b.io_count  # round-robin over two optimized paths
                for down, up, name in ((PORT_A, PORT_B, "inaccessible"), (PORT_B, PORT_A, "persistent_loss"),
                                       (PORT_A, PORT_B, "non_optimized")):
                    await set_state(api, up, "optimized")
                    await set_state(api, down, name)
                    gone, kept = (a, b) if down == PORT_A else (b, a)
                    await until(lambda g=gone, n=name: g.state == n, f"path {down} {name}")  # ANA change event
                    before_gone, before_kept = gone.io_count, kept.io_count
                    await load.advance()
                    assert gone.io_count == before_gone, f"I/O went to the {name} path"
                    assert kept.io_count > before_kept
                await set_state(api, PORT_A, "optimized")
                await until(lambda: a.state == "optimized", "path A back to optimized")
                before = a.io_count
                await load.advance()
                assert a.io_count > before  # goes back
            finally:
                load.stop.set()
                await task
            print(f"\n[ana] {load.done} write+read pairs, {len(load.failed)} failed, {mp.retries} retried; "
                  f"io per path {[p.io_count for p in mp.paths]}; ANA log reads {[p.ana_reads for p in mp.paths]}")
            assert load.failed == [] and load.mismatches == 0
            assert load.done >= 5 * OPS_PER_PHASE
            assert a.ana_reads >= 4 and b.ana_reads >= 4

    asyncio.run(asyncio.wait_for(body(), RUN_TIMEOUT_S))


def test_lost_connection_is_retried_on_the_other_path_and_reconnected(api: ApiDevice) -> None:
    async def body() -> None:
        paths = [(LOOPBACK, port_of(api, PORT_A)), (LOOPBACK, port_of(api, PORT_B))]
        async with await connect_multipath(paths, SUBNQN, hostnqn=HOSTNQN) as mp:
            a, b = mp.paths
            load = Load(mp)
            task = asyncio.create_task(load.run())
            try:
                await load.advance()
                assert a.ctrl is not None
                for q in a.ctrl.io_queues:  # the next command routed to path A meets a dead connection
                    q.abort()
                await load.advance()
                assert mp.retries >= 1
                await until(lambda: a.connected, "path A reconnected")
                before = a.io_count
                await load.advance()
                assert a.io_count > before
            finally:
                load.stop.set()
                await task
            print(f"\n[ana] lost path: {load.done} write+read pairs, {len(load.failed)} failed, {mp.retries} retried")
            assert load.failed == [] and load.mismatches == 0

    asyncio.run(asyncio.wait_for(body(), RUN_TIMEOUT_S))


def test_single_path_controller_gets_path_related_status(api: ApiDevice) -> None:
    async def body() -> list[tuple[str, Any]]:
        seen: list[tuple[str, Any]] = []
        async with await connect(LOOPBACK, port_of(api, PORT_A), SUBNQN, hostnqn=HOSTNQN) as ctrl:
            for name in ("inaccessible", "persistent_loss", "change", "non_optimized", "optimized"):
                await set_state(api, PORT_A, name)
                try:
                    await ctrl.read(1, 0, 1)
                    seen.append((name, "ok"))
                except NvmeStatus as exc:
                    seen.append((name, (exc.sct, exc.sc, exc.dnr)))
        return seen

    assert asyncio.run(asyncio.wait_for(body(), RUN_TIMEOUT_S)) == [
        ("inaccessible", (0x3, 0x02, False)), ("persistent_loss", (0x3, 0x01, False)),
        ("change", (0x3, 0x03, False)), ("non_optimized", "ok"), ("optimized", "ok")]
