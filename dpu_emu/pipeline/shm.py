"""A pool of fixed-size payload slots in one POSIX shared-memory segment.

Layout of the segment, per slot class in order: ``count`` data slots of ``size`` bytes,
then ``count`` metadata slots (CRC32C values, :func:`~.stages.meta_capacity_for` bytes
each).  A job takes the smallest class that fits its payload; when that class has no free
slot, the request waits in the class's FIFO and is handed the next slot released there
(classes never borrow from each other, so a burst of small jobs cannot starve large ones).

The parent creates the segment with :class:`multiprocessing.shared_memory.SharedMemory`
(so the multiprocessing resource tracker unlinks it even if the parent is killed) under a
recognisable name, ``dpuemu-<pid>-<n>-<random>``.  Workers map the same file with
:func:`attach_segment` *without* registering it with a tracker (Python < 3.13 registers on
attach, and a worker's exit would then unlink the parent's segment or warn).
"""

from __future__ import annotations

import logging
import mmap
import os
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count
from multiprocessing import shared_memory

from .stages import meta_capacity_for

log = logging.getLogger("dpu_emu.pipeline.shm")

KiB = 1024
MiB = 1024 * KiB
SEGMENT_PREFIX = "dpuemu-"
SHM_DIR = "/dev/shm"              # where Linux exposes POSIX shared memory objects
_ALIGN = 64                       # cache-line align every slot
_segment_numbers = count()


@dataclass(frozen=True)
class SlotClass:
    """``count`` slots of ``size`` payload bytes each."""

    size: int
    count: int

    def __post_init__(self) -> None:
        if self.size <= 0 or self.count <= 0:
            raise ValueError(f"slot class needs a positive size and count, got {self}")


# 4 KiB I/O and small KV values take the small slots; anything up to 1 MiB the large ones.
DEFAULT_SLOT_CLASSES: tuple[SlotClass, ...] = (SlotClass(16 * KiB, 256), SlotClass(1 * MiB, 64))


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def segment_name() -> str:
    return f"{SEGMENT_PREFIX}{os.getpid()}-{next(_segment_numbers)}-{secrets.token_hex(4)}"


