"""Helpers shared by the interop tests: skip-or-fail policy, one guest boot, check asserts."""

from __future__ import annotations

import os
from typing import Final, NoReturn

import pytest

from testbeds.linux_host import vm
from testbeds.linux_host.checks import CheckReport, parse_checks

CI_ENV: Final[str] = "CI"


def in_ci() -> bool:
    return os.environ.get(CI_ENV, "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip outside CI; fail in CI (the testbed must work there)."""
    if in_ci():
        pytest.fail(f"interop testbed unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


GuestChecks = tuple[vm.GuestResult, CheckReport]


def run_checks_in_guest(
    script: str, *, timeout: float, on_line: vm.LineCallback | None = None
) -> GuestChecks:
    """Boots one guest with `script` (and `on_line`, see vm.run_guest), prints the check
    summary, returns result and report."""
    result = vm.run_guest(script, timeout=timeout, on_line=on_line)
    report = parse_checks(result.output)
    boot = f"{result.boot_seconds:.1f}" if result.boot_seconds is not None else "?"
    print(
        f"\n[interop] guest exit {result.exit_status}, {result.duration:.1f} s "
        f"(boot {boot} s, {result.accel}), log {result.log_path}\n{report.summary()}"
    )
    return result, report


def assert_check(run: GuestChecks, name: str, *, more: str = "") -> None:
    """Fails with the check's detail and the guest command output when it did not pass;
    `more` is appended to the message (e.g. where the target's log is)."""
    result, report = run
    check = report.results.get(name)
    where = f"console log: {result.log_path}" + (f"\n{more}" if more else "")
    if check is None:
        pytest.fail(
            f"check {name!r} was never reported (guest exit {result.exit_status}; "
            f"complete={report.complete}); {where}",
            pytrace=False,
        )
    if not check.passed:
        pytest.fail(f"{check.describe()}\n{where}", pytrace=False)
