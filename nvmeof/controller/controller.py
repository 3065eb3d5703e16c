"""One controller (an association): registers, admin commands, events, keep-alive.

Theory of operation
-------------------
A controller is created by a successful admin-queue Connect and lives until the host
shuts it down (CC.SHN), disables it (CC.EN 1 -> 0 resets it), lets keep-alive expire, or
the device removes it.  Register states::

    DISABLED (CC.EN=0, CSTS.RDY=0) --CC.EN=1, valid CC--> READY (CSTS.RDY=1)
    DISABLED --CC.EN=1, invalid CC--> FATAL (CSTS.CFS=1)
    READY --CC.EN=0--> DISABLED (I/O queues torn down)
    READY --CC.SHN!=0--> SHUTDOWN (CSTS.SHST=complete; I/O queues torn down)

Admin commands other than Fabrics are refused with Command Sequence Error unless the
controller is READY.  Time comes from ``target.clock``; the edge asks
:meth:`next_deadline` and calls :meth:`handle_timeout`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Protocol

from ..errors import (
    AsyncEventLimitExceeded,
    CommandSequenceError,
    InvalidField,
    InvalidOpcode,
    NvmeStatus,
)
from ..wire.constants import (
    AEC_ANA_CHANGE,
    AEC_DISCOVERY_LOG_CHANGE,
    AEC_NS_ATTRIBUTE,
    CAP_CQR,
    CAP_CSS_IO_SETS,
    CAP_CSS_NVM,
    CAP_CSS_SHIFT,
    CAP_TO_SHIFT,
    CC_CSS_ADMIN_ONLY,
    CC_CSS_ALL_IO_SETS,
    CC_CSS_MASK,
    CC_CSS_NVM,
    CC_CSS_SHIFT,
    CC_EN,
    CC_IOCQES_MASK,
    CC_IOCQES_SHIFT,
    CC_IOSQES_MASK,
    CC_IOSQES_SHIFT,
    CC_MPS_MASK,
    CC_SHN_MASK,
    CRTO_CRIMT_SHIFT,
    CSTS_CFS,
    CSTS_RDY,
    CSTS_SHST_COMPLETE,
    CSTS_SHST_SHIFT,
    DISCOVERY_NQN,
    NVME_VERSION_2_0,
    PROPERTY_SIZE_4,
    PROPERTY_SIZE_8,
    AdminOpcode,
    AsyncEventNotice,
    AsyncEventType,
    Csi,
    LogPage,
    Property,
)
from . import admin, faults
from .backend import AbortableBackend
from .model import Subsystem, Target

if TYPE_CHECKING:
    from ..transport.controller_side import CommandReceived

log = logging.getLogger("nvmeof.controller")

CAP_TIMEOUT_500MS = 15  # CAP.TO: 7.5 s to become ready
IOSQES_64 = 6
IOCQES_16 = 4
ERROR_LOG_ENTRIES = 64
AER_INFO_SHIFT = 8
AER_LOG_SHIFT = 16

Reply = tuple[int, int, bytes | None]  # (status, dw0, data)


class QueueSessionPort(Protocol):
    """What a controller needs from the queue (connection) sessions bound to it."""

    qid: int

    def send_completion(self, cid: int, status: int, dw0: int = 0, dw1: int = 0,
                        data: bytes | bytearray | memoryview | None = None) -> None: ...

    def disconnect(self, reason: str) -> None: ...


class SmartCounters:
    __slots__ = ("bytes_read", "bytes_written", "read_commands", "write_commands", "media_errors")

    def __init__(self) -> None:
        self.bytes_read = 0
        self.bytes_written = 0
        self.read_commands = 0
        self.write_commands = 0
        self.media_errors = 0


class Controller:
    def __init__(self, target: Target, subsystem: Subsystem | None, cntlid: int, hostnqn: str,
                 hostid: bytes, kato_ms: int, admin_session: QueueSessionPort,
                 local_addr: tuple[str, str] = ("", "")) -> None:
        self.target = target
        self.subsystem = subsystem  # None for a discovery controller
        self.cntlid = cntlid
        self.hostnqn = hostnqn
        self.hostid = hostid
        self.kato_ms = kato_ms
        self.local_addr = local_addr
        self.portid = target.portid_for(local_addr)  # the listener it came in on: its ANA states apply
        self.cc = 0
        self.csts = 0
        self.queues: dict[int, QueueSessionPort] = {0: admin_session}
        self.num_io_queues = 0  # granted by Set Features Number of Queues (0 = not set yet)
        self.features: dict[int, int] = admin.default_features(target.config)
        self.features_set_queues = False
        self.aer_cids: deque[int] = deque()
        self.pending_events: deque[int] = deque()
        self.masked_event_types: set[int] = set()
        self.changed_nsids: set[int] = set()
        self.changed_overflow = False
        self.error_log: deque[dict[str, int]] = deque(maxlen=ERROR_LOG_ENTRIES)
        self.error_count = 0
        self.smart = SmartCounters()
        self.last_activity = target.clock()
        self.created = target.clock()
        self.alive = True

    # -- identity -------------------------------------------------------------------

    @property
    def is_discovery(self) -> bool:
        return self.subsystem is None

    @property
    def ready(self) -> bool:
        return bool(self.csts & CSTS_RDY)

    @property
    def cap(self) -> int:
        mqes = (self.target.config.max_queue_depth - 1)
        css = CAP_CSS_NVM | (0 if self.is_discovery else CAP_CSS_IO_SETS)
        return mqes | CAP_CQR | (CAP_TIMEOUT_500MS << CAP_TO_SHIFT) | (css << CAP_CSS_SHIFT)

    @property
    def command_set(self) -> int:
        return (self.cc & CC_CSS_MASK) >> CC_CSS_SHIFT

    def visible_namespaces(self) -> dict:
        if self.subsystem is None:
            return {}
        nss = self.subsystem.visible_namespaces(self.hostnqn)
        if self.command_set != CC_CSS_ALL_IO_SETS:
            return {nsid: ns for nsid, ns in nss.items() if ns.csi == Csi.NVM}
        return nss

    # -- properties -------------------------------------------------------------------

    def property_get(self, offset: int, size: int) -> int:
        if offset == Property.CAP:
            if size != PROPERTY_SIZE_8:
                raise InvalidField("CAP is an 8-byte property")
            return self.cap
        if size != PROPERTY_SIZE_4:
            raise InvalidField(f"property {offset:#x} is 4 bytes")
        if offset == Property.VS:
            return NVME_VERSION_2_0
        if offset == Property.CC:
            return self.cc
        if offset == Property.CSTS:
            return self.csts
        if offset == Property.CRTO:  # ready timeouts equal CAP.TO, in the same 500 ms units
            return CAP_TIMEOUT_500MS | (CAP_TIMEOUT_500MS << CRTO_CRIMT_SHIFT)
        raise InvalidField(f"no property at offset {offset:#x}")

    def property_set(self, offset: int, size: int, value: int) -> None:
        if offset != Property.CC or size != PROPERTY_SIZE_4:
            raise InvalidField(f"property {offset:#x} (size {size}) is not writable")
        old, self.cc = self.cc, value & 0xFFFFFFFF
        if value & CC_SHN_MASK and not old & CC_SHN_MASK:
            self._shutdown()
            return
        if value & CC_EN and not old & CC_EN:
            self._enable()
        elif not value & CC_EN and old & CC_EN:
            self._reset()

    def _enable(self) -> None:
        css = self.command_set
        valid = (self.cc & CC_MPS_MASK) == 0 and css in (CC_CSS_NVM, CC_CSS_ALL_IO_SETS, CC_CSS_ADMIN_ONLY)
        if not self.is_discovery:
            valid = valid and ((self.cc & CC_IOSQES_MASK) >> CC_IOSQES_SHIFT == IOSQES_64
                               and (self.cc & CC_IOCQES_MASK) >> CC_IOCQES_SHIFT == IOCQES_16)
        if valid:
            self.csts = CSTS_RDY
        else:
            log.warning("controller %d: invalid CC %#x, controller fatal status", self.cntlid, self.cc)
            self.csts = CSTS_CFS

    def _reset(self) -> None:
        self._drop_io_queues("controller reset (CC.EN cleared)")
        self.csts = 0
        self.aer_cids.clear()
        self.num_io_queues = 0
        self.features_set_queues = False

    def _shutdown(self) -> None:
        self._drop_io_queues("controller shutdown (CC.SHN)")
        self.csts = (self.csts & ~CSTS_RDY) | (CSTS_SHST_COMPLETE << CSTS_SHST_SHIFT)

    def _drop_io_queues(self, reason: str) -> None:
        for qid, session in list(self.queues.items()):
            if qid:
                del self.queues[qid]
                session.disconnect(reason)

    # -- queues ---------------------------------------------------------------------

    def add_io_queue(self, qid: int, session: QueueSessionPort) -> None:
        self.queues[qid] = session

    def queue_gone(self, qid: int) -> None:
        """A queue's transport closed.  Losing the admin queue ends the association.
        Commands of that queue still waiting in a backend are completed there."""
        self.queues.pop(qid, None)
        for ns in self.visible_namespaces().values():
            if isinstance(ns.backend, AbortableBackend):
                ns.backend.abort_queue(qid, self.cntlid)
        if qid == 0:
            self.release("admin queue closed")

    def release(self, reason: str) -> None:
        if not self.alive:
            return
        self.alive = False
        log.info("controller %d (%s) released: %s", self.cntlid, self.hostnqn, reason)
        for qid, session in list(self.queues.items()):
            del self.queues[qid]
            session.disconnect(reason)
        if self.subsystem is not None:
            self.subsystem.controllers.pop(self.cntlid, None)
        else:
            self.target.discovery_controllers.pop(self.cntlid, None)

    def shutdown_association(self, reason: str) -> None:
        self.release(reason)

    # -- keep-alive -----------------------------------------------------------------

    def touch(self) -> None:
        self.last_activity = self.target.clock()

    def next_deadline(self) -> float | None:
        if not self.alive or self.kato_ms == 0:
            return None
        return self.last_activity + self.kato_ms / 1000.0

    def handle_timeout(self, now: float) -> None:
        deadline = self.next_deadline()
        if self.subsystem is not None and self.subsystem.ana.next_deadline() is not None:
            self.subsystem.expire_ana(now)  # ANATT: a CHANGE transition ends
        if deadline is not None and now >= deadline:
            log.warning("controller %d (%s): keep-alive timeout (%d ms), tearing down the association",
                        self.cntlid, self.hostnqn, self.kato_ms)
            self.release("keep-alive timer expired")

    # -- admin commands -------------------------------------------------------------

    def admin_command(self, ev: CommandReceived) -> Reply | None:
        """Execute one admin command; ``None`` means the reply comes later (AER)."""
        opcode = ev.sqe[0]
        if opcode == AdminOpcode.KEEP_ALIVE and self._keep_alive_ignored():
            return None  # fault injection: as if lost (no completion, no keep-alive credit)
        self.touch()
        if not self.ready:
            raise CommandSequenceError("controller is not ready (CC.EN=0 or CSTS.RDY=0)")
        handler = admin.HANDLERS.get(opcode)
        if handler is None or (self.is_discovery and opcode not in admin.DISCOVERY_OPCODES):
            raise InvalidOpcode(f"admin opcode {opcode:#x} not supported")
        if opcode == AdminOpcode.ASYNC_EVENT_REQUEST:
            self._queue_aer(ev.cid)
            return None
        return handler(self, ev)

    def _keep_alive_ignored(self) -> bool:
        hooks = faults.hooks_of(self.target)
        return hooks.active and hooks.ignore_keep_alive(
            self.subsystem.nqn if self.subsystem is not None else DISCOVERY_NQN, self.hostnqn)

    def record_error(self, qid: int, cid: int, error: NvmeStatus, nsid: int = 0) -> None:
        self.error_count += 1
        self.error_log.appendleft({
            "error_count": self.error_count, "sqid": qid, "cid": cid, "status": error.status,
            "param_error_location": 0xFFFF, "nsid": nsid, "trtype": 3,
        })

    # -- asynchronous events --------------------------------------------------------

    def _queue_aer(self, cid: int) -> None:
        if len(self.aer_cids) >= self.target.config.aer_limit:
            raise AsyncEventLimitExceeded()
        self.aer_cids.append(cid)
        self._deliver_events()

    def _raise_event(self, event_type: int, info: int, log_page: int, enable_bit: int) -> None:
        if not self.features.get(admin.FEATURE_AEC, 0) & enable_bit:
            return
        if event_type in self.masked_event_types:
            return
        self.masked_event_types.add(event_type)
        self.pending_events.append(event_type | (info << AER_INFO_SHIFT) | (log_page << AER_LOG_SHIFT))
        self._deliver_events()

    def _deliver_events(self) -> None:
        admin_q = self.queues.get(0)
        while self.aer_cids and self.pending_events and admin_q is not None:
            admin_q.send_completion(self.aer_cids.popleft(), 0, self.pending_events.popleft())

    def log_page_read(self, lid: int, retain: bool) -> None:
        """Reading the page behind an event (without RAE) unmasks that event type."""
        if retain:
            return
        if lid in (LogPage.CHANGED_NS_LIST, LogPage.DISCOVERY, LogPage.ANA):
            self.masked_event_types.discard(AsyncEventType.NOTICE)

    def namespace_changed(self, nsid: int) -> None:
        if len(self.changed_nsids) >= 1024:
            self.changed_overflow = True
        else:
            self.changed_nsids.add(nsid)
        self._raise_event(AsyncEventType.NOTICE, AsyncEventNotice.NAMESPACE_ATTRIBUTE_CHANGED,
                          LogPage.CHANGED_NS_LIST, AEC_NS_ATTRIBUTE)

    def ana_changed(self) -> None:
        self._raise_event(AsyncEventType.NOTICE, AsyncEventNotice.ANA_CHANGE, LogPage.ANA, AEC_ANA_CHANGE)

    def discovery_log_changed(self) -> None:
        self._raise_event(AsyncEventType.NOTICE, AsyncEventNotice.DISCOVERY_LOG_CHANGE,
                          LogPage.DISCOVERY, AEC_DISCOVERY_LOG_CHANGE)
