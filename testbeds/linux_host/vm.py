"""Public API: build/find the image and boot a guest that runs one shell script.

    from testbeds.linux_host.vm import ensure_image, run_guest
    result = run_guest("nvme version", timeout=300)
    assert result.exit_status == 0, result.output

Host/guest coordination during one boot: `run_guest(script, on_line=handler)` calls
`handler(line, console)` for each console line as it arrives (in a thread); `console.send(text)`
writes to the guest's console input. testbeds.linux_host.host_actions builds a handler for the
guest's `host_action NAME` requests (guest/lib/host_action.sh).
"""

from __future__ import annotations

import gzip
import io
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import accel as accel_mod
from . import config
from .apt import TestbedBuildError
from .cpio import CpioWriter
from .image import ImagePaths, cache_dir, ensure_image
from .qemu import ConsoleInput, QemuNotFoundError, QemuOutcome, qemu_argv, run_qemu

__all__ = [
    "GuestBootError", "GuestConsole", "GuestResult", "GuestTimeoutError", "ImagePaths",
    "LineCallback", "QemuNotFoundError", "TestbedBuildError", "ensure_image", "run_guest",
]

INITRD_ALIGNMENT: Final[int] = 4
BOOT_ATTEMPTS: Final[int] = 2
"""A guest that crashes before its init starts the script (an emulator hiccup, never the
script's fault) is booted once more; anything after the script started is reported as is."""
_MARKER = re.compile(
    "^" + re.escape(config.EXIT_MARKER_PREFIX) + r" nonce=([0-9a-f]+) status=(\d+)"
    + re.escape(config.EXIT_MARKER_SUFFIX) + "$"
)
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class GuestBootError(RuntimeError):
    """The guest did not report an exit status (crashed, never booted, malformed marker)."""

    def __init__(self, message: str, output: str, log_path: Path) -> None:
        super().__init__(f"{message} (console log: {log_path})")
        self.output = output
        self.log_path = log_path


class GuestTimeoutError(GuestBootError):
    """The guest ran past its deadline; qemu was killed."""


@dataclass(frozen=True)
class GuestConsole:
    """What a line callback gets besides the line: this boot's nonce (the guest knows it as
    $NONCE after sourcing /guest/params) and the guest's console input."""

    nonce: str
    _input: ConsoleInput

    def send(self, text: str) -> None:
        """Writes `text` to the guest's /dev/console (end lines with "\\n"); OSError if qemu is gone."""
        self._input.send(text)

    def note(self, text: str) -> None:
        """Adds `# host: text` to this boot's console log."""
        self._input.note(text)

    def elapsed(self) -> float:
        """Seconds since qemu started."""
        return self._input.elapsed()


LineCallback = Callable[[str, GuestConsole], None]
"""on_line(line, console): called for every console line, in order, from one thread."""


@dataclass(frozen=True)
class GuestResult:
    exit_status: int
    output: str
    duration: float
    accel: str
    log_path: Path
    boot_seconds: float | None
    """Seconds from qemu start until the init began the script (None if not seen)."""
    handler_errors: tuple[str, ...] = ()
    """Tracebacks of exceptions raised by the on_line callback (the boot went on)."""


def _run_cpio(script: str, files: Mapping[str, str | bytes], nonce: str, host_id: str) -> bytes:
    """A gzip'd cpio with /guest/run.sh, /guest/params and /guest/lib/* (appended initramfs)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
        writer = CpioWriter(stream)  # type: ignore[arg-type]
        base = config.GUEST_RUN_DIR
        writer.directory(base)
        writer.directory(f"{base}/lib")
        for library in sorted(config.GUEST_LIB_DIR.glob("*.sh")):
            writer.file(f"{base}/lib/{library.name}", library.read_bytes())
        writer.file(f"{base}/{config.GUEST_SCRIPT_NAME}", script.encode(), executable=True)
        writer.file(
            f"{base}/{config.GUEST_PARAMS_NAME}",
            f"NONCE='{nonce}'\nHOST_ID='{host_id}'\n".encode(),
        )
        made: set[str] = {base, f"{base}/lib"}
        for name, content in sorted(files.items()):
            if not _SAFE_FILE_NAME.match(name) or ".." in name.split("/"):
                raise ValueError(f"guest file name {name!r} must be a plain relative path")
            parts = name.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join([base, *parts[:depth]])
                if folder not in made:
                    writer.directory(folder)
                    made.add(folder)
            data = content.encode() if isinstance(content, str) else content
            writer.file(f"{base}/{name}", data, executable=name.endswith(".sh"))
        writer.close()
    return buffer.getvalue()


def _write_initrd(image: ImagePaths, extra: bytes, target: Path) -> None:
    base = image.initramfs.read_bytes()
    padding = b"\0" * ((INITRD_ALIGNMENT - len(base) % INITRD_ALIGNMENT) % INITRD_ALIGNMENT)
    target.write_bytes(base + padding + extra)


def parse_exit_status(output: str, nonce: str) -> int:
    """The status from the one exit-marker line carrying this run's nonce; ValueError otherwise."""
    lines = [ln for ln in output.splitlines() if config.EXIT_MARKER_PREFIX in ln]
    if not lines:
        raise ValueError("no exit marker in the console output")
    if len(lines) > 1:
        raise ValueError(f"{len(lines)} exit marker lines, expected one: {lines}")
    match = _MARKER.match(lines[0].strip("\r"))
    if match is None:
        raise ValueError(f"malformed exit marker line: {lines[0]!r}")
    if match.group(1) != nonce:
        raise ValueError(f"exit marker nonce {match.group(1)} is not this run's ({nonce})")
    return int(match.group(2))


