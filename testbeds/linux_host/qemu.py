"""Runs qemu-system-x86_64 with a serial console on stdout, a deadline and fail-fast patterns."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

from . import config

READ_CHUNK: Final[int] = 4096
POLL_INTERVAL_S: Final[float] = 0.2
KILL_WAIT_S: Final[float] = 10.0
SCRIPT_START_LINE: Final[str] = "dpu-emu-init: running guest script"
NETDEV_ID: Final[str] = "n0"
SETPRIV: Final[str] = "setpriv"
TCG_THREADING: Final[str] = "single"
"""Multi-threaded TCG (qemu 7.2) now and then runs stale code after the kernel live-patches
itself (text_poke_bp), which oopses on an int3 during boot; single-threaded TCG does not, and
costs about 5% on the self-test here."""


class QemuNotFoundError(RuntimeError):
    """qemu-system-x86_64 is not installed."""


def qemu_binary() -> str:
    found = shutil.which(config.QEMU_BINARY)
    if found is None:
        raise QemuNotFoundError(
            f"{config.QEMU_BINARY} not found: apt-get install qemu-system-x86 "
            "(see testbeds/linux_host/apt-packages.txt)"
        )
    return found


def qemu_argv(
    *, kernel: Path, initrd: Path, accel: str, mem_mb: int, cpus: int, cmdline: str
) -> list[str]:
    if accel == config.ACCEL_KVM:
        accel_args = ["-accel", "kvm", "-cpu", "host"]
    elif accel == config.ACCEL_TCG:
        accel_args = ["-accel", f"tcg,thread={TCG_THREADING}", "-cpu", "max"]
    else:
        raise ValueError(f"unknown accelerator {accel!r}")
    return [
        qemu_binary(), *accel_args,
        "-m", str(mem_mb), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-serial", "stdio", "-monitor", "none",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-netdev", f"user,id={NETDEV_ID}",
        "-device", f"virtio-net-pci,netdev={NETDEV_ID},romfile=",
    ]


def _die_with_parent(argv: list[str]) -> list[str]:
    """Prefixes `setpriv --pdeathsig KILL` (util-linux) so that qemu dies with this process."""
    setpriv = shutil.which(SETPRIV)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


@dataclass
class QemuOutcome:
    """What happened to one qemu process."""

    output: str
    returncode: int | None
    timed_out: bool
    failed_fast: str | None
    duration: float
    script_started: float | None
    """Seconds from qemu start until the guest init started the script (≈ boot time)."""


@dataclass
class _Reader:
    marker_prefix: str
    fail_patterns: tuple[str, ...]
    log: TextIO
    started: float
    chunks: list[str] = field(default_factory=list)
    pending: str = ""
    marker_at: float | None = None
    script_at: float | None = None
    failed: str | None = None

    def feed(self, text: str) -> None:
        self.chunks.append(text)
        self.log.write(text)
        self.log.flush()
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line.rstrip("\r"))

    def _line(self, line: str) -> None:
        now = time.monotonic()
        if self.script_at is None and SCRIPT_START_LINE in line:
            self.script_at = now - self.started
        if self.marker_at is None and self.marker_prefix in line:
            self.marker_at = now
        for pattern in self.fail_patterns:
            if self.failed is None and pattern in line:
                self.failed = pattern


def run_qemu(
    argv: list[str], *, timeout: float, log_path: Path, fail_patterns: tuple[str, ...] = ()
) -> QemuOutcome:
    """Runs qemu to completion, or kills it at the deadline, on a fail pattern, or when it has
    not powered off POWEROFF_GRACE_S after printing the exit marker."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        log.write(f"# {' '.join(argv)}\n")
        proc = subprocess.Popen(
            _die_with_parent(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        reader = _Reader(config.EXIT_MARKER_PREFIX, fail_patterns, log, started)
        lock = threading.Lock()

        def pump() -> None:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, READ_CHUNK):
                with lock:
                    reader.feed(chunk.decode("utf-8", errors="replace"))

        thread = threading.Thread(target=pump, name="qemu-console", daemon=True)
        thread.start()
        timed_out = False
        try:
            while proc.poll() is None:
                now = time.monotonic()
                with lock:
                    marker_at, failed = reader.marker_at, reader.failed
                grace_over = marker_at is not None and now - marker_at > config.POWEROFF_GRACE_S
                timed_out = now - started > timeout
                if timed_out or failed is not None or grace_over:
                    break
                time.sleep(POLL_INTERVAL_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(KILL_WAIT_S)
        thread.join(KILL_WAIT_S)
        with lock:
            reader.feed("\n")
            if timed_out:
                log.write(f"# killed: timeout after {timeout:.0f} s\n")
            output = "".join(reader.chunks)
        return QemuOutcome(
            output=output.replace("\r\n", "\n"),
            returncode=proc.returncode,
            timed_out=timed_out,
            failed_fast=reader.failed,
            duration=time.monotonic() - started,
            script_started=reader.script_at,
        )
