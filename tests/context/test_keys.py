"""Block keys: chained prefix hashing, salts, part keys."""

from __future__ import annotations

import hashlib
import struct

import pytest

from context_tier.keys import (
    KEY_SIZE,
    ROOT_PARENT,
    BlockHasher,
    chain_key,
    namespace_salt,
    part_key,
    part_keys,
)

BLOCK = 16
SALT = namespace_salt("tiny-llama", tenant="acme", dtype="float32")


def tokens(n: int, start: int = 0) -> list[int]:
    return [(start + 7 * i) % 50_000 for i in range(n)]


def test_keys_are_16_bytes_one_per_full_block() -> None:
    keys = BlockHasher(SALT, BLOCK).block_keys(tokens(5 * BLOCK + 3))
    assert len(keys) == 5  # the partial tail block gets no key
    assert all(len(key) == KEY_SIZE == 16 for key in keys)
    assert len(set(keys)) == 5


def test_key_is_blake2b_of_salt_parent_and_token_ids() -> None:
    ids = tokens(BLOCK)
    expected = hashlib.blake2b(SALT + ROOT_PARENT + struct.pack(f"<{BLOCK}I", *ids), digest_size=16,
                               person=b"ctxtier.block").digest()
    assert BlockHasher(SALT, BLOCK).block_keys(ids) == [expected]
    second = tokens(BLOCK, start=3)
    assert BlockHasher(SALT, BLOCK).block_keys(ids + second)[1] == chain_key(SALT, expected, second)


def test_shared_prefix_shares_keys_and_nothing_after_the_divergence() -> None:
    hasher = BlockHasher(SALT, BLOCK)
    common = tokens(3 * BLOCK + 5)
    a = hasher.block_keys(common + tokens(4 * BLOCK, start=1))
    b = hasher.block_keys(common + tokens(4 * BLOCK, start=2))
    assert a[:3] == b[:3]  # the three blocks wholly inside the shared prefix
    assert not set(a[3:]) & set(b[3:])


def test_a_change_in_an_early_token_changes_every_later_key() -> None:
    hasher = BlockHasher(SALT, BLOCK)
    ids = tokens(6 * BLOCK)
    changed = list(ids)
    changed[1] += 1
    assert not set(hasher.block_keys(ids)) & set(hasher.block_keys(changed))


@pytest.mark.parametrize("other", [
    namespace_salt("tiny-llama", tenant="globex", dtype="float32"),
    namespace_salt("tiny-llama-v2", tenant="acme", dtype="float32"),
    namespace_salt("tiny-llama", tenant="acme", dtype="bfloat16"),
    namespace_salt("tiny-llama", tenant="acme", dtype="float32", revision="r2"),
    namespace_salt("tiny-llama", tenant="acme", dtype="float32", extra={"tp_rank": "1"}),
])
def test_other_tenants_and_models_get_disjoint_keys(other: bytes) -> None:
    ids = tokens(8 * BLOCK)
    assert other != SALT
    ours = set(BlockHasher(SALT, BLOCK).block_keys(ids))
    theirs = BlockHasher(other, BLOCK).block_keys(ids)
    assert not ours & set(theirs)
    assert not ours & {part_key(key, i) for key in theirs for i in range(1, 4)}


def test_salt_fields_are_unambiguous() -> None:
    assert namespace_salt("ab", tenant="c") != namespace_salt("a", tenant="bc")
    assert namespace_salt("m", tenant="t") == namespace_salt("m", tenant="t")
    assert len(SALT) == 16


def test_part_keys() -> None:
    key = BlockHasher(SALT, BLOCK).block_keys(tokens(BLOCK))[0]
    parts = part_keys(key, 5)
    assert parts[0] == key and len(set(parts)) == 5 and all(len(p) == KEY_SIZE for p in parts)
    with pytest.raises(ValueError):
        part_key(key[:8], 1)


def test_token_tensors_and_streams() -> None:
    np = pytest.importorskip("numpy")
    hasher = BlockHasher(SALT, BLOCK)
    ids = tokens(3 * BLOCK)
    assert hasher.block_keys(np.array(ids, dtype=np.int64)) == hasher.block_keys(ids)
    streamed = list(hasher.iter_keys(ids[i:i + BLOCK] for i in range(0, len(ids), BLOCK)))
    assert streamed == hasher.block_keys(ids)
    assert hasher.block_keys(ids, limit=2) == hasher.block_keys(ids)[:2]


@pytest.mark.parametrize("bad", [[-1] * BLOCK, [2**32] * BLOCK])
def test_token_ids_out_of_range_are_refused(bad: list[int]) -> None:
    with pytest.raises(ValueError):
        BlockHasher(SALT, BLOCK).block_keys(bad)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        BlockHasher(b"short", BLOCK)
    with pytest.raises(ValueError):
        BlockHasher(SALT, 0)
