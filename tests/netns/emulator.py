"""`dpu-emu serve` inside the emulator namespace of a Topology, one I/O listener per path.

The REST API listens on 127.0.0.1 inside the emulator namespace (its own loopback: no port can
collide with anything on the machine); `rest(method, path, json)` runs the request on a thread
that lives in that namespace.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import httpx

from testbeds.netns import EMU_ROLE, Topology

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
NQN: Final[str] = "nqn.2026-11.io.dpu-emu:netns"
IO_PORT: Final[int] = 4420
REST_ADDRESS: Final[str] = "127.0.0.1"
REST_PORT: Final[int] = 8080
ADMIN_TOKEN: Final[str] = "dpuadm_netns-failover-0123456789abcdef"
ADMIN_TOKEN_ENV: Final[str] = "DPU_EMU_ADMIN_TOKEN"
NAMESPACE_BYTES: Final[int] = 16 * 1024 * 1024
BLOCK_BYTES: Final[int] = 512
START_TIMEOUT_S: Final[float] = 60.0
POLL_S: Final[float] = 0.2
HTTP_TIMEOUT_S: Final[float] = 10.0
LOG_TAIL_CHARS: Final[int] = 4000


def config_for(topo: Topology) -> dict[str, Any]:
    """One I/O listener (portid = path index) on each path's emulator address; a RAM namespace."""
    ports = [{"portid": path.index, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": path.emu_address,
                                             "trsvcid": str(IO_PORT)}, "discovery": path.index == 1, "io": True}
             for path in topo.paths]
    return {
        "ports": ports,
        "subsystems": [{
            "nqn": NQN, "serial": "DPUEMUNS01", "model": "dpu-emu", "allow_any_host": True, "hosts": [],
            "namespaces": [{"nsid": 1, "size_bytes": NAMESPACE_BYTES, "block_size": BLOCK_BYTES,
                            "backend": {"kind": "ram"}}],
        }],
        "transport": {},
    }


def _connects(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(POLL_S)
        return sock.connect_ex((address, port)) == 0


class NetnsEmulator:
    def __init__(self, topo: Topology, work: Path) -> None:
        self.topo = topo
        self.log_path = work / "serve.log"
        self.config_path = work / "config.json"
        self.config_path.write_text(json.dumps(config_for(topo), indent=2) + "\n")
        self._rest_pool: ThreadPoolExecutor = topo.executor(EMU_ROLE)
        self._client: httpx.Client | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "dpu_emu", "serve", "--config", str(self.config_path),
                "--rest-address", REST_ADDRESS, "--rest-port", str(REST_PORT)]
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, ADMIN_TOKEN_ENV: ADMIN_TOKEN}
        with open(self.log_path, "ab") as log:
            self.proc = self.topo.popen(EMU_ROLE, argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dpu-emu exited {self.proc.returncode} at start:\n{self.log_tail()}")
            listening = self._rest_pool.submit(self._all_listening).result()
            if listening:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"dpu-emu did not listen within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
            time.sleep(POLL_S)

    def _all_listening(self) -> bool:
        """(In the emulator namespace.) The REST port and every path's I/O listener accept."""
        return _connects(REST_ADDRESS, REST_PORT) and all(_connects(p.emu_address, IO_PORT) for p in self.topo.paths)

    def _request(self, method: str, path: str, body: Any) -> httpx.Response:
        if self._client is None:
            self._client = httpx.Client(base_url=f"http://{REST_ADDRESS}:{REST_PORT}", timeout=HTTP_TIMEOUT_S,
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        return self._client.request(method, path, json=body)

    def rest(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """A REST request from inside the emulator namespace (blocking)."""
        return self._rest_pool.submit(self._request, method, path, body).result()

    def set_ana(self, portid: int, state: str, grpid: int = 1) -> dict[str, Any]:
        resp = self.rest("PUT", f"/v1/subsystems/{NQN}/ana/{grpid}/listeners/{portid}", {"state": state})
        if resp.status_code != httpx.codes.OK:
            raise RuntimeError(f"PUT ana {grpid}/{portid} {state}: {resp.status_code} {resp.text}")
        return dict(resp.json())

    @property
    def rest_pool(self) -> ThreadPoolExecutor:
        return self._rest_pool

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if self.log_path.exists() else ""

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._rest_pool.submit(client.close).result()
        # The process itself is stopped by the topology's teardown (SIGTERM, then SIGKILL).
