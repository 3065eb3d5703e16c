"""The stored form of one KV-cache block: a fixed header, then every layer's tensors.

Value layout (all integers little-endian)::

    offset size field
         0    4 magic            b"CTKV"
         4    2 version          FORMAT_VERSION
         6    1 dtype            DType code
         7    1 tensors/layer    2 for (key, value)
         8    2 layers
        10    1 ndim             dimensions of each tensor (<= MAX_NDIM)
        11    1 reserved         0
        12    4 part size        bytes per stored part (every part but the last is full)
        16    2 parts            how many parts the value was split into
        18    2 reserved         0
        20    8 payload length
        28   16 block key        the key the block was stored under
        44    4 CRC32C           of the header (with this field zero) and the payload
        48   24 shape            MAX_NDIM x u32, unused dimensions 0
        72      payload          layer 0 tensor 0, layer 0 tensor 1, layer 1 tensor 0, ...

Every tensor of a block has the same shape and dtype, in C order.  The value is
``header || payload``, cut into parts of ``part size`` bytes.  :func:`decode` returns
None - a cache miss - for anything that is not exactly the block asked for: wrong magic,
version, key, layout, length, or a CRC mismatch.  Corrupted or mismatched data is never
handed back.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from math import prod
from typing import NamedTuple

import crc32c

from .keys import KEY_SIZE

FORMAT_MAGIC = b"CTKV"
FORMAT_VERSION = 1
MAX_NDIM = 6
KV_TENSORS_PER_LAYER = 2  # a key tensor and a value tensor
MAX_LAYERS = 0xFFFF
MAX_PARTS = 0xFFFF
CRC_SEED = 0

_FIXED = struct.Struct("<4sHBBHBBIHHQ16sI")
_SHAPE = struct.Struct(f"<{MAX_NDIM}I")
HEADER_SIZE = _FIXED.size + _SHAPE.size
CRC_OFFSET = 44
CRC_FIELD = struct.Struct("<I")
assert _FIXED.size == 48 and HEADER_SIZE == 72, "the header layout changed: bump FORMAT_VERSION"
assert _FIXED.pack(b"", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b"", 0xFFFFFFFF)[CRC_OFFSET:CRC_OFFSET + 4] == b"\xff" * 4


class DType(IntEnum):
    """Element types of cached tensors (the codes are stored: never renumber)."""

    FLOAT32 = 1
    FLOAT16 = 2
    BFLOAT16 = 3
    FLOAT64 = 4
    INT8 = 5
    UINT8 = 6
    FLOAT8_E4M3FN = 7
    FLOAT8_E5M2 = 8

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self]


ITEMSIZE: dict[DType, int] = {
    DType.FLOAT32: 4, DType.FLOAT16: 2, DType.BFLOAT16: 2, DType.FLOAT64: 8,
    DType.INT8: 1, DType.UINT8: 1, DType.FLOAT8_E4M3FN: 1, DType.FLOAT8_E5M2: 1,
}


@dataclass(frozen=True)
class BlockLayout:
    """What one block holds: ``layers`` x ``tensors_per_layer`` tensors of ``shape`` and ``dtype``."""

    layers: int
    dtype: DType
    shape: tuple[int, ...]
    tensors_per_layer: int = KV_TENSORS_PER_LAYER

    def __post_init__(self) -> None:
        if not 0 < self.layers <= MAX_LAYERS:
            raise ValueError(f"layers must be in 1..{MAX_LAYERS}")
        if not 0 < len(self.shape) <= MAX_NDIM or any(d <= 0 for d in self.shape):
            raise ValueError(f"shape must have 1..{MAX_NDIM} positive dimensions, got {self.shape}")
        if not 0 < self.tensors_per_layer <= 0xFF:
            raise ValueError("tensors_per_layer must be in 1..255")
        object.__setattr__(self, "dtype", DType(self.dtype))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def tensor_nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize

    @property
    def payload_nbytes(self) -> int:
        return self.layers * self.tensors_per_layer * self.tensor_nbytes

    def parts(self, part_size: int) -> int:
        """How many parts of ``part_size`` bytes one encoded block of this layout takes."""
        return -(-(HEADER_SIZE + self.payload_nbytes) // part_size)


@dataclass(frozen=True)
class KvBlock:
    """One cached block: its key, layout and payload (tensors back to back, layer-major)."""

    key: bytes
    layout: BlockLayout
    payload: bytes | bytearray | memoryview = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_SIZE:
            raise ValueError(f"a block key is {KEY_SIZE} bytes")
        if memoryview(self.payload).nbytes != self.layout.payload_nbytes:
            raise ValueError(f"payload is {memoryview(self.payload).nbytes} bytes; the layout says "
                             f"{self.layout.payload_nbytes}")

    def tensor_bytes(self, layer: int, index: int) -> memoryview:
        """The raw bytes of tensor ``index`` (0 = keys, 1 = values) of ``layer``."""
        if not (0 <= layer < self.layout.layers and 0 <= index < self.layout.tensors_per_layer):
            raise IndexError(f"no tensor ({layer}, {index}) in {self.layout}")
        size = self.layout.tensor_nbytes
        start = (layer * self.layout.tensors_per_layer + index) * size
        return memoryview(self.payload).cast("B")[start:start + size]

    @classmethod
    def from_tensors(cls, key: bytes, layout: BlockLayout,
                     tensors: Sequence[bytes | bytearray | memoryview]) -> KvBlock:
        """A block from its tensors' bytes, in layer-major order."""
        if len(tensors) != layout.layers * layout.tensors_per_layer:
            raise ValueError(f"{layout} holds {layout.layers * layout.tensors_per_layer} tensors, "
                             f"got {len(tensors)}")
        return cls(key, layout, b"".join(tensors))