def our_segments(pid: int | None = None) -> list[str]:
    """Names of the segments in /dev/shm created by process ``pid`` (default: this one)."""
    prefix = f"{SEGMENT_PREFIX}{os.getpid() if pid is None else pid}-"
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def sweep_stale_segments() -> list[str]:
    """Unlink ``dpuemu-<pid>-*`` segments whose creating process no longer exists."""
    removed: list[str] = []
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(SEGMENT_PREFIX):
            continue
        pid_text = name[len(SEGMENT_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or os.path.exists(f"/proc/{pid_text}"):
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
        except OSError:
            pass
    if removed:
        log.warning("removed %d shared memory segment(s) left by dead processes: %s", len(removed), removed)
    return removed


def attach_segment(name: str) -> mmap.mmap:
    """Map an existing segment read-write without telling any resource tracker."""
    fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


class Lease:
    """A reserved slot: ``buf`` (payload, ``capacity`` bytes) and ``meta`` (CRC values).

    The caller fills ``buf`` (e.g. ``recv_into``) and passes the lease to
    ``engine.submit_lease``; from then on the engine owns it and releases it after the
    completion callback returns.  A lease that is never submitted must be ``release()``d.
    """

    __slots__ = ("buf", "meta", "capacity", "meta_capacity", "data_off", "meta_off",
                 "class_index", "in_use", "_release")

    def __init__(self, buf: memoryview, meta: memoryview, *, data_off: int = 0, meta_off: int = 0,
                 class_index: int = 0, release: Callable[[Lease], None] | None = None) -> None:
        self.buf = buf
        self.meta = meta
        self.capacity = buf.nbytes
        self.meta_capacity = meta.nbytes
        self.data_off = data_off
        self.meta_off = meta_off
        self.class_index = class_index
        self.in_use = False
        self._release = release

    def release(self) -> None:
        if self.in_use:
            self.in_use = False
            if self._release is not None:
                self._release(self)

    def __repr__(self) -> str:
        return f"<Lease {self.capacity} bytes at {self.data_off:#x}{' in use' if self.in_use else ''}>"


Waiter = Callable[[Lease], None]


class SlotPool:
    """Fixed-size slots in one shared-memory segment, with FIFO waiters per class."""

    def __init__(self, classes: Sequence[SlotClass] = DEFAULT_SLOT_CLASSES) -> None:
        ordered = sorted(classes, key=lambda c: c.size)
        if not ordered:
            raise ValueError("a slot pool needs at least one slot class")
        layout = []
        offset = 0
        for cls in ordered:
            stride = _align(cls.size)
            meta_stride = _align(meta_capacity_for(cls.size))
            layout.append((cls, offset, stride, offset + stride * cls.count, meta_stride))
            offset += (stride + meta_stride) * cls.count
        self.classes = tuple(ordered)
        self.size = offset
        self.max_payload = ordered[-1].size
        self.shm = shared_memory.SharedMemory(name=segment_name(), create=True, size=offset)
        self.name = self.shm.name
        view = self.shm.buf
        assert view is not None
        self._view: memoryview = view
        self._free: list[list[Lease]] = []
        self._waiters: list[deque[Waiter]] = []
        self._all: list[Lease] = []
        for index, (cls, base, stride, meta_base, meta_stride) in enumerate(layout):
            free = []
            meta_bytes = meta_capacity_for(cls.size)
            for slot in range(cls.count):
                data_off, meta_off = base + slot * stride, meta_base + slot * meta_stride
                lease = Lease(self._view[data_off:data_off + cls.size], self._view[meta_off:meta_off + meta_bytes],
                              data_off=data_off, meta_off=meta_off, class_index=index, release=self._give_back)
                free.append(lease)
                self._all.append(lease)
            free.reverse()          # pop() hands out the lowest offsets first
            self._free.append(free)
            self._waiters.append(deque())
        self.closed = False

    @property
    def total_slots(self) -> int:
        return len(self._all)

    def free_slots(self) -> int:
        return sum(len(f) for f in self._free)

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters)

    def class_for(self, nbytes: int) -> int:
        for index, cls in enumerate(self.classes):
            if nbytes <= cls.size:
                return index
        raise ValueError(f"payload of {nbytes} bytes exceeds the largest slot ({self.max_payload} bytes)")

    def try_acquire(self, nbytes: int) -> Lease | None:
        index = self.class_for(nbytes)
        free = self._free[index]
        if not free or self._waiters[index]:     # FIFO: never overtake a waiter
            return None
        lease = free.pop()
        lease.in_use = True
        return lease

    def wait(self, nbytes: int, ready: Waiter) -> None:
        """Call ``ready(lease)`` as soon as a slot for ``nbytes`` is free (maybe right now)."""
        index = self.class_for(nbytes)
        lease = self.try_acquire(nbytes)
        if lease is not None:
            ready(lease)
        else:
            self._waiters[index].append(ready)

    def drain_waiters(self) -> list[Waiter]:
        """Remove and return every waiter (engine shutdown fails them)."""
        out: list[Waiter] = []
        for queue in self._waiters:
            out.extend(queue)
            queue.clear()
        return out

    def _give_back(self, lease: Lease) -> None:
        if self.closed:
            return
        waiters = self._waiters[lease.class_index]
        if waiters:
            lease.in_use = True
            waiters.popleft()(lease)
        else:
            self._free[lease.class_index].append(lease)

    def close(self) -> None:
        """Unmap and unlink the segment (idempotent).  Views still held by callers are
        invalidated; if one was re-exported the mapping lingers until it is collected,
        but the name is unlinked regardless."""
        if self.closed:
            return
        self.closed = True
        for lease in self._all:
            lease.in_use = False
            lease.buf.release()
            lease.meta.release()
        self._all.clear()
        for free in self._free:
            free.clear()
        try:
            self.shm.close()
        except BufferError:
            log.debug("shared memory %s still exported by a caller; unmapped when collected", self.name)
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass
