"""The offload pipeline: CRC32C and AES-256-XTS stages, and the engines that run them.

See :mod:`dpu_emu.pipeline.engine` for the theory of operation.
"""

from __future__ import annotations

from .engine import Completion, Done, Engine, EngineStats
from .errors import (
    EngineClosedError,
    IntegrityError,
    InvalidJobError,
    PipelineError,
    Status,
    WorkerDiedError,
    WorkerError,
    XtsError,
)
from .inline import InlineEngine
from .process import ProcessEngine, default_workers
from .shm import DEFAULT_SLOT_CLASSES, SEGMENT_PREFIX, Lease, SlotClass
from .stages import (
    DECRYPT_AND_VERIFY,
    PROTECT_AND_ENCRYPT,
    VERIFY_AND_ENCRYPT,
    Job,
    Stage,
    crc32c_units,
    crc32c_value,
    run_chain,
    verify_crc32c_units,
    xts_decrypt,
    xts_encrypt,
)
from .xts import XtsCipher, check_xts_key, generate_xts_key, tweak_from_bytes

__all__ = [
    "DECRYPT_AND_VERIFY", "DEFAULT_SLOT_CLASSES", "PROTECT_AND_ENCRYPT", "SEGMENT_PREFIX", "VERIFY_AND_ENCRYPT",
    "Completion", "Done", "Engine", "EngineClosedError", "EngineStats", "InlineEngine", "IntegrityError",
    "InvalidJobError", "Job", "Lease", "PipelineError", "ProcessEngine", "SlotClass", "Stage", "Status",
    "WorkerDiedError", "WorkerError", "XtsCipher", "XtsError", "check_xts_key", "crc32c_units", "crc32c_value",
    "default_workers", "generate_xts_key", "run_chain", "tweak_from_bytes", "verify_crc32c_units",
    "xts_decrypt", "xts_encrypt",
]
