"""Asymmetric Namespace Access as one controller sees it: the ANA log page and the
path check on I/O.

A controller's view depends on the listener (port id) its admin queue came in on: the
state of each ANA group is the subsystem's :class:`~nvmeof.controller.model.AnaTable`
entry for (group, that port id).  Groups reported are the subsystem's known groups plus
the groups of the namespaces this host sees, ascending; each lists the NSIDs of this
host's namespaces in it, ascending.  I/O to a namespace whose group is INACCESSIBLE,
PERSISTENT LOSS or CHANGE on this path completes with Path Related Status (SCT 3h,
without DNR, so a multipath host retries on another path); NON-OPTIMIZED serves I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NvmeStatus
from ..wire.constants import AnaState, PathStatus, StatusCodeType
from . import logpages as lp
from .model import ANA_GROUP_MAX, ANA_REFUSING

if TYPE_CHECKING:
    from .controller import Controller


def _path_status(name: str, sc: int) -> type[NvmeStatus]:
    return type(name, (NvmeStatus,), {"sct": StatusCodeType.PATH_RELATED, "sc": sc, "dnr": False})


AnaPersistentLoss = _path_status("AnaPersistentLoss", PathStatus.ASYMMETRIC_ACCESS_PERSISTENT_LOSS)
AnaInaccessible = _path_status("AnaInaccessible", PathStatus.ASYMMETRIC_ACCESS_INACCESSIBLE)
AnaTransition = _path_status("AnaTransition", PathStatus.ASYMMETRIC_ACCESS_TRANSITION)
REFUSAL: dict[AnaState, type[NvmeStatus]] = {
    AnaState.PERSISTENT_LOSS: AnaPersistentLoss,
    AnaState.INACCESSIBLE: AnaInaccessible,
    AnaState.CHANGE: AnaTransition,
}
assert frozenset(REFUSAL) == ANA_REFUSING


def namespace_state(ctrl: Controller, grpid: int) -> AnaState:
    sub = ctrl.subsystem
    assert sub is not None
    return sub.ana.state(grpid, ctrl.portid)


def check_path(ctrl: Controller, nsid: int) -> None:
    """Raise the Path Related Status for I/O to ``nsid`` through this controller, if any."""
    sub = ctrl.subsystem
    if sub is None or not sub.ana.refusing:
        return
    ns = sub.namespaces.get(nsid)
    if ns is None:
        return
    state = sub.ana.state(ns.ana_group, ctrl.portid)
    refusal = REFUSAL.get(state)
    if refusal is not None:
        raise refusal(f"namespace {nsid}: ANA group {ns.ana_group} is {state.name} on port {ctrl.portid}")


def ana_groups(ctrl: Controller) -> list[tuple[int, int, int, list[int]]]:
    """``(anagrpid, chgcnt, state, nsids)`` for the log page, ascending ANAGRPID."""
    sub = ctrl.subsystem
    assert sub is not None
    table = sub.ana
    members: dict[int, list[int]] = {grpid: [] for grpid in table.groups}
    for nsid, ns in ctrl.visible_namespaces().items():
        members.setdefault(ns.ana_group, []).append(nsid)
    return [(grpid, table.group_chgcnt.get(grpid, 0), table.state(grpid, ctrl.portid), sorted(nsids))
            for grpid, nsids in sorted(members.items())]


def ana_log_page(ctrl: Controller, *, groups_only: bool) -> bytes:
    """The page, zero-padded to its largest size (header + NANAGRPID descriptors + MNAN
    NSIDs): hosts size their reads from Identify (libnvme reads it in 4 KiB pieces at
    increasing offsets), so offsets up to that size are valid and read zeroes past the end."""
    sub = ctrl.subsystem
    assert sub is not None
    sub.expire_ana(ctrl.target.clock())
    page = lp.ana_log(sub.ana.chgcnt, ana_groups(ctrl), groups_only=groups_only)
    largest = lp.ana_log_size(ANA_GROUP_MAX, sub.max_namespaces)
    return page + bytes(largest - len(page)) if len(page) < largest else page
