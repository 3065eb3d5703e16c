"""The real Linux NVMe/TCP host (in qemu) against dpu-emu serving on the host.

A fixture starts `python -m dpu_emu serve` on 127.0.0.1 with free I/O and discovery ports; the
guest reaches it as 10.0.2.2 (qemu user networking) and runs every check of
testbeds/linux_host/guest/lib/checks.sh, all in ONE boot.

Expectations beyond the kernel target's self-test: id-ctrl model "dpu-emu", serial DPUEMU0001,
512-byte LBAs, and the discovery log (read from the discovery port) lists the default subsystem
at the I/O port's trsvcid. Issue-3 acceptance sizes: dd of 64 MiB random data with O_DIRECT read
back with equal checksums (under 60 s), and a time-based fio verify job (randwrite, crc32c,
iodepth 32, 4 jobs, 30 s). Afterwards dpu-emu's log has no ERROR or Traceback line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

import pytest

from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import EXPECTED_CHECKS, LBA_BYTES, TargetParams, checks_script

from .dpu_emu_proc import (
    DPU_EMU_MODEL,
    DPU_EMU_NQN,
    DPU_EMU_SERIAL,
    DpuEmuProcess,
    assert_clean_log,
    require_dpu_emu,
)
from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

GUEST_TIMEOUT_S: Final[float] = 480.0
DD_MIB: Final[int] = 64
DD_MAX_S: Final[int] = 60
FIO_RUNTIME_S: Final[int] = 30
FIO_JOBS: Final[int] = 4
FIO_IODEPTH: Final[int] = 32
FIO_SIZE_MIB: Final[int] = 4


@pytest.fixture(scope="module")
def dpu_emu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DpuEmuProcess]:
    require_dpu_emu()
    server = DpuEmuProcess(tmp_path_factory.mktemp("dpu-emu") / "serve.log")
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def dpu_emu_run(dpu_emu_server: DpuEmuProcess, linux_host_image: vm.ImagePaths) -> GuestChecks:
    target = TargetParams(
        address=vm_config.HOST_ADDRESS_FROM_GUEST,
        io_port=dpu_emu_server.io_port,
        discovery_port=dpu_emu_server.discovery_port,
        subnqn=DPU_EMU_NQN,
        expect_model=DPU_EMU_MODEL,
        expect_serial=DPU_EMU_SERIAL,
        expect_lba_bytes=LBA_BYTES,
        expect_discovery_trsvcid=dpu_emu_server.io_port,
        extra={
            "DD_MIB": str(DD_MIB), "FIO_TIME_BASED": "1", "FIO_RUNTIME_S": str(FIO_RUNTIME_S),
            "FIO_JOBS": str(FIO_JOBS), "FIO_IODEPTH": str(FIO_IODEPTH),
            "FIO_SIZE_MIB": str(FIO_SIZE_MIB),
        },
    )
    print(f"[interop] dpu-emu server log: {dpu_emu_server.log_path}")
    return run_checks_in_guest(checks_script(target), timeout=GUEST_TIMEOUT_S)


@pytest.mark.parametrize("check", EXPECTED_CHECKS)
def test_check(dpu_emu_run: GuestChecks, dpu_emu_server: DpuEmuProcess, check: str) -> None:
    assert_check(dpu_emu_run, check, more=f"dpu-emu log: {dpu_emu_server.log_path}")


def test_guest_completed_all_checks(dpu_emu_run: GuestChecks) -> None:
    result, report = dpu_emu_run
    assert report.complete, f"no CHECKS-DONE line; console log: {result.log_path}"
    assert result.exit_status == 0, f"guest script exit {result.exit_status}: {report.summary()}"


def test_dd_64mib_direct_io_within_60s(dpu_emu_run: GuestChecks) -> None:
    """Issue 3: dd of 64 MiB random data with O_DIRECT, read back, checksums equal, < 60 s."""
    assert_check(dpu_emu_run, "dd-verify")
    detail = dpu_emu_run[1].results["dd-verify"].detail
    match = re.search(r"^(\d+) MiB at 0 MiB sha256=\w+\.\.\. in (\d+)s$", detail)
    assert match, detail
    assert int(match.group(1)) == DD_MIB, detail
    assert int(match.group(2)) < DD_MAX_S, f"write + read back took {match.group(2)} s: {detail}"


def test_fio_time_based_verify(dpu_emu_run: GuestChecks) -> None:
    """Issue 3: fio randwrite + verify=crc32c, iodepth 32, 4 jobs, time_based for 30 s, passes."""
    assert_check(dpu_emu_run, "fio-verify")
    detail = dpu_emu_run[1].results["fio-verify"].detail
    assert f"time_based runtime={FIO_RUNTIME_S}s" in detail, detail
    assert f"jobs={FIO_JOBS} iodepth={FIO_IODEPTH}" in detail, detail
    took = re.search(r"took (\d+)s", detail)
    assert took and int(took.group(1)) >= FIO_RUNTIME_S, detail
    assert "READ:" in detail, f"no verify read phase reported: {detail}"


def test_dpu_emu_log_is_clean(dpu_emu_run: GuestChecks, dpu_emu_server: DpuEmuProcess) -> None:
    """After the whole run (target stopped with SIGTERM): no ERROR/Traceback in its log."""
    print(dpu_emu_server.stop())
    assert dpu_emu_server.last_exit == 0, dpu_emu_server.log_tail()
    assert_clean_log(dpu_emu_server)
