"""`python -m dpu_emu serve` as a child process the interop tests can stop and restart.

It serves NVMe/TCP only: `--no-rest` is passed when this dpu-emu has a REST frontend, unless
the process is made with `rest_token=...`: then the REST API listens on 127.0.0.1 on a free port
(`rest_port`, `rest_url`) with that administrator token (DPU_EMU_ADMIN_TOKEN).

One `DpuEmuProcess` keeps its I/O and discovery ports (chosen free once) and its config file
across restarts, and appends every run's output to one log file (`# run N: argv` before each
run), so a test can stop the target under a connected Linux host and bring it back on the same
address. `log_findings()` lists the log's ERROR/CRITICAL/Traceback lines and its warnings.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
LOOPBACK: Final[str] = "127.0.0.1"
DPU_EMU_NQN: Final[str] = "nqn.2026-11.io.dpu-emu:default"
DPU_EMU_SERIAL: Final[str] = "DPUEMU0001"
DPU_EMU_MODEL: Final[str] = "dpu-emu"
START_TIMEOUT_S: Final[float] = 30.0
STOP_TIMEOUT_S: Final[float] = 10.0
POLL_INTERVAL_S: Final[float] = 0.2
LOG_TAIL_CHARS: Final[int] = 4000
NO_REST_OPTION: Final[str] = "--no-rest"
ADMIN_TOKEN_ENV: Final[str] = "DPU_EMU_ADMIN_TOKEN"

_PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
_WARNING = re.compile(r"\bWARNING\b")


def free_port(exclude: tuple[int, ...] = ()) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(POLL_INTERVAL_S)
        return sock.connect_ex((LOOPBACK, port)) == 0


def require_dpu_emu() -> None:
    """Skips the test when `python -m dpu_emu` cannot run here."""
    for module in ("dpu_emu", "dpu_emu.__main__"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError as exc:
            pytest.skip(f"{module} is not importable ({exc})")
        if not found:
            pytest.skip(f"{module} is not importable: `python -m dpu_emu serve` is not there yet")


def default_config() -> dict[str, Any]:
    """`python -m dpu_emu default-config`, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "dpu_emu", "default-config"], cwd=REPO_ROOT, env=_env(),
        capture_output=True, text=True, check=True, timeout=START_TIMEOUT_S,
    )
    return dict(json.loads(done.stdout))


@functools.cache
def serve_help() -> str:
    """`python -m dpu_emu serve --help` (which options this dpu-emu has)."""
    done = subprocess.run(
        [sys.executable, "-m", "dpu_emu", "serve", "--help"], cwd=REPO_ROOT, env=_env(),
        capture_output=True, text=True, check=False, timeout=START_TIMEOUT_S,
    )
    return done.stdout


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


@dataclass(frozen=True)
class LogFindings:
    problems: tuple[str, ...]
    """ERROR / CRITICAL / Traceback lines."""
    warnings: tuple[str, ...]


class DpuEmuProcess:
    """A dpu-emu target on 127.0.0.1 (the guest's 10.0.2.2) that can be stopped and restarted."""

    def __init__(self, log_path: Path, *, config: dict[str, Any] | None = None,
                 rest_token: str | None = None) -> None:
        self.log_path = log_path
        self.rest_token = rest_token
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = log_path.with_name(f"{log_path.stem}-config.json")
            self.config_path.write_text(json.dumps(config, indent=2) + "\n")
        self.io_port = free_port()
        self.discovery_port = free_port(exclude=(self.io_port,))
        self.rest_port = free_port(exclude=(self.io_port, self.discovery_port)) if rest_token else None
        self.runs = 0
        self.last_exit: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        argv = [
            sys.executable, "-m", "dpu_emu", "serve", "--address", LOOPBACK,
            "--port", str(self.io_port), "--discovery-port", str(self.discovery_port),
        ]
        if self.rest_port is not None:
            argv += ["--rest-address", LOOPBACK, "--rest-port", str(self.rest_port)]
        elif NO_REST_OPTION in serve_help():
            argv.append(NO_REST_OPTION)  # only NVMe/TCP here; no fixed REST port to collide on
        return argv + (["--config", str(self.config_path)] if self.config_path else [])

    @property
    def rest_url(self) -> str:
        if self.rest_port is None:
            raise RuntimeError("this dpu-emu was started without the REST API")
        return f"http://{LOOPBACK}:{self.rest_port}"

    def _ports(self) -> tuple[int, ...]:
        rest = (self.rest_port,) if self.rest_port is not None else ()
        return (self.io_port, self.discovery_port, *rest)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Starts the target and waits until both ports accept connections."""
        if self.running:
            raise RuntimeError("dpu-emu is already running")
        self.runs += 1
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"# run {self.runs}: {' '.join(self.argv)}\n".encode())
            log.flush()
            env = _env() if self.rest_token is None else {**_env(), ADMIN_TOKEN_ENV: self.rest_token}
            self._proc = subprocess.Popen(
                self.argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = started + START_TIMEOUT_S
        while not all(accepts(port) for port in self._ports()):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"dpu-emu exited {self._proc.returncode} at start:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dpu-emu did not listen on {'/'.join(map(str, self._ports()))} within "
                    f"{START_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)
        took = time.monotonic() - started
        return f"run {self.runs} pid {self._proc.pid} listening on {self.io_port}/{self.discovery_port} in {took:.2f}s"

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Sends `sig` (SIGTERM: dpu-emu's clean shutdown) and waits for the exit; SIGKILL
        after STOP_TIMEOUT_S. Returns what happened (exit code, seconds)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return "not running"
        started = time.monotonic()
        proc.send_signal(sig)
        try:
            code = proc.wait(STOP_TIMEOUT_S)
            how = f"exit {code}"
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(STOP_TIMEOUT_S)
            how = f"did not exit within {STOP_TIMEOUT_S:.0f} s of signal {sig}: killed ({code})"
        took = time.monotonic() - started
        self.last_exit = code
        return f"run {self.runs} pid {proc.pid} stopped by signal {int(sig)}: {how} in {took:.2f}s"

    def freeze(self) -> str:
        """SIGSTOP: the target keeps its sockets but answers nothing (a hung target)."""
        return self._signal(signal.SIGSTOP, "frozen")

    def thaw(self) -> str:
        """SIGCONT after freeze()."""
        return self._signal(signal.SIGCONT, "thawed")

    def _signal(self, sig: int, what: str) -> str:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"dpu-emu is not running (cannot be {what})")
        proc.send_signal(sig)
        return f"run {self.runs} pid {proc.pid} {what}"

    def close(self) -> None:
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGCONT)  # a frozen target would not see SIGTERM
        self.stop()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if self.log_path.exists() else ""

    def log_findings(self) -> LogFindings:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        lines = text.splitlines()
        return LogFindings(
            problems=tuple(ln for ln in lines if _PROBLEM.search(ln)),
            warnings=tuple(ln for ln in lines if _WARNING.search(ln)),
        )


def assert_clean_log(server: DpuEmuProcess) -> None:
    """No ERROR/CRITICAL/Traceback in the target's log; prints the warnings it had."""
    findings = server.log_findings()
    print(f"\n[interop] dpu-emu log {server.log_path}: {len(findings.warnings)} warning(s)")
    for line in findings.warnings:
        print(f"    {line}")
    assert not findings.problems, (
        f"dpu-emu log {server.log_path} has errors:\n" + "\n".join(findings.problems[:40])
    )
