"""DH-HMAC-CHAP: RFC 7919 groups, message layouts (spec offsets, hand-built bytes) and the
controller/host state machines, including every refusal path."""

from __future__ import annotations

import struct

import pytest

from nvmeof.auth import AuthenticationFailed, AuthPolicy, AuthRejected, DhchapKey, DhGroupId, HashId, HostAuth
from nvmeof.auth import messages as m
from nvmeof.auth.constants import AuthMessage, AuthType, FailureExplanation
from nvmeof.auth.controller_side import ControllerAuth, Step
from nvmeof.auth.crypto import DhExchange, ffdhe_prime, group_size

# RFC 7919 appendix A: the last 64 bits before the trailing all-ones word of each prime
RFC7919_TAILS = {
    DhGroupId.FFDHE2048: 0x886B423861285C97,
    DhGroupId.FFDHE3072: 0x25E41D2B66C62E37,
    DhGroupId.FFDHE4096: 0xC68A007E5E655F6A,
    DhGroupId.FFDHE6144: 0xA40E329CD0E40E65,
    DhGroupId.FFDHE8192: 0xD68C8BB7C5C6424C,
}
RFC7919_HEAD = 0xFFFFFFFFFFFFFFFF_ADF85458A2BB4A9A  # every group starts with these 128 bits
ONES64 = (1 << 64) - 1
HOSTNQN, SUBNQN = "nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c", "nqn.2026-11.io.dpu-emu:s1"
FFDHE = [g for g in DhGroupId if g is not DhGroupId.NULL]


@pytest.mark.parametrize("group", FFDHE, ids=lambda g: g.label)
def test_ffdhe_primes_match_rfc7919(group: DhGroupId) -> None:
    p = ffdhe_prime(group)
    bits = group_size(group) * 8
    assert p.bit_length() == bits
    assert p >> (bits - 128) == RFC7919_HEAD
    assert p & ONES64 == ONES64
    assert (p >> 64) & ONES64 == RFC7919_TAILS[group]
    q = (p - 1) // 2
    assert pow(2, q, p) == 1  # generator 2 has order q: a safe-prime group with 2 a quadratic residue


@pytest.mark.parametrize("group", [DhGroupId.FFDHE2048, DhGroupId.FFDHE3072], ids=lambda g: g.label)
def test_ffdhe_safe_prime_fermat(group: DhGroupId) -> None:
    p = ffdhe_prime(group)
    q = (p - 1) // 2
    assert pow(3, p - 1, p) == 1 and pow(3, q - 1, q) == 1


def test_dh_exchange_agrees_and_checks_range() -> None:
    a, b = DhExchange(DhGroupId.FFDHE2048), DhExchange(DhGroupId.FFDHE2048)
    assert len(a.public_value()) == 256
    assert a.shared_secret(b.public_value()) == b.shared_secret(a.public_value())
    p = ffdhe_prime(DhGroupId.FFDHE2048)
    for bad in (0, 1, p - 1):
        with pytest.raises(ValueError):
            a.shared_secret(bad.to_bytes(256, "big"))
    with pytest.raises(ValueError):
        a.shared_secret(b.public_value()[1:])


def test_layout_sizes_and_offsets() -> None:
    # NVMe Base 2.x figures (Linux include/linux/nvme.h / SPDK nvmf_spec.h agree)
    assert (m.NEGOTIATE.size, m.PROTOCOL_DESCRIPTOR.size, m.CHALLENGE.size, m.REPLY.size, m.SUCCESS1.size,
            m.SUCCESS2.size, m.FAILURE.size) == (8, 64, 16, 16, 16, 16, 8)
    assert m.CHALLENGE.offset_of("seqnum") == 12 and m.REPLY.offset_of("dhvlen") == 10
    assert m.AUTH_SEND_CMD.offset_of("secp") == 43 and m.AUTH_SEND_CMD.offset_of("tl") == 44
    assert m.AUTH_RECV_CMD.offset_of("al") == 44 and m.AUTH_RECV_CMD.offset_of("spsp0") == 41


def test_negotiate_bytes_by_hand() -> None:
    # what the Linux host sends: all three hashes, all six groups (IDs at idlist[30..]), T_ID 7
    expected = bytes([0x00, 0x00, 0, 0, 7, 0, 0x00, 1]) + bytes([0x01, 0, 3, 6]) + bytes([1, 2, 3]) + bytes(27) \
        + bytes([0, 1, 2, 3, 4, 5]) + bytes(24)
    built = m.build_negotiate(7, [1, 2, 3], [0, 1, 2, 3, 4, 5])
    assert built == expected
    neg = m.parse_negotiate(expected)
    assert (neg.t_id, neg.hashes, neg.dhgroups, neg.sc_c) == (7, [1, 2, 3], [0, 1, 2, 3, 4, 5], 0)


def test_failure1_bytes_by_hand() -> None:
    assert m.build_failure(AuthMessage.FAILURE1, 0x0102, FailureExplanation.HASH_UNUSABLE) == \
        bytes([0x00, 0xF1, 0, 0, 0x02, 0x01, 0x01, 0x04])


def _pair(policy: AuthPolicy, **host_kwargs: object) -> tuple[ControllerAuth, HostAuth]:
    ctrl = ControllerAuth(policy, HOSTNQN, SUBNQN, 0)
    host = HostAuth(host_kwargs.pop("host_key", policy.host_key), HOSTNQN, SUBNQN, t_id=3,  # type: ignore[arg-type]
                    **host_kwargs)  # type: ignore[arg-type]
    return ctrl, host


