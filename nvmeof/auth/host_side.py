"""Host side of DH-HMAC-CHAP on one queue (sans-IO).

    negotiate()            -> AUTH_Negotiate payload (Authentication Send)
    reply(challenge)       -> DH-HMAC-CHAP_Reply payload (Authentication Send)
    success1(message)      -> Success2 payload to send, or None (unidirectional)

A Failure1 from the controller raises :class:`AuthenticationFailed`.  A challenge the host
cannot use, or a controller response that does not verify, raises :class:`AuthRejected`
carrying the AUTH_Failure2 payload the host must send before giving up.
"""

from __future__ import annotations

import hmac
import os

from . import messages as m
from .constants import AuthMessage, AuthType, DhGroupId, FailureExplanation, HashId
from .crypto import DhExchange, augmented_challenge, controller_response, group_size, host_response
from .policy import DEFAULT_DHGROUPS, DEFAULT_HASHES, next_seqnum
from .secret import DhchapKey


class AuthenticationFailed(Exception):
    """The controller refused the host (AUTH_Failure1)."""

    def __init__(self, explanation: int) -> None:
        super().__init__(f"controller refused authentication (reason explanation {explanation:#x})")
        self.explanation = explanation


class AuthRejected(Exception):
    """The host refuses the controller or its challenge; send :attr:`failure2` first."""

    def __init__(self, message: str, failure2: bytes, explanation: int) -> None:
        super().__init__(message)
        self.failure2 = failure2
        self.explanation = explanation


class HostAuth:
    def __init__(self, host_key: DhchapKey, hostnqn: str, subnqn: str, *, ctrl_key: DhchapKey | None = None,
                 t_id: int = 0, hashes: tuple[HashId, ...] = DEFAULT_HASHES,
                 dhgroups: tuple[DhGroupId, ...] = DEFAULT_DHGROUPS) -> None:
        self.host_key = host_key
        self.ctrl_key = ctrl_key
        self.hostnqn = hostnqn
        self.subnqn = subnqn
        self.t_id = t_id
        self.hashes = hashes
        self.dhgroups = dhgroups
        self.hash_id: HashId | None = None
        self.dhgroup: DhGroupId | None = None
        self._secret: bytes | None = None
        self._c2: bytes | None = None
        self._s2 = 0

    def negotiate(self) -> bytes:
        return m.build_negotiate(self.t_id, [int(h) for h in self.hashes], [int(g) for g in self.dhgroups])

    def _reject(self, message: str, explanation: FailureExplanation) -> AuthRejected:
        return AuthRejected(message, m.build_failure(AuthMessage.FAILURE2, self.t_id, explanation), explanation)

    @staticmethod
    def _check_failure1(payload: bytes) -> None:
        auth_type, auth_id, _ = m.header(payload)
        if auth_type == AuthType.COMMON and auth_id == AuthMessage.FAILURE1:
            raise AuthenticationFailed(m.parse_failure(payload).explanation)

    def reply(self, payload: bytes) -> bytes:
        self._check_failure1(payload)
        try:
            ch = m.parse_challenge(payload)
        except m.MessageError as err:
            raise self._reject(str(err), err.explanation) from None
        if ch.t_id != self.t_id:
            raise self._reject(f"challenge for transaction {ch.t_id}", FailureExplanation.INCORRECT_PAYLOAD)
        if ch.hash_id not in self.hashes:
            raise self._reject(f"hash {ch.hash_id:#x} not offered", FailureExplanation.HASH_UNUSABLE)
        if ch.dhgroup not in self.dhgroups:
            raise self._reject(f"DH group {ch.dhgroup:#x} not offered", FailureExplanation.DHGROUP_UNUSABLE)
        hash_id, group = HashId(ch.hash_id), DhGroupId(ch.dhgroup)
        if len(ch.c1) != hash_id.length or len(ch.dh_value) != group_size(group):
            raise self._reject("challenge HL or DHVLEN does not match its hash and group",
                               FailureExplanation.INCORRECT_PAYLOAD)
        self.hash_id, self.dhgroup = hash_id, group
        dh_value = b""
        if group is not DhGroupId.NULL:
            exchange = DhExchange(group)
            try:
                self._secret = exchange.shared_secret(ch.dh_value)
            except ValueError as err:
                raise self._reject(str(err), FailureExplanation.DHGROUP_UNUSABLE) from None
            dh_value = exchange.public_value()
        response = host_response(hash_id, self.host_key.transformed(self.hostnqn),
                                 augmented_challenge(hash_id, self._secret, ch.c1), ch.seqnum, self.t_id,
                                 self.hostnqn, self.subnqn)
        if self.ctrl_key is not None:
            self._c2 = os.urandom(hash_id.length)
            self._s2 = next_seqnum()
        return m.build_reply(m.Reply(self.t_id, self._s2, response, self._c2, dh_value))

    def success1(self, payload: bytes) -> bytes | None:
        self._check_failure1(payload)
        try:
            s1 = m.parse_success1(payload)
        except m.MessageError as err:
            raise self._reject(str(err), err.explanation) from None
        if self.ctrl_key is None:
            return None
        assert self.hash_id is not None and self._c2 is not None
        if s1.response is None:
            raise self._reject("controller did not authenticate itself", FailureExplanation.FAILED)
        expected = controller_response(self.hash_id, self.ctrl_key.transformed(self.subnqn),
                                       augmented_challenge(self.hash_id, self._secret, self._c2), self._s2,
                                       self.t_id, self.hostnqn, self.subnqn)
        if not hmac.compare_digest(expected, s1.response):
            raise self._reject("controller response mismatch", FailureExplanation.FAILED)
        return m.build_success2(self.t_id)
