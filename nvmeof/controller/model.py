"""What a target serves: subsystems, namespaces, hosts, listeners.

These are the protocol-level objects the controller reads (identities, sizes, who may
connect).  The device layer (dpu_emu) owns the richer domain model and keeps these in
step; the controller never invents policy.
"""

from __future__ import annotations

import itertools
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..wire.constants import (
    CNTLID_MAX,
    DISCOVERY_NQN,
    NQN_MAX_LENGTH,
    AddressFamily,
    AnaState,
    Csi,
    TransportType,
)
from .backend import NamespaceBackend

if TYPE_CHECKING:
    from ..auth.policy import AuthPolicy
    from .controller import Controller

NSID_MAX = 0xFFFFFFFE
NSID_ALL = 0xFFFFFFFF


def validate_nqn(nqn: str) -> str:
    if not nqn or len(nqn.encode()) > NQN_MAX_LENGTH:
        raise ValueError(f"NQN must be 1..{NQN_MAX_LENGTH} bytes: {nqn!r}")
    if not nqn.startswith("nqn."):
        raise ValueError(f"NQN must start with 'nqn.': {nqn!r}")
    return nqn


@dataclass
class Namespace:
    nsid: int
    backend: NamespaceBackend
    block_size: int = 512
    num_blocks: int = 0
    csi: Csi = Csi.NVM
    uuid: bytes = field(default_factory=lambda: uuidlib.uuid4().bytes)
    nguid: bytes = field(default_factory=lambda: uuidlib.uuid4().bytes)
    eui64: bytes = b""
    ana_group: int = 1
    # KV namespaces: limits advertised in the KV Identify Namespace data
    max_key_size: int = 16
    max_value_size: int = 0
    max_keys: int = 0
    capacity_bytes: int = 0  # KV: NSZE (bytes)
    usage: Callable[[], int] | None = None  # KV: NUSE (bytes in use), read on Identify

    def __post_init__(self) -> None:
        if not 1 <= self.nsid <= NSID_MAX:
            raise ValueError(f"NSID {self.nsid} out of range 1..{NSID_MAX:#x}")
        if self.block_size & (self.block_size - 1) or not 512 <= self.block_size <= 65536:
            raise ValueError(f"block size {self.block_size} must be a power of two in 512..65536")

    @property
    def size_bytes(self) -> int:
        return self.block_size * self.num_blocks


@dataclass
class Listener:
    """A transport address the target listens on (a discovery log 'port')."""

    traddr: str
    trsvcid: str
    portid: int = 1
    trtype: TransportType = TransportType.TCP
    adrfam: AddressFamily = AddressFamily.IPV4
    discovery: bool = True  # serves the discovery subsystem
    io: bool = True  # serves NVM subsystems


ANA_GROUP_DEFAULT = 1
ANA_GROUP_MAX = 128  # ANAGRPMAX and NANAGRPID (the Linux target's NVMET_MAX_ANAGRPS)
ANATT_DEFAULT_S = 10  # ANA Transition Time: longest a (group, listener) stays in CHANGE
ANA_CHGCNT_WRAP = 1 << 64
ANA_REFUSING = frozenset({AnaState.INACCESSIBLE, AnaState.PERSISTENT_LOSS, AnaState.CHANGE})


