"""Discovery through nvmeof.host against a running device."""

from __future__ import annotations

from nvmeof.controller.logpages import TREQ_SQ_FLOW_CONTROL_DISABLE_SUPPORTED
from nvmeof.host import DiscoveryEntry, discover
from nvmeof.wire.constants import DISCOVERY_NQN, AddressFamily, SubsystemType, TransportType

from ._support import LOOPBACK, run


def _nvm_entries(entries: list[DiscoveryEntry]) -> list[DiscoveryEntry]:
    return [e for e in entries if e.subtype == SubsystemType.NVM]


def test_discover_on_discovery_port(device) -> None:
    entries = run(discover(LOOPBACK, device.discovery_port))
    nvm = _nvm_entries(entries)
    assert [e.subnqn for e in nvm] == [device.subnqn]
    entry = nvm[0]
    assert entry.trtype == TransportType.TCP
    assert entry.adrfam == AddressFamily.IPV4
    assert entry.traddr == LOOPBACK
    assert entry.trsvcid == str(device.io_port)  # padding stripped, points at the I/O port
    assert entry.treq & TREQ_SQ_FLOW_CONTROL_DISABLE_SUPPORTED
    assert any(e.subtype == SubsystemType.CURRENT_DISCOVERY and e.subnqn == DISCOVERY_NQN for e in entries)


def test_discover_on_io_port(device) -> None:
    entries = run(discover(LOOPBACK, device.io_port))
    nvm = _nvm_entries(entries)
    assert [e.subnqn for e in nvm] == [device.subnqn]
    assert nvm[0].trsvcid == str(device.io_port)
    assert nvm[0].traddr == LOOPBACK
