"""QoS as a namespace backend: wrap any backend, admit through a :class:`QosScheduler`.

``QosBackend(inner, groups, scheduler)`` implements the controller's backend port
(:class:`nvmeof.controller.backend.NamespaceBackend`).  ``groups`` are the namespace-level
groups; ``classify(cmd)`` adds per-command groups - typically the tenant group of the
command's host (:func:`tenant_classifier`).  Admitted commands go straight to
``inner.execute``; the rest wait in the scheduler and are never failed for being over
limit (see :mod:`dpu_emu.qos.scheduler`).

What a command costs (:func:`command_cost`):

* NVM: Read (0x02) reads and Write (0x01) writes ``nlb * block_size`` bytes;
* KV: Retrieve (0x02) and List (0x06) read ``read_length`` bytes (the host buffer), Store
  (0x01) writes ``len(data)`` bytes;
* anything else (Flush, Write Zeroes, Dataset Management, KV Exist/Delete) costs one I/O
  and no bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nvmeof.controller.backend import Done, IoCommand, NamespaceBackend

from .group import QosGroup
from .scheduler import ABORTED_SQ_DELETION, QosScheduler
from .telemetry import OTHER, READ, WRITE

NVM, KV = "nvm", "kv"
COMMAND_SETS = (NVM, KV)
DEFAULT_BLOCK_SIZE = 512

OP_WRITE = 0x01  # NVM Write, KV Store
OP_READ = 0x02  # NVM Read, KV Retrieve
OP_KV_LIST = 0x06

Classifier = Callable[[IoCommand], Sequence[QosGroup]]


def command_cost(cmd: IoCommand, *, block_size: int = DEFAULT_BLOCK_SIZE, command_set: str = NVM) -> tuple[str, int]:
    """(direction, data bytes) of a command for QoS accounting."""
    op = cmd.opcode
    if command_set == KV:
        if op == OP_WRITE:
            return WRITE, len(cmd.data) if cmd.data is not None else 0
        if op == OP_READ or op == OP_KV_LIST:
            return READ, cmd.read_length
        return OTHER, 0
    if op == OP_READ:
        return READ, cmd.nlb * block_size
    if op == OP_WRITE:
        return WRITE, cmd.nlb * block_size
    return OTHER, 0


def tenant_classifier(groups_by_host: Callable[[str], QosGroup | None]) -> Classifier:
    """A classifier adding the tenant group of ``cmd.hostnqn`` (if the host has one).

    ``groups_by_host`` is e.g. ``dict.get`` on a hostnqn -> tenant group mapping that the
    device keeps current as tenants change."""

    def classify(cmd: IoCommand) -> Sequence[QosGroup]:
        group = groups_by_host(cmd.hostnqn)
        return (group,) if group is not None else ()

    return classify


class QosBackend:
    """A :class:`NamespaceBackend` that admits commands through a :class:`QosScheduler`."""

    def __init__(self, inner: NamespaceBackend, groups: Sequence[QosGroup], scheduler: QosScheduler, *,
                 block_size: int = DEFAULT_BLOCK_SIZE, command_set: str = NVM, classify: Classifier | None = None,
                 name: str = "") -> None:
        if command_set not in COMMAND_SETS:
            raise ValueError(f"command_set must be one of {COMMAND_SETS}, got {command_set!r}")
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.inner = inner
        self.groups: tuple[QosGroup, ...] = tuple(groups)
        self.scheduler = scheduler
        self.block_size = block_size
        self.command_set = command_set
        self.classify = classify
        self.name = name or (self.groups[0].name if self.groups else f"backend-{id(self):x}")
        self._closed = False
        for group in self.groups:
            scheduler.bind(group)

    def execute(self, cmd: IoCommand, done: Done) -> None:
        """Run ``cmd`` when its groups' limits and the device budget allow; ``done`` is
        called exactly once."""
        if self._closed:
            done(ABORTED_SQ_DELETION, 0, None)
            return
        direction, nbytes = command_cost(cmd, block_size=self.block_size, command_set=self.command_set)
        groups = self.groups
        if self.classify is not None:
            extra = self.classify(cmd)
            if extra:
                groups = (*extra, *groups)
        self.scheduler.submit(self, cmd, done, groups, direction, nbytes)

    def abort(self, cid: int, qid: int, cntlid: int | None = None) -> bool:
        """Complete a command of this namespace still waiting for QoS with Aborted by
        Request; False if it is not waiting here (unknown, running or finished)."""
        return self.scheduler.abort(cid, qid, cntlid, owner=self)

    def abort_queue(self, qid: int | None = None, cntlid: int | None = None) -> int:
        """Complete this namespace's waiting commands of a deleted queue / gone controller
        with Aborted SQ Deletion; returns how many."""
        return self.scheduler.abort_queue(qid, cntlid, owner=self)

    def set_groups(self, groups: Sequence[QosGroup]) -> None:
        """Replace the namespace-level groups (commands already waiting keep theirs)."""
        for group in groups:
            self.scheduler.bind(group)
        self.groups = tuple(groups)

    def close(self) -> None:
        """Complete every command still waiting here with Aborted SQ Deletion, then close
        the inner backend.  Later commands complete with Aborted SQ Deletion at once."""
        if self._closed:
            return
        self._closed = True
        self.scheduler.abort_queue(owner=self)
        self.scheduler.forget(self)
        for group in self.groups:
            self.scheduler.forget(group)
        self.inner.close()

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "command_set": self.command_set, "groups": [g.snapshot() for g in self.groups]}
