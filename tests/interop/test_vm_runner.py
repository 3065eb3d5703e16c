"""The guest runner itself: exit status, extra files, output, and the timeout that kills qemu."""

from __future__ import annotations

from typing import Final

import pytest

from testbeds.linux_host import config, vm

pytestmark = pytest.mark.interop

RUN_TIMEOUT_S: Final[float] = 120.0
SHORT_TIMEOUT_S: Final[float] = 20.0
GUEST_STATUS: Final[int] = 42


def test_exit_status_output_and_files(linux_host_image: vm.ImagePaths) -> None:
    script = f"cat /guest/data/hello.txt; cat /etc/nvme/hostid; exit {GUEST_STATUS}\n"
    result = vm.run_guest(script, timeout=RUN_TIMEOUT_S, files={"data/hello.txt": "hello-from-host\n"})
    assert result.exit_status == GUEST_STATUS, result.output
    assert "hello-from-host" in result.output
    assert config.DEFAULT_HOST_ID in result.output
    assert result.log_path.is_file() and "hello-from-host" in result.log_path.read_text()
    print(f"[interop] boot {result.boot_seconds} s, total {result.duration:.1f} s, {result.accel}")


def test_timeout_kills_the_guest(linux_host_image: vm.ImagePaths) -> None:
    with pytest.raises(vm.GuestTimeoutError) as caught:
        vm.run_guest("echo sleeping-forever; sleep 3600\n", timeout=SHORT_TIMEOUT_S)
    assert "sleeping-forever" in caught.value.output
    assert caught.value.log_path.is_file()
