"""DH-HMAC-CHAP from the host: run after a Connect whose response asks for it (AUTHREQ.ATR).

Like the Linux host (drivers/nvme/host/auth.c), every queue authenticates on its own:
Negotiate -> Challenge -> Reply -> Success1 [-> Success2 when the controller is
authenticated too].  A host without a secret gives up when the controller requires
authentication, as Linux does ("authentication required").
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

from ..auth.constants import AUTHREQ_ATR, SECP_DHCHAP, SPSP0_DHCHAP, SPSP1_DHCHAP, DhGroupId, HashId
from ..auth.host_side import AuthenticationFailed, AuthRejected, HostAuth
from ..auth.messages import AUTH_RECV_CMD, AUTH_SEND_CMD
from ..auth.policy import DEFAULT_DHGROUPS, DEFAULT_HASHES
from ..auth.secret import DhchapKey
from ..wire.constants import AdminOpcode, FabricsType
from .queue import HostQueue

log = logging.getLogger("nvmeof.host.auth")

RECEIVE_LENGTH = 4096  # the Linux host's buffer for controller messages
_transactions = itertools.count(1)


class AuthenticationRequiredError(ConnectionError):
    """The controller requires DH-HMAC-CHAP and no secret was given."""


@dataclass(frozen=True)
class DhchapSecrets:
    host_key: DhchapKey = field(repr=False)
    ctrl_key: DhchapKey | None = field(default=None, repr=False)
    hashes: tuple[HashId, ...] = DEFAULT_HASHES
    dhgroups: tuple[DhGroupId, ...] = DEFAULT_DHGROUPS

    @classmethod
    def from_strings(cls, secret: str | None, ctrl_secret: str | None = None, *,
                     hashes: tuple[HashId, ...] = DEFAULT_HASHES,
                     dhgroups: tuple[DhGroupId, ...] = DEFAULT_DHGROUPS) -> DhchapSecrets | None:
        if secret is None:
            if ctrl_secret is not None:
                raise ValueError("a controller secret needs a host secret")
            return None
        return cls(DhchapKey.parse(secret), DhchapKey.parse(ctrl_secret) if ctrl_secret else None, hashes, dhgroups)


def _send_cmd(length: int) -> bytearray:
    return bytearray(AUTH_SEND_CMD.pack(opcode=AdminOpcode.FABRICS, fctype=FabricsType.AUTH_SEND, secp=SECP_DHCHAP,
                                        spsp0=SPSP0_DHCHAP, spsp1=SPSP1_DHCHAP, tl=length))


def _recv_cmd(length: int) -> bytearray:
    return bytearray(AUTH_RECV_CMD.pack(opcode=AdminOpcode.FABRICS, fctype=FabricsType.AUTH_RECV, secp=SECP_DHCHAP,
                                        spsp0=SPSP0_DHCHAP, spsp1=SPSP1_DHCHAP, al=length))


async def _send(queue: HostQueue, payload: bytes) -> None:
    from .controller import check  # late: controller imports this module
    check(await queue.submit(_send_cmd(len(payload)), payload))


async def _receive(queue: HostQueue) -> bytes:
    from .controller import check
    response = await queue.submit(_recv_cmd(RECEIVE_LENGTH), None, RECEIVE_LENGTH)
    check(response)
    return bytes(response.data or b"")


async def authenticate(queue: HostQueue, secrets: DhchapSecrets, subnqn: str, hostnqn: str) -> None:
    """One DH-HMAC-CHAP transaction on ``queue``; raises AuthenticationFailed (the controller
    refused the host) or AuthRejected (the host refused the controller)."""
    auth = HostAuth(secrets.host_key, hostnqn, subnqn, ctrl_key=secrets.ctrl_key,
                    t_id=next(_transactions) & 0xFFFF, hashes=secrets.hashes, dhgroups=secrets.dhgroups)
    await _send(queue, auth.negotiate())
    try:
        await _send(queue, auth.reply(await _receive(queue)))
        success2 = auth.success1(await _receive(queue))
    except AuthRejected as err:
        log.warning("%s: rejecting the controller: %s", queue.name, err)
        try:
            await _send(queue, err.failure2)
        except (ConnectionError, OSError):
            pass
        raise
    if success2 is not None:
        await _send(queue, success2)
    log.info("%s: authenticated (%s, %s%s)", queue.name, auth.hash_id.label if auth.hash_id else "?",
             auth.dhgroup.label if auth.dhgroup is not None else "?", ", bidirectional" if success2 else "")


async def authenticate_if_required(queue: HostQueue, connect_dw0: int, secrets: DhchapSecrets | None,
                                   subnqn: str, hostnqn: str) -> None:
    if not connect_dw0 & AUTHREQ_ATR:
        return
    if secrets is None:
        raise AuthenticationRequiredError(f"{queue.name}: the controller requires authentication and no "
                                          "DH-HMAC-CHAP secret was given")
    await authenticate(queue, secrets, subnqn, hostnqn)


__all__ = ["AuthRejected", "AuthenticationFailed", "AuthenticationRequiredError", "DhchapSecrets", "authenticate",
           "authenticate_if_required"]
