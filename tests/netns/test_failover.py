"""Multipath failover across two network paths, with the emulator and the host in namespaces.

Topology: namespace "emu" runs `dpu-emu serve` with one I/O listener per path (portid 1 on
10.77.1.1, portid 2 on 10.77.2.1); namespace "host" runs the host library's
`connect_multipath` over both paths (its asyncio loop on a thread inside that namespace), and
the REST calls run on a thread inside "emu". Path 2 is made non-optimized first, so that every
phase has exactly one preferred path: continuous verified I/O (write a block, read it back,
compare) runs through path 1; then path 1 is cut, by ANA over REST (inaccessible), by
nftables dropping all its packets, or by taking its link down; the I/O must move to path 2 with
zero failed I/O after the transition (the REST variant: none at all); when path 1 is restored
(optimized again / rule removed / link up) the I/O must return to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from testbeds.netns import EMU_ROLE, LossRule, Topology, add_loss, remove_loss, set_link

from .emulator import BLOCK_BYTES, IO_PORT, NQN, NetnsEmulator

pytestmark = [pytest.mark.netns, pytest.mark.slow]

HOSTNQN: Final[str] = "nqn.2014-08.org.nvmexpress:uuid:7e57fa11-0000-4000-8000-000000000009"
COMMAND_TIMEOUT_S: Final[float] = 3.0
"""Host-library command deadline: a command on a silent path fails over after this."""
WINDOW_OPS: Final[int] = 40
"""Verified I/O operations counted in each measurement window."""
SETTLE_OPS: Final[int] = 5
"""Operations let through after a transition before a window starts (in-flight ones drain)."""
PHASE_TIMEOUT_S: Final[float] = 60.0
BLOCKS_PER_OP: Final[int] = 8
BLOCK_SLOTS: Final[int] = 256
MAX_OPS: Final[int] = 500_000
HOST_ROLE: Final[str] = "host"
DEAD_PATH_HOLD_S: Final[float] = 3 * COMMAND_TIMEOUT_S
"""How long a dead path 1 stays dead: longer than the host library's bounded close of the lost
controller (one command timeout), so the restore meets a fresh reconnect, not the old association
(see the report of issue #9: a stale event loop of the old controller must not drop the new one)."""


@dataclass
class IoStats:
    ops: int = 0
    failed: int = 0
    failed_after_transition: int = 0
    transitioned: bool = False
    errors: list[str] = field(default_factory=list)
    written: dict[int, bytes] = field(default_factory=dict)


def _pattern(slot: int, generation: int) -> bytes:
    head = f"slot {slot} gen {generation} ".encode()
    return (head * (BLOCKS_PER_OP * BLOCK_BYTES // len(head) + 1))[:BLOCKS_PER_OP * BLOCK_BYTES]


async def _io_loop(mp: Any, stats: IoStats, stop: asyncio.Event) -> None:
    """Write a slot, read it back, compare; bounded in count (and by the caller in time)."""
    generation = 0
    while not stop.is_set() and stats.ops < MAX_OPS:
        slot = stats.ops % BLOCK_SLOTS
        generation += 1
        data = _pattern(slot, generation)
        try:
            await mp.write(1, slot * BLOCKS_PER_OP, data)
            back = await mp.read(1, slot * BLOCKS_PER_OP, BLOCKS_PER_OP)
            if back != data:
                raise AssertionError(f"slot {slot}: read back differs from what was written")
            stats.written[slot] = data
        except Exception as exc:  # noqa: BLE001 - every failed I/O is counted and reported
            stats.failed += 1
            stats.failed_after_transition += stats.transitioned
            stats.errors.append(f"op {stats.ops}: {type(exc).__name__}: {exc}")
        stats.ops += 1


@dataclass(frozen=True)
class Window:
    path1: int
    path2: int
    ops: int


class Scenario:
    """Runs on the host namespace's thread: the multipath session and its measurement windows."""

    def __init__(self, emulator: NetnsEmulator, topo: Topology) -> None:
        self.emulator = emulator
        self.topo = topo
        self.stats = IoStats()
        self.mp: Any = None
        self.windows: dict[str, Window] = {}
        self.log: list[str] = []

    @staticmethod
    async def off_loop(fn: Callable[[], Any]) -> Any:
        """Runs a cut/restore action on a worker thread, without blocking the I/O loop (REST calls
        go to the emulator namespace's thread, nft and links name their namespace)."""
        return await asyncio.to_thread(fn)

    async def wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; paths {self.mp.paths}; "
                                     f"stats ops={self.stats.ops} failed={self.stats.failed} {self.stats.errors[:5]}")
            await asyncio.sleep(0.05)
        self.log.append(f"{what}: at op {self.stats.ops}, paths {self.mp.paths}")

    async def ops_after(self, count: int) -> None:
        target = self.stats.ops + count
        await self.wait_for(f"{count} more ops", lambda: self.stats.ops >= target)

    async def window(self, name: str) -> Window:
        await self.ops_after(SETTLE_OPS)
        p1, p2 = (p.io_count for p in self.mp.paths)
        start = self.stats.ops
        await self.ops_after(WINDOW_OPS)
        q1, q2 = (p.io_count for p in self.mp.paths)
        self.windows[name] = Window(q1 - p1, q2 - p2, self.stats.ops - start)
        return self.windows[name]

    async def run(self, cut: Callable[[], Any], restore: Callable[[], Any], cut_state: str | None,
                  hold_s: float) -> None:
        from nvmeof.host.multipath import connect_multipath

        self.mp = await connect_multipath(
            [(p.emu_address, IO_PORT) for p in self.topo.paths], NQN, hostnqn=HOSTNQN, timeout=COMMAND_TIMEOUT_S)
        stop = asyncio.Event()
        async with self.mp:
            worker = asyncio.ensure_future(_io_loop(self.mp, self.stats, stop))
            try:
                await self.wait_for("path 2 seen non-optimized",
                                    lambda: self.mp.paths[1].state == "non_optimized")
                await self.window("before")
                await self.off_loop(cut)
                cut_at = time.monotonic()
                self.stats.transitioned = True
                if cut_state is not None:
                    await self.wait_for(f"path 1 seen {cut_state}", lambda: self.mp.paths[0].state == cut_state)
                else:
                    await self.wait_for("path 1 dropped", lambda: not self.mp.paths[0].connected)
                await self.window("cut")
                await asyncio.sleep(max(0.0, hold_s - (time.monotonic() - cut_at)))
                await self.off_loop(restore)
                await self.wait_for("path 1 optimized again", lambda: self.mp.paths[0].connected
                                    and self.mp.paths[0].state == "optimized")
                await self.window("restored")
            finally:
                stop.set()
                await asyncio.wait_for(worker, PHASE_TIMEOUT_S)
            for slot, data in sorted(self.stats.written.items()):
                assert await self.mp.read(1, slot * BLOCKS_PER_OP, BLOCKS_PER_OP) == data, f"slot {slot} lost"


@pytest.fixture(scope="module")
def bed(netns_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, NetnsEmulator]]:
    try:
        import nvmeof.host.multipath  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"the host library's multipath API is missing: {exc}", pytrace=False)
    work: Path = tmp_path_factory.mktemp("netns-failover")
    with Topology(paths=(HOST_ROLE, HOST_ROLE)) as topo:
        emulator = NetnsEmulator(topo, work)
        try:
            emulator.start()
            yield topo, emulator
        finally:
            emulator.close()
    print(f"\n[netns] dpu-emu log {emulator.log_path}")


def _run(bed: tuple[Topology, NetnsEmulator], cut: Callable[[], Any], restore: Callable[[], Any],
         cut_state: str | None, hold_s: float = 0.0) -> Scenario:
    topo, emulator = bed
    emulator.set_ana(1, "optimized")
    emulator.set_ana(2, "non_optimized")
    scenario = Scenario(emulator, topo)
    try:
        topo.call(HOST_ROLE, asyncio.run, scenario.run(cut, restore, cut_state, hold_s))
    finally:
        print("\n[netns] " + "\n[netns] ".join(scenario.log))
        print(f"[netns] windows {scenario.windows}; ops {scenario.stats.ops}, failed {scenario.stats.failed} "
              f"({scenario.stats.failed_after_transition} after the cut) {scenario.stats.errors[:5]}")
    return scenario


def _assert_moves(scenario: Scenario) -> None:
    before, cut, restored = (scenario.windows[n] for n in ("before", "cut", "restored"))
    assert before.path1 >= WINDOW_OPS and before.path2 == 0, before  # path 1 preferred
    assert cut.path1 == 0 and cut.path2 >= WINDOW_OPS, cut  # everything moved to path 2
    assert restored.path1 >= WINDOW_OPS and restored.path2 == 0, restored  # and back


def test_ana_inaccessible_over_rest_moves_io_to_path_2_and_back(bed: tuple[Topology, NetnsEmulator]) -> None:
    _, emulator = bed
    scenario = _run(bed, lambda: emulator.set_ana(1, "inaccessible"), lambda: emulator.set_ana(1, "optimized"),
                    "inaccessible")
    _assert_moves(scenario)
    assert scenario.stats.failed == 0, scenario.stats.errors


@pytest.mark.parametrize("cut_kind", ["nft-drop", "link-down"])
def test_dead_path_1_moves_io_to_path_2_and_back(bed: tuple[Topology, NetnsEmulator], cut_kind: str) -> None:
    topo, _ = bed
    emu, p1 = topo.netns(EMU_ROLE), topo.paths[0]
    tables: list[str] = []

    def cut() -> None:
        if cut_kind == "nft-drop":
            tables.append(add_loss(emu, LossRule(p1.ifname, 100)))
        else:
            set_link(emu, p1.ifname, up=False)

    def restore() -> None:
        if cut_kind == "nft-drop":
            remove_loss(emu, tables.pop())
        else:
            set_link(emu, p1.ifname, up=True)

    try:
        scenario = _run(bed, cut, restore, None, DEAD_PATH_HOLD_S)
    finally:
        for table in tables:
            remove_loss(emu, table)
        set_link(emu, p1.ifname, up=True)
    _assert_moves(scenario)
    assert scenario.stats.failed_after_transition == 0, scenario.stats.errors
