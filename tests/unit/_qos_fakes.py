"""Fakes shared by the QoS tests: a controllable clock/loop and recording backends."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from dpu_emu.qos import (
    QosBackend,
    QosGroup,
    QosPolicy,
    QosScheduler,
)
from nvmeof.controller.backend import Done, IoCommand
from nvmeof.errors import AbortedByRequest, AbortedSqDeletion

MIB = 1 << 20
KIB = 1 << 10
T0 = 1000.0  # fake clock start, on a slice boundary
ABORTED = AbortedByRequest().status
SQ_DELETED = AbortedSqDeletion().status
NVM_WRITE, NVM_READ, NVM_FLUSH = 0x01, 0x02, 0x00
KV_STORE, KV_RETRIEVE, KV_LIST, KV_EXIST = 0x01, 0x02, 0x06, 0x14



# -- fakes ----------------------------------------------------------------------------------

class FakeHandle:
    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``time()`` and ``call_at()`` on a clock that only moves in :meth:`advance`."""

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, FakeHandle]] = []
        self._seq = itertools.count()
        self.timers_set = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> FakeHandle:
        handle = FakeHandle(when, callback, args)
        heapq.heappush(self._timers, (when, next(self._seq), handle))
        self.timers_set += 1
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeHandle:
        return self.call_at(self.now + delay, callback, *args)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, handle = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                handle.callback(*handle.args)
        self.now = end

    @property
    def pending_timers(self) -> int:
        return sum(1 for _, _, h in self._timers if not h.cancelled)


class Inner:
    """A namespace backend completing after ``delay`` (0 = synchronously) or when told."""

    def __init__(self, loop: FakeLoop | None = None, delay: float | None = 0.0) -> None:
        self.loop = loop
        self.delay = delay
        self.started: list[IoCommand] = []
        self.held: list[tuple[IoCommand, Done]] = []
        self.closed = False

    def execute(self, cmd: IoCommand, done: Done) -> None:
        self.started.append(cmd)
        if self.delay is None:
            self.held.append((cmd, done))
        elif self.delay == 0:
            done(0, 0, None)
        else:
            assert self.loop is not None
            self.loop.call_later(self.delay, done, 0, 0, None)

    def release_all(self) -> None:
        held, self.held = self.held, []
        for _, done in held:
            done(0, 0, None)

    def close(self) -> None:
        self.closed = True


class Recorder:
    """Collects completions; asserts each command completes exactly once."""

    def __init__(self, loop: FakeLoop | None = None) -> None:
        self.loop = loop
        self.completed: list[tuple[int, int]] = []  # (cid, status)
        self.times: list[float] = []

    def done_for(self, cid: int) -> Done:
        fired = [False]

        def done(status: int, dw0: int, data: Any) -> None:
            assert not fired[0], f"command {cid} completed twice"
            fired[0] = True
            self.completed.append((cid, status))
            if self.loop is not None:
                self.times.append(self.loop.now)

        return done

    def cids(self, status: int | None = None) -> list[int]:
        return [cid for cid, st in self.completed if status is None or st == status]


_cids = itertools.count(1)


def cmd(opcode: int = NVM_READ, *, nlb: int = 8, qid: int = 1, cntlid: int = 1, hostnqn: str = "",
        cid: int | None = None, data: bytes | None = None, read_length: int = 0) -> IoCommand:
    return IoCommand(opcode, 1, next(_cids) & 0xFFFF if cid is None else cid, qid=qid, cntlid=cntlid,
                     hostnqn=hostnqn, nlb=nlb, data=data, read_length=read_length)


def setup(policy: QosPolicy | None = None, *, inner: Inner | None = None, **sched: Any
          ) -> tuple[FakeLoop, QosScheduler, QosGroup, QosBackend, Inner]:
    loop = FakeLoop()
    scheduler = QosScheduler(loop=loop, **sched)
    group = QosGroup("ns1", policy or QosPolicy())
    inner = inner or Inner(loop)
    return loop, scheduler, group, QosBackend(inner, [group], scheduler), inner




def submit_many(backend: QosBackend, rec: Recorder, n: int, **kw: Any) -> list[int]:
    cids = []
    for _ in range(n):
        c = cmd(**kw)
        cids.append(c.cid)
        backend.execute(c, rec.done_for(c.cid))
    return cids
