"""The QoS scheduler: token-bucket admission, then deficit round robin into a device budget.

Theory of operation
-------------------
A command passes two stages; one scheduler serves the whole device (all namespaces).

1. **Rate limits (token buckets).**  A command carries the groups that apply to it (its
   namespace's group, its tenant's group).  It may start only when every bucket of every
   one of those groups has positive credit (:mod:`dpu_emu.qos.bucket`); it is then charged
   in all of them at once.  Otherwise it waits - it is never failed for being over limit.
   Waiting commands are kept per *flow* (same backend, same groups) in strict arrival
   order.  When credit returns, flows are served oldest-head first, so commands of one
   group start in arrival order unless an older one is held back by a *different* group
   (no head-of-line blocking of a tenant's other namespaces behind a slow one).  The
   scheduler never polls: when everything left is blocked it sets ONE timer
   (``loop.call_at``) at the earliest slice boundary where a blocked head's buckets turn
   positive, and re-examines the flows then (:meth:`QosScheduler._pump`).

2. **Fair sharing (DRR) in front of a device budget.**  Admitted commands go straight to
   the inner backend while the device has room: fewer than ``max_inflight_ios`` commands
   and ``max_inflight_bytes`` bytes in flight (0 = no limit).  When it is saturated they
   queue per *fair class* - the command's tenant group, else its first group, else its
   backend - and are released by deficit round robin as completions free room: each
   backlogged class in turn gets ``quantum_bytes * weight`` of credit and sends commands
   while their cost (``bytes + IO_COST_BYTES``) fits.  A tenant that floods the device thus
   cannot hold another below its weighted share of the budget.

Every command's ``done`` is called exactly once: by the inner backend (passed through), by
:meth:`QosScheduler.abort` (Aborted by Request), or by :meth:`QosScheduler.close` /
:meth:`abort_queue` (Aborted SQ Deletion).  All of it runs on one asyncio loop - the
running one, or ``loop`` (anything with ``time()`` and ``call_at()``, e.g. a fake loop in
tests); no threads.  Call every method on that loop's thread.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from nvmeof.controller.backend import Done, IoCommand
from nvmeof.errors import AbortedByRequest, AbortedSqDeletion, InternalError, NvmeStatus

from .group import TENANT, QosGroup

log = logging.getLogger("dpu_emu.qos")

DEFAULT_MAX_INFLIGHT_IOS = 256
DEFAULT_MAX_INFLIGHT_BYTES = 64 << 20
DEFAULT_QUANTUM_BYTES = 128 << 10  # DRR credit per turn at weight 1
IO_COST_BYTES = 4096  # what a command costs in DRR besides its data (so empty ones cost too)
MAX_PUMP_PASSES = 64  # re-examinations in one go before yielding to the loop

ABORTED_BY_REQUEST = AbortedByRequest().status
ABORTED_SQ_DELETION = AbortedSqDeletion().status

WAIT_TOKENS, WAIT_BUDGET, INFLIGHT, FINISHED = range(4)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class LoopLike(Protocol):
    """The part of an asyncio loop the scheduler uses (a fake one in unit tests)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Cancellable: ...


class Owner(Protocol):
    """What the scheduler needs of a :class:`~dpu_emu.qos.backend.QosBackend`."""

    name: str

    @property
    def inner(self) -> Any: ...


class _Pending:
    """One command inside the scheduler."""

    __slots__ = ("cmd", "done", "owner", "groups", "direction", "nbytes", "cost", "seq", "arrived", "state",
                 "flow", "fair", "key", "blockers", "admitted", "throttled")

    def __init__(self, cmd: IoCommand, done: Done, owner: Owner, groups: tuple[QosGroup, ...], direction: str,
                 nbytes: int, seq: int, arrived: float) -> None:
        self.cmd = cmd
        self.done = done
        self.owner = owner
        self.groups = groups
        self.direction = direction
        self.nbytes = nbytes
        self.cost = nbytes + IO_COST_BYTES
        self.seq = seq
        self.arrived = arrived
        self.admitted = arrived
        self.state = WAIT_TOKENS
        self.flow: _Flow | None = None
        self.fair: _FairClass | None = None
        self.key = (cmd.cntlid, cmd.qid, cmd.cid)
        self.blockers: set[QosGroup] = set()  # groups whose buckets held it back
        self.throttled = False  # it waited for tokens (its own or those of older commands)


