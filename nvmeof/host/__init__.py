"""The NVMe/TCP host (initiator): a public asyncio API.

    import nvmeof.host

    entries = await nvmeof.host.discover("127.0.0.1", 8009)
    async with await nvmeof.host.connect("127.0.0.1", 4420, subnqn, nr_io_queues=4) as ctrl:
        await ctrl.write(1, 0, b"\\0" * 4096)
        data = await ctrl.read(1, 0, 8)

Errors: a command that completes with a non-zero status raises
:class:`~nvmeof.errors.NvmeStatus` (``sct``, ``sc``, ``dnr``, ``dw0``); a lost connection
raises :class:`ConnectionError`; a TermReq from the controller raises
:class:`~nvmeof.errors.PeerTerminated`; every wait is bounded and raises
:class:`TimeoutError` when the deadline passes.
"""

from ..errors import NvmeStatus, PeerTerminated
from .commands import Completion
from .controller import (
    DEFAULT_KATO_MS,
    DEFAULT_QUEUE_SIZE,
    HostController,
    NamespaceInfo,
    check,
    connect,
    default_hostnqn,
)
from .discovery import DiscoveryEntry, DiscoveryLogChanged, discover, read_discovery_log
from .kv import KvLimits, KvNamespace, KvValueTruncated
from .queue import DEFAULT_TIMEOUT_S, HostQueue

__all__ = [
    "DEFAULT_KATO_MS",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_TIMEOUT_S",
    "Completion",
    "DiscoveryEntry",
    "DiscoveryLogChanged",
    "HostController",
    "HostQueue",
    "KvLimits",
    "KvNamespace",
    "KvValueTruncated",
    "NamespaceInfo",
    "NvmeStatus",
    "PeerTerminated",
    "check",
    "connect",
    "default_hostnqn",
    "discover",
    "read_discovery_log",
]
