"""Authentication Send/Receive commands and DH-HMAC-CHAP message layouts.

Each fixed part is declared once as a :class:`~nvmeof.wire.layout.Layout` (offsets from the
NVMe Base specification; SPDK ``nvmf_spec.h`` asserts the same sizes).  The variable parts
follow the fixed header: Negotiate carries NAPD 64-byte protocol descriptors, Challenge
``hl`` bytes of C1 then ``dhvlen`` bytes of DH value, Reply ``hl`` bytes of response, ``hl``
bytes of C2 and ``dhvlen`` bytes of DH value, Success1 ``hl`` bytes of response.
Parsers check every length against the payload and raise :class:`MessageError` with the
failure explanation the peer should be told.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..wire.constants import SQE_SIZE
from ..wire.layout import Layout
from ..wire.queue_entry import FABRICS_CMD_HEADER
from .constants import (
    DESCRIPTOR_HASH_SLOTS,
    DESCRIPTOR_IDLIST_SIZE,
    DHCHAP_AUTH_ID,
    AuthMessage,
    AuthType,
    DhGroupId,
    FailureExplanation,
    FailureReason,
    HashId,
)

# Fabrics Authentication Send (05h) / Receive (06h) submission queue entries
AUTH_SEND_CMD = FABRICS_CMD_HEADER.extend("AuthSendCmd", SQE_SIZE, [
    ("spsp0", "B", 41),
    ("spsp1", "B", 42),
    ("secp", "B", 43),
    ("tl", "I", 44),
])
AUTH_RECV_CMD = FABRICS_CMD_HEADER.extend("AuthRecvCmd", SQE_SIZE, [
    ("spsp0", "B", 41),
    ("spsp1", "B", 42),
    ("secp", "B", 43),
    ("al", "I", 44),
])

MESSAGE_HEADER = Layout("AuthMessageHeader", 6, [
    ("auth_type", "B", 0),
    ("auth_id", "B", 1),
    ("t_id", "H", 4),
])
NEGOTIATE = MESSAGE_HEADER.extend("AuthNegotiate", 8, [
    ("sc_c", "B", 6),
    ("napd", "B", 7),
])
PROTOCOL_DESCRIPTOR = Layout("DhchapProtocolDescriptor", 64, [
    ("authid", "B", 0),
    ("halen", "B", 2),
    ("dhlen", "B", 3),
    ("idlist", f"{DESCRIPTOR_IDLIST_SIZE}s", 4),
])
CHALLENGE = MESSAGE_HEADER.extend("DhchapChallenge", 16, [
    ("hl", "B", 6),
    ("hashid", "B", 8),
    ("dhgid", "B", 9),
    ("dhvlen", "H", 10),
    ("seqnum", "I", 12),
])
REPLY = MESSAGE_HEADER.extend("DhchapReply", 16, [
    ("hl", "B", 6),
    ("cvalid", "B", 8),
    ("dhvlen", "H", 10),
    ("seqnum", "I", 12),
])
SUCCESS1 = MESSAGE_HEADER.extend("DhchapSuccess1", 16, [
    ("hl", "B", 6),
    ("rvalid", "B", 8),
])
SUCCESS2 = MESSAGE_HEADER.extend("DhchapSuccess2", 16)
FAILURE = MESSAGE_HEADER.extend("AuthFailure", 8, [
    ("rescode", "B", 6),
    ("rescode_exp", "B", 7),
])
RVALID = 0x01


class MessageError(ValueError):
    def __init__(self, message: str, explanation: FailureExplanation = FailureExplanation.INCORRECT_PAYLOAD):
        super().__init__(message)
        self.explanation = explanation


@dataclass
class Negotiate:
    t_id: int
    hashes: list[int]
    dhgroups: list[int]
    sc_c: int = 0


@dataclass
class Challenge:
    t_id: int
    hash_id: int
    dhgroup: int
    seqnum: int
    c1: bytes
    dh_value: bytes


@dataclass
class Reply:
    t_id: int
    seqnum: int
    response: bytes
    c2: bytes | None
    dh_value: bytes


@dataclass
class Success1:
    t_id: int
    response: bytes | None


@dataclass
class Failure:
    t_id: int
    auth_id: int
    reason: int
    explanation: int


def header(payload: bytes) -> tuple[int, int, int]:
    """(auth_type, auth_id, t_id) of any message."""
    if len(payload) < MESSAGE_HEADER.size:
        raise MessageError(f"authentication message of {len(payload)} bytes")
    h = MESSAGE_HEADER.unpack(payload)
    return h.auth_type, h.auth_id, h.t_id


# -- builders -------------------------------------------------------------------------

def build_negotiate(t_id: int, hashes: list[int], dhgroups: list[int], sc_c: int = 0) -> bytes:
    if len(hashes) > DESCRIPTOR_HASH_SLOTS or len(dhgroups) > DESCRIPTOR_IDLIST_SIZE - DESCRIPTOR_HASH_SLOTS:
        raise ValueError("too many hash or DH group identifiers")
    idlist = bytes(hashes).ljust(DESCRIPTOR_HASH_SLOTS, b"\0") + bytes(dhgroups)
    return (NEGOTIATE.pack(auth_type=AuthType.COMMON, auth_id=AuthMessage.NEGOTIATE, t_id=t_id, sc_c=sc_c,
                           napd=1)
            + PROTOCOL_DESCRIPTOR.pack(authid=DHCHAP_AUTH_ID, halen=len(hashes), dhlen=len(dhgroups),
                                       idlist=idlist))


def build_challenge(ch: Challenge) -> bytes:
    return CHALLENGE.pack(auth_type=AuthType.DHCHAP, auth_id=AuthMessage.CHALLENGE, t_id=ch.t_id,
                          hl=len(ch.c1), hashid=ch.hash_id, dhgid=ch.dhgroup, dhvlen=len(ch.dh_value),
                          seqnum=ch.seqnum) + ch.c1 + ch.dh_value


def build_reply(r: Reply) -> bytes:
    hl = len(r.response)
    c2 = r.c2 if r.c2 is not None else bytes(hl)
    return REPLY.pack(auth_type=AuthType.DHCHAP, auth_id=AuthMessage.REPLY, t_id=r.t_id, hl=hl,
                      cvalid=int(r.c2 is not None), dhvlen=len(r.dh_value), seqnum=r.seqnum) + r.response + c2 \
        + r.dh_value


def build_success1(t_id: int, hash_len: int, response: bytes | None) -> bytes:
    return SUCCESS1.pack(auth_type=AuthType.DHCHAP, auth_id=AuthMessage.SUCCESS1, t_id=t_id, hl=hash_len,
                         rvalid=RVALID if response is not None else 0) + (response or b"")


def build_success2(t_id: int) -> bytes:
    return SUCCESS2.pack(auth_type=AuthType.DHCHAP, auth_id=AuthMessage.SUCCESS2, t_id=t_id)


def build_failure(auth_id: AuthMessage, t_id: int, explanation: int) -> bytes:
    return FAILURE.pack(auth_type=AuthType.COMMON, auth_id=auth_id, t_id=t_id, rescode=FailureReason.FAILED,
                        rescode_exp=explanation)


# -- parsers --------------------------------------------------------------------------

def _expect(payload: bytes, layout: Layout, auth_type: AuthType, auth_id: AuthMessage) -> object:
    if len(payload) < layout.size:
        raise MessageError(f"{layout.name}: {len(payload)} bytes, need {layout.size}")
    msg = layout.unpack(payload)
    if msg.auth_type != auth_type or msg.auth_id != auth_id:
        raise MessageError(f"expected {auth_id.name}, got type {msg.auth_type:#x} id {msg.auth_id:#x}",
                           FailureExplanation.INCORRECT_MESSAGE)
    return msg


def parse_negotiate(payload: bytes) -> Negotiate:
    msg: object = _expect(payload, NEGOTIATE, AuthType.COMMON, AuthMessage.NEGOTIATE)
    napd = msg.napd  # type: ignore[attr-defined]
    if len(payload) < NEGOTIATE.size + PROTOCOL_DESCRIPTOR.size * max(napd, 1):
        raise MessageError("Negotiate shorter than its protocol descriptors")
    for i in range(napd):
        d = PROTOCOL_DESCRIPTOR.unpack(payload, NEGOTIATE.size + i * PROTOCOL_DESCRIPTOR.size)
        if d.authid != DHCHAP_AUTH_ID:
            continue
        if d.halen > DESCRIPTOR_HASH_SLOTS or d.dhlen > DESCRIPTOR_IDLIST_SIZE - DESCRIPTOR_HASH_SLOTS:
            raise MessageError("protocol descriptor lists too many identifiers")
        return Negotiate(msg.t_id, list(d.idlist[:d.halen]),  # type: ignore[attr-defined]
                         list(d.idlist[DESCRIPTOR_HASH_SLOTS:DESCRIPTOR_HASH_SLOTS + d.dhlen]),
                         msg.sc_c)  # type: ignore[attr-defined]
    raise MessageError("no DH-HMAC-CHAP protocol descriptor", FailureExplanation.NOT_USABLE)


def parse_challenge(payload: bytes) -> Challenge:
    m: object = _expect(payload, CHALLENGE, AuthType.DHCHAP, AuthMessage.CHALLENGE)
    hl, dhvlen = m.hl, m.dhvlen  # type: ignore[attr-defined]
    if len(payload) < CHALLENGE.size + hl + dhvlen:
        raise MessageError("Challenge shorter than HL + DHVLEN")
    body = payload[CHALLENGE.size:]
    return Challenge(m.t_id, m.hashid, m.dhgid, m.seqnum, bytes(body[:hl]),  # type: ignore[attr-defined]
                     bytes(body[hl:hl + dhvlen]))


def parse_reply(payload: bytes) -> Reply:
    m: object = _expect(payload, REPLY, AuthType.DHCHAP, AuthMessage.REPLY)
    hl, dhvlen = m.hl, m.dhvlen  # type: ignore[attr-defined]
    if len(payload) < REPLY.size + 2 * hl + dhvlen:
        raise MessageError("Reply shorter than 2 * HL + DHVLEN")
    body = payload[REPLY.size:]
    c2 = bytes(body[hl:2 * hl]) if m.cvalid else None  # type: ignore[attr-defined]
    return Reply(m.t_id, m.seqnum, bytes(body[:hl]), c2, bytes(body[2 * hl:2 * hl + dhvlen]))  # type: ignore


def parse_success1(payload: bytes) -> Success1:
    m: object = _expect(payload, SUCCESS1, AuthType.DHCHAP, AuthMessage.SUCCESS1)
    hl = m.hl  # type: ignore[attr-defined]
    if not m.rvalid & RVALID:  # type: ignore[attr-defined]
        return Success1(m.t_id, None)  # type: ignore[attr-defined]
    if len(payload) < SUCCESS1.size + hl:
        raise MessageError("Success1 shorter than HL")
    return Success1(m.t_id, bytes(payload[SUCCESS1.size:SUCCESS1.size + hl]))  # type: ignore[attr-defined]


def parse_failure(payload: bytes) -> Failure:
    if len(payload) < FAILURE.size:
        raise MessageError("Failure message too short")
    m = FAILURE.unpack(payload)
    return Failure(m.t_id, m.auth_id, m.rescode, m.rescode_exp)


def known_hash(value: int) -> bool:
    return value in HashId._value2member_map_


def known_dhgroup(value: int) -> bool:
    return value in DhGroupId._value2member_map_