class AnaTable:
    """Asymmetric Namespace Access of one subsystem.

    Each namespace belongs to one ANA group (``Namespace.ana_group``); the state of a group
    depends on the listener (port id) the controller's admin queue came in on.  A
    (group, listener) pair never set is OPTIMIZED.  CHANGE is a transition: it lasts at
    most ``anatt_s`` (ANATT in Identify Controller), then the pair returns to the state it
    had before unless another state was set meanwhile.  ``chgcnt`` (log page header) and
    the per-group counters count every change; ``listeners`` are told (the subsystem
    raises the ANA change event on its controllers).
    """

    def __init__(self, anatt_s: int = ANATT_DEFAULT_S) -> None:
        self.anatt_s = anatt_s
        self.groups: set[int] = {ANA_GROUP_DEFAULT}
        self.chgcnt = 0
        self.group_chgcnt: dict[int, int] = {}
        self._states: dict[tuple[int, int], AnaState] = {}
        self._transitions: dict[tuple[int, int], tuple[AnaState, float]] = {}  # -> (previous, deadline)
        self.refusing = 0  # how many pairs refuse I/O: the I/O path skips the lookup when 0

    @staticmethod
    def check_group(grpid: int) -> int:
        if not 1 <= grpid <= ANA_GROUP_MAX:
            raise ValueError(f"ANA group {grpid} out of range 1..{ANA_GROUP_MAX}")
        return grpid

    def state(self, grpid: int, portid: int) -> AnaState:
        return self._states.get((grpid, portid), AnaState.OPTIMIZED)

    def states(self) -> dict[tuple[int, int], AnaState]:
        """The pairs set to something other than OPTIMIZED."""
        return dict(self._states)

    def settled_states(self) -> dict[tuple[int, int], AnaState]:
        """Like :meth:`states`, with each CHANGE replaced by the state it returns to."""
        out = dict(self._states)
        for key, (previous, _) in self._transitions.items():
            if previous == AnaState.OPTIMIZED:
                out.pop(key, None)
            else:
                out[key] = previous
        return out

    def transition_deadline(self, grpid: int, portid: int) -> float | None:
        entry = self._transitions.get((grpid, portid))
        return None if entry is None else entry[1]

    def _put(self, key: tuple[int, int], state: AnaState) -> None:
        old = self._states.pop(key, AnaState.OPTIMIZED)
        self.refusing -= old in ANA_REFUSING
        if state != AnaState.OPTIMIZED:
            self._states[key] = state
        self.refusing += state in ANA_REFUSING
        self.touch(key[0])

    def touch(self, grpid: int) -> None:
        """Something about ``grpid`` changed (state or membership): bump the counters."""
        self.groups.add(grpid)
        self.chgcnt = (self.chgcnt + 1) % ANA_CHGCNT_WRAP or 1
        self.group_chgcnt[grpid] = (self.group_chgcnt.get(grpid, 0) + 1) % ANA_CHGCNT_WRAP or 1

    def set_state(self, grpid: int, portid: int, state: AnaState, now: float) -> bool:
        """Set one pair's state; False if it already had that state (nothing to tell)."""
        key = (self.check_group(grpid), portid)
        state = AnaState(state)
        current = self.state(*key)
        if state == AnaState.CHANGE:
            previous = self._transitions[key][0] if key in self._transitions else current
            self._transitions[key] = (previous, now + self.anatt_s)
        else:
            self._transitions.pop(key, None)
        if state == current:
            self.groups.add(grpid)
            return False
        self._put(key, state)
        return True

    def next_deadline(self) -> float | None:
        return min((d for _, d in self._transitions.values()), default=None)

    def expire(self, now: float) -> bool:
        """End the CHANGE transitions whose ANATT has passed; True if any did."""
        due = [key for key, (_, deadline) in self._transitions.items() if now >= deadline]
        for key in due:
            previous, _ = self._transitions.pop(key)
            self._put(key, previous)
        return bool(due)


@dataclass
class Subsystem:
    nqn: str
    serial: str = "DPUEMU0001"
    model: str = "dpu-emu"
    firmware: str = "0.1.0"
    allow_any_host: bool = True
    hosts: set[str] = field(default_factory=set)
    max_namespaces: int = 1024
    namespaces: dict[int, Namespace] = field(default_factory=dict)
    controllers: dict[int, Controller] = field(default_factory=dict)
    listeners: list[int] | None = None  # portids it is exposed on; None = every I/O listener
    ana: AnaTable = field(default_factory=AnaTable)
    host_auth: dict[str, AuthPolicy] = field(default_factory=dict)  # hostnqn -> DH-HMAC-CHAP (required)

    def __post_init__(self) -> None:
        validate_nqn(self.nqn)

    def host_allowed(self, hostnqn: str) -> bool:
        return self.allow_any_host or hostnqn in self.hosts

    def add_namespace(self, ns: Namespace) -> None:
        if ns.nsid in self.namespaces:
            raise ValueError(f"NSID {ns.nsid} already exists in {self.nqn}")
        if ns.nsid > self.max_namespaces:
            raise ValueError(f"NSID {ns.nsid} exceeds the subsystem's {self.max_namespaces} namespaces")
        self.namespaces[ns.nsid] = ns
        for ctrl in list(self.controllers.values()):
            ctrl.namespace_changed(ns.nsid)

    def remove_namespace(self, nsid: int) -> Namespace:
        ns = self.namespaces.pop(nsid)
        for ctrl in list(self.controllers.values()):
            ctrl.namespace_changed(nsid)
        return ns

    def visible_namespaces(self, hostnqn: str) -> dict[int, Namespace]:
        """Namespaces ``hostnqn`` may see (the device layer narrows this for masking)."""
        del hostnqn
        return self.namespaces

    def set_ana_state(self, grpid: int, portid: int, state: AnaState, now: float) -> bool:
        """Set the ANA state of a group on one listener and raise the ANA change event on
        every controller of the subsystem (each re-reads its own view); False if unchanged."""
        changed = self.ana.set_state(grpid, portid, state, now)
        if changed:
            self.ana_changed()
        return changed

    def expire_ana(self, now: float) -> None:
        if self.ana.expire(now):
            self.ana_changed()

    def ana_changed(self) -> None:
        for ctrl in list(self.controllers.values()):
            ctrl.ana_changed()


