"""The process engine: worker processes transform shared-memory slots in place.

Parent side of the design described in :mod:`.engine`.  Per worker the parent holds a
request pipe (64-byte descriptors, written in one batch per event-loop iteration), a
completion pipe (16-byte completions, drained by an ``add_reader`` callback, many per
read) and a pidfd of the process (also watched with ``add_reader``).

Failure model (after ``concurrent.futures.process``, minus its pickling):

* A worker that dies is noticed through its pidfd, EOF on its completion pipe or a
  broken request pipe, immediately (no polling).  Completions it wrote before dying are
  still delivered; every other job it held completes with ``Status.WORKER_DIED``; the
  event is logged and counted in ``stats.worker_restarts``; a new worker (same index)
  is spawned and given every registered key before any job.
* A worker that dies :data:`MAX_EARLY_DEATHS` times in a row before saying hello marks the
  engine broken (a restart loop would only burn a core): new jobs then complete with
  WORKER_DIED and ``start()`` raises.
* Shutdown: ``close()`` (synchronous) sends STOP, closes the request pipes, joins each
  worker (terminate, then kill, after :data:`CLOSE_TIMEOUT`), delivers the completions
  already written, fails the rest with ENGINE_CLOSED and unlinks the shared memory.
  ``await aclose()`` first lets in-flight jobs finish.  A ``weakref.finalize`` does the
  same at interpreter exit if nobody closed the engine.

Workers are started like multiprocessing's 'spawn' (fork + exec of a fresh interpreter,
never a bare fork of a process running an event loop and threads) but with
``subprocess.Popen``: multiprocessing's spawn re-imports the parent's ``__main__`` in every
worker (the whole device, or a crash loop in a script without a ``__main__`` guard) and
pickles the process object; here the worker imports only this package and inherits two
pipe fds.  Its exit is watched through a pidfd (Linux >= 5.3) and reaped with ``wait``.
Measured here: ``Popen`` returns in a few ms and the worker says hello after ~0.2 s
('spawn': ~0.12 s for an empty target plus the ``__main__`` import; 'forkserver': ~40 ms
but it leaves a server process behind).  ``SharedMemory`` starts multiprocessing's
resource tracker, shared by the whole interpreter and gone with it; it is not ours to stop.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import subprocess
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from .engine import Buffer, Completion, Done, Engine, closed_completion, finish, load_crcs
from .errors import Status
from .protocol import (
    COMPLETION,
    COMPLETION_SIZE,
    HELLO_JOB_ID,
    JOB_ID_LIMIT,
    add_key_request,
    drop_key_request,
    job_request,
    stop_request,
)
from .shm import DEFAULT_SLOT_CLASSES, Lease, SlotClass, SlotPool, sweep_stale_segments
from .stages import Job, chain_kind, check_job, meta_capacity_for
from .worker import READ_CHUNK, command

log = logging.getLogger("dpu_emu.pipeline.process")

MAX_DEFAULT_WORKERS = 8
START_TIMEOUT = 30.0           # seconds for every worker to say hello
CLOSE_TIMEOUT = 2.0            # seconds for workers to exit before terminate/kill
KILL_TIMEOUT = 1.0
LOST_JOIN_TIMEOUT = 0.2        # a worker whose pipe hit EOF is exiting: give it this long
DRAIN_POLL = 0.005
MAX_EARLY_DEATHS = 3
PIPE_BYTES = 1 << 20           # request pipe capacity (Linux F_SETPIPE_SZ; default 64 KiB)
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])   # the directory that holds dpu_emu/
_unpack_completion = COMPLETION.struct.unpack_from
_STATUS = {int(s): s for s in Status}


def default_workers() -> int:
    """One worker per CPU we may run on, minus one for the event loop (at least one)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus - 1))


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Pending:
    __slots__ = ("lease", "job", "length", "units", "done", "borrow")

    def __init__(self, lease: Lease, job: Job, length: int, units: int, done: Done, borrow: bool) -> None:
        self.lease, self.job, self.length, self.units, self.done, self.borrow = lease, job, length, units, done, borrow


def _pidfd(pid: int) -> int:
    """A descriptor that becomes readable when ``pid`` exits, or -1 (then EOF tells us)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # pragma: no cover - Linux < 5.3 or not Linux
        return -1


def _reap(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for ``process`` up to ``timeout`` seconds; True once it has been reaped."""
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


class _WorkerHandle:
    __slots__ = ("index", "process", "pid", "req_fd", "cpl_fd", "sentinel", "inflight", "out", "rbuf",
                 "ready", "alive")

    def __init__(self, index: int, process: subprocess.Popen[bytes], req_fd: int, cpl_fd: int) -> None:
        self.index = index
        self.process = process
        self.pid: int = process.pid
        self.req_fd = req_fd
        self.cpl_fd = cpl_fd
        self.sentinel = _pidfd(process.pid)
        self.inflight: dict[int, _Pending] = {}
        self.out = bytearray()
        self.rbuf = b""
        self.ready = False
        self.alive = True


