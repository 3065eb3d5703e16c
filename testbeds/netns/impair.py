"""Network impairments from Python, for a link inside a namespace (or the root namespace).

This machine's kernel has no netem, so:
- rate: a tbf (token bucket) or an htb root qdisc (one default class), set with pyroute2 tc;
- loss: an nftables table of our own with `numgen random mod 100 < N drop` rules in the
  input and output hooks, matching one interface (and optionally one TCP port);
- cuts: link down / up with pyroute2.
Delay and jitter need netem: the Linux VM guest has it (testbeds/linux_host, `tc ... netem`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from pyroute2 import IPRoute, NetNS

from . import cleanup

PERCENT: Final[int] = 100
ROOT_HANDLE: Final[str] = "1:"
HTB_DEFAULT_CLASS: Final[int] = 0x10
HTB_CLASS_HANDLE: Final[str] = "1:10"
DEFAULT_TBF_LATENCY_MS: Final[int] = 50
MIN_TBF_BURST_BYTES: Final[int] = 1600
TBF_BURST_SECONDS: Final[float] = 0.01
"""tbf bucket: 10 ms worth of tokens, at least one full-size frame."""
NFT_HOOK_PRIORITY: Final[int] = -10
NFT_FAMILY: Final[str] = "inet"


class ImpairmentError(RuntimeError):
    """A tc / nft / link change could not be applied."""


def _ipr(netns: str | None) -> IPRoute | NetNS:
    return NetNS(netns) if netns is not None else IPRoute()


def _index(ipr: IPRoute | NetNS, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise ImpairmentError(f"no interface {ifname!r}")
    return int(found[0])


def set_link(netns: str | None, ifname: str, *, up: bool) -> None:
    """Link up or down (down on one end of a veth also drops the peer's carrier)."""
    with _ipr(netns) as ipr:
        ipr.link("set", index=_index(ipr, ifname), state="up" if up else "down")


def link_is_up(netns: str | None, ifname: str) -> bool:
    with _ipr(netns) as ipr:
        link = ipr.get_links(_index(ipr, ifname))[0]
        return bool(link["flags"] & 1)  # IFF_UP


def clear_qdisc(netns: str | None, ifname: str) -> None:
    """Back to the default root qdisc (no error when none of ours is there)."""
    with _ipr(netns) as ipr:
        index = _index(ipr, ifname)
        try:
            ipr.tc("del", index=index, handle=ROOT_HANDLE, root=True)
        except Exception:  # noqa: BLE001 - netlink error: nothing to delete
            pass


def root_qdisc_kinds(netns: str | None, ifname: str) -> list[str]:
    with _ipr(netns) as ipr:
        index = _index(ipr, ifname)
        return [str(q.get_attr("TCA_KIND")) for q in ipr.get_qdiscs(index) if q["parent"] == 0xFFFFFFFF]


def set_tbf(netns: str | None, ifname: str, rate_bps: int, *, burst_bytes: int | None = None,
            latency_ms: int = DEFAULT_TBF_LATENCY_MS) -> None:
    """Limits egress of `ifname` to rate_bps bits/s with a token bucket filter."""
    burst = burst_bytes or max(MIN_TBF_BURST_BYTES, int(rate_bps / 8 * TBF_BURST_SECONDS))
    clear_qdisc(netns, ifname)
    with _ipr(netns) as ipr:
        ipr.tc("add", "tbf", _index(ipr, ifname), handle=ROOT_HANDLE, rate=f"{rate_bps}bit",
               burst=burst, latency=f"{latency_ms}ms")


def set_htb(netns: str | None, ifname: str, rate_bps: int) -> None:
    """Limits egress of `ifname` with an htb root and one default class at rate_bps (ceil too)."""
    clear_qdisc(netns, ifname)
    with _ipr(netns) as ipr:
        index = _index(ipr, ifname)
        ipr.tc("add", "htb", index, handle=ROOT_HANDLE, default=HTB_DEFAULT_CLASS)
        ipr.tc("add-class", "htb", index, handle=HTB_CLASS_HANDLE, parent=ROOT_HANDLE,
               rate=f"{rate_bps}bit", ceil=f"{rate_bps}bit")


@dataclass(frozen=True)
class LossRule:
    """Random loss of `percent` % of the packets through `ifname` (both directions).

    `tcp_port` narrows it to TCP segments from or to that port (e.g. one test's target port
    on the root namespace's loopback, so nothing else on the machine is affected).
    """

    ifname: str
    percent: int
    tcp_port: int | None = None

    def ruleset(self, table: str) -> str:
        if not 0 < self.percent <= PERCENT:
            raise ImpairmentError(f"loss percent must be in 1..100, not {self.percent}")
        verdict = "counter drop" if self.percent == PERCENT else (
            f"numgen random mod {PERCENT} < {self.percent} counter drop")
        port_in = f"tcp dport {self.tcp_port} " if self.tcp_port is not None else ""
        port_out = f"tcp sport {self.tcp_port} " if self.tcp_port is not None else ""
        # Inbound packets to the port (input hook) and the answers from it (output hook).
        lines = [f"table {NFT_FAMILY} {table} {{"]
        for chain, hook, iface, port in (("input", "input", "iifname", port_in),
                                         ("output", "output", "oifname", port_out)):
            lines += [
                f"  chain {chain} {{",
                f"    type filter hook {hook} priority {NFT_HOOK_PRIORITY}; policy accept;",
                f'    {iface} "{self.ifname}" {port}{verdict}',
                "  }",
            ]
        lines.append("}")
        return "\n".join(lines) + "\n"


def _nft(netns: str | None, argv: list[str], stdin: str | None = None) -> str:
    full = [cleanup.NFT_BINARY, *argv]
    if netns is not None:
        full = ["ip", "netns", "exec", netns, *full]
    try:
        done = subprocess.run(full, input=stdin, capture_output=True, text=True,
                              timeout=cleanup.COMMAND_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise ImpairmentError("nft is not installed (apt-get install nftables)") from exc
    if done.returncode != 0:
        raise ImpairmentError(f"{' '.join(full)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def add_loss(netns: str | None, rule: LossRule, *, table: str | None = None) -> str:
    """Installs the rule in a table of our own; returns the table name (for `remove_loss`)."""
    name = table or cleanup.table_name(cleanup.next_run_id())
    _nft(netns, ["-f", "-"], stdin=rule.ruleset(name))
    return name


def remove_loss(netns: str | None, table: str) -> None:
    _nft(netns, ["delete", "table", NFT_FAMILY, table])


def loss_counters(netns: str | None, table: str) -> str:
    """The table as `nft list` prints it (for logs)."""
    return _nft(netns, ["list", "table", NFT_FAMILY, table])


def dropped_packets(netns: str | None, table: str) -> int:
    """Packets the table's rules dropped so far (the sum of their counters)."""
    items = json.loads(_nft(netns, ["-j", "list", "table", NFT_FAMILY, table])).get("nftables", [])
    total = 0
    for item in items:
        for expression in item.get("rule", {}).get("expr", []):
            if "counter" in expression:
                total += int(expression["counter"]["packets"])
    return total


@contextmanager
def packet_loss(netns: str | None, rule: LossRule) -> Iterator[str]:
    """The loss rule for the duration of the block; its table is removed even on error or signal."""
    table = add_loss(netns, rule)
    token = cleanup.register(lambda: cleanup.delete_nft_table(NFT_FAMILY, table, netns))
    try:
        yield table
    finally:
        cleanup.unregister(token)
