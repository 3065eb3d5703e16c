"""The crash tests' verifiers catch what they must (lost flushed data, garbage, stale values)."""

from __future__ import annotations

import pytest

from .models import BlockModel, KvModel, Violation, block_payload, kv_value

BS = 512


def test_block_model_accepts_flushed_or_later_and_rejects_the_rest() -> None:
    m = BlockModel(4, BS)
    assert m.check(0, bytes(BS)) == 0  # never written: zeroes are fine
    gens, data = m.begin_write(0, 2)
    m.write_acked(0, gens, fua=False)
    m.flush_acked(list(m.acked))
    later, _ = m.begin_write(0, 1)  # attempted, never acknowledged
    assert m.check(0, block_payload(0, gens[0], BS)) == gens[0]
    assert m.check(0, block_payload(0, later[0], BS)) == later[0]
    with pytest.raises(Violation, match="zeroes"):
        m.check(1, bytes(BS))
    with pytest.raises(Violation, match="garbage"):
        m.check(1, block_payload(0, gens[1], BS))  # another LBA's block
    damaged = bytearray(block_payload(1, gens[1], BS))
    damaged[100] ^= 1
    with pytest.raises(Violation, match="damaged"):
        m.check(1, bytes(damaged))
    newer, _ = m.begin_write(2, 1)
    m.write_acked(2, newer, fua=True)  # FUA: durable at once
    newest, _ = m.begin_write(2, 1)
    m.write_acked(2, newest, fua=True)
    with pytest.raises(Violation, match="older"):
        m.check(2, block_payload(2, newer[0], BS))


def test_kv_model_accepts_flushed_or_later_and_rejects_the_rest() -> None:
    m = KvModel(2)
    m.check(0, None)
    seq, value = m.begin(0, 10)
    assert value is not None
    m.acked_op(0, seq)
    m.flush_acked(list(m.acked))
    with pytest.raises(Violation, match="missing"):
        m.check(0, None)
    m.check(0, value)
    dseq, _ = m.begin(0, None)  # a Delete in flight at the crash: absence is allowed
    m.check(0, None)
    m.acked_op(0, dseq)
    m.flush_acked(list(m.acked))
    with pytest.raises(Violation, match="older"):
        m.check(0, value)
    with pytest.raises(Violation, match="garbage"):
        m.check(1, b"not ours")
    with pytest.raises(Violation, match="damaged"):
        m.check(0, kv_value(0, seq, 11))
