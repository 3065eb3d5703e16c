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
    Csi,
    TransportType,
)
from .backend import NamespaceBackend

if TYPE_CHECKING:
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

    def host_may_see(self, subsystem: Subsystem, hostnqn: str) -> bool:
        if not subsystem.host_allowed(hostnqn):
            return False
        return self.host_filter is None or self.host_filter(subsystem, hostnqn)