def _emergency_cleanup(pool: SlotPool, workers: list[_WorkerHandle]) -> None:
    """Finalizer for an engine nobody closed: no orphan process, nothing left in /dev/shm."""
    for w in workers:
        for fd in (w.req_fd, w.cpl_fd, w.sentinel):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            w.process.kill()
            _reap(w.process, KILL_TIMEOUT)
        except Exception:
            pass
    pool.close()


class ProcessEngine(Engine):
    """Runs jobs in ``workers`` processes over a shared-memory slot pool.

    Use from one event loop thread: ``await engine.start()`` (or ``async with``), then the
    :class:`~.engine.Engine` API; ``close()`` or ``await aclose()`` at the end.
    """

    def __init__(self, workers: int | None = None, *, slot_classes: Sequence[SlotClass] = DEFAULT_SLOT_CLASSES,
                 worker_log_level: int = logging.WARNING) -> None:
        super().__init__()
        self.worker_count = workers if workers is not None else default_workers()
        if self.worker_count < 1:
            raise ValueError("a process engine needs at least one worker")
        self._slot_classes = tuple(slot_classes)
        self.max_payload = max(c.size for c in self._slot_classes)
        self._log_level = worker_log_level
        self._pool: SlotPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[_WorkerHandle] = []
        self._next_job_id = 1
        self._flush_scheduled = False
        self._early_deaths = 0
        self._broken: str | None = None
        self._started: asyncio.Future[None] | None = None
        self._closed = False
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Create the slot pool, spawn the workers and wait until each one said hello."""
        if self._loop is not None:
            raise RuntimeError("process engine already started")
        self._check_open()
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        sweep_stale_segments()
        self._pool = SlotPool(self._slot_classes)
        self._finalizer = weakref.finalize(self, _emergency_cleanup, self._pool, self._workers)
        try:
            for index in range(self.worker_count):
                self._workers.append(self._spawn(index))
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except BaseException:
            self.close()
            raise

    async def __aenter__(self) -> ProcessEngine:
        await self.start()
        return self

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.alive]

    @property
    def in_flight(self) -> int:
        return sum(len(w.inflight) for w in self._workers)

    @property
    def in_flight_by_worker(self) -> dict[int, int]:
        """Jobs each live worker holds, by pid."""
        return {w.pid: len(w.inflight) for w in self._workers if w.alive}

    @property
    def segment_name(self) -> str | None:
        return self._pool.name if self._pool is not None else None

    @property
    def slots_free(self) -> int:
        return self._pool.free_slots() if self._pool is not None else 0

    @property
    def slots_total(self) -> int:
        return self._pool.total_slots if self._pool is not None else 0

    def _spawn(self, index: int) -> _WorkerHandle:
        assert self._pool is not None and self._loop is not None
        req_r, req_w = os.pipe()
        cpl_r, cpl_w = os.pipe()
        try:
            fcntl.fcntl(req_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (OSError, AttributeError):
            pass  # the default 64 KiB still holds every in-flight descriptor
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
        try:
            # A session of its own: Ctrl-C / SIGTERM sent to the terminal's process group must
            # reach only the device, which then stops its workers (they also exit on pipe EOF).
            process = subprocess.Popen(command(index, self._pool.name, req_r, cpl_w, self._log_level),
                                       pass_fds=(req_r, cpl_w), env=env, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        except BaseException:
            os.close(req_w)
            os.close(cpl_r)
            raise
        finally:
            os.close(req_r)           # the child has its own copies now
            os.close(cpl_w)
        os.set_blocking(cpl_r, False)
        w = _WorkerHandle(index, process, req_w, cpl_r)
        self._loop.add_reader(cpl_r, self._on_readable, w)
        if w.sentinel >= 0:
            self._loop.add_reader(w.sentinel, self._worker_lost, w, "process exited")
        for key_id, key in self._keys.items():      # keys first: before any job in this pipe
            w.out += add_key_request(key_id, key)
        self._schedule_flush()
        log.info("pipeline worker %d started (pid %d)", index, w.pid)
        return w

    # -- keys ------------------------------------------------------------------------

    def _key_added(self, key_id: int, key: bytes) -> None:
        self._broadcast(add_key_request(key_id, key))

    def _key_removed(self, key_id: int) -> None:
        self._broadcast(drop_key_request(key_id))

    def _broadcast(self, message: bytes) -> None:
        """Queue a control message behind every job already queued for each worker."""
        for w in self._workers:
            if w.alive:
                w.out += message
        if self._workers:
            self._schedule_flush()

    # -- leases and submission -------------------------------------------------------

    def try_lease(self, nbytes: int) -> Lease | None:
        self._check_open()
        return self._require_pool().try_acquire(nbytes)

    def _capacity_for(self, nbytes: int) -> tuple[int, int]:
        size = self._require_pool().classes[self._require_pool().class_for(nbytes)].size
        return size, meta_capacity_for(size)

    def _lease_later(self, nbytes: int, ready: Callable[[Lease], None]) -> None:
        self._require_pool().wait(nbytes, ready)

    def _require_pool(self) -> SlotPool:
        if self._pool is None:
            raise RuntimeError("call 'await engine.start()' first")
        return self._pool

    def submit_lease(self, lease: Lease, job: Job, length: int, done: Done, *,
                     crcs: Sequence[int] | Buffer | None = None, borrow: bool = False) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("call 'await engine.start()' first")
        try:
            units = check_job(job, length, capacity=lease.capacity, meta_capacity=lease.meta_capacity)
            if crcs is not None:
                load_crcs(lease, crcs, units)
        except BaseException:
            lease.release()
            raise
        failure = None
        if self._closing:
            failure = closed_completion()
        elif self._broken is not None:
            failure = Completion(Status.WORKER_DIED, message=f"pipeline engine is broken: {self._broken}")
        elif chain_kind(job.stages)[1] and job.key_id not in self._keys:
            failure = Completion(Status.INVALID_JOB, message=f"unknown pipeline key id {job.key_id}")
        w = self._pick_worker() if failure is None else None
        if w is None:
            lease.release()
            self.stats.failed += 1
            loop.call_soon(done, failure or Completion(Status.WORKER_DIED, message="no pipeline worker alive"))
            return
        job_id = self._next_job_id
        self._next_job_id = job_id + 1 if job_id + 1 < JOB_ID_LIMIT else HELLO_JOB_ID + 1
        w.inflight[job_id] = _Pending(lease, job, length, units, done, borrow)
        w.out += job_request(job_id, job, length, lease.capacity, lease.meta_capacity, lease.data_off, lease.meta_off)
        self.stats.submitted += 1
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _pick_worker(self) -> _WorkerHandle | None:
        best: _WorkerHandle | None = None
        best_load = 0
        for w in self._workers:
            if not w.alive:
                continue
            load = len(w.inflight) + (0 if w.ready else 1 << 20)   # prefer workers that said hello
            if best is None or load < best_load:
                best, best_load = w, load
        return best          # None only if a replacement could not be spawned

    def _flush(self) -> None:
        self._flush_scheduled = False
        for w in self._workers:
            if w.out and w.alive:
                self._write(w)

    def _write(self, w: _WorkerHandle) -> None:
        data, w.out = w.out, bytearray()
        try:
            _write_all(w.req_fd, data)
        except OSError as exc:
            self._worker_lost(w, f"request pipe: {exc.strerror or exc}")

    # -- completions -----------------------------------------------------------------

    def _on_readable(self, w: _WorkerHandle) -> None:
        try:
            data = os.read(w.cpl_fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._worker_lost(w, "completion pipe closed")
            return
        self._consume(w, data)

    def _consume(self, w: _WorkerHandle, data: bytes) -> None:
        if w.rbuf:
            data, w.rbuf = w.rbuf + data, b""
        whole = len(data) - len(data) % COMPLETION_SIZE
        inflight = w.inflight
        for offset in range(0, whole, COMPLETION_SIZE):
            job_id, status, extra = _unpack_completion(data, offset)
            if job_id == HELLO_JOB_ID:
                self._hello(w)
                continue
            pending = inflight.pop(job_id, None)
            if pending is None:
                if not self._closed:
                    log.error("pipeline worker %d completed unknown job %d", w.pid, job_id)
                continue
            self._complete(pending, _STATUS.get(status, Status.WORKER_ERROR), extra, "")
        if whole < len(data):
            w.rbuf = data[whole:]

    def _hello(self, w: _WorkerHandle) -> None:
        w.ready = True
        self._early_deaths = 0
        started = self._started
        if started is not None and not started.done() and all(x.ready for x in self._workers):
            started.set_result(None)

    def _complete(self, pending: _Pending, status: Status, extra: int, message: str) -> None:
        lease = pending.lease
        if status in (Status.WORKER_ERROR, Status.INVALID_JOB) and not message:
            message = bytes(lease.buf[:min(extra, lease.capacity)]).decode("utf-8", "replace")
        completion, borrowed = finish(lease, pending.job, pending.length, pending.units, status, extra,
                                      message, pending.borrow)
        stats = self.stats
        if status == Status.OK:
            stats.completed += 1
            stats.bytes_processed += pending.length
        else:
            stats.failed += 1
            if status == Status.INTEGRITY_ERROR:
                stats.integrity_errors += 1
        try:
            pending.done(completion)
        except Exception:
            log.exception("pipeline completion callback raised")
        finally:
            if borrowed is not None:
                borrowed.release()
            lease.release()

    # -- failures --------------------------------------------------------------------

    def _worker_lost(self, w: _WorkerHandle, reason: str) -> None:
        """Reap a dead worker, start its replacement, then settle the jobs it held.

        The replacement exists before any callback runs, so jobs resubmitted from a
        completion callback (salvaged or failed) go to a live worker.
        """
        if not w.alive:
            return
        w.alive = False
        self._detach(w)
        process = w.process
        if not _reap(process, LOST_JOIN_TIMEOUT):     # EOF came first: it is exiting
            process.kill()
            _reap(process, KILL_TIMEOUT)
        code = process.returncode
        w.out.clear()
        message = f"pipeline worker {w.index} (pid {w.pid}) died: {reason}, exit code {code}"
        if self._closing:
            status = Status.ENGINE_CLOSED
            message = closed_completion().message
        else:
            status = Status.WORKER_DIED
            self._early_deaths = 0 if w.ready else self._early_deaths + 1
            if self._early_deaths >= MAX_EARLY_DEATHS:
                self._broken = message
                log.critical("%s; it died %d times before becoming ready: engine marked broken",
                             message, self._early_deaths)
                if self._started is not None and not self._started.done():
                    self._started.set_exception(RuntimeError(f"pipeline workers cannot start: {message}"))
            else:
                self.stats.worker_restarts += 1
                log.error("%s; failing its in-flight job(s) and restarting it", message)
                try:
                    self._workers[w.index] = self._spawn(w.index)
                except Exception:      # e.g. out of fds or memory: run on with fewer workers
                    log.exception("could not restart pipeline worker %d", w.index)
        self._salvage(w)                               # completions written before it died
        failed = list(w.inflight.values())
        w.inflight.clear()
        self._release_handle(w)
        self._fail_all(failed, message, status)

    def _fail_all(self, failed: list[_Pending], message: str, status: Status) -> None:
        for pending in failed:
            self._complete(pending, status, 0, message)

    def _detach(self, w: _WorkerHandle) -> None:
        loop = self._loop
        if loop is not None:
            loop.remove_reader(w.cpl_fd)
            if w.sentinel >= 0:
                loop.remove_reader(w.sentinel)

    def _salvage(self, w: _WorkerHandle) -> None:
        """Deliver completions the worker wrote before it went away."""
        while True:
            try:
                data = os.read(w.cpl_fd, READ_CHUNK)
            except OSError:            # BlockingIOError: nothing more for now
                return
            if not data:
                return
            self._consume(w, data)

    def _release_handle(self, w: _WorkerHandle) -> None:
        for fd in (w.req_fd, w.cpl_fd, w.sentinel):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        w.req_fd = w.cpl_fd = w.sentinel = -1

    # -- shutdown --------------------------------------------------------------------

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Let in-flight jobs finish (up to ``timeout``), stop the workers, free the pool."""
        if self._closed:
            return
        self._closing = True
        if self._pool is not None:
            self._fail_waiters(self._pool.drain_waiters())
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        for w in self._workers:
            if w.alive:
                w.out += stop_request()
                self._write(w)
        while any(w.alive and w.process.poll() is None for w in self._workers) and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        self.close()

    def close(self) -> None:
        """Stop now: STOP + EOF to workers, join (then terminate/kill), unlink the pool."""
        if self._closed:
            return
        self._closing = True
        self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        pool = self._pool
        if pool is not None:
            self._fail_waiters(pool.drain_waiters())
        live = [w for w in self._workers if w.alive]
        for w in live:
            w.out += stop_request()
            try:
                _write_all(w.req_fd, w.out)
            except OSError:
                pass
            w.out.clear()
            os.close(w.req_fd)
            w.req_fd = -1
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for w in live:
            if _reap(w.process, max(0.0, deadline - time.monotonic())):
                continue
            log.warning("pipeline worker %d (pid %d) did not stop; terminating it", w.index, w.pid)
            w.process.terminate()
            if not _reap(w.process, KILL_TIMEOUT):
                w.process.kill()
                _reap(w.process, KILL_TIMEOUT)
        for w in live:
            w.alive = False
            self._detach(w)
            self._salvage(w)
            failed = list(w.inflight.values())
            w.inflight.clear()
            self._release_handle(w)
            self._fail_all(failed, "pipeline engine closed before the job ran", Status.ENGINE_CLOSED)
        if pool is not None:
            pool.close()
        if self._started is not None and not self._started.done():
            self._started.cancel()
