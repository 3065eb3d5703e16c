"""Controller side of DH-HMAC-CHAP on one queue (sans-IO).

Theory of operation
-------------------
After a Connect whose response set AUTHREQ.ATR, the host drives the exchange with Fabrics
Authentication Send (host -> controller messages) and Authentication Receive (controller ->
host messages).  The queue accepts nothing else until :attr:`authenticated` is true.

    expect NEGOTIATE  --Send AUTH_Negotiate (hash + group agreed)-->   CHALLENGE
    CHALLENGE         --Receive: DH-HMAC-CHAP_Challenge (C1, S1, DH)--> REPLY
    REPLY             --Send Reply, response correct-->                 SUCCESS1
                        (unidirectional: authenticated now)
    SUCCESS1          --Receive: Success1 (with controller response if the host sent C2)
                        --> DONE (unidirectional) | SUCCESS2 (bidirectional)
    SUCCESS2          --Send Success2--> DONE, authenticated
    any error         --> FAILURE1: the next Receive returns AUTH_Failure1, then the
                        queue is torn down (:attr:`failed`)
    Send AUTH_Failure2 (the host rejected the controller) --> failed

A Negotiate in any state restarts the transaction (re-authentication).
"""

from __future__ import annotations

import hmac
import logging
import os
from enum import Enum, auto

from . import messages as m
from .constants import SC_C_NONE, AuthMessage, AuthType, DhGroupId, FailureExplanation, HashId
from .crypto import DhExchange, augmented_challenge, controller_response, group_size, host_response
from .policy import AuthPolicy, next_seqnum

log = logging.getLogger("nvmeof.auth")


class Step(Enum):
    NEGOTIATE = auto()
    CHALLENGE = auto()
    REPLY = auto()
    SUCCESS1 = auto()
    SUCCESS2 = auto()
    FAILURE1 = auto()
    DONE = auto()
    FAILED = auto()


