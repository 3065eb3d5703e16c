"""Block keys: a chained hash of the token prefix, salted per model and tenant.

Theory of operation
-------------------
A sequence of token ids is cut into blocks of ``block_tokens`` tokens (only full blocks
are cached; the tail shorter than a block is always recomputed).  Block *i*'s key is::

    key[i] = BLAKE2b-128(person="ctxtier.block", salt || key[i-1] || tokens[i*B:(i+1)*B] as u32le)
    key[-1] = 16 zero bytes

so key *i* depends on every token 0 .. (i+1)*B: two prompts that share a prefix share the
keys of the blocks inside it, and nothing else.  The ``salt`` (16 bytes, from
:func:`namespace_salt`) names the model (and its revision and dtype) and the tenant: two
models or two tenants never produce the same key for the same tokens.  Every field of the
hashed string has a fixed width, so the encoding is unambiguous.

A block whose encoded value is larger than the store's maximum value size is split into
parts; part 0 lives under the block key itself and part *n* under
``BLAKE2b-128(person="ctxtier.part", block_key || n as u32le)``.

Keys are 16 bytes: the maximum NVMe-KV key size (and what the dpu-emu KV namespace takes).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

KEY_SIZE = 16  # bytes: NVMe-KV's largest key, and BLAKE2b's digest_size here
SALT_SIZE = KEY_SIZE
ROOT_PARENT = bytes(KEY_SIZE)  # the "parent" of block 0
PERSON_SALT = b"ctxtier.salt"
PERSON_BLOCK = b"ctxtier.block"
PERSON_PART = b"ctxtier.part"
TOKEN_FORMAT = "I"  # token ids are hashed as unsigned 32-bit little-endian integers
MAX_TOKEN_ID = 0xFFFFFFFF
PART_INDEX = struct.Struct("<I")
FIELD_LENGTH = struct.Struct("<I")


class SupportsToList(Protocol):
    """A tensor or array of token ids (torch.Tensor, numpy.ndarray)."""

    def tolist(self) -> list[int]: ...


Tokens = Sequence[int] | SupportsToList


def token_list(tokens: Tokens) -> list[int]:
    if isinstance(tokens, list):
        return tokens
    tolist = getattr(tokens, "tolist", None)
    values = tolist() if callable(tolist) else list(tokens)  # type: ignore[arg-type]
    if values and isinstance(values[0], list):
        raise ValueError("token ids must be one-dimensional (one sequence, no batch)")
    return [int(v) for v in values]


def _pack_tokens(tokens: Sequence[int]) -> bytes:
    try:
        return struct.pack(f"<{len(tokens)}{TOKEN_FORMAT}", *tokens)
    except struct.error as exc:
        raise ValueError(f"token ids must be integers in 0..{MAX_TOKEN_ID}: {exc}") from None


def namespace_salt(model: str, *, tenant: str = "", revision: str = "", dtype: str = "",
                   extra: Mapping[str, str] | None = None) -> bytes:
    """The 16-byte salt that separates one model (and revision, dtype) and tenant from another.

    Every attribute that changes the bytes of the KV cache belongs here (the model and its
    weights' revision, the cache dtype, a tensor-parallel rank or a LoRA adapter via
    ``extra``); the tenant keeps tenants apart even for one model.
    """
    fields = {"model": model, "tenant": tenant, "revision": revision, "dtype": dtype, **(extra or {})}
    digest = hashlib.blake2b(digest_size=SALT_SIZE, person=PERSON_SALT)
    for name in sorted(fields):
        for text in (name, fields[name]):
            raw = text.encode("utf-8")
            digest.update(FIELD_LENGTH.pack(len(raw)))
            digest.update(raw)
    return digest.digest()


def chain_key(salt: bytes, parent: bytes, tokens: Sequence[int]) -> bytes:
    """The key of the block holding ``tokens`` whose predecessor's key is ``parent``."""
    if len(salt) != SALT_SIZE or len(parent) != KEY_SIZE:
        raise ValueError(f"salt and parent must be {KEY_SIZE} bytes")
    digest = hashlib.blake2b(digest_size=KEY_SIZE, person=PERSON_BLOCK)
    digest.update(salt)
    digest.update(parent)
    digest.update(_pack_tokens(tokens))
    return digest.digest()


def part_key(block_key: bytes, index: int) -> bytes:
    """The key under which part ``index`` of a split block is stored (part 0: the block key)."""
    if len(block_key) != KEY_SIZE:
        raise ValueError(f"a block key is {KEY_SIZE} bytes, not {len(block_key)}")
    if index == 0:
        return block_key
    digest = hashlib.blake2b(digest_size=KEY_SIZE, person=PERSON_PART)
    digest.update(block_key)
    digest.update(PART_INDEX.pack(index))
    return digest.digest()


def part_keys(block_key: bytes, count: int) -> list[bytes]:
    return [part_key(block_key, index) for index in range(count)]


class BlockHasher:
    """Cuts token sequences into blocks of ``block_tokens`` and names each block."""

    def __init__(self, salt: bytes, block_tokens: int) -> None:
        if len(salt) != SALT_SIZE:
            raise ValueError(f"the salt must be {SALT_SIZE} bytes (use namespace_salt())")
        if block_tokens <= 0:
            raise ValueError("block_tokens must be positive")
        self.salt = salt
        self.block_tokens = block_tokens

    def full_blocks(self, n_tokens: int) -> int:
        return n_tokens // self.block_tokens

    def block_keys(self, tokens: Tokens, *, parent: bytes = ROOT_PARENT, limit: int | None = None) -> list[bytes]:
        """Keys of the full blocks of ``tokens`` (at most ``limit``), chained from ``parent``."""
        ids = token_list(tokens)
        count = self.full_blocks(len(ids)) if limit is None else min(limit, self.full_blocks(len(ids)))
        keys: list[bytes] = []
        for index in range(count):
            start = index * self.block_tokens
            parent = chain_key(self.salt, parent, ids[start:start + self.block_tokens])
            keys.append(parent)
        return keys

    def iter_keys(self, blocks: Iterable[Sequence[int]], *, parent: bytes = ROOT_PARENT) -> Iterable[bytes]:
        """Keys for an incoming stream of blocks (decode: one block at a time)."""
        for block in blocks:
            if len(block) != self.block_tokens:
                raise ValueError(f"a block holds {self.block_tokens} tokens, not {len(block)}")
            parent = chain_key(self.salt, parent, block)
            yield parent
