"""Runs qemu-system-x86_64 with a serial console on stdout, a deadline and fail-fast patterns."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, TextIO

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


class ConsoleInput:
    """The guest's serial console input (qemu's stdin), handed to line handlers.

    `send` writes text the guest can read from /dev/console (a tty in canonical mode: it gets
    whole lines, and echoes them to the console output); `note` adds a `# ...` line to the
    console log, so host-side events appear in the log where they happened."""

    def __init__(self, stdin: IO[bytes] | None, note: Callable[[str], None], started: float) -> None:
        self._stdin = stdin
        self._note = note
        self._started = started
        self._lock = threading.Lock()

    def send(self, text: str) -> None:
        """Raises OSError when qemu is gone (or was started without a console input)."""
        if self._stdin is None:
            raise OSError("this qemu run has no console input")
        with self._lock:
            try:
                self._stdin.write(text.encode())
                self._stdin.flush()
            except ValueError as exc:  # closed after qemu exited
                raise OSError(f"the guest console input is closed: {exc}") from exc

    def note(self, text: str) -> None:
        self._note(text)

    def elapsed(self) -> float:
        """Seconds since qemu started."""
        return time.monotonic() - self._started


LineHandler = Callable[[str, ConsoleInput], None]
"""Called once per console line (without the line end), in order, in a thread of its own: a slow
handler delays later calls, never the console reading, logging or the deadline."""


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
    handler_errors: tuple[str, ...] = ()
    """Tracebacks of exceptions the line handler raised (the run goes on regardless)."""


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
    lines: queue.Queue[str | None] | None = None
    """Where complete lines go for the line handler, if there is one."""

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
        if self.lines is not None:
            self.lines.put(line)

    def note(self, text: str) -> None:
        self.log.write(f"\n# host: {text}\n")
        self.log.flush()


def _dispatch(lines: queue.Queue[str | None], handler: LineHandler, console: ConsoleInput,
              errors: list[str]) -> None:
    while (line := lines.get()) is not None:
        try:
            handler(line, console)
        except Exception:  # noqa: BLE001 - reported in QemuOutcome.handler_errors
            errors.append(traceback.format_exc())
            print(f"[linux_host] console line handler failed:\n{errors[-1]}", file=sys.stderr)


def run_qemu(
    argv: list[str], *, timeout: float, log_path: Path, fail_patterns: tuple[str, ...] = (),
    on_line: LineHandler | None = None,
) -> QemuOutcome:
    """Runs qemu to completion, or kills it at the deadline, on a fail pattern, or when it has
    not powered off POWEROFF_GRACE_S after printing the exit marker. With `on_line`, qemu's
    stdin is a pipe to the guest console and the handler sees every console line as it comes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        log.write(f"# {' '.join(argv)}\n")
        proc = subprocess.Popen(
            _die_with_parent(argv),
            stdin=subprocess.PIPE if on_line is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        reader = _Reader(config.EXIT_MARKER_PREFIX, fail_patterns, log, started)
        lock = threading.Lock()
        handler_errors: list[str] = []
        dispatcher: threading.Thread | None = None
        if on_line is not None:
            reader.lines = queue.Queue()

            def note(text: str) -> None:
                with lock:
                    reader.note(text)

            console = ConsoleInput(proc.stdin, note, started)
            dispatcher = threading.Thread(
                target=_dispatch, args=(reader.lines, on_line, console, handler_errors),
                name="qemu-console-lines", daemon=True,
            )
            dispatcher.start()

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
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        thread.join(KILL_WAIT_S)
        with lock:
            reader.feed("\n")
            if reader.lines is not None:
                reader.lines.put(None)
        if dispatcher is not None:
            dispatcher.join(KILL_WAIT_S)
            if dispatcher.is_alive():
                handler_errors.append(f"console line handler still busy {KILL_WAIT_S:.0f} s after qemu exit")
        with lock:
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
            handler_errors=tuple(handler_errors),
        )