@dataclass
class TargetConfig:
    """Transport and controller limits (SPDK's TCP transport defaults where they exist)."""

    maxh2cdata: int = 131072
    in_capsule_size: int = 8192
    mdts_bytes: int = 1 << 20
    max_queue_depth: int = 128
    max_admin_queue_depth: int = 128  # SPDK's max_aq_depth; Linux asks for 32 entries
    max_io_queues: int = 16
    c2h_success: bool = True
    kas_100ms: int = 1  # keep-alive granularity advertised in Identify (KAS)
    default_kato_ms: int = 120_000  # for Set Features KATO 0 is "disabled"; Connect KATO 0 likewise
    aer_limit: int = 4
    # limits that protect the process (see nvmeof.target.limits); 0 = unlimited where noted
    max_r2t_per_connection: int = 64  # H2C transfers collected at once per connection (R2Ts outstanding)
    max_connection_memory: int = 64 << 20  # bytes held per connection before reading pauses; 0 = unlimited
    max_connections_per_listener: int = 1024  # beyond it new TCP connections are closed; 0 = unlimited
    icreq_timeout_s: float = 10.0  # a connection with no complete ICReq by then is closed


class Target:
    """The registry a controller session consults: subsystems, listeners, cntlids."""

    def __init__(self, config: TargetConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or TargetConfig()
        self.clock = clock
        self.subsystems: dict[str, Subsystem] = {}
        self.listeners: dict[int, Listener] = {}
        self.discovery_genctr = 0
        self.discovery_controllers: dict[int, Controller] = {}
        self._cntlids = itertools.count(1)
        self.host_filter: Callable[[Subsystem, str], bool] | None = None

    def add_subsystem(self, subsystem: Subsystem) -> Subsystem:
        if subsystem.nqn in self.subsystems or subsystem.nqn == DISCOVERY_NQN:
            raise ValueError(f"subsystem {subsystem.nqn} already exists")
        self.subsystems[subsystem.nqn] = subsystem
        self.discovery_changed()
        return subsystem

    def remove_subsystem(self, nqn: str) -> Subsystem:
        sub = self.subsystems.pop(nqn)
        for ctrl in list(sub.controllers.values()):
            ctrl.shutdown_association("subsystem removed")
        self.discovery_changed()
        return sub

    def add_listener(self, listener: Listener) -> Listener:
        self.listeners[listener.portid] = listener
        self.discovery_changed()
        return listener

    def remove_listener(self, portid: int) -> Listener:
        listener = self.listeners.pop(portid)
        self.discovery_changed()
        return listener

    def discovery_changed(self) -> None:
        self.discovery_genctr += 1
        for ctrl in list(self.discovery_controllers.values()):
            ctrl.discovery_log_changed()

    def allocate_cntlid(self, subsystem: Subsystem | None) -> int:
        used = set(subsystem.controllers) if subsystem is not None else set(self.discovery_controllers)
        for _ in range(CNTLID_MAX):
            cntlid = next(self._cntlids)
            if cntlid > CNTLID_MAX:
                self._cntlids = itertools.count(1)
                cntlid = next(self._cntlids)
            if cntlid not in used:
                return cntlid
        raise RuntimeError("no free controller IDs")

    def portid_for(self, local_addr: tuple[str, str]) -> int:
        """The port id of the listener a connection accepted at ``local_addr`` came in on
        (an exact address first, then a wildcard listener on that port); 0 if none."""
        addr, port = local_addr
        wildcard = 0
        for listener in self.listeners.values():
            if listener.trsvcid != port:
                continue
            if listener.traddr == addr:
                return listener.portid
            if listener.traddr in ("", "0.0.0.0", "::"):
                wildcard = wildcard or listener.portid
        return wildcard

    def host_may_see(self, subsystem: Subsystem, hostnqn: str) -> bool:
        if not subsystem.host_allowed(hostnqn):
            return False
        return self.host_filter is None or self.host_filter(subsystem, hostnqn)
