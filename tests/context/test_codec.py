"""The stored block format: round trip, splitting, and every defect is a miss."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from context_tier.codec import (
    CRC_OFFSET,
    FORMAT_MAGIC,
    FORMAT_VERSION,
    HEADER_SIZE,
    BlockLayout,
    DType,
    KvBlock,
    decode,
    encode,
    parse_header,
)
from context_tier.keys import BlockHasher, namespace_salt

LAYOUT = BlockLayout(layers=3, dtype=DType.FLOAT16, shape=(1, 2, 8, 16))
KEY, OTHER_KEY = BlockHasher(namespace_salt("m"), 4).block_keys(list(range(8)))


def block(layout: BlockLayout = LAYOUT, key: bytes = KEY) -> KvBlock:
    return KvBlock(key, layout, os.urandom(layout.payload_nbytes))


def test_round_trip_in_one_part() -> None:
    original = block()
    parts = encode(original, 1 << 20)
    assert len(parts) == 1 and len(parts[0]) == HEADER_SIZE + LAYOUT.payload_nbytes
    assert bytes(parts[0][:4]) == FORMAT_MAGIC
    decoded = decode(KEY, [bytes(p) for p in parts], LAYOUT)
    assert decoded is not None and decoded.layout == LAYOUT
    assert bytes(decoded.payload) == bytes(original.payload)
    assert bytes(decoded.tensor_bytes(2, 1)) == bytes(original.tensor_bytes(2, 1))


def test_header_fields() -> None:
    header = parse_header(bytes(encode(block(), 1 << 20)[0]))
    assert header is not None
    assert header.version == FORMAT_VERSION and header.key == KEY and header.parts == 1
    assert header.layout == LAYOUT and header.payload_nbytes == LAYOUT.payload_nbytes


@pytest.mark.parametrize("part_size", [HEADER_SIZE + 1, 100, 1000, 1536, 1600])
def test_values_larger_than_a_part_are_split_and_reassembled(part_size: int) -> None:
    original = block()
    parts = encode(original, part_size)
    total = HEADER_SIZE + LAYOUT.payload_nbytes
    assert len(parts) == LAYOUT.parts(part_size) == -(-total // part_size)
    assert all(len(p) == part_size for p in parts[:-1]) and 0 < len(parts[-1]) <= part_size
    decoded = decode(KEY, [bytes(p) for p in parts])
    assert decoded is not None and bytes(decoded.payload) == bytes(original.payload)


def test_a_missing_part_is_a_miss() -> None:
    parts: list[bytes | None] = [bytes(p) for p in encode(block(), 500)]
    assert len(parts) > 2
    for index in range(len(parts)):
        holed = list(parts)
        holed[index] = None
        assert decode(KEY, holed) is None
    assert decode(KEY, parts[:-1]) is None  # a part short
    assert decode(KEY, []) is None


def test_parts_out_of_order_are_a_miss() -> None:
    parts = [bytes(p) for p in encode(block(), 500)]
    swapped = [parts[0], parts[2], parts[1], *parts[3:]]
    assert decode(KEY, swapped) is None


def test_a_value_under_another_key_is_a_miss() -> None:
    parts = [bytes(p) for p in encode(block(), 1 << 20)]
    assert decode(OTHER_KEY, parts) is None


@pytest.mark.parametrize("other", [
    BlockLayout(3, DType.BFLOAT16, (1, 2, 8, 16)),
    BlockLayout(3, DType.FLOAT16, (1, 2, 16, 8)),
    BlockLayout(4, DType.FLOAT16, (1, 2, 8, 12)),
])
def test_another_layout_is_a_miss_when_one_is_expected(other: BlockLayout) -> None:
    parts = [bytes(p) for p in encode(block(), 1 << 20)]
    assert decode(KEY, parts, other) is None
    assert decode(KEY, parts) is not None


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, HEADER_SIZE + LAYOUT.payload_nbytes - 1), flip=st.integers(1, 255))
def test_any_corrupted_byte_is_a_miss(position: int, flip: int) -> None:
    value = bytearray(encode(block(), 1 << 20)[0])
    value[position] ^= flip
    assert decode(KEY, [bytes(value)]) is None


def test_truncated_and_foreign_values_are_a_miss() -> None:
    value = bytes(encode(block(), 1 << 20)[0])
    assert decode(KEY, [value[:-1]]) is None
    assert decode(KEY, [value[:HEADER_SIZE - 1]]) is None
    assert decode(KEY, [b"not a block at all" * 10]) is None
    newer = bytearray(value)
    struct.pack_into("<H", newer, 4, FORMAT_VERSION + 1)
    assert parse_header(newer) is None
    unknown_dtype = bytearray(value)
    unknown_dtype[6] = 200
    assert parse_header(unknown_dtype) is None


def test_crc_covers_the_header() -> None:
    value = bytearray(encode(block(), 1 << 20)[0])
    assert value[CRC_OFFSET:CRC_OFFSET + 4] != b"\0\0\0\0"
    struct.pack_into("<I", value, 12, 1 << 20 | 1)  # a different (still consistent) part size
    assert parse_header(value) is not None and decode(KEY, [bytes(value)]) is None


def test_layout_and_block_validation() -> None:
    with pytest.raises(ValueError):
        BlockLayout(0, DType.FLOAT32, (1,))
    with pytest.raises(ValueError):
        BlockLayout(1, DType.FLOAT32, (1, 2, 3, 4, 5, 6, 7))
    with pytest.raises(ValueError):
        BlockLayout(1, DType.FLOAT32, (0, 4))
    with pytest.raises(ValueError):
        KvBlock(KEY, LAYOUT, b"short")
    with pytest.raises(ValueError):
        KvBlock(KEY[:15], LAYOUT, bytes(LAYOUT.payload_nbytes))
    with pytest.raises(ValueError):
        encode(block(), HEADER_SIZE)
    tensors = [os.urandom(LAYOUT.tensor_nbytes) for _ in range(6)]
    made = KvBlock.from_tensors(KEY, LAYOUT, tensors)
    assert bytes(made.tensor_bytes(1, 0)) == tensors[2]
    with pytest.raises(IndexError):
        made.tensor_bytes(3, 0)
