"""Fabrics Authentication Send (05h) / Receive (06h) on a controller queue.

The queue session owns a :class:`~nvmeof.auth.ControllerAuth` when the host entry of the
subsystem requires DH-HMAC-CHAP; these two handlers move messages between the commands and
that state machine.  When the exchange fails (AUTH_Failure1 returned, or AUTH_Failure2
received) the command still completes, then the queue is torn down: on the admin queue the
whole association goes (as nvmet's fatal error does); on an I/O queue the controller too,
because a host that cannot authenticate one of its queues is not trusted on the others.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..auth.constants import AUTHREQ_ATR, SECP_DHCHAP, SPSP0_DHCHAP, SPSP1_DHCHAP
from ..auth.controller_side import ControllerAuth
from ..auth.messages import AUTH_RECV_CMD, AUTH_SEND_CMD
from ..auth.status import AuthenticationRequired
from ..errors import CommandSequenceError, InvalidField
from ..transport.controller_side import CommandReceived
from ..wire.constants import AdminOpcode, FabricsType
from ..wire.queue_entry import FABRICS_FCTYPE_OFFSET

if TYPE_CHECKING:
    from .model import Subsystem
    from .session import QueueSession

log = logging.getLogger("nvmeof.auth")

MAX_AUTH_TRANSFER = 65536  # far above the largest message (ffdhe8192 Reply: 16 + 2*64 + 1024 bytes)


def _check_protocol(cmd: object) -> None:
    if cmd.secp != SECP_DHCHAP:  # type: ignore[attr-defined]
        raise InvalidField(f"SECP {cmd.secp:#x} is not DH-HMAC-CHAP")  # type: ignore[attr-defined]
    if cmd.spsp0 != SPSP0_DHCHAP or cmd.spsp1 != SPSP1_DHCHAP:  # type: ignore[attr-defined]
        raise InvalidField("SPSP0/SPSP1 must be 01h")


def _auth(session: QueueSession) -> ControllerAuth:
    if session.auth is None:
        raise CommandSequenceError("this queue does not use in-band authentication")
    return session.auth


def auth_send(session: QueueSession, ev: CommandReceived) -> None:
    cmd = AUTH_SEND_CMD.unpack(ev.raw)
    _check_protocol(cmd)
    auth = _auth(session)
    if not 0 < cmd.tl <= MAX_AUTH_TRANSFER or ev.data is None or len(ev.data) < cmd.tl:
        raise InvalidField(f"Authentication Send TL {cmd.tl} does not match its data")
    auth.send(bytes(ev.data[:cmd.tl]))
    session.send_completion(ev.cid, 0)
    _teardown_if_failed(session, auth)


def auth_receive(session: QueueSession, ev: CommandReceived) -> None:
    cmd = AUTH_RECV_CMD.unpack(ev.raw)
    _check_protocol(cmd)
    auth = _auth(session)
    if not 0 < cmd.al <= MAX_AUTH_TRANSFER:
        raise InvalidField(f"Authentication Receive AL {cmd.al}")
    message = auth.receive()
    if len(message) > cmd.al:
        auth.failed = True
        session.send_completion(ev.cid, InvalidField(f"AL {cmd.al} < message {len(message)}").status)
    else:
        session.send_completion(ev.cid, 0, data=message.ljust(cmd.al, b"\0"))
    _teardown_if_failed(session, auth)


def _teardown_if_failed(session: QueueSession, auth: ControllerAuth) -> None:
    if not auth.failed:
        return
    ctrl = session.controller
    log.warning("authentication failed on qid %d for %s: tearing down", auth.qid, auth.hostnqn)
    if ctrl is not None:
        ctrl.release("DH-HMAC-CHAP authentication failed")
    else:
        session.disconnect("DH-HMAC-CHAP authentication failed")


AUTH_FCTYPES = (FabricsType.AUTH_SEND, FabricsType.AUTH_RECV)


def start(session: QueueSession, subsystem: Subsystem | None, hostnqn: str) -> int:
    """After a successful Connect: the AUTHREQ bits for the response DW0 (0 if no auth)."""
    policy = subsystem.host_auth.get(hostnqn) if subsystem is not None else None
    if policy is None:
        session.auth = None
        return 0
    session.auth = ControllerAuth(policy, hostnqn, subsystem.nqn, session.qid)  # type: ignore[union-attr]
    return AUTHREQ_ATR


def check_authenticated(session: QueueSession, ev: CommandReceived) -> None:
    """Every command but Authentication Send/Receive waits for the queue to authenticate."""
    auth = session.auth
    if auth is None or auth.authenticated:
        return
    if ev.sqe[0] == AdminOpcode.FABRICS and ev.raw[FABRICS_FCTYPE_OFFSET] in AUTH_FCTYPES:
        return
    raise AuthenticationRequired(f"qid {session.qid}: authenticate first")


def handle(session: QueueSession, ev: CommandReceived, fctype: int) -> None:
    if fctype == FabricsType.AUTH_SEND:
        auth_send(session, ev)
    else:
        auth_receive(session, ev)
