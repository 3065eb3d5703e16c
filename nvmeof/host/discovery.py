"""Discovery: ask a discovery controller which subsystems exist and where.

Theory of operation
-------------------
:func:`discover` connects to the well-known discovery NQN with KATO 0 (a non-persistent
discovery association, as the Linux host does), enables the controller, identifies it,
then reads the Discovery Log Page (LID 70h) the way libnvme does::

    header (GENCTR, NUMREC) -> NUMREC entries by offset -> header again
      -> GENCTR unchanged: done / changed: start over (at most DISCOVERY_RETRIES times)

and shuts the association down.  Entries are decoded with the DISCOVERY_LOG_ENTRY layout;
the space padding of TRSVCID/TRADDR and the NUL padding of SUBNQN are stripped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from ..controller.logpages import DISCOVERY_LOG_ENTRY, DISCOVERY_LOG_HEADER
from ..wire.constants import (
    DISCOVERY_NQN,
    NVME_TCP_DISCOVERY_PORT,
    AddressFamily,
    LogPage,
    SubsystemType,
    TransportType,
)
from ..wire.layout import c_string
from .controller import HostController, connect
from .queue import DEFAULT_TIMEOUT_S

DISCOVERY_RETRIES = 10
DISCOVERY_KATO_MS = 0
NSID_NONE = 0


class DiscoveryLogChanged(ConnectionError):
    """The discovery log kept changing while it was read."""


@dataclass(frozen=True)
class DiscoveryEntry:
    """One Discovery Log Page entry."""

    trtype: TransportType | int
    adrfam: AddressFamily | int
    subtype: SubsystemType | int
    treq: int
    portid: int
    cntlid: int
    asqsz: int
    eflags: int
    trsvcid: str
    traddr: str
    subnqn: str
    sectype: int

    @classmethod
    def decode(cls, raw: bytes | memoryview, offset: int = 0) -> DiscoveryEntry:
        e = DISCOVERY_LOG_ENTRY.unpack(raw, offset)
        return cls(trtype=_enum(TransportType, e.trtype), adrfam=_enum(AddressFamily, e.adrfam),
                   subtype=_enum(SubsystemType, e.subtype), treq=e.treq, portid=e.portid, cntlid=e.cntlid,
                   asqsz=e.asqsz, eflags=e.eflags, trsvcid=c_string(e.trsvcid), traddr=c_string(e.traddr),
                   subnqn=c_string(e.subnqn), sectype=e.tsas_sectype)


E = TypeVar("E", bound=IntEnum)


def _enum(kind: type[E], value: int) -> E | int:
    """The enum member for ``value``, or the plain number when the spec adds new values."""
    try:
        return kind(value)
    except ValueError:
        return value


async def read_discovery_log(ctrl: HostController) -> tuple[int, list[DiscoveryEntry]]:
    """(GENCTR, entries) read consistently from a connected discovery controller."""
    header_size = DISCOVERY_LOG_HEADER.size
    entry_size = DISCOVERY_LOG_ENTRY.size
    for _ in range(DISCOVERY_RETRIES):
        header = DISCOVERY_LOG_HEADER.unpack(
            await ctrl.get_log_page(LogPage.DISCOVERY, header_size, nsid=NSID_NONE))
        raw = b""
        if header.numrec:
            raw = await ctrl.get_log_page(LogPage.DISCOVERY, header.numrec * entry_size, offset=header_size,
                                          nsid=NSID_NONE)
        again = DISCOVERY_LOG_HEADER.unpack(await ctrl.get_log_page(LogPage.DISCOVERY, header_size,
                                                                    nsid=NSID_NONE))
        if again.genctr == header.genctr:
            return header.genctr, [DiscoveryEntry.decode(raw, i * entry_size) for i in range(header.numrec)]
    raise DiscoveryLogChanged(f"discovery log changed during {DISCOVERY_RETRIES} consecutive reads")


async def discover(address: str, port: int = NVME_TCP_DISCOVERY_PORT, *, hostnqn: str | None = None,
                   hdgst: bool = False, ddgst: bool = False,
                   timeout: float = DEFAULT_TIMEOUT_S) -> list[DiscoveryEntry]:
    """The discovery log of the discovery controller at ``address:port``."""
    ctrl = await connect(address, port, DISCOVERY_NQN, hostnqn=hostnqn, hdgst=hdgst, ddgst=ddgst,
                         nr_io_queues=0, kato_ms=DISCOVERY_KATO_MS, timeout=timeout)
    async with ctrl:
        _, entries = await read_discovery_log(ctrl)
    return entries