def _failure1(ctrl: ControllerAuth) -> int:
    payload = ctrl.receive()
    assert ctrl.failed and ctrl.step is Step.FAILED
    f = m.parse_failure(payload)
    assert (payload[0], f.auth_id, f.reason) == (AuthType.COMMON, AuthMessage.FAILURE1, 1)
    return f.explanation


KEY = DhchapKey(bytes(range(32)), 1)


def test_challenge_fields_and_seqnum() -> None:
    ctrl, host = _pair(AuthPolicy(KEY, hashes=(HashId.SHA512,), dhgroups=(DhGroupId.FFDHE3072,)))
    ctrl.send(host.negotiate())
    ch = m.parse_challenge(ctrl.receive())
    assert (ch.t_id, ch.hash_id, ch.dhgroup, len(ch.c1), len(ch.dh_value)) == (3, 3, 2, 64, 384)
    assert ch.seqnum != 0


@pytest.mark.parametrize(("policy_kw", "host_kw", "explanation"), [
    ({"hashes": (HashId.SHA512,)}, {"hashes": (HashId.SHA256,)}, FailureExplanation.HASH_UNUSABLE),
    ({"dhgroups": (DhGroupId.FFDHE8192,)}, {"dhgroups": (DhGroupId.NULL,)}, FailureExplanation.DHGROUP_UNUSABLE),
    ({}, {"host_key": DhchapKey(bytes(32), 1)}, FailureExplanation.FAILED),
])
def test_negotiation_and_response_failures(policy_kw: dict, host_kw: dict, explanation: int) -> None:
    ctrl, host = _pair(AuthPolicy(KEY, **policy_kw), **host_kw)
    ctrl.send(host.negotiate())
    if ctrl.step is Step.CHALLENGE:
        ctrl.send(host.reply(ctrl.receive()))
    assert not ctrl.authenticated
    assert _failure1(ctrl) == explanation


def test_secure_channel_concatenation_refused() -> None:
    ctrl, _ = _pair(AuthPolicy(KEY))
    ctrl.send(m.build_negotiate(1, [1], [0], sc_c=1))
    assert _failure1(ctrl) == FailureExplanation.CONCAT_MISMATCH


def test_out_of_order_and_wrong_transaction() -> None:
    ctrl, host = _pair(AuthPolicy(KEY))
    ctrl.send(m.build_success2(0))  # Success2 before anything
    assert _failure1(ctrl) == FailureExplanation.INCORRECT_MESSAGE
    ctrl, host = _pair(AuthPolicy(KEY))
    ctrl.send(host.negotiate())
    reply = bytearray(host.reply(ctrl.receive()))
    struct.pack_into("<H", reply, m.REPLY.offset_of("t_id"), 99)
    ctrl.send(bytes(reply))
    assert _failure1(ctrl) == FailureExplanation.INCORRECT_PAYLOAD
    ctrl, _ = _pair(AuthPolicy(KEY))
    ctrl.send(b"\x00")  # truncated
    assert _failure1(ctrl) == FailureExplanation.INCORRECT_PAYLOAD


def test_receive_out_of_step_fails() -> None:
    ctrl, _ = _pair(AuthPolicy(KEY))
    assert _failure1(ctrl) == FailureExplanation.INCORRECT_MESSAGE  # Receive before Negotiate


def test_host_rejects_wrong_controller_and_bad_challenge() -> None:
    ctrl_key = DhchapKey(bytes(range(1, 33)), 1)
    ctrl, host = _pair(AuthPolicy(KEY, DhchapKey(bytes(32), 0)), ctrl_key=ctrl_key)
    ctrl.send(host.negotiate())
    ctrl.send(host.reply(ctrl.receive()))
    with pytest.raises(AuthRejected) as info:
        host.success1(ctrl.receive())
    f = m.parse_failure(info.value.failure2)
    assert (f.auth_id, f.explanation) == (AuthMessage.FAILURE2, FailureExplanation.FAILED)
    ctrl.send(info.value.failure2)
    assert ctrl.failed and not ctrl.authenticated
    # a challenge naming a hash the host did not offer
    host = HostAuth(KEY, HOSTNQN, SUBNQN, t_id=1, hashes=(HashId.SHA256,))
    bad = m.build_challenge(m.Challenge(1, HashId.SHA512, DhGroupId.NULL, 5, bytes(64), b""))
    with pytest.raises(AuthRejected) as info:
        host.reply(bad)
    assert info.value.explanation == FailureExplanation.HASH_UNUSABLE


def test_host_sees_failure1() -> None:
    host = HostAuth(KEY, HOSTNQN, SUBNQN)
    with pytest.raises(AuthenticationFailed):
        host.reply(m.build_failure(AuthMessage.FAILURE1, 0, FailureExplanation.FAILED))


def test_renegotiate_after_success() -> None:
    ctrl, host = _pair(AuthPolicy(KEY))
    for _ in range(2):
        ctrl.send(host.negotiate())
        ctrl.send(host.reply(ctrl.receive()))
        assert host.success1(ctrl.receive()) is None
        assert ctrl.authenticated and ctrl.step is Step.DONE