def _log_path(nonce: str) -> Path:
    logs = cache_dir() / config.LOGS_SUBDIR
    logs.mkdir(parents=True, exist_ok=True)
    old = sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for stale in old[: max(0, len(old) - config.MAX_KEPT_LOGS + 1)]:
        stale.unlink(missing_ok=True)
    return logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{nonce}.log"


def _line_handler(on_line: LineCallback, nonce: str) -> Callable[[str, ConsoleInput], None]:
    """Adapts a LineCallback to qemu's (line, ConsoleInput) handler, with this boot's nonce."""
    consoles: list[GuestConsole] = []

    def handler(line: str, console_input: ConsoleInput) -> None:
        if not consoles:
            consoles.append(GuestConsole(nonce, console_input))
        on_line(line, consoles[0])

    return handler


def boot(
    image: ImagePaths, script: str, *, accel: str, timeout: float, mem_mb: int, cpus: int,
    files: Mapping[str, str | bytes], host_id: str, log_path: Path | None,
    fail_patterns: tuple[str, ...] = (), on_line: LineCallback | None = None,
) -> tuple[QemuOutcome, str, Path]:
    """One qemu run; returns (outcome, nonce, log path) without interpreting the marker."""
    nonce = secrets.token_hex(config.NONCE_BYTES)
    log = log_path or _log_path(nonce)
    handler = _line_handler(on_line, nonce) if on_line is not None else None
    with tempfile.TemporaryDirectory(prefix="dpu-emu-vm-") as work:
        initrd = Path(work) / "initrd"
        _write_initrd(image, _run_cpio(script, files, nonce, host_id), initrd)
        argv = qemu_argv(
            kernel=image.kernel, initrd=initrd, accel=accel, mem_mb=mem_mb, cpus=cpus,
            cmdline=config.KERNEL_CMDLINE,
        )
        outcome = run_qemu(
            argv, timeout=timeout, log_path=log, fail_patterns=fail_patterns, on_line=handler
        )
    return outcome, nonce, log


def run_guest(
    script: str,
    *,
    timeout: float = config.DEFAULT_TIMEOUT_S,
    mem_mb: int = config.DEFAULT_MEM_MB,
    cpus: int = config.DEFAULT_CPUS,
    files: Mapping[str, str | bytes] | None = None,
    accel: str | None = None,
    host_id: str = config.DEFAULT_HOST_ID,
    log_path: Path | None = None,
    on_line: LineCallback | None = None,
) -> GuestResult:
    """Boots the guest, runs `script` with busybox sh in /guest, returns its exit status and
    the console output. The guest libraries (guest/lib/*.sh) are in /guest/lib; `files` adds
    more below /guest. `on_line(line, console)` sees each console line as it arrives and may
    answer through `console.send` (see GuestConsole). Raises GuestTimeoutError /
    GuestBootError when no status came back."""
    host_id = str(uuid.UUID(host_id))
    image = ensure_image()
    chosen = accel_mod.choose_accel(image, accel, probe=_kvm_probe)
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        outcome, nonce, log = boot(
            image, script, accel=chosen, timeout=timeout, mem_mb=mem_mb, cpus=cpus,
            files=files or {}, host_id=host_id, log_path=log_path,
            fail_patterns=config.KVM_FAILURE_PATTERNS if chosen == config.ACCEL_KVM else (),
            on_line=on_line,
        )
        if outcome.script_started is not None or outcome.timed_out or attempt == BOOT_ATTEMPTS:
            break
        print(
            f"[linux_host] guest died before running the script (attempt {attempt}, log {log}); "
            "booting again", file=sys.stderr,
        )
    if outcome.timed_out:
        raise GuestTimeoutError(
            f"guest still running after {timeout:.0f} s; qemu killed", outcome.output, log
        )
    try:
        status = parse_exit_status(outcome.output, nonce)
    except ValueError as exc:
        seen = f"; console showed {outcome.failed_fast!r}" if outcome.failed_fast else ""
        raise GuestBootError(
            f"guest gave no exit status ({exc}); qemu exit code {outcome.returncode}{seen}",
            outcome.output, log,
        ) from exc
    return GuestResult(
        exit_status=status, output=outcome.output, duration=outcome.duration, accel=chosen,
        log_path=log, boot_seconds=outcome.script_started, handler_errors=outcome.handler_errors,
    )


def _kvm_probe(image: ImagePaths) -> tuple[bool, str]:
    """Boots `exit 0` under KVM; (works, reason)."""
    outcome, nonce, log = boot(
        image, "exit 0\n", accel=config.ACCEL_KVM, timeout=config.KVM_PROBE_TIMEOUT_S,
        mem_mb=config.DEFAULT_MEM_MB, cpus=config.DEFAULT_CPUS, files={},
        host_id=config.DEFAULT_HOST_ID, log_path=None, fail_patterns=config.KVM_FAILURE_PATTERNS,
    )
    if outcome.failed_fast:
        return False, f"KVM boot failed: {outcome.failed_fast!r} (log {log})"
    if outcome.timed_out:
        return False, f"KVM boot timed out after {config.KVM_PROBE_TIMEOUT_S:.0f} s (log {log})"
    try:
        status = parse_exit_status(outcome.output, nonce)
    except ValueError as exc:
        return False, f"KVM boot gave no status: {exc} (log {log})"
    return status == 0, f"KVM boot exit status {status} in {outcome.duration:.1f} s"
