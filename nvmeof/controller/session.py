"""One queue: a controller-side NVMe/TCP connection bound (after Connect) to a controller.

Theory of operation
-------------------
A session starts unbound.  The first command must be a Fabrics Connect: on the admin
queue (QID 0) it creates a controller (dynamic controller model), on an I/O queue it
attaches to the controller named by CNTLID.  Afterwards Fabrics Property Get/Set and
admin commands go to the controller, I/O commands to the namespace backends.  Every
command ends in exactly one completion; NvmeStatus errors become their status, and a
bug in a handler is logged with its traceback and completes the command with Internal
Error rather than taking the connection (and the other hosts' commands) down.

The edge (asyncio) feeds bytes in, pulls :meth:`data_to_send`, and is told through
``wakeup`` when completions arrive outside of a receive call and through ``close`` when
the controller wants this transport gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..auth.controller_side import ControllerAuth
from ..errors import (
    CommandSequenceError,
    ConnectInvalidHost,
    ConnectInvalidParameters,
    IncompatibleFormat,
    InternalError,
    InvalidField,
    InvalidOpcode,
    NvmeStatus,
)
from ..transport.connection import Event, Terminated
from ..transport.controller_side import CommandFailedInTransport, CommandReceived, ControllerConnection
from ..wire.constants import (
    ADMIN_QID,
    CNTLID_DYNAMIC,
    CONNECT_DATA_SIZE,
    DISCOVERY_NQN,
    PSDT_MASK,
    PSDT_SGL_MPTR_CONTIG,
    PSDT_SGL_MPTR_SGL,
    PSDT_SHIFT,
    AdminOpcode,
    FabricsType,
    FeatureId,
    GenericStatus,
    StatusCodeType,
    encode_status,
)
from ..wire.layout import c_string
from ..wire.queue_entry import (
    CATTR_DISABLE_SQ_FLOW_CONTROL,
    CONNECT_CMD,
    CONNECT_DATA,
    CONNECT_IATTR_DATA,
    FABRICS_FCTYPE_OFFSET,
    PROPERTY_CMD,
)
from . import ana, authcmd, io
from .backend import IoCommand
from .controller import Controller, Reply
from .faults import CommandInfo, Decision, FaultAction, hooks_of
from .model import Subsystem, Target

log = logging.getLogger("nvmeof.session")

IPO_CNTLID = CONNECT_DATA.offset_of("cntlid")
IPO_SUBNQN = CONNECT_DATA.offset_of("subnqn")
IPO_HOSTNQN = CONNECT_DATA.offset_of("hostnqn")
IPO_QID = CONNECT_CMD.offset_of("qid")
IPO_SQSIZE = CONNECT_CMD.offset_of("sqsize")
IPO_RECFMT = CONNECT_CMD.offset_of("recfmt")
FUSE_MASK = 0x03  # CDW0 bits 9:8 = FLAGS bits 1:0
MIN_ADMIN_SQSIZE = 31  # 0's based: 32 entries
CID_CONFLICT = encode_status(StatusCodeType.GENERIC, GenericStatus.COMMAND_ID_CONFLICT, True)


def _check_command_flags(flags: int) -> None:
    """CDW0 FLAGS: no fused operations here, and fabrics commands describe data with SGLs."""
    if flags & FUSE_MASK:
        raise InvalidField("fused operations are not supported")
    if (flags & PSDT_MASK) >> PSDT_SHIFT not in (PSDT_SGL_MPTR_CONTIG, PSDT_SGL_MPTR_SGL):
        raise InvalidField("NVMe over Fabrics commands use SGLs (PSDT 01b or 10b), not PRPs")


def _invalid_connect(message: str, ipo: int, in_data: bool) -> NvmeStatus:
    return ConnectInvalidParameters(message, dw0=ipo | (CONNECT_IATTR_DATA if in_data else 0))


class QueueSession:
    def __init__(self, target: Target, *, local_addr: tuple[str, str] = ("", ""),
                 peer_addr: tuple[str, str] = ("", "")) -> None:
        cfg = target.config
        self.target = target
        self.conn = ControllerConnection(
            maxh2cdata=cfg.maxh2cdata, in_capsule_size=cfg.in_capsule_size, max_transfer=cfg.mdts_bytes,
            c2h_chunk=cfg.maxh2cdata, c2h_success=cfg.c2h_success,
            max_outstanding_r2t=cfg.max_r2t_per_connection, max_connection_memory=cfg.max_connection_memory)
        self.local_addr = local_addr
        self.peer_addr = peer_addr
        self.controller: Controller | None = None
        self.qid = ADMIN_QID
        self.wakeup: Callable[[], None] = lambda: None
        self.close: Callable[[str], None] = lambda reason: None
        self.inflight: set[int] = set()
        self._receiving = False
        self.terminated: Exception | None = None
        self.commands = 0
        self.auth: ControllerAuth | None = None  # set by Connect when the host must authenticate
        self.faults = hooks_of(target)
        self.call_later: Callable[[float, Callable[[], None]], object] | None = None  # the edge's timer
        self._faulted: dict[int, Decision] = {}  # cid -> a fault acting on its completion
        self._dropped = False  # a fault dropped this connection: later commands are not run

    # -- edge interface ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._handle(self.conn.receive_data(data))

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._handle(self.conn.buffer_updated(nbytes))

    def data_to_send(self) -> list[bytes | memoryview]:
        return self.conn.data_to_send()

    def connection_lost(self) -> None:
        self.conn.closed()
        if self.controller is not None:
            ctrl, self.controller = self.controller, None
            ctrl.queue_gone(self.qid)

    # -- QueueSessionPort -------------------------------------------------------------

    def send_completion(self, cid: int, status: int, dw0: int = 0, dw1: int = 0,
                        data: bytes | bytearray | memoryview | None = None) -> None:
        if self._faulted and cid in self._faulted and self._faulted_completion(cid, status, dw0, dw1, data):
            return
        self.inflight.discard(cid)
        if data is not None and status == 0:
            self.conn.complete_with_data(cid, data, status, dw0, dw1)
        else:
            self.conn.complete(cid, status, dw0, dw1)
        if not self._receiving:
            self.wakeup()

    def disconnect(self, reason: str) -> None:
        self.controller = None
        self.close(reason)

    # -- dispatch ---------------------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        self._receiving = True
        try:
            for ev in events:
                if type(ev) is CommandReceived:
                    self._command(ev)
                elif isinstance(ev, Terminated):
                    self.terminated = ev.error
                    log.warning("connection %s: %s", self.peer_addr, ev.error)
                    self.close(str(ev.error))
                elif isinstance(ev, CommandFailedInTransport):
                    log.warning("connection %s: command %d failed in transport: %s", self.peer_addr,
                                ev.cid, ev.error)
                    if self.controller is not None:
                        self.controller.record_error(self.qid, ev.cid, ev.error)
        finally:
            self._receiving = False

    def _command(self, ev: CommandReceived) -> None:
        cid = ev.sqe[2]
        self.commands += 1
        if cid in self.inflight:
            self.conn.complete(cid, CID_CONFLICT)
            return
        self.inflight.add(cid)
        if self.faults.active and self.controller is not None and ev.sqe[0] != AdminOpcode.FABRICS \
                and self._inject(ev):
            return
        try:
            _check_command_flags(ev.sqe[1])
            opcode = ev.sqe[0]
            ctrl = self.controller
            authcmd.check_authenticated(self, ev)
            if opcode == AdminOpcode.FABRICS:
                reply: Reply | None = self._fabrics(ev)
            elif ctrl is None:
                raise CommandSequenceError("the first command on a queue must be Fabrics Connect")
            elif self.qid == ADMIN_QID:
                reply = ctrl.admin_command(ev)
            else:
                self._io(ctrl, ev)
                return
        except NvmeStatus as err:
            if self.controller is not None:
                self.controller.record_error(self.qid, cid, err, ev.sqe[3])
            reply = (err.status, err.dw0, None)
        except Exception as exc:  # a bug in a handler: loud, but only this command fails
            log.exception("internal error handling command %r", ev)
            reply = (InternalError(str(exc)).status, 0, None)
        if reply is not None:
            status, dw0, data = reply
            self.send_completion(cid, status, dw0, 0, data)

    # -- fault injection (see nvmeof.controller.faults) ----------------------------------

    def _inject(self, ev: CommandReceived) -> bool:
        """Ask the fault hooks about this command; True when the fault consumed it."""
        ctrl = self.controller
        assert ctrl is not None
        if self._dropped:  # a later command of the same read: the connection is gone
            self.inflight.discard(ev.sqe[2])
            return True
        info = CommandInfo(ctrl.subsystem.nqn if ctrl.subsystem is not None else DISCOVERY_NQN, ctrl.hostnqn,
                           self.qid, ev.sqe[0], ev.sqe[3], ev.sqe[2], self.conn.ddgst,
                           self.target.portid_for(self.local_addr))
        decision = self.faults.on_command(info)
        if decision is None:
            return False
        if decision.action is FaultAction.STATUS:
            self.send_completion(info.cid, decision.status)
            return True
        if decision.action is FaultAction.DROP:
            self.inflight.discard(info.cid)
            self._dropped = True
            self.close(f"fault injection: connection dropped at command {info.cid}")
            return True
        self._faulted[info.cid] = decision  # DELAY / CORRUPT_DIGEST act on the completion
        return False

    def _faulted_completion(self, cid: int, status: int, dw0: int, dw1: int,
                            data: bytes | bytearray | memoryview | None) -> bool:
        """Apply a delay or digest fault to this completion; True when it is sent later."""
        decision = self._faulted.pop(cid)
        if decision.action is FaultAction.CORRUPT_DIGEST:
            self.inflight.discard(cid)
            if data is not None and status == 0:
                self.conn.complete_with_data(cid, data, status, dw0, dw1, corrupt_ddgst=True)
            else:
                self.conn.complete(cid, status, dw0, dw1)
            if not self._receiving:
                self.wakeup()
            return True
        if self.call_later is None:  # no timer (a bare sans-IO session): complete now
            return False
        held = bytes(data) if data is not None else None  # the store may change under a view
        self.call_later(decision.delay_ms / 1000.0, lambda: self.send_completion(cid, status, dw0, dw1, held))
        return True

    # -- I/O ----------------------------------------------------------------------------

    def _io(self, ctrl: Controller, ev: CommandReceived) -> None:
        ctrl.touch()
        try:
            decoded = io.decode_io(ctrl, self.qid, ev)
            if not isinstance(decoded, list):
                ana.check_path(ctrl, decoded.nsid)  # ANA: this path may refuse I/O (SCT 3h)
        except NvmeStatus as err:
            ctrl.record_error(self.qid, ev.sqe[2], err, ev.sqe[3])
            self.send_completion(ev.sqe[2], err.status, err.dw0)
            return
        if isinstance(decoded, list):
            self._flush_all(ctrl, ev.sqe[2], decoded)
            return
        cmd = decoded
        if not ctrl.features.get(FeatureId.VOLATILE_WRITE_CACHE, 1):
            cmd.fua = True
        ns = ctrl.visible_namespaces()[cmd.nsid]

        def done(status: int, dw0: int, data: bytes | bytearray | memoryview | None) -> None:
            io.account(ctrl, cmd, status, data)
            if status:
                ctrl.record_error(self.qid, cmd.cid, NvmeStatus.from_status(status), cmd.nsid)
            self.send_completion(cmd.cid, status, dw0, 0, data)

        try:
            ns.backend.execute(cmd, done)
        except NvmeStatus as err:
            done(err.status, err.dw0, None)

    def _flush_all(self, ctrl: Controller, cid: int, cmds: list[IoCommand]) -> None:
        remaining = [len(cmds)]
        first_error = [0]
        if not cmds:
            self.send_completion(cid, 0)
            return

        def done(status: int, dw0: int, data: object) -> None:
            if status and not first_error[0]:
                first_error[0] = status
            remaining[0] -= 1
            if remaining[0] == 0:
                self.send_completion(cid, first_error[0])

        namespaces = ctrl.visible_namespaces()
        for cmd in cmds:
            namespaces[cmd.nsid].backend.execute(cmd, done)

    # -- Fabrics ------------------------------------------------------------------------

    def _fabrics(self, ev: CommandReceived) -> Reply | None:
        fctype = ev.raw[FABRICS_FCTYPE_OFFSET]
        if fctype == FabricsType.CONNECT:
            if self.controller is not None:
                raise CommandSequenceError("this queue is already connected")
            return self._connect(ev)
        ctrl = self.controller
        if ctrl is None:
            raise CommandSequenceError("the first command on a queue must be Fabrics Connect")
        ctrl.touch()
        if fctype in authcmd.AUTH_FCTYPES:
            authcmd.handle(self, ev, fctype)
            return None
        if fctype in (FabricsType.PROPERTY_GET, FabricsType.PROPERTY_SET):
            if self.qid != ADMIN_QID:
                raise InvalidOpcode("Property Get/Set is an admin-queue command")
            cmd = PROPERTY_CMD.unpack(ev.raw)
            size = cmd.attrib & 0x7
            if fctype == FabricsType.PROPERTY_GET:
                value = ctrl.property_get(cmd.ofst, size)
                self.send_completion(ev.cid, 0, value & 0xFFFFFFFF, value >> 32)
                return None  # the completion carries DW0 and DW1, sent above
            ctrl.property_set(cmd.ofst, size, cmd.value)
            return 0, 0, None
        if fctype == FabricsType.DISCONNECT and self.qid != ADMIN_QID:
            self.send_completion(ev.cid, 0)
            ctrl.queues.pop(self.qid, None)
            self.disconnect("host sent Fabrics Disconnect")
            return None
        raise InvalidOpcode(f"Fabrics command type {fctype:#x} not supported")

    def _connect(self, ev: CommandReceived) -> Reply:
        cmd = CONNECT_CMD.unpack(ev.raw)
        if cmd.recfmt != 0:
            raise IncompatibleFormat(f"Connect record format {cmd.recfmt}")
        if ev.data is None or len(ev.data) < CONNECT_DATA_SIZE:
            raise _invalid_connect("Connect data must be 1024 bytes", IPO_CNTLID, True)
        data = CONNECT_DATA.unpack(ev.data)
        subnqn = c_string(data.subnqn)
        hostnqn = c_string(data.hostnqn)
        if not hostnqn:
            raise _invalid_connect("empty host NQN", IPO_HOSTNQN, True)
        target = self.target
        subsystem: Subsystem | None = None
        if subnqn != DISCOVERY_NQN:
            subsystem = target.subsystems.get(subnqn)
            if subsystem is None:
                log.warning("Connect from %s to unknown subsystem %r", hostnqn, subnqn)
                raise _invalid_connect(f"unknown subsystem {subnqn!r}", IPO_SUBNQN, True)
            if not target.host_may_see(subsystem, hostnqn):
                log.warning("Connect from %s to %s refused: host not allowed", hostnqn, subnqn)
                raise ConnectInvalidHost(f"host {hostnqn} may not access {subnqn}",
                                         dw0=IPO_HOSTNQN | CONNECT_IATTR_DATA)
        if cmd.qid == ADMIN_QID:
            return self._connect_admin(cmd, data, subsystem, hostnqn)
        return self._connect_io(cmd, data, subsystem, hostnqn)

    def _connect_admin(self, cmd: Any, data: Any, subsystem: Subsystem | None, hostnqn: str) -> Reply:
        cfg = self.target.config
        if data.cntlid != CNTLID_DYNAMIC:
            raise _invalid_connect("only the dynamic controller model is supported", IPO_CNTLID, True)
        if not MIN_ADMIN_SQSIZE <= cmd.sqsize < cfg.max_admin_queue_depth:
            raise _invalid_connect(f"admin SQSIZE {cmd.sqsize}", IPO_SQSIZE, False)
        cntlid = self.target.allocate_cntlid(subsystem)
        ctrl = Controller(self.target, subsystem, cntlid, hostnqn, bytes(data.hostid), cmd.kato, self,
                          self.local_addr)
        if subsystem is None:
            self.target.discovery_controllers[cntlid] = ctrl
        else:
            subsystem.controllers[cntlid] = ctrl
        self.controller = ctrl
        self.qid = ADMIN_QID
        self.conn.bind_queue(ADMIN_QID, cmd.sqsize + 1,
                             sq_flow_control=not cmd.cattr & CATTR_DISABLE_SQ_FLOW_CONTROL)
        log.info("controller %d: %s connected to %s (kato %d ms) from %s", cntlid, hostnqn,
                 subsystem.nqn if subsystem else DISCOVERY_NQN, cmd.kato, self.peer_addr)
        return 0, cntlid | authcmd.start(self, subsystem, hostnqn), None

    def _connect_io(self, cmd: Any, data: Any, subsystem: Subsystem | None, hostnqn: str) -> Reply:
        if subsystem is None:
            raise _invalid_connect("discovery controllers have no I/O queues", IPO_QID, False)
        ctrl = subsystem.controllers.get(data.cntlid)
        if ctrl is None or ctrl.hostnqn != hostnqn or ctrl.hostid != bytes(data.hostid):
            raise _invalid_connect(f"no controller {data.cntlid} for this host", IPO_CNTLID, True)
        if not ctrl.ready:
            raise _invalid_connect(f"controller {data.cntlid} is not enabled", IPO_CNTLID, True)
        limit = ctrl.num_io_queues or self.target.config.max_io_queues
        if not 1 <= cmd.qid <= limit or cmd.qid in ctrl.queues:
            raise _invalid_connect(f"QID {cmd.qid} invalid or in use (limit {limit})", IPO_QID, False)
        if not 1 <= cmd.sqsize < self.target.config.max_queue_depth:
            raise _invalid_connect(f"I/O SQSIZE {cmd.sqsize}", IPO_SQSIZE, False)
        self.controller = ctrl
        self.qid = cmd.qid
        self.conn.bind_queue(cmd.qid, cmd.sqsize + 1,
                             sq_flow_control=not cmd.cattr & CATTR_DISABLE_SQ_FLOW_CONTROL)
        ctrl.add_io_queue(cmd.qid, self)
        return 0, ctrl.cntlid | authcmd.start(self, subsystem, hostnqn), None
