"""Asymmetric Namespace Access (multipath): ANA groups per subsystem and the state of
each group on each listener.

A namespace belongs to one ANA group (``ana_group`` in its resource, default 1).  The
state of a (group, listener) pair is OPTIMIZED until set; setting it raises the ANA
change event on every controller of the subsystem, and each controller's ANA log page
then shows the state for the listener its admin queue came in on.  CHANGE is a
transition: after the subsystem's ANA Transition Time it returns to the earlier state.

States other than CHANGE are kept in the subsystem's configuration as
``"ana": {"states": [{"group": 1, "listener": 2, "state": "inaccessible"}]}`` and applied
again when the configuration is loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nvmeof.controller.model import ANA_GROUP_DEFAULT, ANA_GROUP_MAX, Namespace, Subsystem
from nvmeof.wire.constants import AnaState

from .errors import InvalidArgument, NotFound
from .records import SubsystemRecord, check_int
from .state import ADMIN, Scope, State, require_admin

log = logging.getLogger("dpu_emu.domain.ana")
ANA_SECTION = "ana"
ANA_GROUP_FIELD = "ana_group"


class AnaStateName(StrEnum):
    OPTIMIZED = "optimized"
    NON_OPTIMIZED = "non_optimized"
    INACCESSIBLE = "inaccessible"
    PERSISTENT_LOSS = "persistent_loss"
    CHANGE = "change"


TO_WIRE = {name: AnaState[name.name] for name in AnaStateName}
FROM_WIRE = {wire: name for name, wire in TO_WIRE.items()}


@dataclass(frozen=True)
class AnaPathView:
    listener: int
    state: str


@dataclass(frozen=True)
class AnaGroupView:
    grpid: int
    namespaces: list[int]
    states: list[AnaPathView]


@dataclass(frozen=True)
class AnaView:
    subsystem: str
    anatt_s: int
    groups: list[AnaGroupView]


def check_group(value: Any, what: str = ANA_GROUP_FIELD) -> int:
    return check_int(value, what, 1, ANA_GROUP_MAX)


def state_name(value: Any) -> AnaStateName:
    try:
        return AnaStateName(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in AnaStateName)
        raise InvalidArgument(f"state must be one of {choices}: {value!r}") from None


def namespace_group(spec: dict[str, Any]) -> int:
    """The ANA group a namespace description asks for (default 1)."""
    value = spec.get(ANA_GROUP_FIELD)
    return ANA_GROUP_DEFAULT if value is None else check_group(value)


def attach_namespace(live: Subsystem, ns: Namespace, grpid: int) -> None:
    """Put a namespace being added in its group (before the hosts are told about it)."""
    ns.ana_group = grpid
    live.ana.touch(grpid)


def move_namespace(live: Subsystem, nsid: int, grpid: int) -> bool:
    """Move a live namespace to another group: the hosts get the ANA change event."""
    ns = live.namespaces[nsid]
    if ns.ana_group == grpid:
        return False
    old, ns.ana_group = ns.ana_group, grpid
    live.ana.touch(old)
    live.ana.touch(grpid)
    live.ana_changed()
    return True


def load_states(live: Subsystem, section: Any, clock: float, listeners: set[int]) -> None:
    """Apply a subsystem's saved ``ana`` section (configuration load)."""
    if section is None:
        return
    if not isinstance(section, dict) or not isinstance(section.get("states", []), list):
        raise InvalidArgument("ana must be an object {states: [{group, listener, state}]}")
    for entry in section.get("states", []):
        if not isinstance(entry, dict):
            raise InvalidArgument("ana.states entries must be objects {group, listener, state}")
        grpid = check_group(entry.get("group"), "ana.states[].group")
        portid = check_int(entry.get("listener"), "ana.states[].listener", 1, 0xFFFE)
        if portid not in listeners:  # the listener was removed since: its states went with it
            log.warning("%s: ANA state for listener %d ignored (no such listener)", live.nqn, portid)
            continue
        live.ana.set_state(grpid, portid, TO_WIRE[state_name(entry.get("state"))], clock)


class AnaService:
    def __init__(self, state: State) -> None:
        self.state = state

    def _listeners(self, live: Subsystem) -> list[int]:
        """The I/O listeners this subsystem is reachable through."""
        return sorted(p for p, rec in self.state.listeners.items()
                      if rec.io and (live.listeners is None or p in live.listeners))

    def _group(self, rec: SubsystemRecord, live: Subsystem, grpid: int) -> AnaGroupView:
        nsids = sorted(n for n, ns in live.namespaces.items() if ns.ana_group == grpid)
        live.expire_ana(self.state.target.clock())
        states = [AnaPathView(listener=p, state=FROM_WIRE[live.ana.state(grpid, p)].value)
                  for p in self._listeners(live)]
        return AnaGroupView(grpid=grpid, namespaces=nsids, states=states)

    def get(self, ref: str, scope: Scope = ADMIN) -> AnaView:
        require_admin(scope)
        rec = self.state.subsystem(ref)
        live = self.state.live(rec.nqn)
        groups = set(live.ana.groups) | {ns.ana_group for ns in live.namespaces.values()}
        return AnaView(subsystem=rec.nqn, anatt_s=live.ana.anatt_s,
                       groups=[self._group(rec, live, g) for g in sorted(groups)])

    def set_state(self, ref: str, grpid: int, portid: int, state: str, scope: Scope = ADMIN) -> AnaGroupView:
        """Set the state of ``grpid`` on listener ``portid``; every controller of the
        subsystem gets the ANA change event (when the state changed)."""
        require_admin(scope)
        rec = self.state.subsystem(ref)
        grpid = check_group(grpid, "group")
        name = state_name(state)
        live = self.state.live(rec.nqn)
        if portid not in self._listeners(live):
            raise NotFound(f"no I/O listener {portid} for {rec.nqn}")
        live.set_ana_state(grpid, portid, TO_WIRE[name], self.state.target.clock())
        rec.extra[ANA_SECTION] = self._saved(live)
        self.state.commit()
        return self._group(rec, live, grpid)

    @staticmethod
    def _saved(live: Subsystem) -> dict[str, Any]:
        entries = []
        for (grpid, portid), wire in sorted(live.ana.settled_states().items()):  # a transition is not saved
            entries.append({"group": grpid, "listener": portid, "state": FROM_WIRE[wire].value})
        return {"states": entries}