class BlockHeader(NamedTuple):
    version: int
    layout: BlockLayout
    part_size: int
    parts: int
    payload_nbytes: int
    key: bytes
    crc: int


def encode(block: KvBlock, part_size: int) -> list[memoryview]:
    """The block's stored form, cut into parts of at most ``part_size`` bytes."""
    layout = block.layout
    n_parts = layout.parts(part_size)
    if part_size <= HEADER_SIZE:
        raise ValueError(f"part size {part_size} cannot hold the {HEADER_SIZE}-byte header")
    if n_parts > MAX_PARTS:
        raise ValueError(f"a block of {layout.payload_nbytes} bytes needs {n_parts} parts (max {MAX_PARTS})")
    value = bytearray(HEADER_SIZE + layout.payload_nbytes)
    _FIXED.pack_into(value, 0, FORMAT_MAGIC, FORMAT_VERSION, layout.dtype, layout.tensors_per_layer,
                     layout.layers, len(layout.shape), 0, part_size, n_parts, 0, layout.payload_nbytes,
                     block.key, 0)
    _SHAPE.pack_into(value, _FIXED.size, *layout.shape, *([0] * (MAX_NDIM - len(layout.shape))))
    value[HEADER_SIZE:] = block.payload
    CRC_FIELD.pack_into(value, CRC_OFFSET, crc32c.crc32c(value, CRC_SEED))
    view = memoryview(value)
    return [view[start:start + part_size] for start in range(0, len(value), part_size)]


def parse_header(head: bytes | bytearray | memoryview) -> BlockHeader | None:
    """The header at the start of part 0, or None when it is not one of ours."""
    if len(head) < HEADER_SIZE:
        return None
    (magic, version, dtype, per_layer, layers, ndim, _r1, part_size, parts, _r2, payload_nbytes, key,
     crc) = _FIXED.unpack_from(head, 0)
    if magic != FORMAT_MAGIC or version != FORMAT_VERSION or not 0 < ndim <= MAX_NDIM:
        return None
    if dtype not in DType._value2member_map_ or part_size <= HEADER_SIZE or parts == 0:
        return None
    try:
        layout = BlockLayout(layers, DType(dtype), _SHAPE.unpack_from(head, _FIXED.size)[:ndim], per_layer)
    except ValueError:
        return None
    if layout.payload_nbytes != payload_nbytes or layout.parts(part_size) != parts:
        return None
    return BlockHeader(version, layout, part_size, parts, payload_nbytes, key, crc)


def decode(key: bytes, parts: Sequence[bytes | bytearray | memoryview | None],
           expected: BlockLayout | None = None) -> KvBlock | None:
    """The block stored under ``key`` from its parts, or None (a miss) if any part is
    missing or anything does not check out."""
    if not parts or any(part is None for part in parts):
        return None
    header = parse_header(parts[0])  # type: ignore[arg-type]
    if header is None or header.key != key or len(parts) != header.parts:
        return None
    if expected is not None and header.layout != expected:
        return None
    value = bytearray().join(parts)  # type: ignore[arg-type]
    if len(value) != HEADER_SIZE + header.payload_nbytes:
        return None
    if any(len(part) != header.part_size for part in parts[:-1]):  # type: ignore[arg-type]
        return None
    CRC_FIELD.pack_into(value, CRC_OFFSET, 0)
    if crc32c.crc32c(value, CRC_SEED) != header.crc:
        return None
    return KvBlock(key, header.layout, memoryview(value)[HEADER_SIZE:])
