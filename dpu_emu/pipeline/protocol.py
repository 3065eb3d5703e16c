"""The fixed-size messages between the process engine and its workers, declared once.

Parent -> worker (one pipe per worker): a 64-byte :data:`REQUEST`; an ADD_KEY request is
followed by ``length`` bytes of key.  Worker -> parent (one pipe per worker): a 16-byte
:data:`COMPLETION`.  Both are little-endian and written whole (well under PIPE_BUF, so a
message is never interleaved), but readers still reassemble partial reads.
Payloads never travel here: they stay in the shared-memory slot named by its offsets.
"""

from __future__ import annotations

from enum import IntEnum

from nvmeof.wire.layout import Layout

from .stages import MAX_STAGES, Job


class MsgKind(IntEnum):
    JOB = 1        # run ``stages`` over the slot at data_off/meta_off
    ADD_KEY = 2    # key ``key_id``: ``length`` key bytes follow the header
    DROP_KEY = 3   # forget key ``key_id``
    STOP = 4       # finish what is queued before this message, then exit


REQUEST = Layout("PipelineRequest", 64, [
    ("kind", "B", 0),
    ("nstages", "B", 1),
    ("stages", f"{MAX_STAGES}s", 2),
    ("job_id", "I", 8),
    ("key_id", "I", 12),
    ("length", "I", 16),          # payload bytes (ADD_KEY: key bytes that follow)
    ("unit_size", "I", 20),       # 0 = whole payload is one data unit
    ("capacity", "I", 24),        # slot data bytes (room for an error text)
    ("meta_capacity", "I", 28),   # slot metadata bytes
    ("data_off", "Q", 32),        # offsets in the shared-memory segment
    ("meta_off", "Q", 40),
    ("tweak_lo", "Q", 48),        # XTS tweak of unit 0, low and high 64 bits
    ("tweak_hi", "Q", 56),
])

COMPLETION = Layout("PipelineCompletion", 16, [
    ("job_id", "I", 0),
    ("status", "B", 4),           # errors.Status
    ("extra", "Q", 8),            # INTEGRITY_ERROR: unit index; WORKER_ERROR: message bytes
])

HELLO_JOB_ID = 0                  # completion sent once by a worker when it is ready
JOB_ID_LIMIT = 1 << 32
_MASK64 = (1 << 64) - 1
_NO_STAGES = bytes(MAX_STAGES)

REQUEST_SIZE = REQUEST.size
COMPLETION_SIZE = COMPLETION.size
_pack_request = REQUEST.struct.pack
_pack_completion = COMPLETION.struct.pack


def job_request(job_id: int, job: Job, length: int, capacity: int, meta_capacity: int,
                data_off: int, meta_off: int) -> bytes:
    stages = bytes(job.stages)
    return _pack_request(MsgKind.JOB, len(stages), stages, job_id, job.key_id, length, job.unit_size,
                         capacity, meta_capacity, data_off, meta_off, job.tweak & _MASK64, job.tweak >> 64)


def add_key_request(key_id: int, key: bytes) -> bytes:
    return _pack_request(MsgKind.ADD_KEY, 0, _NO_STAGES, 0, key_id, len(key), 0, 0, 0, 0, 0, 0, 0) + key


def drop_key_request(key_id: int) -> bytes:
    return _pack_request(MsgKind.DROP_KEY, 0, _NO_STAGES, 0, key_id, 0, 0, 0, 0, 0, 0, 0, 0)


def stop_request() -> bytes:
    return _pack_request(MsgKind.STOP, 0, _NO_STAGES, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def completion(job_id: int, status: int, extra: int = 0) -> bytes:
    return _pack_completion(job_id, status, extra)
