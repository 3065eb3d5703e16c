"""QoS: deficit round robin under saturation, telemetry and configuration."""

from __future__ import annotations

from typing import Any

import pytest

from dpu_emu.qos import (
    QosBackend,
    QosGroup,
    QosPolicy,
    QosPolicyError,
    QosRegistry,
    QosScheduler,
    tenant_classifier,
    validate_qos_config,
)
from dpu_emu.qos.telemetry import LatencyHistogram
from nvmeof.controller.backend import IoCommand

from ._qos_fakes import (
    KIB,
    MIB,
    NVM_READ,
    NVM_WRITE,
    FakeLoop,
    Inner,
    Recorder,
    cmd,
    setup,
    submit_many,
)

# -- fair sharing (DRR) -----------------------------------------------------------------------

class ClosedLoop:
    """Keeps ``depth`` commands outstanding on a backend; counts completions."""

    def __init__(self, backend: QosBackend, depth: int, *, hostnqn: str = "", nlb: int = 8) -> None:
        self.backend, self.hostnqn, self.nlb = backend, hostnqn, nlb
        self.count = 0
        self.latencies: list[float] = []
        for _ in range(depth):
            self._issue()

    def _issue(self) -> None:
        c = cmd(hostnqn=self.hostnqn, nlb=self.nlb)
        loop = self.backend.scheduler.loop
        start = loop.time()

        def done(status: int, dw0: int, data: Any) -> None:
            assert status == 0
            self.count += 1
            self.latencies.append(loop.time() - start)
            self._issue()

        self.backend.execute(c, done)


def two_tenants(weight_a: float, weight_b: float, **sched: Any) -> tuple[FakeLoop, QosBackend, QosScheduler]:
    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop, **sched)
    hosts = {"a": QosGroup("A", QosPolicy(weight=weight_a), level="tenant"),
             "b": QosGroup("B", QosPolicy(weight=weight_b), level="tenant")}
    backend = QosBackend(Inner(loop, delay=0.001), [QosGroup("ns1")], scheduler, classify=tenant_classifier(hosts.get))
    return loop, backend, scheduler


def test_drr_shares_a_saturated_device_by_weight() -> None:
    loop, backend, scheduler = two_tenants(1, 3, max_inflight_ios=4)
    a = ClosedLoop(backend, 64, hostnqn="a")
    b = ClosedLoop(backend, 64, hostnqn="b")
    loop.advance(2.0)
    total = a.count + b.count
    assert total == pytest.approx(8000, rel=0.01)  # 4 slots x 1 ms for 2 s: the device stays busy
    assert b.count / a.count == pytest.approx(3.0, rel=0.05)
    assert scheduler.inflight_ios <= 4


def test_drr_keeps_a_light_tenant_at_its_share_against_a_flood() -> None:
    loop, backend, _ = two_tenants(1, 1, max_inflight_ios=4, quantum_bytes=8 * KIB)
    light = ClosedLoop(backend, 1, hostnqn="a")
    flood = ClosedLoop(backend, 64, hostnqn="b")
    loop.advance(2.0)
    # FIFO would put the light tenant behind ~60 flood commands (~16 ms per I/O, ~125 in 2 s).
    assert light.count >= 1000  # it waits at most one flood turn: ~1-2 ms per I/O
    assert max(light.latencies) <= 0.0025
    assert flood.count >= 4000


def test_byte_budget_limits_bytes_in_flight() -> None:
    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop, max_inflight_ios=0, max_inflight_bytes=256 * KIB)
    inner = Inner(loop, delay=None)
    backend = QosBackend(inner, [QosGroup("ns1")], scheduler)
    rec = Recorder(loop)
    submit_many(backend, rec, 4, nlb=256)  # 128 KiB each
    assert len(inner.held) == 2 and scheduler.inflight_bytes == 256 * KIB
    inner.release_all()
    assert len(inner.held) == 2 and len(rec.completed) == 2
    huge = cmd(nlb=4096)  # 2 MiB: bigger than the budget, runs alone rather than never
    backend.execute(huge, rec.done_for(huge.cid))
    inner.release_all()
    inner.release_all()
    assert len(rec.completed) == 5


def test_live_budget_change_releases_waiting_commands() -> None:
    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop, max_inflight_ios=1)
    inner = Inner(loop, delay=None)
    backend = QosBackend(inner, [QosGroup("ns1")], scheduler)
    submit_many(backend, Recorder(loop), 5)
    assert len(inner.held) == 1
    scheduler.set_budget(max_inflight_ios=0)
    assert len(inner.held) == 5


# -- telemetry ------------------------------------------------------------------------------

def test_latency_histogram_percentiles() -> None:
    hist = LatencyHistogram()
    for _ in range(990):
        hist.record(100e-6)
    for _ in range(10):
        hist.record(10e-3)
    snap = hist.snapshot()
    assert snap["count"] == 1000
    assert 100 <= snap["p50_us"] <= 100 * 1.19
    assert 10_000 * 0.84 <= snap["p999_us"] <= 10_000
    assert snap["max_us"] == pytest.approx(10_000)
    assert LatencyHistogram().percentile(0.5) == 0.0


