"""Fast tests of the testbed's host-side pieces (no qemu): cpio writer, exit marker, CHECK lines,
script composition, host-action requests and answers."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
from pathlib import Path

import pytest

from testbeds.linux_host import config
from testbeds.linux_host.checks import (
    EXPECTED_CHECKS,
    KV_CHECKS,
    LIFECYCLE_CHECKS,
    TargetParams,
    checks_script,
    kv_script,
    lifecycle_script,
    parse_checks,
    selftest_script,
)
from testbeds.linux_host.cpio import CpioWriter
from testbeds.linux_host.host_actions import HostActions, done_line, parse_request
from testbeds.linux_host.vm import _run_cpio, parse_exit_status

NONCE = "0123456789abcdef"


def _marker(nonce: str, status: int) -> str:
    return f"{config.EXIT_MARKER_PREFIX} nonce={nonce} status={status}{config.EXIT_MARKER_SUFFIX}"


def test_exit_marker_is_parsed_strictly() -> None:
    noise = "\x1bc[?7lboot noise\n"
    assert parse_exit_status(f"{noise}{_marker(NONCE, 7)}\r\n[ 5.2] reboot: Power down\n", NONCE) == 7
    with pytest.raises(ValueError, match="no exit marker"):
        parse_exit_status(noise, NONCE)
    with pytest.raises(ValueError, match="2 exit marker"):
        parse_exit_status(f"{_marker(NONCE, 0)}\n{_marker(NONCE, 1)}\n", NONCE)
    with pytest.raises(ValueError, match="not this run"):
        parse_exit_status(_marker("ffffffffffffffff", 0), NONCE)
    with pytest.raises(ValueError, match="malformed"):
        parse_exit_status(f"x{_marker(NONCE, 0)}", NONCE)


def test_check_lines_are_parsed_with_context() -> None:
    output = "\n".join([
        "CHECK discover PASS Discovery Log Number of Records 1",
        "  | nvme connect: failed to write to /dev/nvme-fabrics",
        "CHECK connect FAIL nvme connect exited non-zero",
        "CHECKS-DONE total=2 failed=1",
    ])
    report = parse_checks(output)
    assert report.complete and report.done_total == 2 and report.done_failed == 1
    assert report.results["discover"].passed
    failed = report.results["connect"]
    assert not failed.passed and failed.context == ("nvme connect: failed to write to /dev/nvme-fabrics",)
    assert [r.name for r in report.failed()] == ["connect"]
    with pytest.raises(ValueError, match="twice"):
        parse_checks("CHECK a PASS\nCHECK a FAIL\n")


def test_checks_script_quotes_parameters() -> None:
    target = TargetParams(address="10.0.2.2", io_port=4420, discovery_port=8009,
                          subnqn="nqn.x:y z'q", expect_model="dpu-emu")
    script = checks_script(target)
    assert "SUBNQN='nqn.x:y z'\"'\"'q'" in script
    assert "EXPECT_SERIAL" not in script  # unset expectations stay unset
    assert script.rstrip().endswith("run_all_checks")
    assert "nvmet_setup" in selftest_script()
    with pytest.raises(ValueError):
        TargetParams("a", 1, 2, "n", extra={"bad name": "1"}).shell_assignments()


def test_every_expected_check_is_in_the_guest_library() -> None:
    library = (config.GUEST_LIB_DIR / "checks.sh").read_text()
    for name in EXPECTED_CHECKS:
        assert name in library, name


def _cpio_listing(archive: bytes) -> list[str]:
    tool = shutil.which("cpio")
    if tool is None:
        pytest.skip("cpio not installed")
    done = subprocess.run([tool, "-t", "-v", "--quiet"], input=archive, capture_output=True, check=True)
    return done.stdout.decode().splitlines()


def test_cpio_writer_output_is_read_by_gnu_cpio(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file").write_bytes(b"abc")
    (tmp_path / "link").symlink_to("dir/file")
    buffer = io.BytesIO()
    writer = CpioWriter(buffer)
    writer.tree(tmp_path)
    writer.char_device("console", 5, 1)
    writer.close()
    listing = "\n".join(_cpio_listing(buffer.getvalue()))
    for expected in ("dir/file", "link -> dir/file", "console"):
        assert expected in listing
    assert len(buffer.getvalue()) % 4 == 0


def test_run_cpio_carries_script_params_and_libraries() -> None:
    archive = gzip.decompress(_run_cpio("echo hi\n", {"sub/data.bin": b"\0\1"}, NONCE, config.DEFAULT_HOST_ID))
    listing = "\n".join(_cpio_listing(archive))
    for name in ("guest/run.sh", "guest/params", "guest/lib/checks.sh", "guest/sub/data.bin"):
        assert name in listing
    with pytest.raises(ValueError):
        _run_cpio("", {"../escape": b""}, NONCE, config.DEFAULT_HOST_ID)


def test_lifecycle_and_kv_checks_are_in_their_guest_libraries() -> None:
    for library, names in (("lifecycle.sh", LIFECYCLE_CHECKS), ("kv_checks.sh", KV_CHECKS)):
        text = (config.GUEST_LIB_DIR / library).read_text()
        for name in names:
            assert name in text, (library, name)
    assert "run_lifecycle_checks" in lifecycle_script(TargetParams("a", 1, 2, "n"))
    assert ". /guest/lib/kv_checks.sh" in kv_script(TargetParams("a", 1, 2, "n"))
    with pytest.raises(ValueError, match="no guest library"):
        checks_script(TargetParams("a", 1, 2, "n"), libraries=("missing.sh",))
    with pytest.raises(ValueError, match="entry"):
        checks_script(TargetParams("a", 1, 2, "n"), entry="rm -rf /")


class _FakeConsole:
    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self.sent: list[str] = []
        self.notes: list[str] = []

    def send(self, text: str) -> None:
        self.sent.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def elapsed(self) -> float:
        return 1.5


def test_host_actions_answer_requests_of_this_boot_only() -> None:
    def broken() -> str:
        raise RuntimeError("no @ here")

    actions = HostActions({"ok": lambda: "done@@ with\nnewline", "broken": broken})
    console = _FakeConsole(NONCE)
    for line in (
        f"@@HOST-ACTION nonce={NONCE} id=1 name=ok@@\r",
        f"@@HOST-ACTION nonce={NONCE} id=2 name=broken@@",
        f"@@HOST-ACTION nonce={NONCE} id=3 name=unknown@@",
        "@@HOST-ACTION nonce=ffffffffffffffff id=4 name=ok@@",
        f"echo @@HOST-ACTION nonce={NONCE} id=5 name=ok@@",
        "@@HOST-DONE id=1 status=0 detail=x@@",
    ):
        actions(line, console)  # type: ignore[arg-type]
    assert console.sent == [
        "@@HOST-DONE id=1 status=0 detail=done with newline@@\n",
        "@@HOST-DONE id=2 status=1 detail=RuntimeError: no here@@\n",
        "@@HOST-DONE id=3 status=2 detail=no host handler for 'unknown'@@\n",
    ]
    assert [(r.id, r.name, r.status) for r in actions.records] == [(1, "ok", 0), (2, "broken", 1), (3, "unknown", 2)]
    assert [r.id for r in actions.errors()] == [2, 3]
    assert len(actions.ignored) == 1 and "ffff" in actions.ignored[0]
    assert parse_request(f"@@HOST-ACTION nonce={NONCE} id=7 name=a.b-c_d@@") == (NONCE, 7, "a.b-c_d")
    assert parse_request(f"@@HOST-ACTION nonce={NONCE} id=7 name=a;b@@") is None
    assert done_line(1, 0, "x" * 1000).count("x") == 200