class ControllerAuth:
    def __init__(self, policy: AuthPolicy, hostnqn: str, subnqn: str, qid: int) -> None:
        self.policy = policy
        self.hostnqn = hostnqn
        self.subnqn = subnqn
        self.qid = qid
        self.step = Step.NEGOTIATE
        self.authenticated = False
        self.failed = False
        self.explanation = 0
        self.t_id = 0
        self.hash_id = HashId.SHA256
        self.dhgroup = DhGroupId.NULL
        self._c1 = b""
        self._s1 = 0
        self._dh: DhExchange | None = None
        self._secret: bytes | None = None
        self._c2: bytes | None = None
        self._s2 = 0

    # -- Authentication Send ------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Take a host -> controller message; errors move to FAILURE1, never raise."""
        try:
            auth_type, auth_id, t_id = m.header(payload)
            if auth_type == AuthType.COMMON and auth_id == AuthMessage.NEGOTIATE:
                self._negotiate(m.parse_negotiate(payload))
                return
            if auth_type == AuthType.COMMON and auth_id == AuthMessage.FAILURE2:
                failure = m.parse_failure(payload)
                log.warning("qid %d: host %s rejected the controller (explanation %#x)", self.qid,
                            self.hostnqn, failure.explanation)
                self.authenticated = False
                self.failed = True
                self.step = Step.FAILED
                return
            if t_id != self.t_id:
                raise m.MessageError(f"transaction {t_id}, expected {self.t_id}")
            if self.step is Step.REPLY and auth_id == AuthMessage.REPLY:
                self._reply(m.parse_reply(payload))
            elif self.step is Step.SUCCESS2 and auth_id == AuthMessage.SUCCESS2:
                if len(payload) < m.SUCCESS2.size:
                    raise m.MessageError("Success2 too short")
                self.authenticated = True
                self.step = Step.DONE
                log.info("qid %d: host %s and controller authenticated (%s, %s)", self.qid, self.hostnqn,
                         self.hash_id.label, self.dhgroup.label)
            else:
                raise m.MessageError(f"message {auth_id:#x} in step {self.step.name}",
                                     FailureExplanation.INCORRECT_MESSAGE)
        except m.MessageError as err:
            self._fail(err.explanation, str(err))

    def _fail(self, explanation: int, why: str) -> None:
        log.warning("qid %d: authentication of %s failed: %s", self.qid, self.hostnqn, why)
        self.authenticated = False
        self.explanation = explanation
        self.step = Step.FAILURE1

    def _negotiate(self, neg: m.Negotiate) -> None:
        self.t_id = neg.t_id
        if neg.sc_c != SC_C_NONE:
            raise m.MessageError("secure channel concatenation is not supported", FailureExplanation.CONCAT_MISMATCH)
        hash_id = next((h for h in self.policy.hashes if h in neg.hashes), None)
        if hash_id is None:
            raise m.MessageError(f"no common hash in {neg.hashes}", FailureExplanation.HASH_UNUSABLE)
        group = next((g for g in self.policy.dhgroups if g in neg.dhgroups), None)
        if group is None:
            raise m.MessageError(f"no common DH group in {neg.dhgroups}", FailureExplanation.DHGROUP_UNUSABLE)
        self.hash_id, self.dhgroup = hash_id, group
        self._c2, self._s2, self._secret, self._dh = None, 0, None, None
        self.step = Step.CHALLENGE

    def _reply(self, reply: m.Reply) -> None:
        hl = self.hash_id.length
        if len(reply.response) != hl:
            raise m.MessageError(f"reply HL {len(reply.response)}, expected {hl}")
        if self._dh is not None:
            try:
                self._secret = self._dh.shared_secret(reply.dh_value)
            except ValueError as err:
                raise m.MessageError(str(err), FailureExplanation.DHGROUP_UNUSABLE) from None
        elif reply.dh_value:
            raise m.MessageError("DH value with the NULL group")
        expected = host_response(self.hash_id, self.policy.host_key.transformed(self.hostnqn),
                                 augmented_challenge(self.hash_id, self._secret, self._c1), self._s1, self.t_id,
                                 self.hostnqn, self.subnqn)
        if not hmac.compare_digest(expected, reply.response):
            raise m.MessageError("host response mismatch", FailureExplanation.FAILED)
        if reply.c2 is not None and reply.seqnum != 0:
            if self.policy.ctrl_key is None:
                raise m.MessageError("host asks to authenticate the controller; no controller key configured",
                                     FailureExplanation.FAILED)
            self._c2, self._s2 = reply.c2, reply.seqnum
        else:
            self.authenticated = True
            log.info("qid %d: host %s authenticated (%s, %s)", self.qid, self.hostnqn, self.hash_id.label,
                     self.dhgroup.label)
        self.step = Step.SUCCESS1

    # -- Authentication Receive ---------------------------------------------------------

    def receive(self) -> bytes:
        """The controller -> host message for an Authentication Receive."""
        if self.step is Step.CHALLENGE:
            return self._challenge()
        if self.step is Step.SUCCESS1:
            rval = None
            if self._c2 is not None:
                assert self.policy.ctrl_key is not None
                rval = controller_response(self.hash_id, self.policy.ctrl_key.transformed(self.subnqn),
                                           augmented_challenge(self.hash_id, self._secret, self._c2), self._s2,
                                           self.t_id, self.hostnqn, self.subnqn)
            self.step = Step.SUCCESS2 if rval is not None else Step.DONE
            return m.build_success1(self.t_id, self.hash_id.length, rval)
        if self.step is not Step.FAILURE1:
            self.explanation = FailureExplanation.INCORRECT_MESSAGE
        self.failed = True
        self.step = Step.FAILED
        return m.build_failure(AuthMessage.FAILURE1, self.t_id, self.explanation or FailureExplanation.FAILED)

    def _challenge(self) -> bytes:
        self._c1 = os.urandom(self.hash_id.length)
        self._s1 = next_seqnum()
        dh_value = b""
        if self.dhgroup is not DhGroupId.NULL:
            self._dh = DhExchange(self.dhgroup)
            dh_value = self._dh.public_value()
            assert len(dh_value) == group_size(self.dhgroup)
        self.step = Step.REPLY
        return m.build_challenge(m.Challenge(self.t_id, self.hash_id, self.dhgroup, self._s1, self._c1, dh_value))
