"""Connection lifecycle of the real Linux host against dpu-emu, in ONE boot with host actions.

dpu-emu serves a config written by the test: the default subsystem with a FILE-backed block
namespace 1 (and a file-backed KV namespace 2). The guest (guest/lib/lifecycle.sh):
connects with KATO 5 s, --ctrl-loss-tmo=60 --reconnect-delay=2; writes random data; idles 16 s
(> 3 x KATO) and checks the controller is still live and readable; asks the host to stop the
target (SIGTERM) and measures, from the kernel log, how soon the host noticed (must be within
KATO); asks the host to start the target again on the SAME ports with the same config and waits
for the kernel to reconnect on its own (after at least one refused attempt); reads the block
data and a KV value stored before the stop back intact; does more I/O. Then the host freezes the
target (SIGSTOP: sockets open, nothing answered), so only the keep-alive timeout can tell: the
kernel must notice within 2 x KATO (up to KATO/2 until its next Keep Alive, then KATO until that
times out); after the thaw (SIGCONT) it reconnects and the data reads back; disconnect.
The host side serves the actions through testbeds.linux_host.host_actions (the guest prints a
request on the console, the host answers on the console input).
Finally the dpu-emu log (both runs) has no ERROR or Traceback line (warnings are printed: after
the thaw dpu-emu expires the frozen controller's keep-alive timer, an expected WARNING).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import LIFECYCLE_CHECKS, TargetParams, lifecycle_script
from testbeds.linux_host.host_actions import HostActions

from .dpu_emu_proc import DPU_EMU_NQN, DpuEmuProcess, assert_clean_log, default_config, require_dpu_emu
from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

GUEST_TIMEOUT_S: Final[float] = 300.0
NAMESPACE_BYTES: Final[int] = 64 * 1024 * 1024
KV_CAPACITY_BYTES: Final[int] = 16 * 1024 * 1024
KATO_S: Final[int] = 5
IDLE_S: Final[int] = 16
LIFE_MIB: Final[int] = 4
MIB: Final[int] = 1024 * 1024
SHA_PREFIX_HEX: Final[int] = 16


@dataclass(frozen=True)
class LifecycleServer:
    process: DpuEmuProcess
    block_file: Path


@dataclass(frozen=True)
class LifecycleRun:
    checks: GuestChecks
    actions: HostActions


@pytest.fixture(scope="module")
def lifecycle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LifecycleServer]:
    require_dpu_emu()
    work = tmp_path_factory.mktemp("dpu-emu-lifecycle")
    block_file = work / "ns1.img"
    config = default_config()
    subsystem = config["subsystems"][0]
    assert subsystem["nqn"] == DPU_EMU_NQN
    subsystem["namespaces"] = [
        {"nsid": 1, "size_bytes": NAMESPACE_BYTES, "block_size": 512,
         "backend": {"kind": "file", "path": str(block_file)}},
        {"nsid": 2, "command_set": "kv", "capacity_bytes": KV_CAPACITY_BYTES,
         "max_value_size": MIB, "mode": "strict",
         "backend": {"kind": "file", "path": str(work / "kv")}},
    ]
    server = DpuEmuProcess(work / "serve.log", config=config)
    try:
        print(f"\n[interop] {server.start()}; log {server.log_path}")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield LifecycleServer(server, block_file)
    finally:
        server.close()


@pytest.fixture(scope="module")
def lifecycle_run(lifecycle_server: LifecycleServer, linux_host_image: vm.ImagePaths) -> LifecycleRun:
    server = lifecycle_server.process
    actions = HostActions({
        "stop-target": server.stop, "start-target": server.start,
        "freeze-target": server.freeze, "thaw-target": server.thaw,
    })
    target = TargetParams(
        address=vm_config.HOST_ADDRESS_FROM_GUEST, io_port=server.io_port,
        discovery_port=server.discovery_port, subnqn=DPU_EMU_NQN,
        extra={"KATO_S": str(KATO_S), "IDLE_S": str(IDLE_S), "LIFE_MIB": str(LIFE_MIB),
               "CTRL_LOSS_TMO_S": "60", "RECONNECT_DELAY_S": "2"},
    )
    checks = run_checks_in_guest(lifecycle_script(target), timeout=GUEST_TIMEOUT_S, on_line=actions)
    print(f"[interop] host actions:\n{actions.summary()}")
    return LifecycleRun(checks, actions)


@pytest.mark.parametrize("check", LIFECYCLE_CHECKS)
def test_check(lifecycle_run: LifecycleRun, lifecycle_server: LifecycleServer, check: str) -> None:
    assert_check(lifecycle_run.checks, check, more=f"dpu-emu log: {lifecycle_server.process.log_path}")


def test_guest_completed_all_checks(lifecycle_run: LifecycleRun) -> None:
    result, report = lifecycle_run.checks
    assert report.complete, f"no CHECKS-DONE line; console log: {result.log_path}"
    assert sorted(report.results) == sorted(LIFECYCLE_CHECKS)
    assert result.exit_status == 0, f"guest script exit {result.exit_status}: {report.summary()}"


def test_host_actions_ran_once_each(lifecycle_run: LifecycleRun, lifecycle_server: LifecycleServer) -> None:
    result = lifecycle_run.checks[0]
    assert not result.handler_errors, result.handler_errors
    assert not lifecycle_run.actions.ignored, lifecycle_run.actions.ignored
    records = lifecycle_run.actions.records
    expected = ["stop-target", "start-target", "freeze-target", "thaw-target"]
    assert [(r.name, r.status) for r in records] == [(name, 0) for name in expected], (
        lifecycle_run.actions.summary()
    )
    assert lifecycle_server.process.runs == 2


@pytest.mark.parametrize(("check", "limit_s"), [("target-stop-detect", KATO_S), ("freeze-detect", 2 * KATO_S)])
def test_loss_noticed_in_time(lifecycle_run: LifecycleRun, check: str, limit_s: int) -> None:
    assert_check(lifecycle_run.checks, check)
    detail = lifecycle_run.checks[1].results[check].detail
    match = re.search(r"noticed after (-?\d+)ms", detail)
    assert match, detail
    assert int(match.group(1)) <= limit_s * 1000, detail


def test_frozen_target_noticed_by_keep_alive(lifecycle_run: LifecycleRun) -> None:
    """A frozen target keeps its TCP connections: the kernel can only notice through its Keep
    Alive command timing out."""
    detail = lifecycle_run.checks[1].results["freeze-detect"].detail
    assert "keep-alive line: 'none'" not in detail, detail


def test_backing_file_holds_the_data(lifecycle_run: LifecycleRun, lifecycle_server: LifecycleServer) -> None:
    """The data the guest wrote before the restart is in dpu-emu's backing file, byte for byte."""
    assert_check(lifecycle_run.checks, "life-write")
    detail = lifecycle_run.checks[1].results["life-write"].detail
    match = re.search(r"sha256=([0-9a-f]{16})\.\.\.", detail)
    assert match, detail
    with open(lifecycle_server.block_file, "rb") as backing:
        data = backing.read(LIFE_MIB * MIB)
    assert hashlib.sha256(data).hexdigest()[:SHA_PREFIX_HEX] == match.group(1)


def test_dpu_emu_log_is_clean(lifecycle_run: LifecycleRun, lifecycle_server: LifecycleServer) -> None:
    server = lifecycle_server.process
    print(server.stop())
    assert server.last_exit == 0, server.log_tail()
    assert_clean_log(server)
