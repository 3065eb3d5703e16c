"""DH-HMAC-CHAP end to end over real sockets: the in-process device as controller, nvmeof.host
as host.  Hash x DH group matrix (uni- and bidirectional), wrong secrets both ways, a host
without a secret, commands before authentication, I/O after it on every queue."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from nvmeof.auth import AuthenticationFailed, AuthPolicy, AuthRejected, DhchapKey, DhGroupId, HashId
from nvmeof.auth.constants import AUTHREQ_ATR
from nvmeof.host import HostQueue, check, connect
from nvmeof.host import commands as cmds
from nvmeof.host.auth import AuthenticationRequiredError, DhchapSecrets, authenticate
from nvmeof.wire.constants import (
    ADMIN_QID,
    CNTLID_DYNAMIC,
    PROPERTY_SIZE_8,
    CommandSpecificStatus,
    StatusCodeType,
    decode_status,
)

from ._support import BLOCK, LOOPBACK, NSID, pattern, run

HOSTNQN = f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid4()}"
ADMIN_SQSIZE = 31
CAP_OFFSET = 0x0
TEARDOWN_WAIT_S = 5.0
POLL_S = 0.02


def _require(device, policy: AuthPolicy | None) -> None:
    sub = device.target.subsystems[device.subnqn]
    if policy is None:
        device.call_soon(lambda: sub.host_auth.pop(HOSTNQN, None))
    else:
        device.call_soon(lambda: sub.host_auth.__setitem__(HOSTNQN, policy))


def _keys(transform: int = 1, length: int = 32) -> tuple[DhchapKey, DhchapKey]:
    return DhchapKey.generate(length, transform), DhchapKey.generate(length, transform)


async def _io_round(ctrl, seed: int) -> None:
    data = pattern(seed, 8 * BLOCK)
    for q in range(len(ctrl.io_queues)):
        slba = 64 * seed + 8 * q  # distinct blocks per seed: concurrent associations do not overlap
        await ctrl.write(NSID, slba, data, queue=q)
        assert await ctrl.read(NSID, slba, 8, queue=q) == data


MATRIX = [(h, g) for h in HashId for g in (DhGroupId.NULL, DhGroupId.FFDHE2048)] + [
    (HashId.SHA384, DhGroupId.FFDHE4096), (HashId.SHA512, DhGroupId.FFDHE8192)]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize(("hash_id", "group"), MATRIX, ids=[f"{h.digest_name}-{g.label}" for h, g in MATRIX])
def test_authenticated_io(device, hash_id: HashId, group: DhGroupId, bidirectional: bool) -> None:
    host_key, ctrl_key = _keys(transform=int(hash_id), length=hash_id.length)
    _require(device, AuthPolicy(host_key, ctrl_key, hashes=(hash_id,), dhgroups=(group,)))

    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, hostnqn=HOSTNQN, nr_io_queues=2,
                                 dhchap_secret=host_key.format(),
                                 dhchap_ctrl_secret=ctrl_key.format() if bidirectional else None) as ctrl:
            assert len(ctrl.io_queues) == 2
            await _io_round(ctrl, int(hash_id) + int(group))

    run(body())


def test_wrong_host_secret_refused(device) -> None:
    host_key, _ = _keys()
    _require(device, AuthPolicy(host_key))
    wrong = DhchapKey.generate(32, 1)

    async def body() -> None:
        with pytest.raises(AuthenticationFailed):
            await connect(LOOPBACK, device.io_port, device.subnqn, hostnqn=HOSTNQN, dhchap_secret=wrong.format())

    run(body())
    _wait_no_controllers(device)  # the association was torn down


def _wait_no_controllers(device) -> None:
    """The device thread tears down right after sending Failure1: wait (bounded) for it."""
    controllers = device.target.subsystems[device.subnqn].controllers
    deadline = time.monotonic() + TEARDOWN_WAIT_S
    while controllers and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert not controllers


def test_wrong_controller_secret_detected(device) -> None:
    host_key, ctrl_key = _keys()
    _require(device, AuthPolicy(host_key, ctrl_key))
    wrong = DhchapKey.generate(32, 1)

    async def body() -> None:
        with pytest.raises(AuthRejected):
            await connect(LOOPBACK, device.io_port, device.subnqn, hostnqn=HOSTNQN,
                          dhchap_secret=host_key.format(), dhchap_ctrl_secret=wrong.format())

    run(body())
    _wait_no_controllers(device)  # Failure2 from the host ends the association


def test_bidirectional_refused_without_controller_key(device) -> None:
    host_key, ctrl_key = _keys()
    _require(device, AuthPolicy(host_key))  # no controller key configured

    async def body() -> None:
        with pytest.raises(AuthenticationFailed):
            await connect(LOOPBACK, device.io_port, device.subnqn, hostnqn=HOSTNQN,
                          dhchap_secret=host_key.format(), dhchap_ctrl_secret=ctrl_key.format())

    run(body())


def test_no_secret_refused_and_commands_blocked(device) -> None:
    host_key, _ = _keys()
    _require(device, AuthPolicy(host_key))

    async def body() -> None:
        with pytest.raises(AuthenticationRequiredError):
            await connect(LOOPBACK, device.io_port, device.subnqn, hostnqn=HOSTNQN)
        # a host that ignores AUTHREQ: every command but Authentication Send/Receive fails with 91h
        queue = await HostQueue.open(LOOPBACK, device.io_port, ADMIN_QID, 32)
        try:
            data = cmds.connect_data(uuid.uuid4().bytes, CNTLID_DYNAMIC, device.subnqn, HOSTNQN)
            done = check(await queue.submit(cmds.connect(ADMIN_QID, ADMIN_SQSIZE, 0), data))
            assert done.dw0 & AUTHREQ_ATR
            refused = await queue.submit(cmds.property_get(CAP_OFFSET, PROPERTY_SIZE_8))
            sct, sc, dnr = decode_status(refused.status)
            assert (sct, sc, dnr) == (StatusCodeType.COMMAND_SPECIFIC, CommandSpecificStatus.AUTHENTICATION_REQUIRED,
                                      True)
            # then authenticating on that same queue unlocks it
            await authenticate(queue, DhchapSecrets(host_key), device.subnqn, HOSTNQN)
            check(await queue.submit(cmds.property_get(CAP_OFFSET, PROPERTY_SIZE_8)))
        finally:
            await queue.close()

    run(body())


def test_other_hosts_unaffected_and_unauthenticated_host_without_entry(device) -> None:
    host_key, _ = _keys()
    _require(device, AuthPolicy(host_key))

    async def body() -> None:
        other = f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid4()}"
        async with await connect(LOOPBACK, device.io_port, device.subnqn, hostnqn=other) as ctrl:
            await _io_round(ctrl, 7)

    run(body())


def test_concurrent_authentications(device) -> None:
    host_key, ctrl_key = _keys(3, 64)
    _require(device, AuthPolicy(host_key, ctrl_key, dhgroups=(DhGroupId.FFDHE3072,)))

    async def one(seed: int) -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, hostnqn=HOSTNQN, nr_io_queues=2,
                                 dhchap_secret=host_key.format(), dhchap_ctrl_secret=ctrl_key.format()) as ctrl:
            await _io_round(ctrl, seed)

    async def body() -> None:
        await asyncio.gather(*(one(i) for i in range(3)))

    run(body())


def test_io_queue_authenticates_on_its_own(device) -> None:
    """An I/O queue of an authenticated association still gets AUTHREQ and refuses I/O (91h)
    until it authenticates itself."""
    host_key, _ = _keys()
    _require(device, AuthPolicy(host_key, dhgroups=(DhGroupId.FFDHE2048,)))

    async def body() -> None:
        async with await connect(LOOPBACK, device.io_port, device.subnqn, hostnqn=HOSTNQN, nr_io_queues=2,
                                 dhchap_secret=host_key.format()) as ctrl:
            spare = ctrl.io_queues.pop()  # give QID 2 back, then open it by hand
            await spare.close()
            await asyncio.sleep(POLL_S * 5)
            queue = await HostQueue.open(LOOPBACK, device.io_port, 2, 32)
            try:
                data = cmds.connect_data(ctrl.hostid, ctrl.cntlid, device.subnqn, HOSTNQN)
                done = check(await queue.submit(cmds.connect(2, 31, 0), data))
                assert done.dw0 & AUTHREQ_ATR and done.dw0 & 0xFFFF == ctrl.cntlid
                refused = await queue.submit(cmds.read(NSID, 0, 1), None, BLOCK)
                assert decode_status(refused.status)[:2] == (StatusCodeType.COMMAND_SPECIFIC,
                                                             CommandSpecificStatus.AUTHENTICATION_REQUIRED)
                await authenticate(queue, DhchapSecrets(host_key), device.subnqn, HOSTNQN)
                check(await queue.submit(cmds.read(NSID, 0, 1), None, BLOCK))
            finally:
                await queue.close()

    run(body())
