"""The inline engine: the same API as the process engine, run in the caller.

Every job runs synchronously inside ``submit_lease``/``submit_cb`` and its ``done``
callback is called before they return.  Leases are private bytearrays, so there is no
backpressure and no payload limit beyond memory.  Useful for tests, for debugging a chain
with a plain stack trace, and for payloads too small to be worth a process hop.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from .engine import Buffer, Done, Engine, closed_completion, finish, load_crcs
from .errors import IntegrityError, Status
from .shm import Lease
from .stages import Job, chain_kind, check_job, meta_capacity_for, run_chain
from .xts import XtsCipher

log = logging.getLogger("dpu_emu.pipeline.inline")


class InlineEngine(Engine):
    """Runs every job in the calling thread (not thread-safe: one caller at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_payload = sys.maxsize
        self._ciphers: dict[int, XtsCipher] = {}

    def _key_added(self, key_id: int, key: bytes) -> None:
        self._ciphers[key_id] = XtsCipher(key)

    def _key_removed(self, key_id: int) -> None:
        cipher = self._ciphers.pop(key_id, None)
        if cipher is not None:
            cipher.close()

    def try_lease(self, nbytes: int) -> Lease:
        self._check_open()
        lease = Lease(memoryview(bytearray(nbytes)), memoryview(bytearray(meta_capacity_for(nbytes))))
        lease.in_use = True
        return lease

    def _capacity_for(self, nbytes: int) -> tuple[int, int]:
        return nbytes, meta_capacity_for(nbytes)

    def _lease_later(self, nbytes: int, ready: Callable[[Lease], None]) -> None:
        ready(self.try_lease(nbytes))

    def submit_lease(self, lease: Lease, job: Job, length: int, done: Done, *,
                     crcs: Sequence[int] | Buffer | None = None, borrow: bool = False) -> None:
        if self._closing:
            lease.release()
            self.stats.failed += 1
            done(closed_completion())
            return
        units = check_job(job, length, capacity=lease.capacity, meta_capacity=lease.meta_capacity)
        if crcs is not None:
            load_crcs(lease, crcs, units)
        cipher = None
        if chain_kind(job.stages)[1]:
            cipher = self._ciphers.get(job.key_id)
        self.stats.submitted += 1
        status, extra, message = Status.OK, 0, ""
        data = lease.buf[:length]
        try:
            if cipher is None and chain_kind(job.stages)[1]:
                status, message = Status.INVALID_JOB, f"unknown pipeline key id {job.key_id}"
            else:
                run_chain(job, data, lease.meta, cipher)
        except IntegrityError as exc:
            status, extra, message = Status.INTEGRITY_ERROR, exc.unit, str(exc)
        except Exception as exc:  # a stage bug: report it like a worker would
            status, message = Status.WORKER_ERROR, "".join(traceback.format_exception(exc))
            log.error("pipeline stage failed: %s", exc)
        finally:
            data.release()
        completion, borrowed = finish(lease, job, length, units, status, extra, message, borrow)
        self._count(completion.status, length)
        try:
            done(completion)
        finally:
            if borrowed is not None:
                borrowed.release()
            lease.release()

    def _count(self, status: Status, length: int) -> None:
        stats = self.stats
        if status == Status.OK:
            stats.completed += 1
            stats.bytes_processed += length
        else:
            stats.failed += 1
            if status == Status.INTEGRITY_ERROR:
                stats.integrity_errors += 1

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for cipher in self._ciphers.values():
            cipher.close()
        self._ciphers.clear()
