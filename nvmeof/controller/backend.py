"""The port through which the controller hands I/O to the device (dpu_emu implements it).

The controller decodes and validates each NVM command into an :class:`IoCommand`; the
backend executes it and calls ``done(status, dw0, data)`` exactly once, now or later
(after QoS admission or an offload pipeline).  ``status`` is the 16-bit CQE status field
(0 for success, see :func:`nvmeof.wire.constants.encode_status`); ``data`` is the read
payload or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

Done = Callable[[int, int, "bytes | bytearray | memoryview | None"], None]


class IoCommand:
    """A decoded I/O command (NVM or KV command set).

    ``ranges`` holds (slba, nlb) pairs for Dataset Management.  For KV commands ``data``
    is the value (Store), ``read_length`` the host buffer size (Retrieve, List).
    """

    __slots__ = ("opcode", "nsid", "cid", "qid", "cntlid", "hostnqn", "slba", "nlb", "data",
                 "fua", "deallocate", "ranges", "sqe", "read_length", "key", "options")

    def __init__(self, opcode: int, nsid: int, cid: int, *, qid: int = 0, cntlid: int = 0,
                 hostnqn: str = "", slba: int = 0, nlb: int = 0,
                 data: bytes | bytearray | None = None, fua: bool = False, deallocate: bool = False,
                 ranges: list[tuple[int, int]] | None = None, sqe: tuple = (),
                 read_length: int = 0, key: bytes = b"", options: int = 0) -> None:
        self.opcode = opcode
        self.nsid = nsid
        self.cid = cid
        self.qid = qid
        self.cntlid = cntlid
        self.hostnqn = hostnqn
        self.slba = slba
        self.nlb = nlb
        self.data = data
        self.fua = fua
        self.deallocate = deallocate
        self.ranges = ranges
        self.sqe = sqe
        self.read_length = read_length  # bytes the host's buffer takes (Read, KV Retrieve/List)
        self.key = key  # KV command set: the key (1..16 bytes; List may carry none)
        self.options = options  # KV command set: CDW11 bits 15:8

    def __repr__(self) -> str:
        return f"IoCommand(opcode={self.opcode:#x}, nsid={self.nsid}, slba={self.slba}, nlb={self.nlb})"


class NamespaceBackend(Protocol):
    """Executes validated I/O commands for one namespace."""

    def execute(self, cmd: IoCommand, done: Done) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AbortableBackend(Protocol):
    """A backend that holds commands before executing them (e.g. QoS admission) can give
    them back: ``abort`` completes one waiting command with Aborted by Request and says
    whether it found it; ``abort_queue`` completes every waiting command of a queue that
    went away (Aborted SQ Deletion) and returns how many."""

    def abort(self, cid: int, qid: int, cntlid: int | None = None) -> bool: ...

    def abort_queue(self, qid: int | None = None, cntlid: int | None = None) -> int: ...
