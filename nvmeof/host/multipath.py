"""Multipath host: one subsystem reached through several controllers (paths), routed by
Asymmetric Namespace Access.

    async with await connect_multipath([("127.0.0.1", 4420), ("127.0.0.1", 4421)], subnqn) as mp:
        await mp.write(1, 0, b"\\0" * 4096)
        data = await mp.read(1, 0, 8)

Theory of operation
-------------------
Every path is a :class:`~nvmeof.host.HostController` of the same host (same host NQN and
host ID) on one address.  Each path reads the ANA log page (LID 0Ch) at connect time and
again whenever its controller sends an ANA change event (an Asynchronous Event Request is
kept outstanding per path), so it knows the ANA state of every group and which group each
namespace belongs to.  I/O goes round-robin to the OPTIMIZED paths of the namespace's
group, else to the NON-OPTIMIZED ones.  A command that completes with a Path Related
Status (SCT 3h: 01h persistent loss, 02h inaccessible, 03h transition) marks that path's
group accordingly, makes the path re-read its ANA log, and is retried on another usable
path; a lost connection marks the path disconnected, starts a bounded background
reconnect, and the command is retried too.  While a group is in CHANGE on every path the
command waits (ANA Transition Time).  Retries are bounded in count and time; other
errors (LBA out of range...) are raised as they are.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..controller.logpages import ANA_GROUP_DESCRIPTOR, ANA_LOG_HEADER, ANA_NSID_SIZE, ana_log_size
from ..errors import NvmeStatus
from ..wire.constants import (
    AEC_ANA_CHANGE,
    AEC_NS_ATTRIBUTE,
    AdminOpcode,
    AnaState,
    AsyncEventNotice,
    AsyncEventType,
    FeatureId,
    LogPage,
    PathStatus,
    StatusCodeType,
)
from .controller import HOSTID_SIZE, HostController, _uuid_of, connect, default_hostnqn

log = logging.getLogger("nvmeof.host.multipath")
T = TypeVar("T")

AER_WAIT_S = 3600.0  # an Asynchronous Event Request waits as long as nothing happens
AER_TYPE_MASK = 0x7
AER_INFO_SHIFT = 8
RETRY_LIMIT = 400
RETRY_FIRST_S = 0.005
RETRY_MAX_S = 0.25
RETRY_DEADLINE_MIN_S = 15.0  # at least; more when the ANA Transition Time is longer
RECONNECT_ATTEMPTS = 20
RECONNECT_DELAY_S = 0.5
STATE_NAMES = {
    AnaState.OPTIMIZED: "optimized",
    AnaState.NON_OPTIMIZED: "non_optimized",
    AnaState.INACCESSIBLE: "inaccessible",
    AnaState.PERSISTENT_LOSS: "persistent_loss",
    AnaState.CHANGE: "change",
}
PATH_STATUS_STATE = {
    PathStatus.ASYMMETRIC_ACCESS_PERSISTENT_LOSS: AnaState.PERSISTENT_LOSS,
    PathStatus.ASYMMETRIC_ACCESS_INACCESSIBLE: AnaState.INACCESSIBLE,
    PathStatus.ASYMMETRIC_ACCESS_TRANSITION: AnaState.CHANGE,
}


class AnaLog:
    """A decoded ANA log page: change count, state per group, group per NSID."""

    __slots__ = ("chgcnt", "states", "groups")

    def __init__(self, chgcnt: int, states: dict[int, AnaState], groups: dict[int, int]) -> None:
        self.chgcnt = chgcnt
        self.states = states
        self.groups = groups

    @classmethod
    def parse(cls, page: bytes | bytearray) -> AnaLog:
        header = ANA_LOG_HEADER.unpack(page)
        pos = ANA_LOG_HEADER.size
        states: dict[int, AnaState] = {}
        groups: dict[int, int] = {}
        for _ in range(header.ngrps):
            if pos + ANA_GROUP_DESCRIPTOR.size > len(page):
                raise ValueError(f"ANA log truncated at descriptor offset {pos}")
            desc = ANA_GROUP_DESCRIPTOR.unpack(page, pos)
            pos += ANA_GROUP_DESCRIPTOR.size
            end = pos + desc.nnsids * ANA_NSID_SIZE
            if end > len(page):
                raise ValueError(f"ANA group {desc.anagrpid}: {desc.nnsids} NSIDs run past the page")
            states[desc.anagrpid] = AnaState(desc.anas & 0xF)
            for at in range(pos, end, ANA_NSID_SIZE):
                groups[int.from_bytes(page[at:at + ANA_NSID_SIZE], "little")] = desc.anagrpid
            pos = end
        return cls(header.chgcnt, states, groups)


class Path:
    """One controller of the subsystem: where it is, its ANA view, how much I/O it served."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self.ctrl: HostController | None = None
        self.ana_states: dict[int, AnaState] = {}  # ANA group -> state through this path
        self.ns_groups: dict[int, int] = {}  # NSID -> ANA group
        self.nsid = 0  # the namespace ``state`` describes: the last one used (initially the lowest)
        self.io_count = 0
        self.ana_reads = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.reconnecting = False

    @property
    def connected(self) -> bool:
        return self.ctrl is not None and self.ctrl.admin.is_open

    def ana_state(self, nsid: int) -> AnaState | None:
        grpid = self.ns_groups.get(nsid)
        return None if grpid is None else self.ana_states.get(grpid)

    @property
    def state(self) -> str | None:
        """The ANA state name (as the REST API spells it) of the namespace's group here."""
        state = self.ana_state(self.nsid)
        return None if state is None else STATE_NAMES[state]

    def __repr__(self) -> str:
        return (f"Path({self.address}:{self.port}, {'connected' if self.connected else 'disconnected'}, "
                f"{self.state}, io={self.io_count})")


