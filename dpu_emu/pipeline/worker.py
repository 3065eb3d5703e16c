"""The worker process: read descriptors, transform slots in place, write completions.

Started by :class:`~.process.ProcessEngine` as a fresh interpreter (fork + exec of
``sys.executable``, as multiprocessing's 'spawn' does, but without re-importing the
parent's ``__main__``) running :func:`main`; it inherits exactly two pipe fds.  It maps the pool's shared-memory
segment, says hello (a completion with job id 0), then loops: one ``os.read`` of up to
:data:`READ_CHUNK` bytes may carry many descriptors; each job runs
:func:`~.stages.run_chain` over its slot and its 16-byte completion is queued, and the
queue is written with one ``os.write`` when the input runs dry, after every
:data:`FLUSH_EVERY` jobs, or after any job of :data:`LARGE_JOB` bytes or more (so a large
job's completion is not held back behind later ones).

It exits when it reads STOP or end-of-file on its request pipe (the parent closed it or
died), so a worker never outlives its engine.  SIGINT is ignored: Ctrl-C in a terminal
reaches the whole process group, and shutting workers down is the parent's job.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import traceback
from typing import Any

from .errors import IntegrityError, Status
from .protocol import COMPLETION, HELLO_JOB_ID, REQUEST, REQUEST_SIZE, MsgKind
from .shm import attach_segment
from .stages import Job, Stage, chain_kind, run_chain
from .xts import XtsCipher

log = logging.getLogger("dpu_emu.pipeline.worker")

READ_CHUNK = 1 << 16
FLUSH_EVERY = 16
LARGE_JOB = 32 * 1024
_unpack_request = REQUEST.struct.unpack_from
_pack_completion = COMPLETION.struct.pack
_STAGE_BY_VALUE = {int(s): s for s in Stage}


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Worker:
    def __init__(self, segment: str) -> None:
        self.mapping = attach_segment(segment)
        self.view = memoryview(self.mapping)
        self._anchor: Any = ctypes.c_char.from_buffer(self.mapping)
        self.base = ctypes.addressof(self._anchor)
        self.ciphers: dict[int, XtsCipher] = {}
        self.chains: dict[bytes, tuple[Stage, ...]] = {}     # descriptor stage bytes -> chain

    def close(self) -> None:
        for cipher in self.ciphers.values():
            cipher.close()
        self.ciphers.clear()
        del self._anchor
        self.view.release()
        try:
            self.mapping.close()
        except BufferError:
            pass

    def run_job(self, fields: tuple[Any, ...]) -> bytes:
        (_, nstages, stage_bytes, job_id, key_id, length, unit_size, capacity, meta_capacity,
         data_off, meta_off, tweak_lo, tweak_hi) = fields
        try:
            stages = self.chains.get(stage_bytes)
            if stages is None:
                stages = self.chains[stage_bytes] = tuple(_STAGE_BY_VALUE[b] for b in stage_bytes[:nstages])
            job = Job(stages, unit_size, key_id, tweak_lo | (tweak_hi << 64))
            cipher = None
            if chain_kind(stages)[1]:
                cipher = self.ciphers.get(key_id)
                if cipher is None:
                    return self._fail(job_id, Status.INVALID_JOB, f"unknown pipeline key id {key_id}",
                                      data_off, capacity)
            view = self.view
            data = view[data_off:data_off + length]
            meta = view[meta_off:meta_off + meta_capacity]
            try:
                run_chain(job, data, meta, cipher, address=self.base + data_off)
            finally:
                data.release()
                meta.release()
        except IntegrityError as exc:
            return _pack_completion(job_id, Status.INTEGRITY_ERROR, exc.unit)
        except Exception as exc:
            text = "".join(traceback.format_exception(exc))
            log.error("pipeline job %d failed in worker %d: %s", job_id, os.getpid(), exc)
            return self._fail(job_id, Status.WORKER_ERROR, text, data_off, capacity)
        return _pack_completion(job_id, Status.OK, 0)

    def _fail(self, job_id: int, status: Status, text: str, data_off: int, capacity: int) -> bytes:
        """Put an error text in the job's own slot; the completion says how long it is."""
        raw = text.encode("utf-8", "replace")[:capacity]
        self.view[data_off:data_off + len(raw)] = raw
        return _pack_completion(job_id, status, len(raw))


def worker_main(index: int, segment: str, req_fd: int, cpl_fd: int, log_level: int = logging.WARNING) -> None:
    """Serve one engine until STOP or end-of-file on ``req_fd``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=f"%(asctime)s pipeline-worker-{index} %(levelname)s %(message)s")
    worker = _Worker(segment)
    try:
        _write_all(cpl_fd, _pack_completion(HELLO_JOB_ID, Status.OK, os.getpid()))
        _serve(worker, req_fd, cpl_fd)
    except BrokenPipeError:
        pass                      # the parent went away: nobody to report to
    finally:
        worker.close()
        os.close(req_fd)
        os.close(cpl_fd)


def command(index: int, segment: str, req_fd: int, cpl_fd: int, log_level: int) -> list[str]:
    """The argv that starts a worker (``-c`` rather than ``-m``: no double import of this module)."""
    return [sys.executable, "-c", LAUNCHER, str(index), segment, str(req_fd), str(cpl_fd), str(log_level)]


LAUNCHER = "import sys; from dpu_emu.pipeline.worker import main; sys.exit(main(sys.argv[1:]))"


def main(argv: list[str]) -> int:
    """Command-line entry: ``index segment request-fd completion-fd log-level``."""
    index, segment, req_fd, cpl_fd, log_level = argv
    worker_main(int(index), segment, int(req_fd), int(cpl_fd), int(log_level))
    return 0


def _serve(worker: _Worker, req_fd: int, cpl_fd: int) -> None:
    pending = bytearray()
    out = bytearray()
    while True:
        chunk = os.read(req_fd, READ_CHUNK)
        if not chunk:
            return
        pending += chunk
        pos, end, jobs = 0, len(pending), 0
        while end - pos >= REQUEST_SIZE:
            fields = _unpack_request(pending, pos)
            kind, length = fields[0], fields[5]
            if kind == MsgKind.JOB:
                pos += REQUEST_SIZE
                out += worker.run_job(fields)
                jobs += 1
                if jobs % FLUSH_EVERY == 0 or length >= LARGE_JOB:
                    _write_all(cpl_fd, out)
                    out.clear()
            elif kind == MsgKind.ADD_KEY:
                if end - pos < REQUEST_SIZE + length:
                    break         # the key bytes have not all arrived yet
                key = bytes(pending[pos + REQUEST_SIZE:pos + REQUEST_SIZE + length])
                pos += REQUEST_SIZE + length
                old = worker.ciphers.pop(fields[4], None)
                if old is not None:
                    old.close()
                worker.ciphers[fields[4]] = XtsCipher(key)
            elif kind == MsgKind.DROP_KEY:
                pos += REQUEST_SIZE
                cipher = worker.ciphers.pop(fields[4], None)
                if cipher is not None:
                    cipher.close()
            elif kind == MsgKind.STOP:
                if out:
                    _write_all(cpl_fd, out)
                return
            else:
                raise RuntimeError(f"pipeline worker: unknown message kind {kind}")
        del pending[:pos]
        if out:
            _write_all(cpl_fd, out)
            out.clear()
