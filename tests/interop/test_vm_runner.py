"""The guest runner itself: exit status, extra files, output, the timeout that kills qemu, and
streaming console lines to a callback that answers the guest (host actions)."""

from __future__ import annotations

from typing import Final

import pytest

from testbeds.linux_host import config, vm
from testbeds.linux_host.host_actions import HostActions

pytestmark = pytest.mark.interop

RUN_TIMEOUT_S: Final[float] = 120.0
SHORT_TIMEOUT_S: Final[float] = 20.0
GUEST_STATUS: Final[int] = 42
SILENT_WAIT_S: Final[int] = 3


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


def test_on_line_streams_and_host_actions_answer(linux_host_image: vm.ImagePaths) -> None:
    """One boot: the guest's host_action requests are answered through the console input; a
    failing handler, an unknown action, a foreign nonce, an unanswered request (bounded wait)
    and an exception in the line callback itself are all reported, none stops the run."""
    actions = HostActions({"echo": lambda: "echo-from-host", "fail": _fail})
    lines: list[str] = []

    def on_line(line: str, console: vm.GuestConsole) -> None:
        lines.append(line)
        if line == "raise-in-callback":
            raise ValueError("callback broke")
        if "name=silent" not in line:
            actions(line, console)

    script = "\n".join([
        ". /guest/lib/host_action.sh",
        'host_action echo 30; echo "echo=$? [$HOST_ACTION_DETAIL]"',
        'host_action fail 30; echo "fail=$? [$HOST_ACTION_DETAIL]"',
        'host_action nosuch 30; echo "nosuch=$?"',
        'echo "@@HOST-ACTION nonce=ffffffffffffffff id=9 name=echo@@"',
        "echo raise-in-callback",
        f'host_action silent {SILENT_WAIT_S}; echo "silent=$?"',
        'host_action echo 30; echo "again=$? [$HOST_ACTION_DETAIL]"',
        "",
    ])
    result = vm.run_guest(script, timeout=RUN_TIMEOUT_S, on_line=on_line)
    assert result.exit_status == 0, result.output
    for expected in ("echo=0 [echo-from-host]", "fail=1 [RuntimeError: broken on purpose]",
                     "nosuch=2", "silent=124", "again=0 [echo-from-host]"):
        assert expected in result.output, expected
    assert [(r.id, r.name, r.status) for r in actions.records] == [
        (1, "echo", 0), (2, "fail", 1), (3, "nosuch", 2), (5, "echo", 0),
    ]
    assert len(actions.ignored) == 1
    assert len(result.handler_errors) == 1 and "callback broke" in result.handler_errors[0]
    assert "echo=0 [echo-from-host]" in lines
    assert "# host: host action 1 'echo' status 0" in result.log_path.read_text()


def _fail() -> str:
    raise RuntimeError("broken on purpose")
