"""Helpers for the integration tests: run a coroutine bounded in time, data patterns,
and PDU counters hooked onto a host queue's sans-IO connection."""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

from nvmeof.host import HostQueue

T = TypeVar("T")
DEFAULT_TEST_TIMEOUT_S = 30.0
LOOPBACK = "127.0.0.1"
NSID = 1
BLOCK = 512
_STAMP = struct.Struct("<QQ")


def run(coro: Coroutine[Any, Any, T], timeout: float = DEFAULT_TEST_TIMEOUT_S) -> T:
    """Run ``coro`` in a fresh event loop; fail with TimeoutError after ``timeout``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def pattern(tag: int, length: int, salt: int = 0) -> bytes:
    """Recognisable, position-dependent-enough data: a 16-byte stamp repeated."""
    stamp = _STAMP.pack(tag, salt ^ 0x5A5A5A5A5A5A5A5A)
    reps, rest = divmod(length, len(stamp))
    return stamp * reps + stamp[:rest]


def count_sent_pdus(queue: HostQueue) -> Counter[int]:
    """Count PDUs the host sends on ``queue`` by type (first header byte)."""
    counts: Counter[int] = Counter()
    conn = queue.conn
    original = conn.pdu

    def counting(header: bytes | bytearray, data: Any = None, extra_flags: int = 0) -> None:
        counts[header[0]] += 1
        original(header, data, extra_flags)

    conn.pdu = counting  # type: ignore[method-assign]
    return counts


def count_received_pdus(queue: HostQueue) -> Counter[int]:
    """Count PDUs the host receives on ``queue`` by type."""
    counts: Counter[int] = Counter()
    conn = queue.conn
    original = conn.handle_pdu

    def counting(pdu: Any, events: list[Any]) -> None:
        counts[pdu.pdu_type] += 1
        original(pdu, events)

    conn.handle_pdu = counting  # type: ignore[method-assign]
    return counts
