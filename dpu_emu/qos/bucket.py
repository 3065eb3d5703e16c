"""Token buckets with SPDK's bdev QoS semantics, exact at any rate.

Theory of operation
-------------------
SPDK (lib/bdev/bdev.c) gives every limit a per-timeslice quota (``limit * 1 ms``) that a
poller refills every timeslice.  An I/O may start while the remaining quota is *positive*,
even if it costs more than what remains; the overrun is carried into the next timeslices
as a debt.  Positive leftovers are not carried over, so a bucket never holds more than one
timeslice's quota: the burst is one slice.

This bucket reproduces that in *virtual* time, without a poller:

* Time is cut into slices of ``timeslice_us`` aligned on the clock's zero, so all buckets
  refill on the same boundaries.  On every use the bucket credits the slices that elapsed
  since it was last refilled: ``tokens = min(tokens + n * quota, cap)``.
* Credit is fixed point: an integer count of ``1 / SCALE`` units, and the per-slice quota is
  ``round(rate * timeslice_us)`` of them (``SCALE`` = 1e6 us per second), so 100 IOPS with
  1 ms slices is 0.1 I/O per slice *exactly* - no rounding of limits up to 1000 IOPS as
  SPDK does, and no floating-point drift over millions of slices.
* :meth:`TokenBucket.admits` is true while the credit is positive; :meth:`consume` may drive
  it negative (the debt of a large I/O is paid by the following slices).
* ``cap`` (the burst) is normally one slice's quota (or ``burst_us`` worth of credit).  A
  timer that wakes late must not lose the slices it slept through while commands were
  waiting - SPDK's poller would have released them on each boundary - so after
  :meth:`note_blocked` the next refill may credit up to ``CATCHUP_SLICES`` slices.  Credit is
  never created faster than ``quota`` per slice, so the long-run rate never exceeds the
  limit; the caps only ever discard credit.

:meth:`next_positive_time` tells the scheduler the slice boundary at which a blocked bucket
turns positive again, so it sets one timer there instead of polling.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]

US_PER_S = 1_000_000
SCALE = US_PER_S  # fixed-point units per token (per I/O or per byte)
DEFAULT_TIMESLICE_US = 1000  # SPDK_BDEV_QOS_TIMESLICE_IN_USEC
CATCHUP_SLICES = 100  # credit a late wake-up may recover for waiting commands (100 ms at 1 ms)
TIME_EPSILON_S = 1e-7  # a timer fired a hair early still lands in the intended slice


class TokenBucket:
    """One limit (I/Os or bytes per second) refilled every timeslice.

    ``rate`` is in tokens per second (I/Os or bytes), > 0.  ``burst`` is the most credit
    the bucket holds, in tokens; ``None`` means one timeslice's quota (SPDK).  ``clock``
    is used when a method is called without ``now``.
    """

    __slots__ = ("rate", "timeslice_us", "_slice_s", "_quota", "_cap", "_tokens", "_slice",
                 "_blocked", "clock", "_burst")

    def __init__(self, rate: float, *, timeslice_us: int = DEFAULT_TIMESLICE_US, burst: float | None = None,
                 clock: Clock = time.monotonic) -> None:
        if timeslice_us <= 0:
            raise ValueError(f"timeslice_us must be positive, got {timeslice_us}")
        self.timeslice_us = int(timeslice_us)
        self._slice_s = self.timeslice_us / US_PER_S
        self.clock = clock
        self._tokens = 0
        self._slice: int | None = None  # index of the slice last credited; None = never used
        self._blocked = False
        self.rate = 0.0
        self._quota = 0
        self._cap = 0
        self._burst: float | None = None
        self.set_rate(rate, burst=burst)

    # -- configuration --------------------------------------------------------------------

    def set_rate(self, rate: float, *, burst: float | None = None, now: float | None = None) -> None:
        """Change the limit live.  The slices elapsed so far are credited at the old rate
        (as of ``now``, default the clock); credit and debt are kept, clamped to the new
        burst."""
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"a bucket's rate must be a positive number, got {rate!r}")
        if self._slice is not None:
            self.refill(now)
        self.rate = float(rate)
        self._quota = max(1, round(rate * self.timeslice_us))
        self._burst = burst
        self._cap = max(self._quota, round(burst * SCALE)) if burst else self._quota
        if self._tokens > self._cap:
            self._tokens = self._cap

    @property
    def quota_per_slice(self) -> float:
        """Tokens credited per timeslice (fractional: 0.1 for 100 IOPS at 1 ms)."""
        return self._quota / SCALE

    @property
    def burst(self) -> float:
        """The most credit the bucket holds when nothing waits, in tokens."""
        return self._cap / SCALE

    # -- accounting -----------------------------------------------------------------------

    def slice_index(self, now: float) -> int:
        return int((now + TIME_EPSILON_S) // self._slice_s)

    def refill(self, now: float | None = None) -> None:
        """Credit the timeslices elapsed since the last refill."""
        if now is None:
            now = self.clock()
        index = int((now + TIME_EPSILON_S) // self._slice_s)
        if index == self._slice:
            return
        if self._slice is None:  # first use: start with a full bucket
            self._slice = index
            self._tokens = self._cap
            return
        elapsed = index - self._slice
        if elapsed < 0:  # the clock went backwards: wait for it
            return
        self._slice = index
        cap = max(self._cap, self._quota * CATCHUP_SLICES) if self._blocked else self._cap
        self._blocked = False
        tokens = self._tokens + elapsed * self._quota
        self._tokens = tokens if tokens < cap else cap

    def admits(self, now: float | None = None) -> bool:
        """True if an I/O may start now (credit positive); refills first."""
        self.refill(now)
        return self._tokens > 0

    def consume(self, amount: float) -> None:
        """Take ``amount`` tokens (may leave a debt).  Call after :meth:`admits`."""
        self._tokens -= round(amount * SCALE)

    def note_blocked(self) -> None:
        """A command waits on this bucket: the next refill may recover slices slept through."""
        self._blocked = True

    def next_positive_time(self, now: float | None = None) -> float:
        """The clock time of the slice boundary at which the credit turns positive (``now``
        if it already is)."""
        self.refill(now)
        if self._tokens > 0:
            return self.clock() if now is None else now
        assert self._slice is not None
        slices = (-self._tokens) // self._quota + 1
        return (self._slice + slices) * self._slice_s

    @property
    def tokens(self) -> float:
        """Current credit in tokens (negative = debt), as of the last refill."""
        return self._tokens / SCALE

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, tokens={self.tokens:g}, burst={self.burst:g})"
