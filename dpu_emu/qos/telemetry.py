"""Per-group QoS telemetry: counters by direction, a cheap log-spaced latency histogram,
time spent throttled, live queue depths.  :meth:`GroupStats.snapshot` returns plain dicts
(ints/floats/strings) for the REST and metrics layers.

The histogram has ``SUB_BUCKETS`` buckets per power of two of microseconds (about 19 %
wide), from 1 us to ~2^27 us (~134 s); recording is one ``log2`` and one list increment.
A percentile is reported as the upper edge of the bucket holding it (conservative),
never above the largest sample seen.
"""

from __future__ import annotations

import math
from typing import Any

READ, WRITE, OTHER = "read", "write", "other"
DIRECTIONS = (READ, WRITE, OTHER)

SUB_BUCKETS = 4  # buckets per octave
MAX_OCTAVES = 27  # 2^27 us ~ 134 s; slower samples land in the last bucket
NUM_BUCKETS = SUB_BUCKETS * MAX_OCTAVES + 1
PERCENTILES = (("p50", 0.50), ("p99", 0.99), ("p999", 0.999))


class LatencyHistogram:
    """Log-spaced latency histogram in microseconds."""

    __slots__ = ("counts", "count", "total_us", "max_us")

    def __init__(self) -> None:
        self.counts = [0] * NUM_BUCKETS
        self.count = 0
        self.total_us = 0.0
        self.max_us = 0.0

    @staticmethod
    def bucket_of(us: float) -> int:
        if us <= 1.0:
            return 0
        index = int(math.log2(us) * SUB_BUCKETS) + 1
        return index if index < NUM_BUCKETS else NUM_BUCKETS - 1

    @staticmethod
    def upper_edge(index: int) -> float:
        """Largest latency (us) bucket ``index`` holds."""
        return 2.0 ** (index / SUB_BUCKETS)

    def record(self, seconds: float) -> None:
        us = seconds * 1e6
        self.counts[self.bucket_of(us)] += 1
        self.count += 1
        self.total_us += us
        if us > self.max_us:
            self.max_us = us

    def percentile(self, fraction: float) -> float:
        """Latency (us) below which ``fraction`` of the samples lie; 0 if empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(self.upper_edge(index), self.max_us)
        return self.max_us

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count,
                               "mean_us": round(self.total_us / self.count, 3) if self.count else 0.0,
                               "max_us": round(self.max_us, 3)}
        for name, fraction in PERCENTILES:
            out[f"{name}_us"] = round(self.percentile(fraction), 3)
        return out


class GroupStats:
    """Counters and gauges of one QoS group (updated by the scheduler)."""

    __slots__ = ("ops", "bytes", "errors", "aborted", "latency", "throttled_ios", "throttled_s", "limited_ios",
                 "fair_wait_s", "waiting_tokens", "waiting_budget", "inflight")

    def __init__(self) -> None:
        self.ops = dict.fromkeys(DIRECTIONS, 0)
        self.bytes = dict.fromkeys((READ, WRITE), 0)
        self.errors = 0
        self.aborted = 0
        self.latency = LatencyHistogram()
        self.throttled_ios = 0  # commands that had to wait for tokens
        self.throttled_s = 0.0  # summed time those commands waited for tokens
        self.limited_ios = 0  # commands held back by this group's own buckets
        self.fair_wait_s = 0.0  # summed time waiting for the device budget (DRR)
        self.waiting_tokens = 0  # gauge: commands waiting for tokens now
        self.waiting_budget = 0  # gauge: admitted commands waiting for the device budget
        self.inflight = 0  # gauge: commands in the inner backend

    def completed(self, direction: str, nbytes: int, status: int, latency_s: float) -> None:
        self.ops[direction] += 1
        if direction != OTHER:
            self.bytes[direction] += nbytes
        if status:
            self.errors += 1
        self.latency.record(latency_s)

    def snapshot(self) -> dict[str, Any]:
        return {
            "ops": dict(self.ops),
            "bytes": dict(self.bytes),
            "errors": self.errors,
            "aborted": self.aborted,
            "latency": self.latency.snapshot(),
            "throttled_ios": self.throttled_ios,
            "throttled_seconds": round(self.throttled_s, 6),
            "limited_ios": self.limited_ios,
            "fair_wait_seconds": round(self.fair_wait_s, 6),
            "queue_depth": self.waiting_tokens + self.waiting_budget,
            "waiting_tokens": self.waiting_tokens,
            "waiting_budget": self.waiting_budget,
            "inflight": self.inflight,
        }
