"""A namespace's QoS bandwidth limit as the real Linux host's fio sees it, in ONE boot.

dpu-emu runs as a subprocess (REST on 127.0.0.1) with one RAM namespace, unlimited at first.
The guest (guest/lib/qos_checks.sh) first measures what fio sequential direct reads reach
unlimited on this boot (qos-unlimited), then asks the host (host action set-qos-limit) to limit
the namespace: the host sets ``r_mbytes_per_sec`` and ``w_mbytes_per_sec`` to about a third of
that rate, live over REST.  fio then reads sequentially with direct I/O for ~15 s, and its
bandwidth must be within +-10 % of the limit.

The issue's acceptance is 45-55 MB/s measured at a 50 MB/s limit, i.e. +-10 %.  The guest runs
under TCG, and what it moves depends on the machine's load (~2-12 MiB/s for small or random
I/O; 50-56 MiB/s measured for these 128 KiB sequential reads on a quiet machine), so it cannot
be relied on to exceed 50 MB/s: the same +-10 % criterion is applied at a lower limit, a third
of what this guest demonstrably reached unlimited on the same boot (capped at the issue's
50 MiB/s, at least 0.5 MiB/s, rounded down to 0.25 MiB/s; the test also asserts that the guest
exceeded the limit at least twofold, so the limit really is what holds fio back).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import httpx
import pytest

from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import TargetParams, checks_script
from testbeds.linux_host.host_actions import HostActions

from .dpu_emu_proc import DPU_EMU_NQN, DpuEmuProcess, assert_clean_log, default_config, require_dpu_emu
from .rest_session import rest_server
from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

ADMIN_TOKEN: Final[str] = "qos-fio-admin-token"
GUEST_TIMEOUT_S: Final[float] = 300.0
NSID: Final[int] = 1
NAMESPACE_BYTES: Final[int] = 256 << 20
MEASURE_S: Final[int] = 8
RUNTIME_S: Final[int] = 15
TOLERANCE: Final[float] = 0.10
LIMIT_FRACTION: Final[float] = 1 / 3
MIN_LIMIT_MIB: Final[float] = 0.5
ISSUE_LIMIT_MIB: Final[float] = 50  # the issue's limit: used when the guest is fast enough
LIMIT_STEP_MIB: Final[float] = 0.25  # the limit is rounded down to a multiple of this
KIB: Final[int] = 1024
QOS_CHECKS: Final[tuple[str, ...]] = ("qos-connect", "qos-unlimited", "qos-set-limit", "qos-limited",
                                      "qos-disconnect")
_CHECK_UNLIMITED = re.compile(r"^CHECK qos-unlimited PASS bw_kib=(\d+)\b")
_BW = re.compile(r"^bw_kib=(\d+) io_kib=(\d+) runtime_ms=(\d+)\b")


@dataclass
class LimitSetter:
    """Watches the console for qos-unlimited's rate; on the guest's set-qos-limit action sets
    the namespace's read/write limits to about a third of it over REST."""

    client: httpx.Client
    unlimited_kib: int | None = None
    limit_mib: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, line: str, console: vm.GuestConsole) -> None:
        match = _CHECK_UNLIMITED.match(line.strip())
        if match:
            with self.lock:
                self.unlimited_kib = int(match.group(1))

    def set_limit(self) -> str:
        with self.lock:
            unlimited = self.unlimited_kib
        if unlimited is None:
            raise RuntimeError("no qos-unlimited rate seen on the console")
        wanted = unlimited / KIB * LIMIT_FRACTION
        limit = min(ISSUE_LIMIT_MIB, max(MIN_LIMIT_MIB, int(wanted / LIMIT_STEP_MIB) * LIMIT_STEP_MIB))
        resp = self.client.patch(f"/v1/subsystems/{DPU_EMU_NQN}/namespaces/{NSID}",
                                 json={"qos": {"r_mbytes_per_sec": limit, "w_mbytes_per_sec": limit}})
        if resp.status_code != httpx.codes.OK:
            raise RuntimeError(f"PATCH namespace qos: HTTP {resp.status_code} {resp.text[:200]}")
        self.limit_mib = limit
        return f"limit_kib={int(limit * KIB)} limit_mib={limit:g} unlimited_kib={unlimited}"


