"""Storage backends for namespaces: block stores (NVM command set)."""

from dpu_emu.storage.block import (
    BlockRangeError,
    BlockStore,
    BlockStoreClosedError,
    BlockStoreKind,
    BlockStoreSizeError,
    BlockStoreStats,
    FileBlockStore,
    RamBlockStore,
    open_block_store,
)

__all__ = [
    "BlockRangeError",
    "BlockStore",
    "BlockStoreClosedError",
    "BlockStoreKind",
    "BlockStoreSizeError",
    "BlockStoreStats",
    "FileBlockStore",
    "RamBlockStore",
    "open_block_store",
]
