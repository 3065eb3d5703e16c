"""I/O statistics counted around each namespace backend: operations and bytes by
direction, errors, and latency in a log2 histogram (bucket i holds latencies below 2**i
microseconds), from which percentiles and Prometheus buckets are read cheaply.

The counting wrapper costs two clock reads and a few integer updates per command; it
sits between the controller and whatever backend the device built (store, pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter_ns

from nvmeof.controller.backend import Done, IoCommand, NamespaceBackend
from nvmeof.errors import NvmeStatus
from nvmeof.wire.constants import KvOpcode, NvmOpcode

HISTOGRAM_BUCKETS = 32  # up to 2**31 us (~36 minutes); the last bucket takes everything above
NS_PER_US = 1000
PERCENTILES = (50.0, 90.0, 99.0)
PERCENT = 100.0
# Data direction by opcode: NVM Write / KV Store carry data to the device, NVM Read /
# KV Retrieve / KV List carry data back; everything else moves no user data.
WRITE_OPCODES = frozenset({NvmOpcode.WRITE, KvOpcode.STORE})
READ_OPCODES = frozenset({NvmOpcode.READ, KvOpcode.RETRIEVE, KvOpcode.LIST})


class Direction:
    READ = "read"
    WRITE = "write"
    OTHER = "other"


class Histogram:
    __slots__ = ("buckets", "count", "total_ns")

    def __init__(self) -> None:
        self.buckets = [0] * HISTOGRAM_BUCKETS
        self.count = 0
        self.total_ns = 0

    def add(self, elapsed_ns: int) -> None:
        index = (elapsed_ns // NS_PER_US).bit_length()
        self.buckets[index if index < HISTOGRAM_BUCKETS else HISTOGRAM_BUCKETS - 1] += 1
        self.count += 1
        self.total_ns += elapsed_ns

    @staticmethod
    def upper_bound_us(index: int) -> int:
        return 1 << index

    def percentile_us(self, pct: float) -> int | None:
        """Upper bound (us) of the bucket holding the ``pct`` percentile; None when empty."""
        if not self.count:
            return None
        rank = max(1, -(-self.count * pct // PERCENT))
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return self.upper_bound_us(index)
        return self.upper_bound_us(HISTOGRAM_BUCKETS - 1)


class IoStats:
    """Counters of one namespace."""

    __slots__ = ("ops", "bytes", "errors", "latency")

    def __init__(self) -> None:
        self.ops = {Direction.READ: 0, Direction.WRITE: 0, Direction.OTHER: 0}
        self.bytes = {Direction.READ: 0, Direction.WRITE: 0}
        self.errors = 0
        self.latency = {Direction.READ: Histogram(), Direction.WRITE: Histogram(), Direction.OTHER: Histogram()}

    def record(self, opcode: int, status: int, sent: object, returned: object, elapsed_ns: int) -> None:
        if opcode in READ_OPCODES:
            direction = Direction.READ
            if not status and returned is not None:
                self.bytes[direction] += len(returned)  # type: ignore[arg-type]
        elif opcode in WRITE_OPCODES:
            direction = Direction.WRITE
            if not status and sent is not None:
                self.bytes[direction] += len(sent)  # type: ignore[arg-type]
        else:
            direction = Direction.OTHER
        self.ops[direction] += 1
        if status:
            self.errors += 1
        self.latency[direction].add(elapsed_ns)


class CountingBackend:
    """A :class:`NamespaceBackend` that counts into :class:`IoStats` around another one."""

    def __init__(self, inner: NamespaceBackend, stats: IoStats) -> None:
        self.inner = inner
        self.stats = stats

    def execute(self, cmd: IoCommand, done: Done) -> None:
        start = perf_counter_ns()
        stats = self.stats

        def counted(status: int, dw0: int, data: bytes | bytearray | memoryview | None) -> None:
            stats.record(cmd.opcode, status, cmd.data, data, perf_counter_ns() - start)
            done(status, dw0, data)

        try:
            self.inner.execute(cmd, counted)
        except NvmeStatus:
            stats.record(cmd.opcode, 1, None, None, perf_counter_ns() - start)
            raise

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class DirectionStats:
    ops: int
    bytes: int | None
    latency_us: dict[str, int | None]  # "p50"/"p90"/"p99" -> upper bound in us


def summarize(stats: IoStats) -> tuple[dict[str, DirectionStats], int]:
    out = {}
    for direction, hist in stats.latency.items():
        out[direction] = DirectionStats(
            ops=stats.ops[direction], bytes=stats.bytes.get(direction),
            latency_us={f"p{int(p)}": hist.percentile_us(p) for p in PERCENTILES})
    return out, stats.errors
