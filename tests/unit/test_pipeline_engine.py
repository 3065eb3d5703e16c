"""Pipeline engines: results bit-exact against the references, backpressure, integrity
failures, a worker killed under load, and a clean shutdown (no process, no /dev/shm left).

Every test is bounded twice: ``pytest.mark.timeout`` and ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import crcmod.predefined
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dpu_emu.pipeline import (
    DECRYPT_AND_VERIFY,
    PROTECT_AND_ENCRYPT,
    Completion,
    EngineClosedError,
    InlineEngine,
    IntegrityError,
    Job,
    ProcessEngine,
    SlotClass,
    Stage,
    Status,
    default_workers,
    generate_xts_key,
)
from dpu_emu.pipeline.protocol import REQUEST, job_request
from dpu_emu.pipeline.shm import SlotPool, our_segments
from dpu_emu.pipeline.worker import _Worker

pytestmark = pytest.mark.timeout(120)

crcmod_crc32c = crcmod.predefined.mkCrcFun("crc-32c")
KIB = 1024
SMALL_POOL = (SlotClass(16 * KIB, 8), SlotClass(256 * KIB, 4))
KILL_DEADLINE = 1.0          # seconds within which a dead worker's jobs must have failed
SCENARIO_TIMEOUT = 60.0


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = SCENARIO_TIMEOUT) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout))


def reference_xts(key: bytes, data: bytes, unit: int, tweak: int) -> bytes:
    out = bytearray()
    for index, offset in enumerate(range(0, len(data), unit)):
        ctx = Cipher(algorithms.AES(key), modes.XTS((tweak + index).to_bytes(16, "little"))).encryptor()
        out += ctx.update(data[offset:offset + unit]) + ctx.finalize()
    return bytes(out)


def reference_crcs(data: bytes, unit: int) -> list[int]:
    unit = unit or len(data)
    return [crcmod_crc32c(data[i:i + unit]) for i in range(0, len(data), unit)]


def child_pids() -> set[int]:
    """Direct children of this process, from /proc (zombies included)."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(entry))
    return found


