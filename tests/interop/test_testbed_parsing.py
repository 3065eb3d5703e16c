"""Fast tests of the testbed's host-side pieces (no qemu): cpio writer, exit marker, CHECK lines."""

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
    TargetParams,
    checks_script,
    parse_checks,
    selftest_script,
)
from testbeds.linux_host.cpio import CpioWriter
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
