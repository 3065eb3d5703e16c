"""The real Linux NVMe/TCP host (in qemu) against dpu-emu serving on the host.

A fixture starts `python -m dpu_emu serve` on 127.0.0.1 with free I/O and discovery ports; the
guest reaches it as 10.0.2.2 (qemu user networking) and runs every check of
testbeds/linux_host/guest/lib/checks.sh, all in ONE boot.

Expectations beyond the kernel target's self-test: id-ctrl model "dpu-emu", serial DPUEMU0001,
512-byte LBAs, and the discovery log (read from the discovery port) lists the default subsystem
at the I/O port's trsvcid.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from testbeds.linux_host import config as vm_config
from testbeds.linux_host import vm
from testbeds.linux_host.checks import EXPECTED_CHECKS, LBA_BYTES, TargetParams, checks_script

from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
LOOPBACK: Final[str] = "127.0.0.1"
DPU_EMU_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:default"
DPU_EMU_SERIAL: Final[str] = "DPUEMU0001"
DPU_EMU_MODEL: Final[str] = "dpu-emu"
SERVER_START_TIMEOUT_S: Final[float] = 30.0
SERVER_STOP_TIMEOUT_S: Final[float] = 10.0
POLL_INTERVAL_S: Final[float] = 0.2
GUEST_TIMEOUT_S: Final[float] = 480.0


@dataclass(frozen=True)
class DpuEmuServer:
    io_port: int
    discovery_port: int
    log_path: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(POLL_INTERVAL_S)
        return sock.connect_ex((LOOPBACK, port)) == 0


@pytest.fixture(scope="module")
def dpu_emu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DpuEmuServer]:
    for module in ("dpu_emu", "dpu_emu.__main__"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError as exc:
            pytest.skip(f"{module} is not importable ({exc})")
        if not found:
            pytest.skip(f"{module} is not importable: `python -m dpu_emu serve` is not there yet")
    io_port, discovery_port = _free_port(), _free_port()
    while discovery_port == io_port:
        discovery_port = _free_port()
    log_path = tmp_path_factory.mktemp("dpu-emu") / "serve.log"
    argv = [
        sys.executable, "-m", "dpu_emu", "serve", "--address", LOOPBACK,
        "--port", str(io_port), "--discovery-port", str(discovery_port),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not (_accepts(io_port) and _accepts(discovery_port)):
            if proc.poll() is not None:
                pytest.fail(
                    f"`{' '.join(argv)}` exited {proc.returncode}:\n{log_path.read_text()[-4000:]}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dpu-emu did not listen on {io_port}/{discovery_port} within "
                    f"{SERVER_START_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-4000:]}",
                    pytrace=False,
                )
            time.sleep(POLL_INTERVAL_S)
        yield DpuEmuServer(io_port, discovery_port, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(SERVER_STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def dpu_emu_run(dpu_emu_server: DpuEmuServer, linux_host_image: vm.ImagePaths) -> GuestChecks:
    target = TargetParams(
        address=vm_config.HOST_ADDRESS_FROM_GUEST,
        io_port=dpu_emu_server.io_port,
        discovery_port=dpu_emu_server.discovery_port,
        subnqn=DPU_EMU_NQN,
        expect_model=DPU_EMU_MODEL,
        expect_serial=DPU_EMU_SERIAL,
        expect_lba_bytes=LBA_BYTES,
        expect_discovery_trsvcid=dpu_emu_server.io_port,
    )
    print(f"[interop] dpu-emu server log: {dpu_emu_server.log_path}")
    return run_checks_in_guest(checks_script(target), timeout=GUEST_TIMEOUT_S)


@pytest.mark.parametrize("check", EXPECTED_CHECKS)
def test_check(dpu_emu_run: GuestChecks, dpu_emu_server: DpuEmuServer, check: str) -> None:
    assert_check(dpu_emu_run, check, more=f"dpu-emu log: {dpu_emu_server.log_path}")


def test_guest_completed_all_checks(dpu_emu_run: GuestChecks) -> None:
    result, report = dpu_emu_run
    assert report.complete, f"no CHECKS-DONE line; console log: {result.log_path}"
    assert result.exit_status == 0, f"guest script exit {result.exit_status}: {report.summary()}"
