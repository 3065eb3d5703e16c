"""Engines run jobs (chains of stages) over payloads; this module holds what they share.

Theory of operation
-------------------
A *job* (:class:`~.stages.Job`) is a chain of at most four stages over one payload cut
into data units.  An engine runs it and reports a :class:`Completion`.  Two engines share
one API (:class:`Engine`):

* :class:`~.inline.InlineEngine` runs the chain in the caller, synchronously: the done
  callback has run when ``submit_cb`` returns.  For tests, debugging, and payloads too
  small to be worth a hop to another process.
* :class:`~.process.ProcessEngine` models the DPU's offload engines with worker
  processes.  Payloads live in a shared-memory slot pool (:mod:`.shm`); only 64-byte
  descriptors go to a worker over its own ``os.pipe`` and 16-byte completions come back
  over another, drained in batches by an ``add_reader`` callback on the event loop.
  Workers transform the slot in place, so a payload is copied exactly twice (into the
  slot, out of it) or zero times with the lease API below.

Three ways in, from the most convenient to the fewest copies:

1. ``await engine.submit(job, payload, crcs=None) -> Completion`` (raises the
   :class:`~.errors.PipelineError` matching a failed status);
2. ``engine.submit_cb(job, payload, done, crcs=None, borrow=False)`` for the sans-IO
   datapath: ``done(completion)`` is called exactly once, later, from the event loop
   (inline engine or closed engine: before ``submit_cb`` returns).  It raises only
   ``ValueError`` for a job that could never run; a dead worker, a CRC mismatch or a
   closed engine arrive as ``completion.status``;
3. ``lease = engine.try_lease(n)`` / ``await engine.lease(n)``, fill ``lease.buf``
   (e.g. ``sock.recv_into``), then ``engine.submit_lease(lease, job, n, done)``.

Backpressure: when the pool has no free slot, ``submit``/``lease`` wait and ``submit_cb``
queues its own copy of the payload; nothing fails for lack of slots.  With
``borrow=True`` ``completion.data`` is a view of the slot, valid only until ``done``
returns (it is released afterwards); otherwise it is ``bytes``.

Keys: ``register_key(key) -> key_id`` validates a 64-byte AES-256-XTS key (halves must
differ) and hands it to the workers once; jobs carry only the id.  Keys are never logged
or shown in a repr.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Final, NamedTuple

from .errors import EngineClosedError, Status, error_for
from .shm import Lease
from .stages import CRC_BYTES, Job, Stage, check_job, crcs_from_bytes
from .xts import check_xts_key

Buffer = bytes | bytearray | memoryview
_CRC_FORMAT: Final = "I"


class Completion(NamedTuple):
    """The outcome of one job.

    ``data``: the payload after the chain (``bytes``, or a borrowed slot view), None on
    failure.  ``crcs``: the CRC32C per unit when the chain has CRC_GENERATE.  ``unit``: on
    INTEGRITY_ERROR, the first data unit that failed.  ``message``: why, on failure.
    """

    status: Status
    data: bytes | memoryview | None = None
    crcs: array | None = None
    unit: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


Done = Callable[[Completion], None]


@dataclass(slots=True)
class EngineStats:
    submitted: int = 0
    completed: int = 0             # status OK
    failed: int = 0                # any other status
    integrity_errors: int = 0
    worker_restarts: int = 0
    backpressure_waits: int = 0    # jobs or leases that had to wait for a free slot
    bytes_processed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def closed_completion(message: str = "pipeline engine is closed") -> Completion:
    return Completion(Status.ENGINE_CLOSED, message=message)


class Engine(ABC):
    """The API both engines implement; see the module docstring."""

    max_payload: int

    def __init__(self) -> None:
        self.stats = EngineStats()
        self._keys: dict[int, bytes] = {}
        self._next_key_id = 1
        self._closing = False

    # -- keys ------------------------------------------------------------------------

    def register_key(self, key: Buffer) -> int:
        """Validate an AES-256-XTS key and make it available to jobs; returns its id."""
        self._check_open()
        raw = check_xts_key(key)
        key_id = self._next_key_id
        self._next_key_id += 1
        self._keys[key_id] = raw
        self._key_added(key_id, raw)
        return key_id

    def unregister_key(self, key_id: int) -> None:
        if self._keys.pop(key_id, None) is None:
            raise KeyError(f"no pipeline key {key_id}")
        self._key_removed(key_id)

    def has_key(self, key_id: int) -> bool:
        return key_id in self._keys

    @abstractmethod
    def _key_added(self, key_id: int, key: bytes) -> None: ...

    @abstractmethod
    def _key_removed(self, key_id: int) -> None: ...

    # -- leases ----------------------------------------------------------------------

    @abstractmethod
    def try_lease(self, nbytes: int) -> Lease | None:
        """A slot for ``nbytes`` now, or None if the pool is exhausted (never waits)."""

    @abstractmethod
    def _lease_later(self, nbytes: int, ready: Callable[[Lease], None]) -> None:
        """Call ``ready(lease)`` when a slot frees up (FIFO per slot size)."""

    async def lease(self, nbytes: int) -> Lease:
        """A slot for ``nbytes``, waiting for one to free up if necessary."""
        self._check_open()
        lease = self.try_lease(nbytes)
        if lease is not None:
            return lease
        self.stats.backpressure_waits += 1
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._lease_later(nbytes, _LeaseWaiter(future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.result().release()
            raise

    @abstractmethod
    def submit_lease(self, lease: Lease, job: Job, length: int, done: Done, *,
                     crcs: Sequence[int] | Buffer | None = None, borrow: bool = False) -> None:
        """Run ``job`` over ``lease.buf[:length]``; the engine owns the lease from now on."""

    # -- submissions -----------------------------------------------------------------

    def submit_cb(self, job: Job, payload: Buffer, done: Done, *,
                  crcs: Sequence[int] | Buffer | None = None, borrow: bool = False) -> None:
        """Run ``job`` over a copy of ``payload``; ``done(completion)`` is called once.

        Raises ``ValueError`` only for a job that can never run (see ``check_job``).
        """
        view = memoryview(payload).cast("B")
        length = view.nbytes
        if self._closing:
            done(closed_completion())
            return
        self._precheck(job, length)
        lease = self.try_lease(length)
        if lease is not None:
            lease.buf[:length] = view
            self.submit_lease(lease, job, length, done, crcs=crcs, borrow=borrow)
            return
        self.stats.backpressure_waits += 1
        # Own copies: the caller may reuse its buffers before a slot frees.
        owned_crcs = None if crcs is None else array(_CRC_FORMAT, crcs_from_bytes(crcs)
                                                     if isinstance(crcs, bytes | bytearray | memoryview) else crcs)
        self._lease_later(length, _SubmitWaiter(self, job, bytes(view), done, owned_crcs, borrow))

    async def submit(self, job: Job, payload: Buffer, *,
                     crcs: Sequence[int] | Buffer | None = None) -> Completion:
        """Run ``job`` over a copy of ``payload``; raise a PipelineError on failure."""
        self._check_open()
        view = memoryview(payload).cast("B")
        length = view.nbytes
        self._precheck(job, length)
        lease = self.try_lease(length)
        if lease is None:
            lease = await self.lease(length)
        lease.buf[:length] = view
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()

        def done(completion: Completion) -> None:
            if not future.done():
                future.set_result(completion)

        self.submit_lease(lease, job, length, done, crcs=crcs)
        completion = await future
        if completion.status != Status.OK:
            raise error_for(completion.status, completion.message, completion.unit)
        return completion

    @abstractmethod
    def _capacity_for(self, nbytes: int) -> tuple[int, int]:
        """``(data, metadata)`` capacity of the slot a payload of ``nbytes`` would get."""

    def _precheck(self, job: Job, length: int) -> None:
        """Refuse, before taking a slot, a job that could never run."""
        if length > self.max_payload:
            raise ValueError(f"payload of {length} bytes exceeds the engine's largest slot "
                             f"({self.max_payload} bytes)")
        capacity, meta_capacity = self._capacity_for(length)
        check_job(job, length, capacity=capacity, meta_capacity=meta_capacity)
        if job.key_id and job.key_id not in self._keys:
            raise ValueError(f"unknown pipeline key id {job.key_id}")

    def _fail_waiters(self, waiters: Sequence[Callable[[Lease], None]]) -> None:
        """Fail submissions still waiting for a slot (shutdown)."""
        for ready in waiters:
            if isinstance(ready, _LeaseWaiter | _SubmitWaiter):
                ready.fail()

    def _check_open(self) -> None:
        if self._closing:
            raise EngineClosedError("pipeline engine is closed")

    # -- shutdown --------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Stop synchronously: workers joined, shared memory unlinked (idempotent)."""

    async def aclose(self) -> None:
        """Stop after in-flight jobs complete (bounded), then as :meth:`close`."""
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _LeaseWaiter:
    """Waits in the slot pool on behalf of ``await engine.lease()``."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Lease]) -> None:
        self.future = future

    def __call__(self, lease: Lease) -> None:
        if self.future.done():           # the waiter was cancelled: pass the slot on
            lease.release()
        else:
            self.future.set_result(lease)

    def fail(self) -> None:
        if not self.future.done():
            try:
                self.future.set_exception(EngineClosedError("pipeline engine is closed"))
            except RuntimeError:         # its event loop is already closed
                pass


class _SubmitWaiter:
    """Waits in the slot pool on behalf of ``submit_cb`` with its own copy of the payload."""

    __slots__ = ("engine", "job", "payload", "done", "crcs", "borrow")

    def __init__(self, engine: Engine, job: Job, payload: bytes, done: Done,
                 crcs: Sequence[int] | Buffer | None, borrow: bool) -> None:
        self.engine, self.job, self.payload = engine, job, payload
        self.done, self.crcs, self.borrow = done, crcs, borrow

    def __call__(self, lease: Lease) -> None:
        length = len(self.payload)
        lease.buf[:length] = self.payload
        try:
            self.engine.submit_lease(lease, self.job, length, self.done, crcs=self.crcs, borrow=self.borrow)
        except ValueError as exc:      # checked at submission; never break the slot release path
            self.engine.stats.failed += 1
            self.done(Completion(Status.INVALID_JOB, message=str(exc)))

    def fail(self) -> None:
        self.engine.stats.failed += 1
        self.done(closed_completion())


def load_crcs(lease: Lease, crcs: Sequence[int] | Buffer, units: int) -> None:
    """Copy the caller's expected CRCs into the lease's metadata area."""
    values = crcs_from_bytes(crcs) if isinstance(crcs, bytes | bytearray | memoryview) else crcs
    if len(values) < units:
        raise ValueError(f"{units} data units but {len(values)} CRCs given")
    target = lease.meta[:units * CRC_BYTES].cast(_CRC_FORMAT)
    try:
        for index in range(units):
            target[index] = values[index]
    finally:
        target.release()


def finish(lease: Lease, job: Job, length: int, units: int, status: Status, extra: int,
           message: str, borrow: bool) -> tuple[Completion, memoryview | None]:
    """Build the completion of a job whose result sits in ``lease``.

    Returns the completion and, for a borrowed result, the view to release once the
    callback has returned.
    """
    if status != Status.OK:
        return Completion(status, unit=extra if status == Status.INTEGRITY_ERROR else 0, message=message), None
    crcs = None
    if Stage.CRC_GENERATE in job.stages:
        crcs = array(_CRC_FORMAT)
        crcs.frombytes(lease.meta[:units * CRC_BYTES])
    if borrow:
        view = lease.buf[:length]
        return Completion(status, view, crcs), view
    return Completion(status, bytes(lease.buf[:length]), crcs), None
