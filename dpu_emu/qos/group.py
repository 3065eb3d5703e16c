"""QoS groups: one set of token buckets shared by every command the group applies to.

A namespace group limits one namespace (all hosts, all connections); a tenant group limits
everything a tenant does, across its namespaces and connections.  A command must pass the
buckets of every group that applies to it (namespace AND tenant).

Which buckets a command draws from (SPDK):

=================  =====================  ==========================
limit              commands               cost
=================  =====================  ==========================
rw_ios_per_sec     every command          1 I/O
rw_mbytes_per_sec  reads and writes       data bytes
r_mbytes_per_sec   reads                  data bytes
w_mbytes_per_sec   writes                 data bytes
=================  =====================  ==========================

Commands without data (Flush, Write Zeroes, Deallocate, KV Exist/Delete) cost one I/O and
no bytes, so byte limits never hold them back.  :meth:`QosGroup.update` changes limits live
and keeps each surviving bucket's credit and debt; the scheduler is told so that waiting
commands are re-examined at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .bucket import DEFAULT_TIMESLICE_US, Clock, TokenBucket
from .policy import LIMIT_KEYS, UNLIMITED, QosPolicy
from .telemetry import OTHER, READ, WRITE, GroupStats

NAMESPACE, TENANT = "namespace", "tenant"
LEVELS = (NAMESPACE, TENANT)
MS_PER_S = 1000.0

# limit key -> directions it applies to, and whether it counts bytes (else I/Os)
_APPLIES: dict[str, tuple[frozenset[str], bool]] = {
    "rw_ios_per_sec": (frozenset((READ, WRITE, OTHER)), False),
    "rw_mbytes_per_sec": (frozenset((READ, WRITE)), True),
    "r_mbytes_per_sec": (frozenset((READ,)), True),
    "w_mbytes_per_sec": (frozenset((WRITE,)), True),
}


class QosGroup:
    """A named set of buckets (from a :class:`QosPolicy`) plus its telemetry.

    ``level`` is ``"namespace"`` or ``"tenant"``; it decides which group a command is
    fair-shared under (its tenant group if any).  ``clock`` serves calls made outside a
    scheduler (the scheduler always passes its own time).
    """

    def __init__(self, name: str, policy: QosPolicy | None = None, *, level: str = NAMESPACE,
                 timeslice_us: int = DEFAULT_TIMESLICE_US, clock: Clock = time.monotonic) -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.name = name
        self.level = level
        self.timeslice_us = timeslice_us
        self.clock = clock
        self.policy = UNLIMITED
        self.stats = GroupStats()
        self.buckets: dict[str, TokenBucket] = {}
        # direction -> [(bucket, counts_bytes)], rebuilt on update
        self._by_direction: dict[str, list[tuple[TokenBucket, bool]]] = {READ: [], WRITE: [], OTHER: []}
        self._listeners: list[Callable[[QosGroup], None]] = []
        self.scheduler: object | None = None  # the one scheduler this group is bound to
        self.update(policy or UNLIMITED)

    # -- configuration --------------------------------------------------------------------

    def update(self, policy: QosPolicy, *, now: float | None = None) -> None:
        """Apply new limits live; waiting commands are kept and re-examined.  Time so far
        is credited at the old limits (``now`` defaults to the scheduler's clock)."""
        if now is None:
            now = self._now()
        burst_s = policy.burst_ms / MS_PER_S
        buckets: dict[str, TokenBucket] = {}
        for key in LIMIT_KEYS:
            limit = getattr(policy, key)
            if not limit:
                continue
            rate = policy.bytes_per_sec(key) if _APPLIES[key][1] else float(limit)
            burst = rate * burst_s if burst_s else None
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(rate, timeslice_us=self.timeslice_us, burst=burst, clock=self.clock)
            else:
                bucket.set_rate(rate, burst=burst, now=now)
            buckets[key] = bucket
        self.policy = policy
        self.buckets = buckets
        self._by_direction = {
            d: [(b, _APPLIES[k][1]) for k, b in buckets.items() if d in _APPLIES[k][0]] for d in (READ, WRITE, OTHER)}
        for listener in list(self._listeners):
            listener(self)

    def _now(self) -> float:
        """The bound scheduler's time if it has a loop, else this group's clock."""
        now = getattr(self.scheduler, "try_time", None)
        value = now() if now is not None else None
        return self.clock() if value is None else value

    def subscribe(self, listener: Callable[[QosGroup], None]) -> None:
        """Call ``listener(group)`` after every :meth:`update`."""
        self._listeners.append(listener)

    @property
    def weight(self) -> float:
        return float(self.policy.weight)

    @property
    def limited(self) -> bool:
        return bool(self.buckets)

    # -- admission ------------------------------------------------------------------------

    def blocking(self, direction: str, nbytes: int, now: float) -> list[TokenBucket]:
        """The buckets that hold back a command of ``direction``/``nbytes`` now (empty =
        it may go)."""
        buckets = self._by_direction[direction]
        if not buckets:
            return []
        return [b for b, is_bytes in buckets if (nbytes or not is_bytes) and not b.admits(now)]

    def note_waiting(self, direction: str, nbytes: int) -> None:
        """A command that needs these buckets waits (on them or on another group): let
        them keep the credit of the slices it waits through (bounded catch-up)."""
        for bucket, is_bytes in self._by_direction[direction]:
            if nbytes or not is_bytes:
                bucket.note_blocked()

    def consume(self, direction: str, nbytes: int) -> None:
        """Charge one admitted command (after :meth:`blocking` returned nothing)."""
        for bucket, is_bytes in self._by_direction[direction]:
            if is_bytes:
                if nbytes:
                    bucket.consume(nbytes)
            else:
                bucket.consume(1)

    # -- telemetry ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain-dict view: identity, policy, live credit per limit, and the counters."""
        out: dict[str, Any] = {"name": self.name, "level": self.level, "policy": self.policy.to_dict(),
                               "credit": {k: round(b.tokens, 3) for k, b in self.buckets.items()}}
        out.update(self.stats.snapshot())
        return out

    def __repr__(self) -> str:
        return f"QosGroup({self.name!r}, level={self.level!r}, policy={self.policy})"