def test_group_snapshot_reports_counters_and_queue_depth() -> None:
    loop, scheduler, group, backend, _ = setup(QosPolicy(rw_ios_per_sec=100))
    rec = Recorder(loop)
    submit_many(backend, rec, 3, opcode=NVM_WRITE, nlb=8)
    snap = group.snapshot()
    assert snap["queue_depth"] == 2 and snap["waiting_tokens"] == 2
    assert snap["policy"]["rw_ios_per_sec"] == 100 and "rw_ios_per_sec" in snap["credit"]
    loop.advance(0.05)
    snap = group.snapshot()
    assert snap["ops"] == {"read": 0, "write": 3, "other": 0} and snap["bytes"]["write"] == 3 * 4096
    assert snap["throttled_ios"] == 2
    assert snap["throttled_seconds"] == pytest.approx(0.010 + 0.020, abs=1e-6)
    assert snap["latency"]["count"] == 3 and snap["latency"]["max_us"] == pytest.approx(20_000)
    sched = scheduler.snapshot()
    assert sched["inflight_ios"] == 0 and sched["classes"]["namespace:ns1"]["dispatched_ios"] == 3


# -- configuration --------------------------------------------------------------------------

CFG: dict[str, Any] = {
    "qos": {"timeslice_us": 1000, "max_inflight_ios": 64, "policies": {
        "gold": {"rw_ios_per_sec": 1000, "weight": 4}, "bronze": {"rw_ios_per_sec": 100}}},
    "subsystems": [{"nqn": "nqn.s", "namespaces": [
        {"nsid": 1, "size_bytes": MIB, "block_size": 4096, "qos": {"rw_mbytes_per_sec": 1}},
        {"nsid": 2, "command_set": "kv", "qos": "bronze"},
        {"nsid": 3, "size_bytes": MIB}]}],
    "tenants": [{"name": "acme", "hosts": ["nqn.h1"], "qos": "gold"}, {"name": "free", "hosts": ["nqn.h2"]}],
}


def test_validate_qos_config() -> None:
    validate_qos_config(CFG)
    validate_qos_config({})
    bad_cases: list[dict[str, Any]] = [
        {"qos": {"policies": {"x": {"iops": 1}}}},
        {"qos": {"max_inflight_ios": -1}},
        {"qos": {"unknown": 1}},
        {"tenants": [{"name": "t", "qos": "missing"}]},
        {"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "qos": "missing"}]}]},
        {"subsystems": [{"nqn": "n", "namespaces": [{"nsid": 1, "qos": {"weight": -1}}]}]},
    ]
    for bad in bad_cases:
        with pytest.raises(QosPolicyError):
            validate_qos_config(bad)


def test_registry_builds_groups_and_changes_policies_live() -> None:
    loop = FakeLoop()
    registry = QosRegistry.from_config(CFG, loop=loop)
    sub = CFG["subsystems"][0]
    backends = [registry.wrap(Inner(loop), subnqn="nqn.s", nsid=ns["nsid"], ns_cfg=ns) for ns in sub["namespaces"]]
    assert backends[0].block_size == 4096 and backends[1].command_set == "kv"
    assert registry.scheduler.max_inflight_ios == 64
    assert registry.group_for_host("nqn.h1") is registry.tenants["acme"]
    rec = Recorder(loop)
    submit_many(backends[1], rec, 20, hostnqn="nqn.h1")  # bronze namespace (100/s) binds
    loop.advance(0.1 - 1e-6)
    assert len(rec.completed) == 10
    registry.set_policy("bronze", {"rw_ios_per_sec": 1000})
    loop.advance(0.01)
    assert len(rec.completed) == 20
    registry.set_tenant("acme", "bronze", ["nqn.h1", "nqn.h3"])
    assert registry.tenants["acme"].policy.rw_ios_per_sec == 1000
    assert registry.group_for_host("nqn.h3") is registry.tenants["acme"]
    with pytest.raises(QosPolicyError):
        registry.remove_policy("bronze")
    registry.set_namespace_policy("nqn.s", 1, None)
    assert registry.namespaces[("nqn.s", 1)].policy.unlimited
    snap = registry.snapshot()
    assert set(snap) == {"scheduler", "policies", "namespaces", "tenants"}
    assert snap["tenants"]["acme"]["ops"]["other"] == 0 and snap["tenants"]["acme"]["ops"]["read"] == 20
    registry.close()
    assert registry.scheduler.closed


def test_wraps_the_real_block_backend() -> None:
    from dpu_emu.datapath import BlockNamespaceBackend
    from dpu_emu.storage.block import open_block_store

    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop)
    store = open_block_store("ram", size_bytes=MIB, block_size=512)
    backend = QosBackend(BlockNamespaceBackend(store), [QosGroup("ns1", QosPolicy(rw_ios_per_sec=2000))], scheduler)
    got: list[tuple[int, Any]] = []
    backend.execute(IoCommand(NVM_WRITE, 1, 1, qid=1, slba=0, nlb=1, data=b"\xab" * 512),
                    lambda st, dw0, data: got.append((st, data)))
    backend.execute(IoCommand(NVM_READ, 1, 2, qid=1, slba=0, nlb=1), lambda st, dw0, data: got.append((st, data)))
    backend.execute(IoCommand(NVM_READ, 1, 3, qid=1, slba=0, nlb=1), lambda st, dw0, data: got.append((st, data)))
    assert len(got) == 2  # the third waits for the next slice
    loop.advance(0.001)
    assert [st for st, _ in got] == [0, 0, 0] and bytes(got[1][1]) == b"\xab" * 512
    backend.close()