@dataclass(frozen=True)
class QosRun:
    checks: GuestChecks
    actions: HostActions
    setter: LimitSetter
    server: DpuEmuProcess


@pytest.fixture(scope="module")
def qos_run(tmp_path_factory: pytest.TempPathFactory, linux_host_image: vm.ImagePaths) -> Iterator[QosRun]:
    require_dpu_emu()
    config = default_config()
    subsystem = config["subsystems"][0]
    assert subsystem["nqn"] == DPU_EMU_NQN
    subsystem["namespaces"] = [{"nsid": NSID, "size_bytes": NAMESPACE_BYTES, "block_size": 512,
                                "backend": {"kind": "ram"}}]
    server = DpuEmuProcess(tmp_path_factory.mktemp("dpu-emu-qos") / "serve.log", config=config,
                           rest_token=ADMIN_TOKEN)
    with rest_server(server, ADMIN_TOKEN) as srv:
        client = srv.client
        setter = LimitSetter(client)
        actions = HostActions({"set-qos-limit": setter.set_limit})

        def on_line(line: str, console: vm.GuestConsole) -> None:
            setter.watch(line, console)
            actions(line, console)

        target = TargetParams(
            address=vm_config.HOST_ADDRESS_FROM_GUEST, io_port=server.io_port,
            discovery_port=server.discovery_port, subnqn=DPU_EMU_NQN,
            extra={"NSID": str(NSID), "QOS_MEASURE_S": str(MEASURE_S), "QOS_RUNTIME_S": str(RUNTIME_S)},
        )
        script = checks_script(target, libraries=("host_action.sh", "qos_checks.sh"), entry="run_qos_checks")
        checks = run_checks_in_guest(script, timeout=GUEST_TIMEOUT_S, on_line=on_line)
        print(f"[interop] host actions:\n{actions.summary()}")
        yield QosRun(checks, actions, setter, server)


def _bw_kib(run: QosRun, name: str) -> tuple[int, str]:
    assert_check(run.checks, name, more=f"dpu-emu log: {run.server.log_path}")
    detail = run.checks[1].results[name].detail
    match = _BW.match(detail)
    assert match, f"{name}: unexpected detail {detail!r}"
    return int(match.group(1)), detail


@pytest.mark.parametrize("check", QOS_CHECKS)
def test_check(qos_run: QosRun, check: str) -> None:
    assert_check(qos_run.checks, check, more=f"dpu-emu log: {qos_run.server.log_path}")


def test_guest_completed_all_checks(qos_run: QosRun) -> None:
    result, report = qos_run.checks
    assert report.complete, f"no CHECKS-DONE line; console log: {result.log_path}"
    assert sorted(report.results) == sorted(QOS_CHECKS)
    assert result.exit_status == 0, f"guest script exit {result.exit_status}: {report.summary()}"
    assert not result.handler_errors, result.handler_errors
    assert [(r.name, r.status) for r in qos_run.actions.records] == [("set-qos-limit", 0)], \
        qos_run.actions.summary()


def test_fio_read_bandwidth_within_10_percent_of_the_limit(qos_run: QosRun) -> None:
    unlimited, unlimited_detail = _bw_kib(qos_run, "qos-unlimited")
    limited, limited_detail = _bw_kib(qos_run, "qos-limited")
    limit_mib = qos_run.setter.limit_mib
    assert limit_mib is not None
    limit_kib = limit_mib * KIB
    print(f"\n[interop] unlimited {unlimited / KIB:.2f} MiB/s ({unlimited_detail}); limit {limit_mib:g} MiB/s; "
          f"limited {limited / KIB:.2f} MiB/s ({limited_detail})")
    # the limit is meaningful only if the guest can exceed it by a margin
    assert unlimited >= 2 * limit_kib, f"the guest reached only {unlimited} KiB/s unlimited; limit {limit_kib}"
    assert abs(limited - limit_kib) <= TOLERANCE * limit_kib, \
        f"fio read {limited} KiB/s with a {limit_kib:.0f} KiB/s limit (+-{TOLERANCE:.0%})"


def test_dpu_emu_log_is_clean(qos_run: QosRun) -> None:
    print(qos_run.server.stop())
    assert qos_run.server.last_exit == 0, qos_run.server.log_tail()
    assert_clean_log(qos_run.server)