def is_resource_tracker(pid: int) -> bool:
    """multiprocessing's per-interpreter resource tracker: shared, exits with the interpreter."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def assert_nothing_left(pids: list[int], segment: str | None, children_before: set[int]) -> None:
    ours = {p.pid for p in multiprocessing.active_children()}
    assert not ours & set(pids)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} still exists (orphan or zombie)"
    leftover = {p for p in child_pids() - children_before if not is_resource_tracker(p)}
    assert not leftover, f"child processes left behind: {leftover}"
    assert our_segments() == []
    assert segment is not None and not Path(f"/dev/shm/{segment}").exists()


def random_jobs(rng: random.Random, key_id: int) -> list[tuple[Job, bytes]]:
    """Block jobs (512 and 4096-byte LBAs, large LBAs) and KV values of odd lengths."""
    jobs = []
    for unit, count in ((4096, 1), (4096, 2), (4096, 32), (512, 8), (512, 256)):
        lba = rng.choice([0, rng.getrandbits(32), (1 << 64) - 3])
        jobs.append((Job.block(PROTECT_AND_ENCRYPT, lba=lba, block_size=unit, key_id=key_id),
                     rng.randbytes(unit * count)))
    for length in (16, 100, 4095, 70000):
        jobs.append((Job.value(PROTECT_AND_ENCRYPT, tweak=rng.randbytes(16), key_id=key_id), rng.randbytes(length)))
    return jobs


# -- inline engine ------------------------------------------------------------------------

def test_inline_engine_round_trip_and_callbacks() -> None:
    engine = InlineEngine()
    key = generate_xts_key()
    kid = engine.register_key(key)
    rng = random.Random(1)
    for job, data in random_jobs(rng, kid):
        seen: list[Completion] = []
        engine.submit_cb(job, data, seen.append)
        assert len(seen) == 1, "inline completions are synchronous"
        sealed = seen[0]
        assert sealed.ok and sealed.data == reference_xts(key, data, job.unit_size or len(data), job.tweak)
        assert sealed.crcs is not None and list(sealed.crcs) == reference_crcs(data, job.unit_size)
        back: list[Completion] = []
        engine.submit_cb(job._replace(stages=DECRYPT_AND_VERIFY), sealed.data, back.append, crcs=sealed.crcs)
        assert back[0].ok and back[0].data == data
    engine.close()
    closed: list[Completion] = []
    engine.submit_cb(Job((Stage.CRC_GENERATE,)), b"x", closed.append)
    assert closed[0].status == Status.ENGINE_CLOSED


def test_inline_engine_integrity_and_borrowed_views() -> None:
    engine = InlineEngine()
    data = random.Random(2).randbytes(4 * 512)
    job = Job.block((Stage.CRC_VERIFY,), lba=0, block_size=512)
    crcs = reference_crcs(data, 512)
    crcs[2] ^= 1
    seen: list[Completion] = []
    engine.submit_cb(job, data, seen.append, crcs=crcs)
    assert seen[0].status == Status.INTEGRITY_ERROR and seen[0].unit == 2 and seen[0].data is None
    assert engine.stats.integrity_errors == 1
    views: list[Any] = []
    engine.submit_cb(Job((Stage.CRC_GENERATE,)), data, lambda c: views.append((c.data, bytes(c.data))),
                     borrow=True)
    view, copy = views[0]
    assert copy == data
    with pytest.raises(ValueError):
        bytes(view)                              # released once the callback returned
    with pytest.raises(IntegrityError):
        run(lambda: engine.submit(job, data, crcs=crcs))
    with pytest.raises(ValueError):
        engine.submit_cb(Job((Stage.ENCRYPT,), 512, 99), data, seen.append)    # unknown key


# -- process engine ------------------------------------------------------------------------

def test_default_workers() -> None:
    assert 1 <= default_workers() <= max(1, os.cpu_count() or 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_process_engine_round_trip_matches_references(workers: int) -> None:
    key = generate_xts_key()
    children_before = child_pids()

    async def scenario() -> tuple[list[int], str | None]:
        engine = ProcessEngine(workers=workers, slot_classes=(SlotClass(16 * KIB, 16), SlotClass(1024 * KIB, 8)))
        await engine.start()
        try:
            assert len(engine.worker_pids) == workers
            kid = engine.register_key(key)
            jobs = random_jobs(random.Random(workers), kid)
            jobs.append((Job.block(PROTECT_AND_ENCRYPT, lba=9, block_size=4096, key_id=kid),
                         random.Random(5).randbytes(1024 * KIB)))                # the largest slot
            sealed = await asyncio.gather(*(engine.submit(job, data) for job, data in jobs))
            for (job, data), result in zip(jobs, sealed, strict=True):
                unit = job.unit_size or len(data)
                assert result.data == reference_xts(key, data, unit, job.tweak)
                assert list(result.crcs) == reference_crcs(data, job.unit_size)
            reads = [(job._replace(stages=DECRYPT_AND_VERIFY), r) for (job, _), r in zip(jobs, sealed, strict=True)]
            opened = await asyncio.gather(*(engine.submit(job, r.data, crcs=r.crcs) for job, r in reads))
            assert [o.data for o in opened] == [data for _, data in jobs]
            crc_only = await engine.submit(Job((Stage.CRC_GENERATE,)), b"123456789")
            assert list(crc_only.crcs) == [0xE3069283] and crc_only.data == b"123456789"
            assert engine.stats.completed == 2 * len(jobs) + 1 and engine.stats.failed == 0
            with pytest.raises(ValueError):
                await engine.submit(Job((Stage.CRC_GENERATE,)), bytes(1024 * KIB + 1))   # too large
            pids, segment = engine.worker_pids, engine.segment_name
        finally:
            await engine.aclose()
        return pids, segment

    pids, segment = run(scenario)
    assert_nothing_left(pids, segment, children_before)


def test_backpressure_more_jobs_than_slots() -> None:
    key = generate_xts_key()

    async def scenario() -> None:
        async with ProcessEngine(workers=2, slot_classes=SMALL_POOL) as engine:
            kid = engine.register_key(key)
            rng = random.Random(7)
            work = []
            for _ in range(120):
                unit = rng.choice([512, 4096])
                size = rng.choice([unit, 4 * unit, 16 * KIB, 64 * KIB, 256 * KIB]) // unit * unit
                work.append((Job.block(PROTECT_AND_ENCRYPT, lba=rng.getrandbits(40), block_size=unit, key_id=kid),
                             rng.randbytes(size)))
            callbacks: dict[int, Completion] = {}
            for index, (job, data) in enumerate(work[:60]):          # the sans-IO form...
                engine.submit_cb(job, data, lambda c, i=index: callbacks.__setitem__(i, c))
            awaited = await asyncio.gather(*(engine.submit(job, data) for job, data in work[60:]))   # ...and async
            while len(callbacks) < 60:
                await asyncio.sleep(0.01)
            results = [callbacks[i] for i in range(60)] + list(awaited)
            for (job, data), result in zip(work, results, strict=True):
                assert result.ok and result.data == reference_xts(key, data, job.unit_size, job.tweak)
            assert engine.stats.backpressure_waits > 0
            assert engine.stats.completed == 120
            assert engine.slots_free == engine.slots_total == 12

    run(scenario)


def test_integrity_error_is_its_own_status() -> None:
    async def scenario() -> None:
        async with ProcessEngine(workers=1, slot_classes=SMALL_POOL) as engine:
            data = random.Random(3).randbytes(8 * 4096)
            crcs = reference_crcs(data, 4096)
            job = Job.block((Stage.CRC_VERIFY,), lba=0, block_size=4096)
            assert (await engine.submit(job, data, crcs=crcs)).data == data
            crcs[5] ^= 0x80
            with pytest.raises(IntegrityError) as info:
                await engine.submit(job, data, crcs=crcs)
            assert info.value.unit == 5
            seen: asyncio.Queue[Completion] = asyncio.Queue()
            engine.submit_cb(job, data, seen.put_nowait, crcs=crcs)
            completion = await seen.get()
            assert completion.status == Status.INTEGRITY_ERROR and completion.unit == 5
            assert completion.status != Status.WORKER_DIED and completion.data is None
            assert engine.stats.integrity_errors == 2

    run(scenario)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_worker_under_load(workers: int) -> None:
    key = generate_xts_key()
    children_before = child_pids()

    async def scenario() -> tuple[list[int], str | None]:
        engine = ProcessEngine(workers=workers, slot_classes=SMALL_POOL)
        await engine.start()
        loop = asyncio.get_running_loop()
        kid = engine.register_key(key)
        data = random.Random(11).randbytes(128 * KIB)
        job = Job.block(PROTECT_AND_ENCRYPT, lba=4096, block_size=4096, key_id=kid)
        expected = reference_xts(key, data, 4096, 4096)
        log: list[tuple[float, Completion]] = []
        running = True

        def done(completion: Completion) -> None:
            log.append((loop.time(), completion))
            if running:
                engine.submit_cb(job, data, done)

        async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
            deadline = loop.time() + timeout
            while not predicate():
                assert loop.time() < deadline, "timed out"
                await asyncio.sleep(0.002)

        try:
            for _ in range(8):
                engine.submit_cb(job, data, done)
            await until(lambda: len(log) >= 16)
            await until(lambda: max(engine.in_flight_by_worker.values()) > 0)
            victim = max(engine.in_flight_by_worker.items(), key=lambda item: item[1])[0]
            killed_at = loop.time()
            os.kill(victim, signal.SIGKILL)
            await until(lambda: any(c.status == Status.WORKER_DIED for _, c in log), timeout=KILL_DEADLINE * 5)
            ok_before = sum(c.ok for _, c in log)
            await until(lambda: sum(c.ok for _, c in log) >= ok_before + 16)       # later jobs succeed
            running = False
            died = [(t, c) for t, c in log if c.status == Status.WORKER_DIED]
            assert died and max(t for t, _ in died) - killed_at < KILL_DEADLINE
            assert all(str(victim) in c.message for _, c in died)
            assert {c.status for _, c in log} == {Status.OK, Status.WORKER_DIED}
            assert all(c.data == expected for _, c in log if c.ok)
            assert engine.stats.worker_restarts == 1
            assert victim not in engine.worker_pids and len(engine.worker_pids) == workers
            assert not Path(f"/proc/{victim}").exists()                  # reaped, not a zombie
            # A fresh job after the restart works, keys included.
            assert (await engine.submit(job, data)).data == expected
            pids, segment = engine.worker_pids, engine.segment_name
        finally:
            running = False
            await engine.aclose()
        return pids + [victim], segment

    pids, segment = run(scenario)
    assert_nothing_left(pids, segment, children_before)


def test_sync_close_with_jobs_in_flight_leaves_nothing() -> None:
    children_before = child_pids()

    async def scenario() -> tuple[list[int], str | None]:
        engine = ProcessEngine(workers=2, slot_classes=SMALL_POOL)
        await engine.start()
        kid = engine.register_key(generate_xts_key())
        data = random.Random(4).randbytes(256 * KIB)
        job = Job.block(PROTECT_AND_ENCRYPT, lba=0, block_size=512, key_id=kid)
        seen: list[Completion] = []
        for _ in range(30):                          # more than the pool: some wait for slots
            engine.submit_cb(job, data, seen.append)
        await asyncio.sleep(0)
        pids, segment = engine.worker_pids, engine.segment_name
        engine.close()                               # synchronous, from inside the loop
        engine.close()                               # idempotent
        await asyncio.sleep(0.05)
        assert len(seen) == 30
        assert {c.status for c in seen} <= {Status.OK, Status.ENGINE_CLOSED}
        assert any(c.status == Status.ENGINE_CLOSED for c in seen)
        with pytest.raises(EngineClosedError):
            await engine.submit(job, data)
        late: list[Completion] = []
        engine.submit_cb(job, data, late.append)
        assert late[0].status == Status.ENGINE_CLOSED
        return pids, segment

    pids, segment = run(scenario)
    assert_nothing_left(pids, segment, children_before)


def test_lease_api_and_borrowed_result() -> None:
    key = generate_xts_key()

    async def scenario() -> None:
        async with ProcessEngine(workers=1, slot_classes=SMALL_POOL) as engine:
            kid = engine.register_key(key)
            data = random.Random(8).randbytes(8 * KIB)
            lease = engine.try_lease(len(data))
            assert lease is not None and lease.capacity == 16 * KIB
            lease.buf[:len(data)] = data                  # e.g. sock.recv_into(lease.buf)
            got: asyncio.Future[tuple[Any, bytes]] = asyncio.get_running_loop().create_future()
            job = Job.block((Stage.ENCRYPT,), lba=3, block_size=4096, key_id=kid)
            engine.submit_lease(lease, job, len(data), lambda c: got.set_result((c.data, bytes(c.data))),
                                borrow=True)
            view, copy = await got
            assert copy == reference_xts(key, data, 4096, 3)
            with pytest.raises(ValueError):
                bytes(view)                               # the slot view died with the callback
            leases = [await engine.lease(100) for _ in range(8)]
            waiting = asyncio.ensure_future(engine.lease(100))
            await asyncio.sleep(0.01)
            assert not waiting.done()                     # pool class exhausted: waits, never fails
            leases[0].release()
            assert (await asyncio.wait_for(waiting, 5)).capacity == 16 * KIB
            for lease in leases[1:]:
                lease.release()

    run(scenario)


def test_job_deferred_past_key_removal_is_invalid() -> None:
    async def scenario() -> None:
        async with ProcessEngine(workers=1, slot_classes=(SlotClass(4 * KIB, 1),)) as engine:
            kid = engine.register_key(generate_xts_key())
            job = Job.block((Stage.ENCRYPT,), lba=0, block_size=4096, key_id=kid)
            first: asyncio.Queue[Completion] = asyncio.Queue()
            engine.submit_cb(job, bytes(4096), first.put_nowait)
            engine.submit_cb(job, bytes(4096), first.put_nowait)    # waits for the only slot
            engine.unregister_key(kid)
            statuses = {(await first.get()).status, (await first.get()).status}
            assert statuses == {Status.OK, Status.INVALID_JOB}
            with pytest.raises(ValueError):
                await engine.submit(job, bytes(4096))                # unknown key: refused up front

    run(scenario)


def test_deferred_submission_owns_its_buffers_and_cancelled_waiters_pass_slots_on() -> None:
    async def scenario() -> None:
        async with ProcessEngine(workers=1, slot_classes=(SlotClass(4 * KIB, 1),)) as engine:
            data = bytearray(random.Random(12).randbytes(4096))
            expected, crcs = bytes(data), reference_crcs(bytes(data), 512)
            job = Job.block((Stage.CRC_VERIFY,), lba=0, block_size=512)
            holder = await engine.lease(4096)                     # the only slot
            seen: asyncio.Queue[Completion] = asyncio.Queue()
            engine.submit_cb(job, data, seen.put_nowait, crcs=crcs)     # must wait: copies its inputs
            data[:] = bytes(4096)                                 # the caller reuses its buffers
            crcs[:] = [0] * len(crcs)
            cancelled = asyncio.ensure_future(engine.lease(100))   # queued behind the submission
            await asyncio.sleep(0.01)
            cancelled.cancel()
            with pytest.raises(ValueError):                      # refused before taking a slot
                engine.submit_cb(Job.block((Stage.CRC_GENERATE,), lba=0, block_size=16), bytes(4096),
                                 seen.put_nowait)
            holder.release()
            completion = await seen.get()
            assert completion.ok and completion.data == expected
            await asyncio.sleep(0.01)
            assert engine.slots_free == engine.slots_total == 1   # the cancelled waiter passed it on
            assert engine.stats.backpressure_waits == 2

    run(scenario)


def test_workers_that_cannot_start_fail_start_not_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import dpu_emu.pipeline.process as process_module

    monkeypatch.setattr(process_module, "command", lambda *args: [sys.executable, "-c", "raise SystemExit(3)"])
    children_before = child_pids()

    async def scenario() -> str | None:
        engine = ProcessEngine(workers=1, slot_classes=SMALL_POOL)
        with pytest.raises(RuntimeError, match="cannot start"):
            await engine.start(timeout=20)
        assert engine.stats.worker_restarts == process_module.MAX_EARLY_DEATHS - 1
        return engine.segment_name

    segment = run(scenario)
    assert_nothing_left([], segment, children_before)


def test_worker_reports_errors_with_remote_traceback() -> None:
    # The worker's job runner, in-process, over a real pool segment.
    pool = SlotPool((SlotClass(4 * KIB, 2),))
    worker = _Worker(pool.name)
    try:
        lease = pool.try_acquire(4096)
        assert lease is not None
        job = Job.block((Stage.ENCRYPT,), lba=0, block_size=4096, key_id=5)
        fields = REQUEST.struct.unpack(job_request(1, job, 4096, 4096, lease.meta_capacity, lease.data_off,
                                                   lease.meta_off))
        job_id, status, extra = _unpack(worker.run_job(fields))
        assert (job_id, status) == (1, Status.INVALID_JOB)
        assert bytes(lease.buf[:extra]).decode() == "unknown pipeline key id 5"
        bogus = fields[:2] + (b"\x09\x00\x00\x00",) + fields[3:]          # stage 9 does not exist
        job_id, status, extra = _unpack(worker.run_job(bogus))
        assert status == Status.WORKER_ERROR and "Traceback" in bytes(lease.buf[:extra]).decode()
        lease.release()
    finally:
        worker.close()
        pool.close()
    assert our_segments() == []


def _unpack(raw: bytes) -> tuple[int, int, int]:
    from dpu_emu.pipeline.protocol import COMPLETION
    job_id, status, extra = COMPLETION.struct.unpack(raw)
    return job_id, status, extra
