"""The network testbed builder and its impairments, on real namespaces (root, pyroute2, nft).

Every effect is asserted relative to a baseline measured in the same test (never an absolute
rate or loss figure): the machine is shared and noisy.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from testbeds.netns import EMU_ROLE, LossRule, Topology, cleanup, packet_loss, probes, set_htb, set_link, set_tbf
from testbeds.netns.impair import NFT_FAMILY, clear_qdisc, root_qdisc_kinds

pytestmark = pytest.mark.netns

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
PORT: Final[int] = 5201
TBF_RATE_BPS: Final[int] = 4_000_000
MAX_PROBE_BYTES: Final[int] = 256 * 1024 * 1024
PROBE_SECONDS: Final[float] = 1.0
MAX_RATE_RATIO: Final[float] = 0.5
LOSS_PERCENT: Final[int] = 40
DATAGRAMS: Final[int] = 2000
MAX_LOSSY_FRACTION: Final[float] = 0.85
"""With 40 % loss about 60 % arrive; a clean path delivers (nearly) all of them."""
MIN_CLEAN_FRACTION: Final[float] = 0.95
RESTORE_TIMEOUT_S: Final[float] = 10.0


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _root_links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def test_namespaces_addresses_and_tcp_on_both_paths(topology: Topology) -> None:
    names = _netns_list()
    for name in topology.namespaces:
        assert name in names
    for path in topology.paths:
        assert topology.interfaces(EMU_ROLE)[path.ifname] and topology.interfaces(path.client)[path.ifname]
        assert probes.tcp_connects(topology, path.client, path.emu_address, PORT)
    addresses = topology.run("host", ["ip", "-4", "-o", "addr", "show"], timeout=10).stdout
    assert "10.77.1.2/24" in addresses and "10.77.2.2/24" in addresses
    # The root namespace gets no address and no route of ours.
    root = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout
    assert "10.77." not in root and "10.77." not in routes


def test_bridge_connects_every_client(netns_ready: None) -> None:
    with Topology(paths=("a", "b"), bridge=True) as topo:
        for client in ("a", "b"):
            assert probes.tcp_connects(topo, client, topo.bridge_address, PORT)
        listed = topo.run(EMU_ROLE, ["ip", "-o", "link", "show", "master", "br0"], timeout=10).stdout
        assert "lan0" in listed and "lan1" in listed


def test_tbf_and_htb_limit_the_rate_relative_to_the_unlimited_path(topology: Topology) -> None:
    path = topology.paths[0]

    def rate() -> float:
        return probes.tcp_throughput(topology, path.client, path.emu_address, PORT,
                                     max_bytes=MAX_PROBE_BYTES, max_seconds=PROBE_SECONDS)

    unlimited = rate()
    set_tbf(topology.netns(path.client), path.ifname, TBF_RATE_BPS)
    assert root_qdisc_kinds(topology.netns(path.client), path.ifname) == ["tbf"]
    with_tbf = rate()
    set_htb(topology.netns(path.client), path.ifname, TBF_RATE_BPS)
    assert root_qdisc_kinds(topology.netns(path.client), path.ifname) == ["htb"]
    with_htb = rate()
    clear_qdisc(topology.netns(path.client), path.ifname)
    print(f"\n[netns] unlimited {unlimited / 1e6:.1f} MB/s, tbf {with_tbf / 1e6:.2f} MB/s, "
          f"htb {with_htb / 1e6:.2f} MB/s (limit {TBF_RATE_BPS / 8e6:.2f} MB/s)")
    assert with_tbf / unlimited < MAX_RATE_RATIO
    assert with_htb / unlimited < MAX_RATE_RATIO


def test_nft_random_loss_drops_a_fraction(topology: Topology) -> None:
    path = topology.paths[0]
    emu = topology.netns(EMU_ROLE)
    clean = probes.udp_delivery(topology, path.client, path.emu_address, PORT, count=DATAGRAMS)
    with packet_loss(emu, LossRule(path.ifname, LOSS_PERCENT)) as table:
        assert (NFT_FAMILY, table) in cleanup.nft_tables(emu)
        lossy = probes.udp_delivery(topology, path.client, path.emu_address, PORT, count=DATAGRAMS)
        other = probes.udp_delivery(topology, topology.paths[1].client, topology.paths[1].emu_address, PORT,
                                    count=DATAGRAMS)
    assert table not in [name for _, name in cleanup.nft_tables(emu)]
    print(f"\n[netns] {LOSS_PERCENT} % loss rule: {lossy}/{DATAGRAMS} delivered, clean {clean}, other path {other}")
    assert clean >= MIN_CLEAN_FRACTION * DATAGRAMS
    assert 0 < lossy < MAX_LOSSY_FRACTION * clean
    assert other >= MIN_CLEAN_FRACTION * DATAGRAMS  # the rule matches only its interface


def test_full_drop_and_link_down_cut_the_path_and_restore_it(topology: Topology) -> None:
    p1, p2 = topology.paths
    emu = topology.netns(EMU_ROLE)
    with packet_loss(emu, LossRule(p1.ifname, 100)):
        assert not probes.tcp_connects(topology, p1.client, p1.emu_address, PORT)
        assert probes.tcp_connects(topology, p2.client, p2.emu_address, PORT)
    assert probes.tcp_connects(topology, p1.client, p1.emu_address, PORT)
    set_link(emu, p1.ifname, up=False)
    assert not topology.interfaces(EMU_ROLE)[p1.ifname]
    assert not probes.tcp_connects(topology, p1.client, p1.emu_address, PORT)
    assert probes.tcp_connects(topology, p2.client, p2.emu_address, PORT)
    set_link(emu, p1.ifname, up=True)
    assert probes.wait_tcp(topology, p1.client, p1.emu_address, PORT, timeout=RESTORE_TIMEOUT_S)


def test_teardown_leaves_nothing_even_when_the_body_raises(netns_ready: None) -> None:
    links_before = _root_links().count("veth")
    with pytest.raises(RuntimeError, match="body failed"):
        with Topology(paths=("host", "host")) as topo:
            names = topo.namespaces
            proc = topo.popen(EMU_ROLE, ["sleep", "60"])
            assert all(name in _netns_list() for name in names)
            raise RuntimeError("body failed")
    listed = _netns_list()
    assert not any(name in listed for name in names), listed
    assert proc.poll() is not None, "the process started in the namespace outlived the topology"
    assert _root_links().count("veth") == links_before
    assert not [n for n in cleanup.our_namespaces() if n.startswith(f"{cleanup.NAME_PREFIX}-{topo.run_id}-")]


def test_stale_namespaces_of_dead_processes_are_removed(netns_ready: None) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{cleanup.NAME_PREFIX}-{dead.pid}-1-emu"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with Topology(paths=("host",)) as topo:
            assert f"netns {stale}" in topo.stale_removed
        assert stale not in _netns_list()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, check=False)


CHILD_SCRIPT: Final[str] = """
import sys, time
from testbeds.netns import Topology
with Topology(paths=("host",)) as topo:
    print(" ".join(topo.namespaces), flush=True)
    time.sleep(60)
"""
CHILD_TIMEOUT_S: Final[float] = 30.0


def test_sigterm_tears_the_topology_down(netns_ready: None) -> None:
    """A run killed by SIGTERM (CI timeout, Ctrl-C's cousin) removes its namespaces itself."""
    child = subprocess.Popen([sys.executable, "-c", CHILD_SCRIPT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        names = child.stdout.readline().split()
        assert len(names) == 2 and all(name in _netns_list() for name in names), names
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=CHILD_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGTERM
    listed = _netns_list()
    assert not any(name in listed for name in names), listed
