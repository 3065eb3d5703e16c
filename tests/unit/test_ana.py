"""Asymmetric Namespace Access on the controller: the ANA log page (LID 0Ch) checked byte
by byte against the layout of NVMe base 2.0 section 5.16.1.12 (written out here with
struct, not with our Layout tables), RGO, NSID ordering, 300 namespaces read in pieces,
the Identify fields a Linux multipath host checks, the ANA change event and ANATT."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from nvmeof.controller import ana
from nvmeof.controller.controller import Controller
from nvmeof.controller.model import Listener, Namespace, Subsystem, Target
from nvmeof.errors import NvmeStatus
from nvmeof.transport.controller_side import CommandReceived
from nvmeof.wire.constants import AnaState
from nvmeof.wire.queue_entry import SQE

NQN = "nqn.2026-11.io.dpu-emu:ana"
GET_LOG_PAGE, IDENTIFY, SET_FEATURES, AER = 0x02, 0x06, 0x09, 0x0C
LID_ANA = 0x0C
FID_AEC = 0x0B
AEC_ANA = 1 << 11
RAE = 1 << 15
CC_ENABLED = 1 | (6 << 16) | (4 << 20)  # EN, IOSQES 64 B, IOCQES 16 B
HEADER = struct.Struct("<QH6x")  # CHGCNT (0), NGRPS (8), reserved 10..15
DESCRIPTOR = struct.Struct("<IIQB15x")  # ANAGRPID (0), NNSIDS (4), CHGCNT (8), ANAS (16), reserved


class FakeQueue:
    qid = 0

    def __init__(self) -> None:
        self.completions: list[tuple[int, int, int]] = []

    def send_completion(self, cid: int, status: int, dw0: int = 0, dw1: int = 0, data: Any = None) -> None:
        self.completions.append((cid, status, dw0))

    def disconnect(self, reason: str) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cmd(opcode: int, *, cid: int = 1, nsid: int = 0, **cdws: int) -> CommandReceived:
    raw = SQE.pack(opcode=opcode, cid=cid, nsid=nsid, **cdws)
    return CommandReceived(SQE.struct.unpack(raw), raw, None)


def make(groups: dict[int, int], clock: Clock | None = None) -> tuple[Target, Subsystem]:
    """``groups``: nsid -> ANA group, added in the given order."""
    target = Target(clock=clock or Clock())
    target.add_listener(Listener("127.0.0.1", "4420", portid=1))
    target.add_listener(Listener("127.0.0.1", "4421", portid=2))
    sub = target.add_subsystem(Subsystem(NQN))
    for nsid, grpid in groups.items():
        sub.add_namespace(Namespace(nsid=nsid, backend=None, num_blocks=8, ana_group=grpid))  # type: ignore[arg-type]
    return target, sub


def controller(target: Target, sub: Subsystem, port: str = "4420") -> tuple[Controller, FakeQueue]:
    queue = FakeQueue()
    ctrl = Controller(target, sub, target.allocate_cntlid(sub), "nqn.host", bytes(16), 0, queue,
                      ("127.0.0.1", port))
    sub.controllers[ctrl.cntlid] = ctrl
    ctrl.property_set(0x14, 0, CC_ENABLED)  # CC, 4-byte property (ATTRIB 0)
    assert ctrl.ready
    return ctrl, queue


def get_log(ctrl: Controller, length: int, offset: int = 0, *, lsp: int = 0, rae: bool = False) -> bytes:
    numd = length // 4 - 1
    cdw10 = LID_ANA | (lsp << 8) | (RAE if rae else 0) | ((numd & 0xFFFF) << 16)
    reply = ctrl.admin_command(cmd(GET_LOG_PAGE, nsid=0xFFFFFFFF, cdw10=cdw10, cdw11=numd >> 16,
                                   cdw12=offset & 0xFFFFFFFF, cdw13=offset >> 32))
    assert reply is not None and reply[0] == 0
    assert reply[2] is not None and len(reply[2]) == length
    return reply[2]


def parse(page: bytes) -> tuple[int, list[tuple[int, int, int, int, list[int]]]]:
    chgcnt, ngrps = HEADER.unpack_from(page, 0)
    pos, groups = HEADER.size, []
    for _ in range(ngrps):
        grpid, nnsids, grp_chg, anas = DESCRIPTOR.unpack_from(page, pos)
        pos += DESCRIPTOR.size
        nsids = list(struct.unpack_from(f"<{nnsids}I", page, pos))
        pos += 4 * nnsids
        groups.append((grpid, nnsids, grp_chg, anas & 0xF, nsids))
    return chgcnt, groups


def test_one_namespace_log_bytes_field_by_field() -> None:
    target, sub = make({1: 1})
    ctrl, _ = controller(target, sub)
    page = get_log(ctrl, 16 + 32 + 4)
    assert page[0:8] == bytes(8)  # CHGCNT: nothing changed yet
    assert page[8:10] == b"\x01\x00"  # NGRPS
    assert page[10:16] == bytes(6)
    assert page[16:20] == b"\x01\x00\x00\x00"  # ANAGRPID 1
    assert page[20:24] == b"\x01\x00\x00\x00"  # NNSIDS 1
    assert page[24:32] == bytes(8)  # group CHGCNT
    assert page[32] == 0x01  # ANAS optimized
    assert page[33:48] == bytes(15)
    assert page[48:52] == b"\x01\x00\x00\x00"  # NSID 1


def test_two_groups_states_per_listener_and_change_counts() -> None:
    target, sub = make({1: 1, 2: 2})
    ctrl1, _ = controller(target, sub, "4420")
    ctrl2, _ = controller(target, sub, "4421")
    assert (ctrl1.portid, ctrl2.portid) == (1, 2)
    assert sub.set_ana_state(2, 1, AnaState.INACCESSIBLE, target.clock())
    assert sub.set_ana_state(1, 1, AnaState.NON_OPTIMIZED, target.clock())
    assert not sub.set_ana_state(1, 1, AnaState.NON_OPTIMIZED, target.clock())  # no change, no count
    chg1, groups1 = parse(get_log(ctrl1, 16 + 2 * 36))
    chg2, groups2 = parse(get_log(ctrl2, 16 + 2 * 36))
    assert chg1 == chg2 == 2
    assert groups1 == [(1, 1, 1, 0x2, [1]), (2, 1, 1, 0x3, [2])]
    assert groups2 == [(1, 1, 1, 0x1, [1]), (2, 1, 1, 0x1, [2])]


def test_rgo_returns_descriptors_without_nsids() -> None:
    target, sub = make({1: 1, 2: 2, 3: 2})
    ctrl, _ = controller(target, sub)
    page = get_log(ctrl, 16 + 2 * 32 + 16, lsp=0x1)
    _, groups = parse(page)
    assert [(g[0], g[1], g[4]) for g in groups] == [(1, 0, []), (2, 0, [])]
    assert page[16 + 2 * 32:] == bytes(16)  # the rest of the transfer is zero


def test_nsids_are_listed_ascending_per_group_whatever_the_order_added() -> None:
    target, sub = make({9: 2, 5: 3, 3: 2, 7: 3, 1: 2})
    ctrl, _ = controller(target, sub)
    _, groups = parse(get_log(ctrl, 4096))
    assert [(g[0], g[4]) for g in groups] == [(1, []), (2, [1, 3, 9]), (3, [5, 7])]


def test_300_namespaces_read_in_pieces_with_offsets_and_numdu() -> None:
    spread = {nsid: (nsid - 1) % 100 + 1 for nsid in range(1, 301)}
    target, sub = make(spread)
    ctrl, _ = controller(target, sub)
    size = 16 + 100 * 32 + 300 * 4
    assert size > 4096
    largest = 16 + 128 * 32 + 1024 * 4  # NANAGRPID descriptors and MNAN NSIDs: what hosts ask for
    pieces = [get_log(ctrl, 1024, offset) for offset in range(0, largest, 1024)]  # LPOL steps through it
    whole = b"".join(pieces)
    assert len(whole) >= largest and whole[size:] == bytes(len(whole) - size)  # zeroes past the end
    with pytest.raises(NvmeStatus) as info:  # an offset beyond the largest page: Invalid Field
        get_log(ctrl, 1024, largest + 4)
    assert (info.value.sct, info.value.sc) == (0x0, 0x02)
    big = get_log(ctrl, 300 * 1024)  # NUMD above 16 bits: NUMDU carries the rest
    assert big[:size] == whole[:size]
    chgcnt, groups = parse(whole)
    assert len(groups) == 100
    for grpid, nnsids, _, anas, nsids in groups:
        assert nnsids == 3 and anas == AnaState.OPTIMIZED
        assert nsids == [grpid, grpid + 100, grpid + 200]


def test_identify_controller_and_namespace_ana_fields() -> None:
    target, sub = make({1: 4})
    ctrl, _ = controller(target, sub)
    reply = ctrl.admin_command(cmd(IDENTIFY, cdw10=0x01))
    assert reply is not None
    page = reply[2]
    assert page is not None
    assert page[76] & 0b1011 == 0b1011  # CMIC: multi-port, multi-controller, ANA reporting
    oaes, = struct.unpack_from("<I", page, 92)
    assert oaes & (1 << 11)  # ANA change notices
    anatt, anacap = page[342], page[343]
    anagrpmax, nanagrpid = struct.unpack_from("<II", page, 344)
    nn, = struct.unpack_from("<I", page, 516)
    mnan, = struct.unpack_from("<I", page, 540)
    assert anatt == sub.ana.anatt_s > 0
    assert anacap & 0x1F == 0x1F  # optimized, non-optimized, inaccessible, persistent loss, change
    assert 1 <= nanagrpid <= anagrpmax
    assert 1 <= mnan <= nn
    mdts = 4096 << page[77]
    assert 16 + nanagrpid * 32 + mnan * 4 <= mdts  # the Linux host's check before it enables ANA
    reply = ctrl.admin_command(cmd(IDENTIFY, nsid=1, cdw10=0x00))
    assert reply is not None and reply[2] is not None
    assert reply[2][30] & 1  # NMIC: shared namespace
    assert struct.unpack_from("<I", reply[2], 92) == (4,)  # ANAGRPID
    reply = ctrl.admin_command(cmd(IDENTIFY, nsid=1, cdw10=0x08))  # I/O command set independent
    assert reply is not None and reply[2] is not None
    assert struct.unpack_from("<I", reply[2], 4) == (4,)


def test_ana_change_event_gated_masked_and_cleared() -> None:
    target, sub = make({1: 1})
    ctrl, queue = controller(target, sub)
    ctrl.admin_command(cmd(AER, cid=7))
    sub.set_ana_state(1, 1, AnaState.NON_OPTIMIZED, target.clock())
    assert queue.completions == []  # Async Event Configuration bit 11 not set
    ctrl.admin_command(cmd(SET_FEATURES, cdw10=FID_AEC, cdw11=AEC_ANA))
    sub.set_ana_state(1, 1, AnaState.INACCESSIBLE, target.clock())
    assert queue.completions == [(7, 0, 0x2 | 0x03 << 8 | 0x0C << 16)]  # notice, ANA change, log 0Ch
    ctrl.admin_command(cmd(AER, cid=8))
    sub.set_ana_state(1, 1, AnaState.OPTIMIZED, target.clock())
    assert len(queue.completions) == 1  # masked until the host reads 0Ch
    get_log(ctrl, 64, rae=True)
    sub.set_ana_state(1, 1, AnaState.NON_OPTIMIZED, target.clock())
    assert len(queue.completions) == 1  # read with RAE: still masked
    get_log(ctrl, 64)
    sub.set_ana_state(1, 1, AnaState.OPTIMIZED, target.clock())
    assert queue.completions[-1] == (8, 0, 0x000C0302)


@pytest.mark.parametrize(("state", "sc"), [
    (AnaState.PERSISTENT_LOSS, 0x01), (AnaState.INACCESSIBLE, 0x02), (AnaState.CHANGE, 0x03)])
def test_io_through_a_refusing_path_gets_path_related_status(state: AnaState, sc: int) -> None:
    target, sub = make({1: 1, 2: 2})
    ctrl1, _ = controller(target, sub, "4420")
    ctrl2, _ = controller(target, sub, "4421")
    sub.set_ana_state(1, 1, state, target.clock())
    with pytest.raises(NvmeStatus) as info:
        ana.check_path(ctrl1, 1)
    assert (info.value.sct, info.value.sc, info.value.dnr) == (0x3, sc, False)
    assert info.value.status == (0x3 << 9) | (sc << 1)
    ana.check_path(ctrl1, 2)  # group 2 is still optimized on this path
    ana.check_path(ctrl2, 1)  # and group 1 on the other listener


def test_non_optimized_serves_io() -> None:
    target, sub = make({1: 1})
    ctrl, _ = controller(target, sub)
    sub.set_ana_state(1, 1, AnaState.NON_OPTIMIZED, target.clock())
    ana.check_path(ctrl, 1)


def test_change_lasts_at_most_anatt_then_returns_with_an_event() -> None:
    clock = Clock()
    target, sub = make({1: 1}, clock)
    ctrl, queue = controller(target, sub)
    ctrl.admin_command(cmd(SET_FEATURES, cdw10=FID_AEC, cdw11=AEC_ANA))
    sub.set_ana_state(1, 1, AnaState.NON_OPTIMIZED, clock())
    ctrl.admin_command(cmd(AER, cid=8))
    get_log(ctrl, 64)
    sub.set_ana_state(1, 1, AnaState.CHANGE, clock())
    assert parse(get_log(ctrl, 64))[1][0][3] == AnaState.CHANGE
    ctrl.admin_command(cmd(AER, cid=9))  # takes the event of the change to CHANGE
    assert queue.completions[-1] == (9, 0, 0x000C0302)
    get_log(ctrl, 64)
    queue.completions.clear()
    ctrl.admin_command(cmd(AER, cid=10))
    clock.now += sub.ana.anatt_s - 0.5
    ctrl.handle_timeout(clock.now)
    assert sub.ana.state(1, 1) == AnaState.CHANGE and queue.completions == []
    clock.now += 1.0
    ctrl.handle_timeout(clock.now)
    assert sub.ana.state(1, 1) == AnaState.NON_OPTIMIZED
    assert queue.completions == [(10, 0, 0x000C0302)]


def test_group_out_of_range_is_refused() -> None:
    target, sub = make({1: 1})
    with pytest.raises(ValueError):
        sub.set_ana_state(0, 1, AnaState.OPTIMIZED, 0.0)
    with pytest.raises(ValueError):
        sub.set_ana_state(129, 1, AnaState.OPTIMIZED, 0.0)


def test_host_decodes_a_hand_built_ana_log() -> None:
    from nvmeof.host.multipath import AnaLog

    page = (HEADER.pack(7, 2) + DESCRIPTOR.pack(1, 2, 3, 0x2) + struct.pack("<II", 4, 9)
            + DESCRIPTOR.pack(5, 0, 1, 0xF) + bytes(64))
    log = AnaLog.parse(page)
    assert log.chgcnt == 7
    assert log.states == {1: AnaState.NON_OPTIMIZED, 5: AnaState.CHANGE}
    assert log.groups == {4: 1, 9: 1}
    with pytest.raises(ValueError):
        AnaLog.parse(HEADER.pack(1, 1) + DESCRIPTOR.pack(1, 3, 0, 1) + struct.pack("<I", 1))
