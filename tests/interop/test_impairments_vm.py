"""Network impairments between the real Linux NVMe/TCP host and dpu-emu, in ONE boot.

(a) 50 ms delay: netem inside the guest (the Debian kernel ships sch_netem; this machine's
kernel has none) on the guest's NIC; `nvme connect -k 5`, a small fio verify job passes, and
the controller stays live through several keep-alive periods with no reset or reconnect in
dmesg. (b) 1 % random loss: the guest asks the host (host action "loss-on") to install an
nftables table of our own in the root namespace that drops 1 % of the TCP segments to and from
this test's target port on loopback (where qemu's user-mode network meets dpu-emu), then the
same checks; "loss-off" removes the table and reports how many packets it dropped. The table
is also removed in the fixture's `finally` and at interpreter exit (testbeds.netns.cleanup).
Guest side: testbeds/linux_host/guest/lib/impair_checks.sh.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import pytest

from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import IMPAIR_CHECKS, TargetParams, impair_script
from testbeds.linux_host.host_actions import HostActions

from .dpu_emu_proc import DPU_EMU_NQN, DpuEmuProcess, assert_clean_log, default_config, require_dpu_emu
from .support import GuestChecks, assert_check, run_checks_in_guest, unavailable

pytestmark = pytest.mark.interop

GUEST_TIMEOUT_S: Final[float] = 600.0
NAMESPACE_BYTES: Final[int] = 64 * 1024 * 1024
DELAY_MS: Final[int] = 50
LOSS_PERCENT: Final[int] = 1
KATO_S: Final[int] = 5
HOLD_S: Final[int] = 4 * KATO_S
"""Idle time after the fio job: four keep-alive timeouts."""
FIO_MIB: Final[int] = 4
LOOPBACK_IFNAME: Final[str] = "lo"

_RTT = re.compile(r"rtt_before_ms=(\S+) rtt_after_ms=(\S+)")
_DROPPED = re.compile(r"dropped=(\d+)")


@dataclass
class LossSwitch:
    """The host actions: an nftables loss rule on loopback for one TCP port."""

    port: int
    table: str | None = None
    token: int | None = None
    dropped: list[int] = field(default_factory=list)

    def on(self) -> str:
        from testbeds.netns import cleanup, impair

        if self.table is not None:
            raise RuntimeError(f"loss rule already installed ({self.table})")
        rule = impair.LossRule(LOOPBACK_IFNAME, LOSS_PERCENT, tcp_port=self.port)
        self.table = impair.add_loss(None, rule)
        table = self.table
        self.token = cleanup.register(lambda: cleanup.delete_nft_table(impair.NFT_FAMILY, table))
        return f"table {self.table}: {LOSS_PERCENT}% random drop on {LOOPBACK_IFNAME} tcp port {self.port}"

    def off(self) -> str:
        from testbeds.netns import cleanup, impair

        if self.table is None or self.token is None:
            raise RuntimeError("no loss rule installed")
        dropped = impair.dropped_packets(None, self.table)
        self.dropped.append(dropped)
        cleanup.unregister(self.token)
        table, self.table, self.token = self.table, None, None
        return f"dropped={dropped} packets; table {table} removed"

    def close(self) -> None:
        if self.token is not None:
            from testbeds.netns import cleanup

            cleanup.unregister(self.token)
            self.table = self.token = None


@dataclass(frozen=True)
class ImpairRun:
    checks: GuestChecks
    actions: HostActions
    loss: LossSwitch
    server: DpuEmuProcess


def _require_nft() -> None:
    if os.geteuid() != 0:
        unavailable("the loss rule (nftables in the root namespace) needs root")
    if shutil.which("nft") is None:
        unavailable("nft is not installed (apt-get install nftables)")
    try:
        import pyroute2  # noqa: F401 - testbeds.netns needs it
    except ImportError as exc:
        unavailable(f"pyroute2 is not installed ({exc})")


@pytest.fixture(scope="module")
def impair_run(tmp_path_factory: pytest.TempPathFactory, linux_host_image: vm.ImagePaths) -> Iterator[ImpairRun]:
    require_dpu_emu()
    _require_nft()
    work = tmp_path_factory.mktemp("dpu-emu-impair")
    config = default_config()
    subsystem = config["subsystems"][0]
    assert subsystem["nqn"] == DPU_EMU_NQN
    subsystem["namespaces"] = [{"nsid": 1, "size_bytes": NAMESPACE_BYTES, "block_size": 512,
                                "backend": {"kind": "ram"}}]
    server = DpuEmuProcess(work / "serve.log", config=config)
    loss = LossSwitch(server.io_port)
    try:
        print(f"\n[interop] {server.start()}; log {server.log_path}")
        actions = HostActions({"loss-on": loss.on, "loss-off": loss.off})
        target = TargetParams(
            address=vm_config.HOST_ADDRESS_FROM_GUEST, io_port=server.io_port,
            discovery_port=server.discovery_port, subnqn=DPU_EMU_NQN,
            extra={"IMP_DELAY_MS": str(DELAY_MS), "IMP_KATO_S": str(KATO_S), "IMP_HOLD_S": str(HOLD_S),
                   "IMP_FIO_MIB": str(FIO_MIB)},
        )
        checks = run_checks_in_guest(impair_script(target), timeout=GUEST_TIMEOUT_S, on_line=actions)
        print(f"[interop] host actions:\n{actions.summary()}")
        yield ImpairRun(checks, actions, loss, server)
    finally:
        loss.close()
        server.close()


@pytest.mark.parametrize("check", IMPAIR_CHECKS)
def test_check(impair_run: ImpairRun, check: str) -> None:
    assert_check(impair_run.checks, check, more=f"dpu-emu log: {impair_run.server.log_path}")


def test_guest_completed_all_checks(impair_run: ImpairRun) -> None:
    result, report = impair_run.checks
    assert report.complete, f"no CHECKS-DONE line; console log: {result.log_path}"
    assert sorted(report.results) == sorted(IMPAIR_CHECKS)
    assert result.exit_status == 0, f"guest script exit {result.exit_status}: {report.summary()}"


def test_netem_delay_was_in_effect(impair_run: ImpairRun) -> None:
    """netem's delay is a lower bound on the round trip: the rtt with it is at least DELAY_MS."""
    check = impair_run.checks[1].results.get("imp-netem")
    assert check is not None and check.passed
    match = _RTT.search(check.detail)
    assert match, check.detail
    before, after = match.groups()
    if after == "none":
        pytest.fail(f"no ping answer through netem (before: {before}): {check.detail}")
    assert int(after) >= DELAY_MS, check.detail
    if before != "none":
        assert int(after) > int(before), check.detail


def test_loss_rule_dropped_packets_and_was_removed(impair_run: ImpairRun) -> None:
    from testbeds.netns import cleanup

    actions = impair_run.actions
    assert not actions.errors(), actions.summary()
    assert [r.name for r in actions.records] == ["loss-on", "loss-off"], actions.summary()
    assert len(impair_run.loss.dropped) == 1 and impair_run.loss.dropped[0] > 0, actions.summary()
    assert not [name for _, name in cleanup.nft_tables() if name.startswith(f"{cleanup.NAME_PREFIX}_{os.getpid()}_")]


def test_dpu_emu_log_is_clean(impair_run: ImpairRun) -> None:
    server = impair_run.server
    print(server.stop())
    assert server.last_exit == 0, server.log_tail()
    assert_clean_log(server)
