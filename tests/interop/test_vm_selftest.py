"""The testbed tests itself: the guest's own kernel target (nvmet over configfs, on loopback)
against the guest's kernel host, every check of guest/lib/checks.sh in ONE boot.

If this fails, the testbed is broken; if it passes and test_dpu_emu_host.py fails, dpu-emu is.
"""

from __future__ import annotations

from typing import Final

import pytest

from testbeds.linux_host import vm
from testbeds.linux_host.checks import EXPECTED_CHECKS, selftest_script

from .support import GuestChecks, assert_check, run_checks_in_guest

pytestmark = pytest.mark.interop

SELFTEST_TIMEOUT_S: Final[float] = 300.0


@pytest.fixture(scope="module")
def selftest_run(linux_host_image: vm.ImagePaths) -> GuestChecks:
    return run_checks_in_guest(selftest_script(), timeout=SELFTEST_TIMEOUT_S)


@pytest.mark.parametrize("check", EXPECTED_CHECKS)
def test_check(selftest_run: GuestChecks, check: str) -> None:
    assert_check(selftest_run, check)


def test_guest_completed_all_checks(selftest_run: GuestChecks) -> None:
    result, report = selftest_run
    assert report.complete, f"no CHECKS-DONE line; console log: {result.log_path}"
    unexpected = sorted(set(report.results) - set(EXPECTED_CHECKS))
    assert not unexpected, f"checks not listed in EXPECTED_CHECKS: {unexpected}"
    assert report.done_total == len(EXPECTED_CHECKS)
    assert result.exit_status == 0, f"guest script exit {result.exit_status}: {report.summary()}"
