"""Protected block namespaces: per-block CRC32C tags and AES-256-XTS through the offload pipeline.

* :mod:`.crc_table`: the per-LBA tags (RAM or a sidecar file);
* :mod:`.backend`: :class:`ProtectedBlockBackend`, the controller's backend port over a
  block store, a tag table and an engine;
* :mod:`.build`: the builders and config keys the device uses.
"""

from __future__ import annotations

from .backend import (
    INTERNAL_ERROR,
    INTERNAL_ERROR_DNR,
    READ_CHAIN_ENCRYPTED,
    READ_CHAIN_PLAIN,
    READ_ERROR,
    WRITE_CHAIN_ENCRYPTED,
    WRITE_CHAIN_PLAIN,
    ProtectedBlockBackend,
    ProtectedStats,
)
from .build import (
    EngineKind,
    ProtectionError,
    build_engine,
    is_protected,
    namespace_backend,
    open_crc_table,
    open_key_manager,
    protected_block_backend,
    start_engine,
    uses_keys,
    validate_namespace_protection,
    validate_pipeline_config,
)
from .crc_table import (
    TAG_BYTES,
    WRITTEN,
    CrcTable,
    CrcTableError,
    FileCrcTable,
    RamCrcTable,
    Run,
    TagCorruption,
    decode_tags,
    is_zero,
    pack_tags,
    sidecar_path,
)

__all__ = [
    "INTERNAL_ERROR", "INTERNAL_ERROR_DNR", "READ_CHAIN_ENCRYPTED", "READ_CHAIN_PLAIN", "READ_ERROR", "TAG_BYTES",
    "WRITE_CHAIN_ENCRYPTED", "WRITE_CHAIN_PLAIN", "WRITTEN", "CrcTable", "CrcTableError", "EngineKind",
    "FileCrcTable", "ProtectedBlockBackend", "ProtectedStats", "ProtectionError", "RamCrcTable", "Run",
    "TagCorruption", "build_engine", "decode_tags", "is_protected", "is_zero", "namespace_backend",
    "open_crc_table", "open_key_manager", "pack_tags", "protected_block_backend", "sidecar_path", "start_engine",
    "uses_keys", "validate_namespace_protection", "validate_pipeline_config",
]
