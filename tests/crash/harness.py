"""A `dpu-emu serve` subprocess that can be killed with SIGKILL, whole, and restarted on the same files.

The server runs in its own session (so its process group holds it and the multiprocessing
resource tracker it starts); its pipeline workers run in sessions of their own
(dpu_emu/pipeline/process.py), so :meth:`ServeProcess.kill9` SIGKILLs the group *and* every
descendant found under /proc, then waits until none of them is left.  Shared memory segments
the dead server created (``/dev/shm/dpuemu-<pid>-*``) may survive it; the next start sweeps
them, which :func:`leftover_segments` lets a test check.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
LOOPBACK: Final[str] = "127.0.0.1"
SUBNQN: Final[str] = "nqn.2026-11.io.dpu-emu:crash"
START_TIMEOUT_S: Final[float] = 30.0
STOP_TIMEOUT_S: Final[float] = 15.0
GONE_TIMEOUT_S: Final[float] = 10.0
POLL_S: Final[float] = 0.05
SHM_DIR: Final[str] = "/dev/shm"
SHM_PREFIX: Final[str] = "dpuemu-"
LOG_TAIL_CHARS: Final[int] = 3000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(POLL_S * 4)
        return sock.connect_ex((LOOPBACK, port)) == 0


def children_of(pid: int) -> list[int]:
    """Every live descendant of *pid* (by the parent pid in /proc/<n>/stat)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        parents[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    """True unless *pid* is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def leftover_segments(pid: int) -> list[str]:
    """Shared memory segments in /dev/shm created by server process *pid*."""
    prefix = f"{SHM_PREFIX}{pid}-"
    try:
        return sorted(name for name in os.listdir(SHM_DIR) if name.startswith(prefix))
    except FileNotFoundError:
        return []


def serve_config(namespaces: list[dict[str, Any]], *, workers: int = 1) -> dict[str, Any]:
    return {
        "subsystems": [{"nqn": SUBNQN, "serial": "CRASH0001", "model": "dpu-emu-crash",
                        "allow_any_host": True, "hosts": [], "namespaces": namespaces}],
        "pipeline": {"engine": "process", "workers": workers},
        "transport": {},
    }


def _port(portid: int, port: int, *, io: bool) -> dict[str, Any]:
    return {"portid": portid, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": LOOPBACK, "trsvcid": str(port)},
            "discovery": True, "io": io}


class ServeProcess:
    """`python -m dpu_emu serve --no-rest` on free loopback ports with a fixed config file."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.log_path = workdir / "serve.log"
        self.io_port = free_port()
        self.discovery_port = free_port()
        while self.discovery_port == self.io_port:
            self.discovery_port = free_port()
        self.config_path = workdir / "serve-config.json"
        ports = [_port(1, self.io_port, io=True), _port(2, self.discovery_port, io=False)]
        self.config_path.write_text(json.dumps({"ports": ports, **config}, indent=2) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        """Every server pid run so far (for the /dev/shm checks)."""
        self.last_killed: list[int] = []
        """The pids the last :meth:`kill9` killed (server, resource tracker, workers)."""

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "dpu_emu", "serve", "--address", LOOPBACK, "--port", str(self.io_port),
                "--discovery-port", str(self.discovery_port), "--no-rest", "--config", str(self.config_path)]

    def start(self) -> float:
        """Start and wait until the I/O port accepts; returns the seconds it took."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        started = time.monotonic()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                          os.environ.get("PYTHONPATH")]))}
        with open(self.log_path, "ab") as log:
            log.write(f"# start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(self.proc.pid)
        deadline = started + START_TIMEOUT_S
        while not accepts(self.io_port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"dpu-emu exited {self.proc.returncode} at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"dpu-emu did not listen within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
            time.sleep(POLL_S)
        return time.monotonic() - started

    def descendants(self) -> list[int]:
        return children_of(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def kill9(self) -> list[int]:
        """SIGKILL the server's process group and every descendant (pipeline workers in their
        own sessions included); wait until all are gone.  Returns the pids killed."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return []
        victims = self.last_killed = [proc.pid, *children_of(proc.pid)]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(GONE_TIMEOUT_S)
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while any(alive(pid) for pid in victims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes survived SIGKILL: {[p for p in victims if alive(p)]}")
            time.sleep(POLL_S)
        return victims

    def stop(self) -> int:
        """Clean shutdown (SIGTERM); SIGKILL of everything if it hangs.  Returns the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else 0
        workers = children_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise RuntimeError(f"dpu-emu ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s:\n{self.log_tail()}") from None
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while any(alive(pid) for pid in workers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers outlived a clean stop: {[p for p in workers if alive(p)]}")
            time.sleep(POLL_S)
        return code

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if self.log_path.exists() else ""