class _Flow:
    __slots__ = ("groups", "queue", "fair")

    def __init__(self, groups: tuple[QosGroup, ...], fair: _FairClass) -> None:
        self.groups = groups
        self.queue: deque[_Pending] = deque()
        self.fair = fair


class _FairClass:
    __slots__ = ("name", "group", "queue", "deficit", "active", "dispatched_ios", "dispatched_bytes")

    def __init__(self, name: str, group: QosGroup | None) -> None:
        self.name = name
        self.group = group
        self.queue: deque[_Pending] = deque()
        self.deficit = 0
        self.active = False
        self.dispatched_ios = 0
        self.dispatched_bytes = 0

    @property
    def weight(self) -> float:
        return self.group.weight if self.group is not None else 1.0


class QosScheduler:
    """Admission (token buckets) and fair dispatch (DRR) for every namespace of a device."""

    def __init__(self, *, max_inflight_ios: int = DEFAULT_MAX_INFLIGHT_IOS,
                 max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES, quantum_bytes: int = DEFAULT_QUANTUM_BYTES,
                 loop: LoopLike | None = None) -> None:
        self.set_budget(max_inflight_ios=max_inflight_ios, max_inflight_bytes=max_inflight_bytes)
        if quantum_bytes <= 0:
            raise ValueError(f"quantum_bytes must be positive, got {quantum_bytes}")
        self.quantum_bytes = quantum_bytes
        self._loop = loop
        self._clock: Callable[[], float] | None = None
        self._seq = itertools.count()
        self._flows: dict[tuple[Any, ...], _Flow] = {}
        self._waiting: dict[_Flow, None] = {}  # flows with commands waiting for tokens (ordered set)
        self._classes: dict[Any, _FairClass] = {}
        self._active: deque[_FairClass] = deque()  # DRR round of backlogged classes
        self._granted = False  # the head of the round got its quantum this turn
        self._index: dict[tuple[int, int, int], _Pending] = {}  # waiting commands by (cntlid, qid, cid)
        self.inflight_ios = 0
        self.inflight_bytes = 0
        self._timer: Cancellable | None = None
        self._timer_when = math.inf
        self._pumping = False
        self._pump_again = False
        self._draining = False
        self._closed = False

    # -- configuration --------------------------------------------------------------------

    def set_budget(self, *, max_inflight_ios: int | None = None, max_inflight_bytes: int | None = None) -> None:
        """Change the device budget (0 = unlimited); takes effect at once."""
        if max_inflight_ios is not None:
            if max_inflight_ios < 0:
                raise ValueError("max_inflight_ios must be >= 0")
            self.max_inflight_ios = max_inflight_ios
        if max_inflight_bytes is not None:
            if max_inflight_bytes < 0:
                raise ValueError("max_inflight_bytes must be >= 0")
            self.max_inflight_bytes = max_inflight_bytes
        if getattr(self, "_active", None):
            self._drain()

    @property
    def loop(self) -> LoopLike:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def time(self) -> float:
        """The loop's clock (binds to the running loop on first use)."""
        clock = self._clock
        if clock is None:
            clock = self._clock = self.loop.time
        return clock()

    def try_time(self) -> float | None:
        """The loop's time, or None before a loop is known (nothing has run yet)."""
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return None
        return self._loop.time()

    def bind(self, group: QosGroup) -> None:
        """Adopt ``group`` (a group belongs to one scheduler)."""
        if group.scheduler is self:
            return
        if group.scheduler is not None:
            raise ValueError(f"QoS group {group.name!r} already belongs to another scheduler")
        group.scheduler = self
        group.subscribe(self._on_group_update)

    def _on_group_update(self, group: QosGroup) -> None:
        if self._waiting:
            self._pump()
        if self._active:
            self._drain()

    # -- submission -----------------------------------------------------------------------

    def submit(self, owner: Owner, cmd: IoCommand, done: Done, groups: Sequence[QosGroup], direction: str,
               nbytes: int) -> None:
        """Admit ``cmd`` now, or queue it until its groups' limits and the device allow."""
        if self._closed:
            done(ABORTED_SQ_DELETION, 0, None)
            return
        now = self.time()
        groups = tuple(groups)
        for g in groups:
            if g.scheduler is not self:
                self.bind(g)
        flow = self._flow_for(owner, groups)
        p = _Pending(cmd, done, owner, groups, direction, nbytes, next(self._seq), now)
        p.flow = flow
        p.fair = flow.fair
        # Never overtake an older command waiting for the same buckets.
        p.throttled = bool(flow.queue) or any(g.stats.waiting_tokens for g in groups if g.buckets)
        if not p.throttled and not self._pumping and not self._blockers(p, now):
            self._admit(p, now, waited=False)
            return
        p.state = WAIT_TOKENS
        flow.queue.append(p)
        self._waiting[flow] = None
        self._index[p.key] = p
        for g in groups:
            g.stats.waiting_tokens += 1
        self._pump()

    def _flow_for(self, owner: Owner, groups: tuple[QosGroup, ...]) -> _Flow:
        key = (owner, *groups)
        flow = self._flows.get(key)
        if flow is None:
            fair_group = next((g for g in groups if g.level == TENANT), groups[0] if groups else None)
            fair_key: Any = fair_group if fair_group is not None else owner
            fair = self._classes.get(fair_key)
            if fair is None:
                name = f"{fair_group.level}:{fair_group.name}" if fair_group else f"backend:{owner.name}"
                fair = self._classes[fair_key] = _FairClass(name, fair_group)
            flow = self._flows[key] = _Flow(groups, fair)
        return flow

    @staticmethod
    def _blockers(p: _Pending, now: float) -> list[tuple[QosGroup, Any]]:
        out = []
        for g in p.groups:
            for bucket in g.blocking(p.direction, p.nbytes, now):
                out.append((g, bucket))
        return out

    def _admit(self, p: _Pending, now: float, *, waited: bool) -> None:
        """Charge every bucket and move on to the device budget."""
        for g in p.groups:
            g.consume(p.direction, p.nbytes)
        if waited:
            wait_s = now - p.arrived
            for g in p.groups:
                g.stats.throttled_ios += 1
                g.stats.throttled_s += wait_s
            for g in p.blockers:
                g.stats.limited_ios += 1
        p.admitted = now
        if not self._active and self._has_room(p.nbytes):
            self._dispatch(p)
            return
        p.state = WAIT_BUDGET
        fair = p.fair
        assert fair is not None
        fair.queue.append(p)
        self._index[p.key] = p
        for g in p.groups:
            g.stats.waiting_budget += 1
        if not fair.active:
            fair.active = True
            self._active.append(fair)
        self._drain()

    # -- stage 1: waiting for tokens ------------------------------------------------------

    def _pump(self) -> None:
        """Admit waiting commands whose buckets allow it, oldest flow head first; arm the
        timer for the rest."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            for _ in range(MAX_PUMP_PASSES):
                self._pump_again = False
                wake = self._pump_pass(self.time())
                if not self._pump_again:
                    break
            else:
                wake = self.time()  # still busy: continue on the next loop iteration
            self._arm(wake)
        finally:
            self._pumping = False

    def _pump_pass(self, now: float) -> float:
        heap = [(flow.queue[0].seq, n, flow) for n, flow in enumerate(self._waiting)]
        heapq.heapify(heap)
        tiebreak = len(heap)
        wake = math.inf
        while heap:
            _, _, flow = heapq.heappop(heap)
            if not flow.queue:
                continue
            p = flow.queue[0]
            blockers = self._blockers(p, now)
            if blockers:
                for g in p.groups:
                    g.note_waiting(p.direction, p.nbytes)
                for g, _ in blockers:
                    p.blockers.add(g)
                p.throttled = True
                wake = min(wake, max(bucket.next_positive_time(now) for _, bucket in blockers))
                continue
            flow.queue.popleft()
            if not flow.queue:
                self._waiting.pop(flow, None)
            self._unindex(p)
            for g in p.groups:
                g.stats.waiting_tokens -= 1
            self._admit(p, now, waited=p.throttled)
            if flow.queue:
                tiebreak += 1
                heapq.heappush(heap, (flow.queue[0].seq, tiebreak, flow))
        return wake

    def _arm(self, when: float) -> None:
        if when == math.inf or self._closed:
            return
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = math.inf
        if self._waiting:
            self._pump()

    # -- stage 2: the device budget (DRR) --------------------------------------------------

    def _has_room(self, nbytes: int) -> bool:
        if self.max_inflight_ios and self.inflight_ios >= self.max_inflight_ios:
            return False
        if self.max_inflight_bytes and self.inflight_bytes and self.inflight_bytes + nbytes > self.max_inflight_bytes:
            return False
        return True

    def _drain(self) -> None:
        """Release queued commands by deficit round robin while the device has room."""
        if self._draining:
            return  # the running loop sees the room just freed
        self._draining = True
        try:
            while self._active:
                fair = self._active[0]
                head = fair.queue[0]
                if not self._has_room(head.nbytes):
                    break
                if not self._granted:
                    fair.deficit += max(1, int(self.quantum_bytes * fair.weight))
                    self._granted = True
                if head.cost > fair.deficit:
                    self._active.rotate(-1)
                    self._granted = False
                    continue
                fair.queue.popleft()
                fair.deficit -= head.cost
                if not fair.queue:
                    self._retire(fair)
                self._unindex(head)
                waited = self.time() - head.admitted
                for g in head.groups:
                    g.stats.waiting_budget -= 1
                    g.stats.fair_wait_s += waited
                self._dispatch(head)
        finally:
            self._draining = False

    def _retire(self, fair: _FairClass) -> None:
        """Take a class whose queue emptied out of the round (DRR forgets its deficit)."""
        if self._active and self._active[0] is fair:
            self._granted = False
        self._active.remove(fair)
        fair.active = False
        fair.deficit = 0

    def _dispatch(self, p: _Pending) -> None:
        p.state = INFLIGHT
        self.inflight_ios += 1
        self.inflight_bytes += p.nbytes
        for g in p.groups:
            g.stats.inflight += 1
        fair = p.fair
        assert fair is not None
        fair.dispatched_ios += 1
        fair.dispatched_bytes += p.nbytes
        try:
            p.owner.inner.execute(p.cmd, partial(self._finish, p))
        except NvmeStatus as exc:
            if p.state != FINISHED:
                self._finish(p, exc.status, exc.dw0, None)
        except Exception as exc:  # a bug in the inner backend: only this command fails
            log.exception("QoS: inner backend %s failed on %r", p.owner.name, p.cmd)
            if p.state != FINISHED:
                self._finish(p, InternalError(str(exc)).status, 0, None)

    def _finish(self, p: _Pending, status: int, dw0: int, data: Any) -> None:
        if p.state == FINISHED:
            log.error("QoS: backend %s completed %r twice; second completion dropped", p.owner.name, p.cmd)
            return
        was_inflight = p.state == INFLIGHT
        p.state = FINISHED
        latency = self.time() - p.arrived
        if was_inflight:
            self.inflight_ios -= 1
            self.inflight_bytes -= p.nbytes
        for g in p.groups:
            if was_inflight:
                g.stats.inflight -= 1
            g.stats.completed(p.direction, p.nbytes, status, latency)
        try:
            p.done(status, dw0, data)
        except Exception:
            log.exception("QoS: completion callback failed for %r", p.cmd)
        if self._active:
            self._drain()

    # -- abort and shutdown ---------------------------------------------------------------

    def _unindex(self, p: _Pending) -> None:
        if self._index.get(p.key) is p:
            del self._index[p.key]

    def _withdraw(self, p: _Pending, status: int) -> None:
        """Take a waiting command out of its queue and complete it with ``status``."""
        if p.state == WAIT_TOKENS:
            assert p.flow is not None
            p.flow.queue.remove(p)
            if not p.flow.queue:
                self._waiting.pop(p.flow, None)
            for g in p.groups:
                g.stats.waiting_tokens -= 1
        elif p.state == WAIT_BUDGET:
            fair = p.fair
            assert fair is not None
            fair.queue.remove(p)
            if not fair.queue and fair.active:
                self._retire(fair)
            for g in p.groups:
                g.stats.waiting_budget -= 1
        else:
            return
        self._unindex(p)
        p.state = FINISHED
        for g in p.groups:
            g.stats.aborted += 1
        try:
            p.done(status, 0, None)
        except Exception:
            log.exception("QoS: completion callback failed for aborted %r", p.cmd)

    def abort(self, cid: int, qid: int, cntlid: int | None = None, *, owner: Owner | None = None) -> bool:
        """Complete the waiting command ``(cntlid, qid, cid)`` with Aborted by Request.

        ``cntlid=None`` matches any controller.  Returns False if no such command waits
        (it was never seen, already started, or finished)."""
        if cntlid is not None:
            p = self._index.get((cntlid, qid, cid))
        else:
            p = next((p for k, p in self._index.items()
                      if k[1] == qid and k[2] == cid and (owner is None or p.owner is owner)), None)
        if p is None or (owner is not None and p.owner is not owner):
            return False
        self._withdraw(p, ABORTED_BY_REQUEST)
        self._requeue()
        return True

    def abort_queue(self, qid: int | None = None, cntlid: int | None = None, *, owner: Owner | None = None,
                    status: int = ABORTED_SQ_DELETION) -> int:
        """Complete every waiting command matching the filters (None = any) with ``status``
        (Aborted SQ Deletion): for a deleted queue, a gone controller, a removed namespace.
        Returns how many."""
        victims = [p for p in self._index.values()
                   if (qid is None or p.key[1] == qid) and (cntlid is None or p.key[0] == cntlid)
                   and (owner is None or p.owner is owner)]
        victims.sort(key=lambda p: p.seq)
        for p in victims:
            self._withdraw(p, status)
        if victims:
            self._requeue()
        return len(victims)

    def _requeue(self) -> None:
        """A removed command may have been the head that held others back."""
        if self._waiting and not self._closed:
            self._pump()
        if self._active:
            self._drain()

    def close(self) -> None:
        """Stop: every waiting command completes with Aborted SQ Deletion; new ones too.
        Commands already in the inner backend complete normally."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_when = math.inf
        self.abort_queue()

    def forget(self, obj: Any) -> None:
        """Drop the idle flows and fair class of a closed backend or removed group."""
        for key, flow in list(self._flows.items()):
            if obj in key and not flow.queue:
                del self._flows[key]
        fair = self._classes.get(obj)
        if fair is not None and not fair.active:
            del self._classes[obj]

    @property
    def closed(self) -> bool:
        return self._closed

    # -- telemetry ------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._index)

    def snapshot(self) -> dict[str, Any]:
        """The device budget, what waits, and the DRR classes (plain dicts)."""
        return {
            "max_inflight_ios": self.max_inflight_ios,
            "max_inflight_bytes": self.max_inflight_bytes,
            "quantum_bytes": self.quantum_bytes,
            "inflight_ios": self.inflight_ios,
            "inflight_bytes": self.inflight_bytes,
            "waiting_tokens": sum(len(f.queue) for f in self._waiting),
            "waiting_budget": sum(len(c.queue) for c in self._active),
            "classes": {c.name: {"weight": c.weight, "queued": len(c.queue), "deficit": c.deficit,
                                 "dispatched_ios": c.dispatched_ios, "dispatched_bytes": c.dispatched_bytes}
                        for c in self._classes.values()},
        }