class MultipathController:
    """Several paths to one subsystem; build it with :func:`connect_multipath`."""

    def __init__(self, paths: list[Path], subnqn: str, hostnqn: str, hostid: bytes,
                 connect_kwargs: dict[str, Any]) -> None:
        self.paths = paths
        self.subnqn = subnqn
        self.hostnqn = hostnqn
        self.hostid = hostid
        self.connect_kwargs = connect_kwargs
        self.retries = 0  # commands sent again on another path
        self._rr = itertools.count()
        self._closed = False
        self._ana_changed = asyncio.Event()

    # -- paths ----------------------------------------------------------------------------

    async def _open(self, path: Path) -> None:
        ctrl = await connect(path.address, path.port, self.subnqn, hostnqn=self.hostnqn, hostid=self.hostid,
                             **self.connect_kwargs)
        try:
            await ctrl.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_ANA_CHANGE | AEC_NS_ATTRIBUTE)
            path.ctrl = ctrl
            await self._read_ana(path)
        except BaseException:
            path.ctrl = None
            await ctrl.close()
            raise
        self._spawn(path, self._aer_loop(path, ctrl), "aer")
        log.info("path %s:%d connected (cntlid %d)", path.address, path.port, ctrl.cntlid)

    def _spawn(self, path: Path, coro: Awaitable[Any], what: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"multipath {what} {path.address}:{path.port}")
        path.tasks.add(task)
        task.add_done_callback(path.tasks.discard)

    async def _read_ana(self, path: Path) -> None:
        ctrl = path.ctrl
        if ctrl is None:
            return
        ident = ctrl.id_ctrl
        size = ana_log_size(max(ident.nanagrpid, 1), max(ident.mnan, ident.nn, 1))
        page = await ctrl.get_log_page(LogPage.ANA, size)
        ana = AnaLog.parse(page)
        path.ana_states, path.ns_groups = ana.states, ana.groups
        path.ana_reads += 1
        if not path.nsid and ana.groups:
            path.nsid = min(ana.groups)
        self._ana_changed.set()

    async def _aer_loop(self, path: Path, ctrl: HostController) -> None:
        """Keep one Asynchronous Event Request outstanding; re-read the ANA log on ANA change."""
        try:
            while not self._closed and ctrl.admin.is_open:
                completion = await ctrl.admin_raw(AdminOpcode.ASYNC_EVENT_REQUEST, timeout=AER_WAIT_S,
                                                  check_status=False)
                if completion.status:
                    log.warning("path %s:%d: AER failed with status %#x", path.address, path.port,
                                completion.status)
                    return
                kind, info = completion.dw0 & AER_TYPE_MASK, (completion.dw0 >> AER_INFO_SHIFT) & 0xFF
                if kind == AsyncEventType.NOTICE and info == AsyncEventNotice.ANA_CHANGE:
                    await self._read_ana(path)
                elif kind == AsyncEventType.NOTICE and info == AsyncEventNotice.NAMESPACE_ATTRIBUTE_CHANGED:
                    await ctrl.get_log_page(LogPage.CHANGED_NS_LIST, 4096)
                    await self._read_ana(path)
        except (ConnectionError, TimeoutError, NvmeStatus) as exc:
            if not self._closed:
                log.warning("path %s:%d: event loop ended: %s", path.address, path.port, exc)
                self._lost(path, ctrl)

    def _lost(self, path: Path, failed: HostController | None = None) -> None:
        """The path's connection is gone (or unusable): forget it and reconnect in the background.

        ``failed`` is the controller that failed: a late error from an association that was
        already replaced by a reconnect must not tear down its successor.
        """
        if self._closed or path.reconnecting or (failed is not None and path.ctrl is not failed):
            return
        ctrl, path.ctrl = path.ctrl, None
        if ctrl is not None:
            self._spawn(path, ctrl.close(), "close")
        path.reconnecting = True
        self._spawn(path, self._reconnect(path), "reconnect")

    async def _reconnect(self, path: Path) -> None:
        try:
            for attempt in range(1, RECONNECT_ATTEMPTS + 1):
                await asyncio.sleep(RECONNECT_DELAY_S)
                if self._closed:
                    return
                try:
                    await self._open(path)
                    return
                except (OSError, ConnectionError, TimeoutError, NvmeStatus) as exc:
                    log.info("path %s:%d: reconnect %d/%d failed: %s", path.address, path.port, attempt,
                             RECONNECT_ATTEMPTS, exc)
            log.warning("path %s:%d: giving up after %d reconnect attempts", path.address, path.port,
                        RECONNECT_ATTEMPTS)
        finally:
            path.reconnecting = False

    async def refresh(self) -> None:
        """Re-read the ANA log page on every connected path."""
        results = await asyncio.gather(*(self._read_ana(p) for p in self.paths if p.connected),
                                       return_exceptions=True)
        for path, result in zip([p for p in self.paths if p.connected], results, strict=True):
            if isinstance(result, (ConnectionError, TimeoutError)):
                self._lost(path)

    # -- routing --------------------------------------------------------------------------

    def _pick(self, nsid: int) -> Path | None:
        """A usable path: round-robin over OPTIMIZED ones, else NON-OPTIMIZED; None if none."""
        for wanted in (AnaState.OPTIMIZED, AnaState.NON_OPTIMIZED):
            usable = [p for p in self.paths if p.connected and p.ana_state(nsid) == wanted]
            if usable:
                return usable[next(self._rr) % len(usable)]
        return None

    def _deadline_s(self) -> float:
        anatt = max((p.ctrl.id_ctrl.anatt for p in self.paths if p.ctrl is not None), default=0)
        return max(RETRY_DEADLINE_MIN_S, 2.0 * anatt)

    async def _run(self, nsid: int, op: Callable[[HostController], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s()
        delay = RETRY_FIRST_S
        last: BaseException | None = None
        for _ in range(RETRY_LIMIT):
            if self._closed:
                raise ConnectionError("multipath controller is closed")
            path = self._pick(nsid)
            ctrl = path.ctrl if path is not None else None
            if path is not None and ctrl is not None:
                path.nsid = nsid
                try:
                    result = await op(ctrl)
                    path.io_count += 1
                    return result
                except NvmeStatus as exc:
                    if exc.sct != StatusCodeType.PATH_RELATED or exc.sc not in PATH_STATUS_STATE:
                        raise
                    last = exc
                    grpid = path.ns_groups.get(nsid)
                    if grpid is not None:
                        path.ana_states[grpid] = PATH_STATUS_STATE[PathStatus(exc.sc)]
                    self._spawn(path, self._reread(path), "ana")
                except (ConnectionError, TimeoutError) as exc:
                    last = exc
                    self._lost(path, ctrl)
                self.retries += 1
                if self._pick(nsid) is not None:
                    continue  # another path is usable right now
            if loop.time() >= deadline:
                break
            self._ana_changed.clear()
            try:  # wait for news (an ANA log read) or the backoff, whichever comes first
                await asyncio.wait_for(self._ana_changed.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, RETRY_MAX_S)
        if last is None:
            raise ConnectionError(f"no usable path to namespace {nsid} of {self.subnqn}")
        raise last

    async def _reread(self, path: Path) -> None:
        try:
            await self._read_ana(path)
        except (ConnectionError, TimeoutError):
            self._lost(path)
        except NvmeStatus as exc:
            log.warning("path %s:%d: ANA log read failed: %s", path.address, path.port, exc)

    # -- I/O ------------------------------------------------------------------------------

    async def read(self, nsid: int, slba: int, nlb: int) -> bytes:
        return bytes(await self._run(nsid, lambda ctrl: ctrl.read(nsid, slba, nlb)))

    async def write(self, nsid: int, slba: int, data: bytes | bytearray | memoryview) -> None:
        await self._run(nsid, lambda ctrl: ctrl.write(nsid, slba, data))

    async def flush(self, nsid: int) -> None:
        await self._run(nsid, lambda ctrl: ctrl.flush(nsid))

    # -- shutdown -------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [t for p in self.paths for t in p.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(p.ctrl.close() for p in self.paths if p.ctrl is not None), return_exceptions=True)
        for path in self.paths:
            path.ctrl = None

    async def __aenter__(self) -> MultipathController:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def connect_multipath(paths: list[tuple[str, int]], subnqn: str, *, hostnqn: str | None = None,
                            **connect_kwargs: Any) -> MultipathController:
    """Connect to ``subnqn`` through every ``(address, port)``; at least one path must come
    up (the others are retried in the background).  ``connect_kwargs`` go to
    :func:`nvmeof.host.connect` for every path (``hostid`` defaults to the host NQN's UUID,
    else one fresh UUID shared by all paths)."""
    if not paths:
        raise ValueError("at least one path is required")
    hostnqn = hostnqn or default_hostnqn()
    hostid = connect_kwargs.pop("hostid", None) or _uuid_of(hostnqn) or uuidlib.uuid4().bytes
    if len(hostid) != HOSTID_SIZE:
        raise ValueError(f"hostid must be {HOSTID_SIZE} bytes")
    mp = MultipathController([Path(a, p) for a, p in paths], subnqn, hostnqn, hostid, connect_kwargs)
    results = await asyncio.gather(*(mp._open(p) for p in mp.paths), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if len(errors) == len(results):
        await mp.close()
        raise errors[0]
    for path, result in zip(mp.paths, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("path %s:%d did not connect: %s", path.address, path.port, result)
            mp._lost(path)
    return mp
