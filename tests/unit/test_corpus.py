"""The malformed-input corpus (tests/corpus/entries) through the sans-IO controller stack.

Every entry is fed, message by message, to a :class:`QueueSession` over the Target of the
default device configuration (built with the inline pipeline engine, no listeners, no
sockets; an event loop runs only because the device's QoS admission schedules on one).  Values only the controller
knows (its CNTLID, the TTAG of an R2T) are patched in from its own answers.  The expected
C2HTermReq / completion status / plain close of each entry is asserted, the connection's
follow-up command must still succeed after a command-level error, and no handler may hit
an internal error (logged at ERROR by the session).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpu_emu import config as cfgmod
from dpu_emu.device import Device
from nvmeof.controller.model import Target
from nvmeof.controller.session import QueueSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import harness, make_corpus  # noqa: E402

ENTRIES = harness.load_entries()
MIN_ENTRIES = 200
SETTLE_ROUNDS = 8


class SansIoQueue:
    """One connection: a QueueSession, what it sent, whether it asked to be closed."""

    def __init__(self, target: Target) -> None:
        self.session = QueueSession(target, local_addr=("127.0.0.1", "4420"), peer_addr=("127.0.0.1", "1"))
        self.closed = False
        self.session.close = self._close
        self.answers = harness.Answers()
        self._pending = bytearray()

    def _close(self, reason: str) -> None:
        self.closed = True

    async def send(self, message: bytes) -> None:
        self.session.receive_data(message)
        await self.settle()

    async def settle(self) -> None:
        """Let completions scheduled on the loop (QoS admission, backends) arrive."""
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
        self.pull()

    def pull(self) -> None:
        self._pending += b"".join(bytes(p) for p in self.session.data_to_send())
        pdus, used = harness.split_pdus(self._pending)
        del self._pending[:used]
        for pdu in pdus:
            self.answers.add(pdu)

    def lost(self) -> None:
        self.session.connection_lost()
        self.closed = True


async def run_entry(target: Target, entry: dict[str, Any]) -> tuple[SansIoQueue, bool, bool]:
    """-> (queue, follow-up sent, closed before the harness cleaned up)."""
    cntlid = None
    association = None
    if entry.get("association"):
        association = SansIoQueue(target)
        for msg in harness.messages(entry, "association"):
            await association.send(msg)
        cntlid = harness.cntlid_from(association.answers)
    q = SansIoQueue(target)
    for i, msg in enumerate(harness.messages(entry)):
        if q.closed:
            break
        ttags = q.answers.r2t_ttags
        if harness.wants_ttag(entry, i):
            assert ttags, f"{entry['id']}: no R2T before message {i}"
        await q.send(harness.patch(entry, i, msg, cntlid=cntlid, ttag=ttags[-1] if ttags else None))
    if entry.get("half_close") and not q.closed:
        q.lost()  # the edge closes on EOF (eof_received returns False)
    followup_sent = False
    if "followup" in entry and not q.closed:
        await q.send(harness.patch(entry, "followup", bytes.fromhex(entry["followup"]), cntlid=cntlid, ttag=None))
        followup_sent = True
    assert not q._pending, "the controller's output ends inside a PDU"
    closed = q.closed
    if not q.closed:
        q.lost()
    if association is not None:
        association.lost()
    return q, followup_sent, closed


@pytest.fixture(scope="module")
def device() -> Iterator[tuple[asyncio.AbstractEventLoop, Target]]:
    cfg = cfgmod.with_overrides(cfgmod.default_config(), address="127.0.0.1", port=0, discovery_port=0)
    cfg["pipeline"] = {"engine": "inline"}
    loop = asyncio.new_event_loop()
    dev = Device(cfg)
    try:
        yield loop, dev.target
    finally:
        loop.run_until_complete(dev.stop())
        loop.close()


def test_corpus_is_large_enough_and_up_to_date() -> None:
    assert len(ENTRIES) >= MIN_ENTRIES
    assert make_corpus.main(["--check"]) == 0
    for entry in ENTRIES:
        assert entry["description"] and entry["spec"] and entry["send"]
        assert len([k for k in ("termreq", "status", "close") if k in entry["expect"]]) == 1
    assert len({e["id"] for e in ENTRIES}) == len(ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_corpus_entry(device: tuple[asyncio.AbstractEventLoop, Target], entry: dict[str, Any],
                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    loop, target = device
    q, followup_sent, closed = loop.run_until_complete(run_entry(target, entry))
    internal = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not internal, f"internal errors: {[r.getMessage() for r in internal]}"
    harness.check(entry, q.answers, closed=closed, followup_sent=followup_sent)
