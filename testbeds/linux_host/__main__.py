"""CLI: python -m testbeds.linux_host build | run SCRIPT | shell-check | selftest."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from . import checks, config
from .vm import GuestBootError, QemuNotFoundError, TestbedBuildError, ensure_image, run_guest

EXIT_TESTBED_ERROR: Final[int] = 2
SHELLCHECK_TIMEOUT_S: Final[float] = 120.0

SHELL_CHECK_SCRIPT: Final[str] = f"""
. {checks.GUEST_LIB}/checks.sh
. {checks.GUEST_LIB}/smoke.sh
run_smoke_checks
"""


def _host_shellcheck() -> int:
    """Lints the guest shell files with shellcheck when it is installed (0 when absent)."""
    tool = shutil.which("shellcheck")
    files = [config.GUEST_INIT, *sorted(config.GUEST_LIB_DIR.glob("*.sh"))]
    if tool is None:
        print("shellcheck not installed: host lint skipped", file=sys.stderr)
        return 0
    done = subprocess.run(
        [tool, "-s", "sh", *map(str, files)], check=False, timeout=SHELLCHECK_TIMEOUT_S
    )
    print(f"shellcheck: {'clean' if done.returncode == 0 else 'FINDINGS'}", file=sys.stderr)
    return done.returncode


def _report(output: str, status: int, duration: float, boot: float | None, accel: str) -> None:
    report = checks.parse_checks(output)
    print(report.summary())
    boot_text = f"{boot:.1f} s" if boot is not None else "?"
    print(
        f"guest exit status {status}; {len(report.failed())} failed of {len(report.results)}; "
        f"{duration:.1f} s total, boot {boot_text}, accel {accel}"
    )


def _cmd_build(args: argparse.Namespace) -> int:
    image = ensure_image(rebuild=args.rebuild)
    print(f"kernel   {image.kernel}\ninitramfs {image.initramfs}\nrelease  {image.kernel_release}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    script = sys.stdin.read() if args.script == "-" else Path(args.script).read_text()
    result = run_guest(script, timeout=args.timeout, mem_mb=args.mem_mb, accel=args.accel)
    sys.stdout.write(result.output)
    print(f"\n[exit status {result.exit_status}; {result.duration:.1f} s; accel {result.accel}; "
          f"log {result.log_path}]", file=sys.stderr)
    return result.exit_status


def _cmd_checks(script: str, args: argparse.Namespace) -> int:
    result = run_guest(script, timeout=args.timeout, mem_mb=args.mem_mb, accel=args.accel)
    _report(result.output, result.exit_status, result.duration, result.boot_seconds, result.accel)
    print(f"console log: {result.log_path}")
    return result.exit_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbeds.linux_host", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or find cached) the VM image")
    build.add_argument("--rebuild", action="store_true", help="ignore the cache")
    run = sub.add_parser("run", help="boot the guest and run SCRIPT (a file, or - for stdin)")
    run.add_argument("script")
    sub.add_parser("shell-check", help="lint guest shell files, boot once, check the guest setup")
    sub.add_parser("selftest", help="run every check against the guest kernel's own nvmet")
    for command in (run, *(sub.choices[n] for n in ("shell-check", "selftest"))):
        command.add_argument("--timeout", type=float, default=config.DEFAULT_TIMEOUT_S)
        command.add_argument("--mem-mb", type=int, default=config.DEFAULT_MEM_MB)
        command.add_argument("--accel", choices=(config.ACCEL_TCG, config.ACCEL_KVM), default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return _cmd_build(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "shell-check":
            lint = _host_shellcheck()
            return _cmd_checks(SHELL_CHECK_SCRIPT, args) or lint
        return _cmd_checks(checks.selftest_script(), args)
    except (TestbedBuildError, QemuNotFoundError, GuestBootError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TESTBED_ERROR


if __name__ == "__main__":
    sys.exit(main())
