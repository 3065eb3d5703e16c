"""Tenant QoS end to end: tenants of one subsystem on a real device over 127.0.0.1.

Tenant A (host NQN A) follows a policy; tenant B (host NQN B) is unlimited.  Each connects
with :mod:`nvmeof.host` under its own host NQN and keeps QD32 random reads outstanding for
~3 s windows (a short warm-up excluded).  Two scenarios: 2,000 IOPS with 4 KiB reads, and
20 MiB/s (``rw_mbytes_per_sec``) with 128 KiB reads.

* A's measured rate is within 10 % of its limit in every window while B floods the device.
  This assertion is never relaxed.
* B is not starved by A being throttled: with A running, B reaches at least 90 % of
  (B alone - A's share).

The hosts run in a child process (so they do not share the device's interpreter lock), but
everything still shares this machine's CPUs - often with other test runs - so B's rate is
CPU-bound and noisy, and A's I/O costs B CPU whatever QoS does.  B's expectation is therefore
computed robustly:

* windows are interleaved - B alone, A + B, C + B, B alone, C + B, A + B, ... - and each round is compared
  with the mean of the B-alone windows around it (cancels drift of the machine's load), then
  the median over rounds is taken;
* A's share is at least A's own rate, and at least what the same load costs B *without*
  throttling: host C (tenant c, unlimited) is paced by the host at A's limit, and
  ``B alone - B with C`` is what that load takes from B on this machine.  On an idle machine
  both are equal and this is exactly "B alone minus A's rate"; on a loaded one it keeps the
  check about QoS (B held back by A's throttled commands) rather than about CPU.

Every loop is bounded in time and in count; the host process has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nvmeof.host import HostController, connect
from testbeds.inprocess import RunningDevice

from ._support import LOOPBACK

REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTS_MODULE = "tests.integration.test_qos_tenants"  # run from REPO_ROOT: `python -m` this file

pytestmark = pytest.mark.slow

SUBNQN = "nqn.2026-11.io.dpu-emu:qos-tenants"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:qos-tenant-a"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:qos-tenant-b"
HOST_C = "nqn.2014-08.org.nvmexpress:uuid:qos-tenant-c"
MIB = 1 << 20
BLOCK = 512
NS_BYTES = 64 * MIB
QUEUE_DEPTH = 32
RUN_S = 3.0  # each window
WARMUP_S = 0.3  # completions before this are not counted (connection ramp-up, first burst)
ROUNDS = 3  # rounds of (A + B, C + B) windows between ROUNDS + 1 B-alone windows
TOLERANCE = 0.10
B_FLOOR = 0.90
IOPS_LIMIT = 2000
BW_LIMIT_MIB = 20
SMALL_IO = 4096
LARGE_IO = 128 * 1024
MAX_OPS_PER_WINDOW = 2_000_000  # a bound on each worker loop besides time
TEST_TIMEOUT_S = 120.0
HOSTS_TIMEOUT_S = 100.0  # the host process: (3 * ROUNDS + 1) windows of RUN_S plus connecting


def tenants_config(policy: dict[str, Any]) -> dict[str, Any]:
    """One subsystem, namespaces 1 (tenants A and C) and 2 (tenant B), both RAM; A follows
    ``policy``, B and C have no limits."""
    namespaces = [{"nsid": nsid, "size_bytes": NS_BYTES, "block_size": BLOCK, "backend": {"kind": "ram"}}
                  for nsid in (1, 2)]
    return {
        "ports": [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": LOOPBACK, "trsvcid": "4420"},
                   "discovery": True, "io": True}],
        "subsystems": [{"nqn": SUBNQN, "serial": "DPUEMUQOS1", "model": "dpu-emu", "allow_any_host": False,
                        "hosts": [HOST_A, HOST_B, HOST_C], "namespaces": namespaces}],
        "qos": {"policies": {"tenant-a": policy}},
        "tenants": [
            {"name": "a", "hosts": [HOST_A], "namespaces": [{"subsystem": SUBNQN, "nsid": 1}], "qos": "tenant-a"},
            {"name": "b", "hosts": [HOST_B], "namespaces": [{"subsystem": SUBNQN, "nsid": 2}]},
            {"name": "c", "hosts": [HOST_C], "namespaces": [{"subsystem": SUBNQN, "nsid": 1}]},
        ],
        "transport": {},
    }


@dataclass
class Rate:
    iops: float
    bytes_per_s: float

    @property
    def mib_s(self) -> float:
        return self.bytes_per_s / MIB


async def drive(ctrl: HostController, nsid: int, io_bytes: int, seconds: float, seed: int,
                pace_iops: float = 0.0) -> Rate:
    """QD ``QUEUE_DEPTH`` random reads of ``io_bytes`` for ``seconds``; the rate of what
    completed after the warm-up (bounded by time and by ``MAX_OPS_PER_WINDOW``).  With
    ``pace_iops`` the host itself issues at most that many reads per second."""
    nlb = io_bytes // BLOCK
    slots = NS_BYTES // io_bytes
    rng = random.Random(seed)
    start = time.monotonic()
    counted_from = start + WARMUP_S
    deadline = start + seconds
    ops = 0
    issued = 0

    async def worker() -> None:
        nonlocal ops, issued
        for _ in range(MAX_OPS_PER_WINDOW):
            if pace_iops:
                slot = start + issued / pace_iops
                issued += 1
                if slot > time.monotonic():
                    await asyncio.sleep(slot - time.monotonic())
            if time.monotonic() >= deadline:
                return
            data = await ctrl.read(nsid, rng.randrange(slots) * nlb, nlb)
            assert len(data) == io_bytes
            if counted_from <= time.monotonic() < deadline:
                ops += 1

    await asyncio.gather(*(worker() for _ in range(QUEUE_DEPTH)))
    span = deadline - counted_from
    return Rate(ops / span, ops * io_bytes / span)


@dataclass
class Measured:
    a: list[Rate]
    b_alone: list[Rate]
    b_with_a: list[Rate]
    c: list[Rate]
    b_with_c: list[Rate]
    snapshot: dict[str, Any] = field(default_factory=dict)

    KEYS = ("a", "b_alone", "b_with_a", "c", "b_with_c")


async def measure_windows(port: int, io_bytes: int, pace_iops: float) -> Measured:
    """All hosts, interleaved windows: B alone, then per round A + B and C + B (C paced by
    the host at ``pace_iops``; the order alternates between rounds), then B alone again."""
    ctrls = []
    try:
        for host in (HOST_A, HOST_B, HOST_C):
            ctrls.append(await connect(LOOPBACK, port, SUBNQN, hostnqn=host, queue_size=QUEUE_DEPTH * 2))
        ctrl_a, ctrl_b, ctrl_c = ctrls
        result = Measured([], [], [], [], [])
        seed = 0
        for round_ in range(ROUNDS + 1):
            seed += 1
            result.b_alone.append(await drive(ctrl_b, 2, io_bytes, RUN_S, seed))
            if round_ == ROUNDS:
                break
            seed += 4
            for with_a in (True, False) if round_ % 2 == 0 else (False, True):  # alternate the order
                if with_a:
                    a, b = await asyncio.gather(drive(ctrl_a, 1, io_bytes, RUN_S, seed),
                                                drive(ctrl_b, 2, io_bytes, RUN_S, seed + 1))
                    result.a.append(a)
                    result.b_with_a.append(b)
                else:
                    c, b = await asyncio.gather(drive(ctrl_c, 1, io_bytes, RUN_S, seed + 2, pace_iops),
                                                drive(ctrl_b, 2, io_bytes, RUN_S, seed + 3))
                    result.c.append(c)
                    result.b_with_c.append(b)
        return result
    finally:
        for ctrl in ctrls:
            await ctrl.close()


def measure(dev: RunningDevice, io_bytes: int, pace_iops: float) -> Measured:
    """Run the hosts in a child process (``python -m`` this module), so that they do not
    share the device's interpreter lock: the device's CPU is then the device's alone, as
    for an external host."""
    argv = [sys.executable, "-m", HOSTS_MODULE, str(dev.io_port), str(io_bytes), str(pace_iops)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=HOSTS_TIMEOUT_S,
                          check=False)
    assert done.returncode == 0, f"host process exit {done.returncode}:\n{done.stderr[-4000:]}"
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    m = Measured(*([Rate(**r) for r in raw[key]] for key in Measured.KEYS))
    m.snapshot = dev.call_soon(dev.device.qos.snapshot)
    return m


def report(label: str, m: Measured, unit: Callable[[Rate], float], name: str) -> str:
    def series(rates: list[Rate]) -> str:
        return ", ".join(f"{unit(r):.1f}" for r in rates)

    return (f"\n{label} [{name}]: A {series(m.a)}; B alone {series(m.b_alone)}; B with A {series(m.b_with_a)}; "
            f"C (paced, unthrottled) {series(m.c)}; B with C {series(m.b_with_c)}")


def check(m: Measured, unit: Callable[[Rate], float], limit: float, name: str) -> None:
    for rate in m.a:  # every window, not a median: the limit holds each time
        assert unit(rate) == pytest.approx(limit, rel=TOLERANCE), f"A: {unit(rate):.1f} {name}, limit {limit}"
    # Per round: B alone = mean of the B-alone windows around it; A's share = the larger of
    # A's rate and what C's equal, unthrottled load took from B.  Median over rounds.
    ratios, lines = [], []
    for i in range(len(m.a)):
        alone = (unit(m.b_alone[i]) + unit(m.b_alone[i + 1])) / 2
        share = max(unit(m.a[i]), alone - unit(m.b_with_c[i]))
        expected = B_FLOOR * (alone - share)
        ratios.append(unit(m.b_with_a[i]) / expected)
        lines.append(f"round {i}: B with A {unit(m.b_with_a[i]):.1f}, alone {alone:.1f}, A's share {share:.1f}, "
                     f"expected >= {expected:.1f}")
    print("\n".join(lines))
    assert statistics.median(ratios) >= 1.0, "B starved:\n" + "\n".join(lines)
    tenants = m.snapshot["tenants"]
    assert tenants["a"]["throttled_ios"] > 0  # A really was held back by its policy
    assert tenants["b"]["throttled_ios"] == 0  # B never was


def test_tenant_iops_limit_and_no_starvation(make_device: Callable[[dict[str, Any]], RunningDevice]) -> None:
    t0 = time.monotonic()
    dev = make_device(tenants_config({"rw_ios_per_sec": IOPS_LIMIT}))
    m = measure(dev, SMALL_IO, IOPS_LIMIT)
    print(report(f"IOPS (A limited to {IOPS_LIMIT})", m, lambda r: r.iops, "IOPS"))
    check(m, lambda r: r.iops, IOPS_LIMIT, "IOPS")
    assert time.monotonic() - t0 < TEST_TIMEOUT_S


def test_tenant_bandwidth_limit_and_no_starvation(make_device: Callable[[dict[str, Any]], RunningDevice]) -> None:
    t0 = time.monotonic()
    dev = make_device(tenants_config({"rw_mbytes_per_sec": BW_LIMIT_MIB}))
    m = measure(dev, LARGE_IO, BW_LIMIT_MIB * MIB / LARGE_IO)
    print(report(f"bandwidth (A limited to {BW_LIMIT_MIB} MiB/s)", m, lambda r: r.mib_s, "MiB/s"))
    check(m, lambda r: r.mib_s, BW_LIMIT_MIB, "MiB/s")
    assert time.monotonic() - t0 < TEST_TIMEOUT_S


if __name__ == "__main__":  # the host process of measure(): PORT IO_BYTES PACE_IOPS -> JSON on stdout
    measured = asyncio.run(asyncio.wait_for(
        measure_windows(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])), HOSTS_TIMEOUT_S - 5))
    print(json.dumps({key: [asdict(r) for r in getattr(measured, key)] for key in Measured.KEYS}))
