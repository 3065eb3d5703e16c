"""QoS: token buckets, groups, the admission scheduler and DRR, on a fake clock and loop."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from dpu_emu.qos import (
    QosBackend,
    QosGroup,
    QosPolicy,
    QosPolicyError,
    QosScheduler,
    TokenBucket,
    command_cost,
    tenant_classifier,
)
from nvmeof.controller.backend import Done, IoCommand
from nvmeof.errors import InternalError, LbaOutOfRange

from ._qos_fakes import (
    ABORTED,
    KIB,
    KV_EXIST,
    KV_LIST,
    KV_RETRIEVE,
    KV_STORE,
    MIB,
    NVM_FLUSH,
    NVM_READ,
    NVM_WRITE,
    SQ_DELETED,
    T0,
    FakeLoop,
    Inner,
    Recorder,
    cmd,
    setup,
    submit_many,
)

# -- token buckets --------------------------------------------------------------------------

def clock_of(cell: list[float]) -> Callable[[], float]:
    return lambda: cell[0]


def test_bucket_starts_with_one_slice_of_credit_and_refills_each_slice() -> None:
    clock = [T0]
    bucket = TokenBucket(2000, clock=lambda: clock[0])  # 2 I/Os per 1 ms slice
    admitted = 0
    while bucket.admits():
        bucket.consume(1)
        admitted += 1
    assert admitted == 2
    clock[0] += 0.0005  # same slice: nothing new
    assert not bucket.admits()
    clock[0] += 0.0005  # next slice
    assert bucket.admits() and bucket.tokens == 2


def test_bucket_burst_is_bounded_after_idle() -> None:
    clock = [T0]
    bucket = TokenBucket(2000, clock=lambda: clock[0])
    bucket.refill()
    clock[0] += 10.0
    bucket.refill()
    assert bucket.tokens == 2  # one slice's quota, not 10 s of credit
    wide = TokenBucket(2000, burst=20, clock=lambda: clock[0])
    wide.refill()
    clock[0] += 10.0
    wide.refill()
    assert wide.tokens == 20


def test_bucket_large_io_leaves_a_debt_paid_by_later_slices() -> None:
    clock = [T0]
    bucket = TokenBucket(1 * MIB, clock=lambda: clock[0])  # 1048.576 bytes per slice
    assert bucket.admits()
    bucket.consume(128 * KIB)
    assert not bucket.admits()
    when = bucket.next_positive_time()
    assert when - T0 == pytest.approx(0.125, abs=0.0011)  # 128 KiB at 1 MiB/s
    clock[0] = when
    assert bucket.admits()


def test_bucket_fractional_quota_is_exact_without_drift() -> None:
    for rate in (100, 333, 7):
        clock = [T0]
        bucket = TokenBucket(rate, clock=clock_of(clock))
        admitted = 0
        for step in range(10_000):  # 10 s of 1 ms slices
            clock[0] = T0 + step / 1000
            while bucket.admits():
                bucket.consume(1)
                admitted += 1
        assert admitted == rate * 10, rate


def test_bucket_next_positive_time_is_a_slice_boundary() -> None:
    clock = [T0]
    bucket = TokenBucket(100, clock=lambda: clock[0])
    bucket.admits()
    bucket.consume(1)
    assert bucket.next_positive_time() == pytest.approx(T0 + 0.010)


def test_bucket_rejects_bad_rates() -> None:
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError):
            TokenBucket(bad)


# -- policies, cost -------------------------------------------------------------------------

def test_policy_validation() -> None:
    assert QosPolicy.from_dict({"rw_ios_per_sec": 100, "weight": 2}).rw_ios_per_sec == 100
    for bad in ({"rw_iops": 1}, {"rw_ios_per_sec": -1}, {"r_mbytes_per_sec": True}, {"weight": 0},
                {"w_mbytes_per_sec": "10"}, {"burst_ms": math.inf}):
        with pytest.raises(QosPolicyError):
            QosPolicy.from_dict(bad)
    assert QosPolicy().unlimited and not QosPolicy(w_mbytes_per_sec=1).unlimited
    assert QosPolicy(rw_mbytes_per_sec=2).bytes_per_sec("rw_mbytes_per_sec") == 2 * MIB


def test_command_cost() -> None:
    assert command_cost(cmd(NVM_READ, nlb=8), block_size=4096) == ("read", 32 * KIB)
    assert command_cost(cmd(NVM_WRITE, nlb=2), block_size=512) == ("write", 1024)
    assert command_cost(cmd(NVM_FLUSH, nlb=0)) == ("other", 0)
    assert command_cost(cmd(KV_STORE, data=b"x" * 100), command_set="kv") == ("write", 100)
    assert command_cost(cmd(KV_RETRIEVE, read_length=4096), command_set="kv") == ("read", 4096)
    assert command_cost(cmd(KV_LIST, read_length=512), command_set="kv") == ("read", 512)
    assert command_cost(cmd(KV_EXIST), command_set="kv") == ("other", 0)


# -- admission through the scheduler ----------------------------------------------------------

def test_unlimited_commands_go_straight_through() -> None:
    loop, _, _, backend, inner = setup()
    rec = Recorder(loop)
    submit_many(backend, rec, 10)
    assert len(rec.completed) == 10 and loop.timers_set == 0


def test_100_iops_exact_over_ten_simulated_seconds() -> None:
    loop, _, group, backend, _ = setup(QosPolicy(rw_ios_per_sec=100))
    rec = Recorder(loop)
    submit_many(backend, rec, 2000)
    loop.advance(10.0 - 1e-6)
    assert len(rec.completed) == 1000
    assert loop.timers_set <= 1000 + 10  # one timer per admission, no polling
    assert group.stats.waiting_tokens == 1000


def test_over_limit_commands_wait_in_fifo_order() -> None:
    loop, _, _, backend, _ = setup(QosPolicy(rw_ios_per_sec=1000))
    rec = Recorder(loop)
    cids = submit_many(backend, rec, 50)
    loop.advance(0.1)
    assert rec.cids() == cids and {st for _, st in rec.completed} == {0}


def test_dataless_command_waits_behind_a_byte_limited_write() -> None:
    loop, _, _, backend, _ = setup(QosPolicy(w_mbytes_per_sec=1))
    rec = Recorder(loop)
    first, second = cmd(NVM_WRITE, nlb=256), cmd(NVM_WRITE, nlb=256)  # 128 KiB each
    flush = cmd(NVM_FLUSH, nlb=0)
    for c in (first, second, flush):
        backend.execute(c, rec.done_for(c.cid))
    assert rec.cids() == [first.cid]
    loop.advance(0.2)
    assert rec.cids() == [first.cid, second.cid, flush.cid]  # flush kept its place


def test_byte_limits_do_not_hold_back_dataless_commands() -> None:
    loop, _, _, backend, _ = setup(QosPolicy(rw_mbytes_per_sec=1))
    rec = Recorder(loop)
    backend.execute(big := cmd(NVM_READ, nlb=2048), rec.done_for(big.cid))  # 1 MiB: a 1 s debt
    flush = cmd(NVM_FLUSH, nlb=0)
    backend.execute(flush, rec.done_for(flush.cid))
    assert rec.cids() == [big.cid, flush.cid]


@pytest.mark.parametrize(("nlb", "expected_per_s"), [(8, 256), (1, 1000)])
def test_simultaneous_limits_the_tighter_one_binds(nlb: int, expected_per_s: int) -> None:
    # 1000 IOPS and 1 MiB/s together: 4 KiB I/Os are byte-bound (256/s), 512 B ones IOPS-bound.
    loop, _, _, backend, _ = setup(QosPolicy(rw_ios_per_sec=1000, rw_mbytes_per_sec=1))
    rec = Recorder(loop)
    submit_many(backend, rec, 5000, nlb=nlb)
    loop.advance(4.0 - 1e-6)
    assert len(rec.completed) == pytest.approx(4 * expected_per_s, abs=2)


def test_read_and_write_byte_limits_apply_per_direction() -> None:
    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop)
    tenant = QosGroup("acme", QosPolicy(r_mbytes_per_sec=1, w_mbytes_per_sec=2), level="tenant")
    hosts = {"h": tenant}
    readers = QosBackend(Inner(loop), [QosGroup("ns1")], scheduler, classify=tenant_classifier(hosts.get))
    writers = QosBackend(Inner(loop), [QosGroup("ns2")], scheduler, classify=tenant_classifier(hosts.get))
    rec = Recorder(loop)
    submit_many(readers, rec, 400, opcode=NVM_READ, nlb=8, hostnqn="h")
    submit_many(writers, rec, 400, opcode=NVM_WRITE, nlb=8, hostnqn="h")
    loop.advance(0.5 - 1e-6)
    assert tenant.stats.ops["read"] == pytest.approx(128, abs=2)  # 1 MiB/s of 4 KiB for 0.5 s
    assert tenant.stats.ops["write"] == pytest.approx(256, abs=2)  # 2 MiB/s, not held behind the reads
    assert tenant.stats.bytes["write"] == tenant.stats.ops["write"] * 4096


def test_one_flow_is_strictly_fifo_across_directions() -> None:
    # SPDK's per-channel queue: a read held by the read limit holds back the writes behind it.
    loop, _, _, backend, _ = setup(QosPolicy(r_mbytes_per_sec=1))
    rec = Recorder(loop)
    r1, r2, w = cmd(NVM_READ, nlb=256), cmd(NVM_READ, nlb=256), cmd(NVM_WRITE, nlb=256)
    for c in (r1, r2, w):
        backend.execute(c, rec.done_for(c.cid))
    assert rec.cids() == [r1.cid]
    loop.advance(0.2)
    assert rec.cids() == [r1.cid, r2.cid, w.cid]


def test_live_limit_change_keeps_queued_commands() -> None:
    loop, _, group, backend, _ = setup(QosPolicy(rw_ios_per_sec=100))
    rec = Recorder(loop)
    cids = submit_many(backend, rec, 400)
    loop.advance(1.0 - 1e-6)
    assert len(rec.completed) == 100
    group.update(QosPolicy(rw_ios_per_sec=1000))
    loop.advance(0.1)
    assert len(rec.completed) == pytest.approx(200, abs=2)
    group.update(QosPolicy())  # unlimited: everything left goes at once, no timer needed
    assert rec.cids() == cids and group.stats.waiting_tokens == 0
    loop.advance(1.0)
    assert loop.pending_timers == 0  # nothing waits: no timer, no polling


def test_namespace_and_tenant_limits_both_apply() -> None:
    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop)
    tenant = QosGroup("acme", QosPolicy(rw_ios_per_sec=100), level="tenant")
    ns1 = QosGroup("ns1", QosPolicy(rw_ios_per_sec=30))
    ns2 = QosGroup("ns2")
    hosts = {"nqn.host-a": tenant}
    b1 = QosBackend(Inner(loop), [ns1], scheduler, classify=tenant_classifier(hosts.get))
    b2 = QosBackend(Inner(loop), [ns2], scheduler, classify=tenant_classifier(hosts.get))
    rec = Recorder(loop)
    submit_many(b1, rec, 1000, hostnqn="nqn.host-a")
    submit_many(b2, rec, 1000, hostnqn="nqn.host-a")
    submit_many(b2, rec, 5, hostnqn="nqn.other")  # no tenant: only ns2 (unlimited) applies
    loop.advance(10.0 - 1e-6)
    assert ns1.stats.ops["read"] == pytest.approx(300, abs=2)  # its own limit binds
    assert tenant.stats.ops["read"] == pytest.approx(1000, abs=2)  # the tenant's 100/s shared
    assert ns2.stats.ops["read"] == pytest.approx(700 + 5, abs=3)
    assert tenant.stats.limited_ios > 0 and ns1.stats.limited_ios > 0


def test_abort_of_a_waiting_command() -> None:
    loop, scheduler, group, backend, _ = setup(QosPolicy(rw_ios_per_sec=100))
    rec = Recorder(loop)
    cids = submit_many(backend, rec, 5, qid=3, cntlid=7)
    assert rec.cids() == [cids[0]]
    assert not backend.abort(cids[0], 3, 7)  # already started
    assert not backend.abort(cids[2], 4, 7)  # other queue
    assert backend.abort(cids[2], 3, 7)
    assert rec.completed[-1] == (cids[2], ABORTED)
    assert not scheduler.abort(cids[2], 3)  # gone
    assert scheduler.abort(cids[3], 3)  # any controller
    loop.advance(1.0)
    assert rec.cids(0) == [cids[0], cids[1], cids[4]]
    assert group.stats.aborted == 2 and group.stats.waiting_tokens == 0


def test_abort_of_a_command_waiting_for_the_device_budget() -> None:
    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop, max_inflight_ios=1)
    inner = Inner(loop, delay=None)
    group = QosGroup("ns1")
    backend = QosBackend(inner, [group], scheduler)
    other = QosBackend(inner, [QosGroup("ns2")], scheduler)
    rec = Recorder(loop)
    cids = submit_many(backend, rec, 3, qid=2)
    assert len(inner.held) == 1 and group.stats.waiting_budget == 2
    assert not other.abort(cids[1], 2)  # not this namespace's command
    assert backend.abort(cids[1], 2)
    assert rec.completed == [(cids[1], ABORTED)] and group.stats.waiting_budget == 1
    inner.release_all()
    inner.release_all()
    assert rec.cids(0) == [cids[0], cids[2]] and scheduler.snapshot()["classes"]["namespace:ns1"]["queued"] == 0


def test_a_group_belongs_to_one_scheduler() -> None:
    loop = FakeLoop()
    group = QosGroup("ns1")
    QosBackend(Inner(), [group], QosScheduler(loop=loop))
    with pytest.raises(ValueError):
        QosBackend(Inner(), [group], QosScheduler(loop=loop))


def test_abort_queue_completes_its_waiting_commands_only() -> None:
    loop, scheduler, _, backend, _ = setup(QosPolicy(rw_ios_per_sec=100))
    rec = Recorder(loop)
    keep = submit_many(backend, rec, 3, qid=1)
    gone = submit_many(backend, rec, 3, qid=2)
    assert scheduler.abort_queue(qid=2) == 3
    assert rec.cids(SQ_DELETED) == gone
    loop.advance(1.0)
    assert rec.cids(0) == keep


def test_close_completes_every_waiting_command_and_nothing_hangs() -> None:
    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop, max_inflight_ios=2)
    inner = Inner(loop, delay=None)  # holds commands until released
    limited = QosGroup("ns1", QosPolicy(rw_ios_per_sec=100))
    b1 = QosBackend(inner, [limited], scheduler)
    b2 = QosBackend(inner, [QosGroup("ns2")], scheduler)
    rec = Recorder(loop)
    submit_many(b1, rec, 5)  # 1 in flight, 4 waiting for tokens
    submit_many(b2, rec, 5)  # 1 in flight, 4 waiting for the device budget
    assert len(inner.held) == 2 and scheduler.waiting == 8
    scheduler.close()
    assert len(rec.cids(SQ_DELETED)) == 8 and scheduler.waiting == 0
    inner.release_all()  # in-flight commands complete normally
    assert len(rec.cids(0)) == 2
    late = cmd()
    b1.execute(late, rec.done_for(late.cid))
    assert rec.completed[-1] == (late.cid, SQ_DELETED)
    assert loop.pending_timers == 0


def test_backend_close_drains_its_commands_and_closes_inner() -> None:
    loop, scheduler, _, backend, inner = setup(QosPolicy(rw_ios_per_sec=100))
    rec = Recorder(loop)
    submit_many(backend, rec, 4)
    backend.close()
    assert inner.closed and len(rec.cids(SQ_DELETED)) == 3
    late = cmd()
    backend.execute(late, rec.done_for(late.cid))
    assert rec.completed[-1] == (late.cid, SQ_DELETED)


def test_inner_failures_become_statuses_and_double_completion_is_dropped() -> None:
    class Faulty(Inner):
        def execute(self, c: IoCommand, done: Done) -> None:
            if c.opcode == NVM_WRITE:
                raise LbaOutOfRange()
            if c.opcode == NVM_FLUSH:
                raise RuntimeError("bug")
            done(0, 0, None)
            done(0, 0, None)

    loop, scheduler, _, backend, _ = setup(inner=Faulty())
    rec = Recorder(loop)
    for c in (cmd(NVM_WRITE), cmd(NVM_FLUSH, nlb=0), cmd(NVM_READ)):
        backend.execute(c, rec.done_for(c.cid))
    assert [st for _, st in rec.completed] == [LbaOutOfRange().status, InternalError().status, 0]
    assert scheduler.inflight_ios == 0


