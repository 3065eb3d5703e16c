"""Network-namespace topologies: an emulator namespace, client namespaces, veth paths, a bridge.

    with Topology(paths=("host", "host")) as topo:      # two paths host <-> emu
        p1, p2 = topo.paths                              # 10.77.1.0/24 and 10.77.2.0/24
        server = topo.popen("emu", ["python", "-m", "dpu_emu", "serve", ...])
        result = topo.call("host", some_function, arg)   # runs in a thread inside "host"

Namespaces are named `dpuemu-<pid>-<n>-<role>`; every address and route lives inside them (the
root namespace gets nothing: each veth pair is created from inside the emulator namespace with
its peer placed straight into the client namespace). Path i uses 10.77.i.0/24: the emulator end
is .1, the client end .2, both named `p<i>`. With `bridge=True` each client also gets a `lan`
veth whose emulator end is a port of bridge `br0` (10.77.100.1/24; clients .10, .11, ...).

Teardown (processes killed, executors stopped, namespaces deleted, which destroys their veths,
qdiscs and nftables tables) runs on exit of the block, on error, at interpreter exit and on
SIGTERM/SIGHUP/SIGINT; entering the block first removes leftovers of dead processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar

from pyroute2 import NetNS
from pyroute2 import netns as pr_netns

from . import cleanup

EMU_ROLE: Final[str] = "emu"
SUBNET_PREFIX: Final[str] = "10.77"
PREFIX_LEN: Final[int] = 24
EMU_HOST_OCTET: Final[int] = 1
CLIENT_HOST_OCTET: Final[int] = 2
BRIDGE_NAME: Final[str] = "br0"
BRIDGE_SUBNET_OCTET: Final[int] = 100
BRIDGE_FIRST_CLIENT_OCTET: Final[int] = 10
LAN_IFNAME: Final[str] = "lan"
MAX_PATHS: Final[int] = 99
PROCESS_STOP_TIMEOUT_S: Final[float] = 10.0
IFF_UP: Final[int] = 1

T = TypeVar("T")


class NetnsUnavailable(RuntimeError):
    """This machine (or user) cannot create network namespaces."""


def unavailable_reason() -> str | None:
    """Why the testbed cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"{cleanup.NAME_PREFIX}-{os.getpid()}-0-probe"
    try:
        pr_netns.create(probe)
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        return f"cannot create a network namespace here: {exc}"
    try:
        done = subprocess.run(["ip", "netns", "exec", probe, "true"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"`ip netns exec` fails here: {done.stderr.strip()}"
    finally:
        pr_netns.remove(probe)
    return None


@dataclass(frozen=True)
class Path:
    """One point-to-point path: veth `ifname` in both namespaces, a /24 of its own."""

    index: int
    client: str
    """Role of the client namespace."""
    ifname: str
    emu_address: str
    client_address: str


@dataclass
class _Running:
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    executors: list[ThreadPoolExecutor] = field(default_factory=list)


def _set_up(ipr: NetNS, ifname: str, address: str | None = None) -> int:
    index = int(ipr.link_lookup(ifname=ifname)[0])
    if address is not None:
        ipr.addr("add", index=index, address=address, prefixlen=PREFIX_LEN)
    ipr.link("set", index=index, state="up")
    return index


class Topology:
    """Builds the namespaces and links on `__enter__`, tears everything down on `__exit__`."""

    def __init__(self, paths: Sequence[str] = ("host", "host"), *, bridge: bool = False) -> None:
        if not 0 < len(paths) <= MAX_PATHS:
            raise ValueError(f"1..{MAX_PATHS} paths, not {len(paths)}")
        self.run_id = cleanup.next_run_id()
        self.clients: tuple[str, ...] = tuple(dict.fromkeys(paths))
        if EMU_ROLE in self.clients:
            raise ValueError(f"{EMU_ROLE!r} is the emulator's role")
        self.bridge = bridge
        self.paths: tuple[Path, ...] = tuple(
            Path(i, client, f"p{i}", f"{SUBNET_PREFIX}.{i}.{EMU_HOST_OCTET}",
                 f"{SUBNET_PREFIX}.{i}.{CLIENT_HOST_OCTET}")
            for i, client in enumerate(paths, start=1)
        )
        self._running = _Running()
        self._created: list[str] = []
        self._token: int | None = None
        self._lock = threading.RLock()
        self.stale_removed: list[str] = []

    # --- names and addresses ------------------------------------------------------------------

    def netns(self, role: str) -> str:
        if role != EMU_ROLE and role not in self.clients:
            raise KeyError(f"no namespace role {role!r} (have {EMU_ROLE!r}, {self.clients})")
        return f"{cleanup.NAME_PREFIX}-{self.run_id}-{role}"

    @property
    def namespaces(self) -> list[str]:
        return [self.netns(EMU_ROLE), *(self.netns(c) for c in self.clients)]

    @property
    def bridge_address(self) -> str:
        return f"{SUBNET_PREFIX}.{BRIDGE_SUBNET_OCTET}.{EMU_HOST_OCTET}"

    def lan_address(self, client: str) -> str:
        octet = BRIDGE_FIRST_CLIENT_OCTET + self.clients.index(client)
        return f"{SUBNET_PREFIX}.{BRIDGE_SUBNET_OCTET}.{octet}"

    # --- build / teardown ---------------------------------------------------------------------

    def __enter__(self) -> Topology:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        self.stale_removed = cleanup.remove_stale()
        self._token = cleanup.register(self.teardown)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._token is not None:
            cleanup.unregister(self._token)
            self._token = None
        else:
            self.teardown()

    def _build(self) -> None:
        for name in self.namespaces:
            pr_netns.create(name)
            self._created.append(name)
        emu = self.netns(EMU_ROLE)
        with NetNS(emu) as ipr:
            _set_up(ipr, "lo")
            for path in self.paths:
                self._veth(ipr, path.ifname, self.netns(path.client), path.ifname)
                _set_up(ipr, path.ifname, path.emu_address)
            if self.bridge:
                ipr.link("add", ifname=BRIDGE_NAME, kind="bridge")
                bridge_index = _set_up(ipr, BRIDGE_NAME, self.bridge_address)
                for k, client in enumerate(self.clients):
                    port = f"{LAN_IFNAME}{k}"
                    self._veth(ipr, port, self.netns(client), LAN_IFNAME)
                    ipr.link("set", index=int(ipr.link_lookup(ifname=port)[0]), master=bridge_index)
                    _set_up(ipr, port)
        for client in self.clients:
            with NetNS(self.netns(client)) as ipr:
                _set_up(ipr, "lo")
                for path in self.paths:
                    if path.client == client:
                        _set_up(ipr, path.ifname, path.client_address)
                if self.bridge:
                    _set_up(ipr, LAN_IFNAME, self.lan_address(client))

    @staticmethod
    def _veth(ipr: NetNS, ifname: str, peer_netns: str, peer_ifname: str) -> None:
        """A veth pair made inside ipr's namespace, its peer created directly in peer_netns."""
        fd = os.open(os.path.join(cleanup.NETNS_RUN_DIR, peer_netns), os.O_RDONLY)
        try:
            ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": peer_ifname, "net_ns_fd": fd})
        finally:
            os.close(fd)

    def teardown(self) -> None:
        """Kills our processes, stops our executors, deletes our namespaces (idempotent)."""
        with self._lock:
            processes, self._running.processes = self._running.processes, []
            executors, self._running.executors = self._running.executors, []
            created, self._created = self._created, []
        for proc in processes:
            _stop(proc)
        for executor in executors:
            executor.shutdown(wait=True, cancel_futures=True)
        for name in reversed(created):
            try:
                pr_netns.remove(name)
            except OSError:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

    # --- running things inside ----------------------------------------------------------------

    def popen(self, role: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """A child process in the role's namespace (`ip netns exec`); killed at teardown."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", self.netns(role), *argv], start_new_session=True, **kwargs
        )
        with self._lock:
            self._running.processes.append(proc)
        return proc

    def run(self, role: str, argv: Sequence[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Runs a command in the role's namespace to completion (text output captured)."""
        return subprocess.run(["ip", "netns", "exec", self.netns(role), *argv], capture_output=True,
                              text=True, timeout=timeout, check=False, **kwargs)

    def executor(self, role: str, workers: int = 1) -> ThreadPoolExecutor:
        """A thread pool whose threads live in the role's namespace (sockets they open are there).

        A network namespace is a per-thread attribute: setns() in the worker moves only it.
        """
        pool = self.thread_pool(role, workers)
        with self._lock:
            self._running.executors.append(pool)
        return pool

    def thread_pool(self, role: str, workers: int = 1) -> ThreadPoolExecutor:
        """Like `executor`, but not stopped at teardown: use it in a `with` block."""
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"netns-{role}",
                                  initializer=pr_netns.setns, initargs=(self.netns(role),))

    def call(self, role: str, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """fn(*args) in a fresh thread inside the role's namespace; its result or exception."""
        with self.thread_pool(role) as pool:
            return pool.submit(fn, *args).result(timeout=timeout)

    def interfaces(self, role: str) -> dict[str, bool]:
        """Interface name -> is up, inside the role's namespace."""
        with NetNS(self.netns(role)) as ipr:
            return {str(link.get_attr("IFLA_IFNAME")): bool(link["flags"] & IFF_UP) for link in ipr.get_links()}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=PROCESS_STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue
