"""The whole malformed-input corpus against a running dpu-emu device over real sockets.

Each entry gets its own TCP connection (and, for I/O-queue entries, its own admin
association) and a deadline, so a hang fails that entry instead of the run.  Meanwhile a
healthy host (``nvmeof.host``) writes and reads back verified data the whole time and must
complete every one of its commands.  Afterwards the target still accepts a new
association that does I/O.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from pathlib import Path
from typing import Any

import nvmeof.host

from ._support import BLOCK, LOOPBACK, NSID, pattern, run
from .conftest import RunningDevice

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import harness  # noqa: E402
from corpus import wire as w  # noqa: E402

ENTRY_TIMEOUT_S = 10.0
READ_CHUNK = 65536
HEALTHY_BLOCKS = 8
HEALTHY_SLBA = 1 << 20  # far from the corpus' writes
HEALTHY_SLOTS = 64
MIN_HEALTHY_OPS_DURING_CORPUS = 10
RUN_TIMEOUT_S = 240.0


class LiveQueue:
    """One raw TCP connection to the target, with the controller's answers parsed as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.answers = harness.Answers()
        self.eof = False
        self._pending = bytearray()

    @classmethod
    async def open(cls, port: int) -> LiveQueue:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, message: bytes) -> None:
        if self.eof or self.writer.is_closing():
            return
        try:
            self.writer.write(message)
            await self.writer.drain()
        except (ConnectionError, BrokenPipeError):
            pass  # the controller already gave up on this connection: what it said is still read

    async def read_until(self, done: Any) -> None:
        """Read until ``done(answers)`` or EOF (the caller's deadline bounds the wait)."""
        while not done(self.answers) and not self.eof:
            try:
                chunk = await self.reader.read(READ_CHUNK)
            except ConnectionError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self._pending += chunk
            pdus, used = harness.split_pdus(self._pending)
            del self._pending[:used]
            for pdu in pdus:
                self.answers.add(pdu)

    def close(self) -> None:
        self.writer.close()


def _capsule_cids(msgs: list[bytes]) -> set[int]:
    return {struct.unpack_from("<H", m, 10)[0] for m in msgs if m[0] == w.CAPSULE_CMD and len(m) >= 12}


async def run_entry(port: int, entry: dict[str, Any]) -> tuple[LiveQueue, bool, bool]:
    """-> (queue, follow-up sent, closed by the controller)."""
    cntlid = None
    association = None
    try:
        if entry.get("association"):
            association = await LiveQueue.open(port)
            msgs = harness.messages(entry, "association")
            for m in msgs:
                await association.send(m)
            want = _capsule_cids(msgs)
            await association.read_until(lambda a: want <= set(a.completions))
            cntlid = harness.cntlid_from(association.answers)
        q = await LiveQueue.open(port)
        try:
            for i, msg in enumerate(harness.messages(entry)):
                if harness.wants_ttag(entry, i):
                    await q.read_until(lambda a: bool(a.r2t_ttags))
                if q.eof:
                    break
                ttags = q.answers.r2t_ttags
                await q.send(harness.patch(entry, i, msg, cntlid=cntlid, ttag=ttags[-1] if ttags else None))
            if entry.get("half_close") and not q.eof:
                q.writer.write_eof()
            expect = entry["expect"]
            followup_sent = False
            if "status" in expect:
                cid = expect["status"]["cid"]
                await q.read_until(lambda a: cid in a.completions or a.term is not None)
                if not q.eof and q.answers.term is None:
                    followup = bytes.fromhex(entry["followup"])
                    await q.send(harness.patch(entry, "followup", followup, cntlid=cntlid, ttag=None))
                    followup_sent = True
                    await q.read_until(lambda a: w.FOLLOWUP_CID in a.completions or a.term is not None)
            else:
                await q.read_until(lambda a: False)  # to EOF: the controller must close
            return q, followup_sent, q.eof
        finally:
            q.close()
    finally:
        if association is not None:
            association.close()


async def healthy_host(port: int, subnqn: str, stop: asyncio.Event, stats: dict[str, int]) -> None:
    """Verified 4 KiB writes and reads until ``stop``; every command must succeed."""
    async with await nvmeof.host.connect(LOOPBACK, port, subnqn=subnqn) as ctrl:
        i = 0
        while not stop.is_set():
            slba = HEALTHY_SLBA + (i % HEALTHY_SLOTS) * HEALTHY_BLOCKS
            data = pattern(i, HEALTHY_BLOCKS * BLOCK, salt=0xC0)
            await ctrl.write(NSID, slba, data)
            got = await ctrl.read(NSID, slba, HEALTHY_BLOCKS)
            assert bytes(got) == data, f"healthy read {i} returned other data"
            stats["ops"] += 2
            i += 1
        stats["verified"] = i


async def corpus_with_healthy_host(dev: RunningDevice, entries: list[dict[str, Any]]) -> dict[str, Any]:
    port = dev.io_port
    stop = asyncio.Event()
    stats = {"ops": 0, "verified": 0}
    healthy = asyncio.create_task(healthy_host(port, dev.subnqn, stop, stats))
    while stats["ops"] == 0 and not healthy.done():
        await asyncio.sleep(0.01)
    ops_before = stats["ops"]
    failures: dict[str, str] = {}
    started = time.monotonic()
    for entry in entries:
        try:
            q, followup_sent, closed = await asyncio.wait_for(run_entry(port, entry), ENTRY_TIMEOUT_S)
            harness.check(entry, q.answers, closed=closed, followup_sent=followup_sent)
        except TimeoutError:
            failures[entry["id"]] = "hang: no outcome within the deadline"
        except AssertionError as exc:
            failures[entry["id"]] = str(exc)
    elapsed = time.monotonic() - started
    ops_during = stats["ops"] - ops_before
    stop.set()
    await asyncio.wait_for(healthy, ENTRY_TIMEOUT_S)  # re-raises any failure of the healthy host
    async with await nvmeof.host.connect(LOOPBACK, port, subnqn=dev.subnqn) as ctrl:
        await ctrl.write(NSID, 0, b"\x42" * BLOCK)
        fresh_ok = bytes(await ctrl.read(NSID, 0, 1)) == b"\x42" * BLOCK
    return {"failures": failures, "ops_during": ops_during, "elapsed": elapsed, "fresh_ok": fresh_ok,
            "verified": stats["verified"]}


def test_corpus_live_with_a_healthy_connection(device: RunningDevice) -> None:
    entries = harness.load_entries()
    result = run(corpus_with_healthy_host(device, entries), timeout=RUN_TIMEOUT_S)
    failures = result["failures"]
    assert not failures, "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))
    assert result["ops_during"] >= MIN_HEALTHY_OPS_DURING_CORPUS, result
    assert result["fresh_ok"]
    print(f"\ncorpus live: {len(entries)} entries in {result['elapsed']:.1f} s, healthy host completed "
          f"{result['ops_during']} verified I/Os meanwhile")
