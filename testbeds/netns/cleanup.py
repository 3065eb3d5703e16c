"""Guaranteed teardown of what the network testbed creates, and removal of stale leftovers.

Everything this package creates carries a name with the creating process id:
network namespaces `dpuemu-<pid>-<n>-<role>` and nftables tables `dpuemu_<pid>_<n>`.
`register(callback)` queues a teardown that runs on `unregister` (the normal path, from a
`finally`), at interpreter exit (atexit) or on SIGTERM/SIGHUP/SIGINT (the handler tears down,
then defers to the previous handler). `remove_stale()` deletes namespaces and root-namespace
tables whose creating process is gone (a run that was SIGKILLed cannot clean up after itself).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType
from typing import Final

NAME_PREFIX: Final[str] = "dpuemu"
NETNS_RUN_DIR: Final[str] = "/var/run/netns"
NFT_BINARY: Final[str] = "nft"
COMMAND_TIMEOUT_S: Final[float] = 20.0
HANDLED_SIGNALS: Final[tuple[signal.Signals, ...]] = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

_NETNS_NAME = re.compile(rf"^{NAME_PREFIX}-(\d+)-\d+-[A-Za-z0-9_.-]+$")
_TABLE_NAME = re.compile(rf"^{NAME_PREFIX}_(\d+)_\d+$")

_counter = itertools.count(1)
_lock = threading.RLock()  # re-entrant: a signal handler may run teardown inside a locked section
_pending: dict[int, Callable[[], None]] = {}
_installed = False
_previous: dict[signal.Signals, object] = {}
_owner_pid = os.getpid()


def next_run_id() -> str:
    """`<pid>-<n>`: unique in this process; the pid lets `remove_stale` spot orphans."""
    return f"{os.getpid()}-{next(_counter)}"


def table_name(run_id: str) -> str:
    """An nftables table name for a run id (nft names take no dash)."""
    return f"{NAME_PREFIX}_{run_id.replace('-', '_')}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_all() -> None:
    if os.getpid() != _owner_pid:
        return  # a forked child (pyroute2 forks helpers) inherits our handlers: not its teardown
    with _lock:
        callbacks = list(_pending.items())
        _pending.clear()
    for _, callback in reversed(callbacks):
        try:
            callback()
        except Exception:  # noqa: BLE001 - teardown goes on for the others
            pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _owner_pid:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _run_all()
    previous = _previous.get(signal.Signals(signum))
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install() -> None:
    global _installed, _owner_pid
    if _installed:
        return
    _owner_pid = os.getpid()
    atexit.register(_run_all)
    if threading.current_thread() is threading.main_thread():
        for sig in HANDLED_SIGNALS:
            previous = signal.getsignal(sig)
            if previous is _on_signal:
                continue
            _previous[sig] = previous
            signal.signal(sig, _on_signal)
    _installed = True


def register(callback: Callable[[], None]) -> int:
    """Queues a teardown; returns a token for `unregister`."""
    with _lock:
        _install()
        token = id(callback) ^ next(_counter)
        _pending[token] = callback
    return token


def unregister(token: int, *, run: bool = True) -> None:
    """Runs (by default) and forgets a queued teardown; a second call does nothing."""
    with _lock:
        callback = _pending.pop(token, None)
    if callback is not None and run:
        callback()


def _netns_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def our_namespaces() -> list[str]:
    """Every namespace with this package's prefix (of any process)."""
    return [name for name in _netns_names() if _NETNS_NAME.match(name)]


def nft_tables(netns: str | None = None) -> list[tuple[str, str]]:
    """(family, name) of the nftables tables of a namespace (None: the root namespace)."""
    argv = [NFT_BINARY, "-j", "list", "tables"]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if done.returncode != 0:
        return []
    items = json.loads(done.stdout or "{}").get("nftables", [])
    return [(item["table"]["family"], item["table"]["name"]) for item in items if "table" in item]


def delete_nft_table(family: str, name: str, netns: str | None = None) -> None:
    argv = [NFT_BINARY, "delete", "table", family, name]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    subprocess.run(argv, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)


def remove_stale() -> list[str]:
    """Deletes namespaces and root-namespace tables of dead processes; returns what it removed."""
    from pyroute2 import netns as pr_netns

    removed: list[str] = []
    for name in our_namespaces():
        match = _NETNS_NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            try:
                pr_netns.remove(name)
                removed.append(f"netns {name}")
            except OSError:
                pass
    for family, table in nft_tables():
        match = _TABLE_NAME.match(table)
        if match and not _pid_alive(int(match.group(1))):
            delete_nft_table(family, table)
            removed.append(f"nft table {family} {table}")
    return removed
