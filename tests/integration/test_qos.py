"""QoS on a real asyncio loop: a limited tenant gets its limit (rate over time, within 10 %)
while an unlimited tenant floods the same device, and is not starved either.

The inner backend is a fake that completes on the next loop iteration, so the measured
rates are those of the scheduler, not of any store.  Each scenario runs ~3 s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from dpu_emu.qos import QosBackend, QosGroup, QosPolicy, QosScheduler, tenant_classifier
from nvmeof.controller.backend import Done, IoCommand

pytestmark = pytest.mark.slow

RUN_S = 3.0
WARMUP_S = 0.3
QUEUE_DEPTH = 32
TOLERANCE = 0.10
MIB = 1 << 20
BLOCK = 4096
NVM_READ = 0x02


class FastInner:
    """Completes every command on the next loop iteration (call_soon)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    def execute(self, cmd: IoCommand, done: Done) -> None:
        self.loop.call_soon(done, 0, 0, None)

    def close(self) -> None:
        pass


class Tenant:
    """A host keeping ``depth`` commands of ``nlb`` blocks outstanding until told to stop;
    counts what completes inside the measuring window."""

    _cids = itertools.count()

    def __init__(self, backend: QosBackend, hostnqn: str, *, depth: int, nlb: int) -> None:
        self.backend, self.hostnqn, self.nlb, self.depth = backend, hostnqn, nlb, depth
        self.loop = asyncio.get_running_loop()
        self.window: tuple[float, float] = (0.0, 0.0)
        self.ops = 0
        self.bytes = 0
        self.running = True
        self.outstanding = 0
        self.aborted = 0

    def start(self, window: tuple[float, float]) -> None:
        self.window = window
        for _ in range(self.depth):
            self._issue()

    def _issue(self) -> None:
        cmd = IoCommand(NVM_READ, 1, next(self._cids) & 0xFFFF, qid=1, hostnqn=self.hostnqn, nlb=self.nlb)
        self.outstanding += 1
        self.backend.execute(cmd, self._done)

    def _done(self, status: int, dw0: int, data: Any) -> None:
        self.outstanding -= 1
        if status:
            self.aborted += 1  # only at shutdown, checked by the caller
            return
        now = self.loop.time()
        if self.window[0] <= now < self.window[1]:
            self.ops += 1
            self.bytes += self.nlb * BLOCK
        if self.running:
            self._issue()

    def rate(self) -> tuple[float, float]:
        span = self.window[1] - self.window[0]
        return self.ops / span, self.bytes / span


async def run_two_tenants(policy_a: QosPolicy, *, nlb: int, **budget: Any) -> tuple[Tenant, Tenant, dict[str, Any]]:
    scheduler = QosScheduler(**budget)
    groups = {"host-a": QosGroup("A", policy_a, level="tenant"), "host-b": QosGroup("B", level="tenant")}
    backend = QosBackend(FastInner(), [QosGroup("ns1")], scheduler, block_size=BLOCK,
                         classify=tenant_classifier(groups.get))
    loop = asyncio.get_running_loop()
    start = loop.time()
    window = (start + WARMUP_S, start + RUN_S)
    a = Tenant(backend, "host-a", depth=QUEUE_DEPTH, nlb=nlb)
    b = Tenant(backend, "host-b", depth=QUEUE_DEPTH, nlb=nlb)
    a.start(window)
    b.start(window)
    await asyncio.sleep(RUN_S)
    a.running = b.running = False
    assert a.aborted == b.aborted == 0
    snapshot = {"A": groups["host-a"].snapshot(), "B": groups["host-b"].snapshot(),
                "scheduler": scheduler.snapshot()}
    scheduler.close()  # whatever still waits completes (Aborted SQ Deletion): nothing hangs
    await asyncio.sleep(0.05)
    assert a.outstanding == 0 and b.outstanding == 0  # every command completed exactly once
    return a, b, snapshot


def test_iops_limit_holds_against_an_unlimited_flood() -> None:
    t0 = time.monotonic()
    a, b, snap = asyncio.run(run_two_tenants(QosPolicy(rw_ios_per_sec=2000), nlb=1, max_inflight_ios=16))
    iops_a, _ = a.rate()
    iops_b, _ = b.rate()
    print(f"\nA (2000 IOPS limit): {iops_a:.0f} IOPS; B (unlimited): {iops_b:.0f} IOPS; "
          f"A throttled {snap['A']['throttled_seconds']:.1f} s, p99 {snap['A']['latency']['p99_us']:.0f} us")
    assert iops_a == pytest.approx(2000, rel=TOLERANCE)
    assert iops_b > 1000  # not starved (it is usually far above A)
    assert snap["A"]["throttled_ios"] > 0 and snap["B"]["throttled_ios"] == 0
    assert time.monotonic() - t0 < RUN_S + 5


def test_bandwidth_limit_holds_with_128k_ios() -> None:
    limit = 64  # MiB/s = 512 x 128 KiB per second
    a, b, snap = asyncio.run(run_two_tenants(QosPolicy(rw_mbytes_per_sec=limit), nlb=32,
                                             max_inflight_ios=0, max_inflight_bytes=16 * 128 * 1024))
    _, bw_a = a.rate()
    iops_b, bw_b = b.rate()
    print(f"\nA ({limit} MiB/s limit): {bw_a / MIB:.1f} MiB/s; B (unlimited): {bw_b / MIB:.0f} MiB/s "
          f"({iops_b:.0f} IOPS)")
    assert bw_a / MIB == pytest.approx(limit, rel=TOLERANCE)
    assert iops_b > 1000
    assert snap["scheduler"]["inflight_bytes"] <= 16 * 128 * 1024
