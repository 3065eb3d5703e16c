"""Pipeline outcomes: one status enum for completions, one exception class per status.

The sans-IO datapath receives a :class:`Status` in every completion and maps it to an
NVMe status; the async API raises the matching :class:`PipelineError` subclass instead.
Suggested NVMe mapping (the datapath decides): INTEGRITY_ERROR -> Media Errors /
End-to-end Guard Check Error (0x82) on read, Data Transfer Error (0x04) on write;
WORKER_DIED, WORKER_ERROR, ENGINE_CLOSED -> Internal Error (0x06), not DNR for
WORKER_DIED (a retry reaches the restarted worker); INVALID_JOB -> Internal Error, DNR.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """Outcome of one pipeline job (travels in the completion descriptor as one byte)."""

    OK = 0
    INTEGRITY_ERROR = 1   # a CRC32C verify stage found a mismatch; ``unit`` says where
    WORKER_DIED = 2       # the worker process died with the job in flight
    INVALID_JOB = 3       # the worker refused the job (e.g. its key was unregistered meanwhile)
    WORKER_ERROR = 4      # unexpected exception in the worker; ``message`` has its traceback
    ENGINE_CLOSED = 5     # the engine shut down before the job ran


class PipelineError(Exception):
    """Base of every pipeline failure; ``status`` is the :class:`Status` it stands for."""

    status: Status = Status.WORKER_ERROR


class IntegrityError(PipelineError):
    """CRC32C mismatch: ``unit`` is the index of the first data unit that failed."""

    status = Status.INTEGRITY_ERROR

    def __init__(self, unit: int, expected: int | None = None, actual: int | None = None) -> None:
        detail = ""
        if expected is not None and actual is not None:
            detail = f": expected {expected:#010x}, computed {actual:#010x}"
        super().__init__(f"CRC32C mismatch in data unit {unit}{detail}")
        self.unit = unit
        self.expected = expected
        self.actual = actual


class WorkerDiedError(PipelineError):
    status = Status.WORKER_DIED


class InvalidJobError(PipelineError):
    status = Status.INVALID_JOB


class WorkerError(PipelineError):
    status = Status.WORKER_ERROR


class EngineClosedError(PipelineError):
    status = Status.ENGINE_CLOSED


class XtsError(PipelineError):
    """OpenSSL reported a failure (or libcrypto 3 is not available)."""

    status = Status.WORKER_ERROR


_BY_STATUS: dict[Status, type[PipelineError]] = {
    Status.WORKER_DIED: WorkerDiedError,
    Status.INVALID_JOB: InvalidJobError,
    Status.WORKER_ERROR: WorkerError,
    Status.ENGINE_CLOSED: EngineClosedError,
}


def error_for(status: Status, message: str, unit: int = 0) -> PipelineError:
    """The exception the async API raises for a failed completion."""
    if status == Status.INTEGRITY_ERROR:
        return IntegrityError(unit)
    if status == Status.OK:
        raise ValueError("a successful completion has no error")
    return _BY_STATUS[status](message or status.name.lower().replace("_", " "))
