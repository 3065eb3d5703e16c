"""Fault-injection hook port: where the target asks "should this go wrong on purpose?".

Theory of operation
-------------------
The target calls a :class:`FaultHooks` implementation at a few well-defined points; the
device layer (dpu_emu) installs one with :func:`install` before serving (a queue session
looks its target's hooks up once, when its connection is accepted).  The default, :data:`NO_FAULTS`,
has ``active`` False, and every call site tests ``hooks.active`` before calling anything,
so a target without configured faults pays one attribute test per command.

Call sites and what the decision means:

* accepting a TCP connection on a listener (``nvmeof.target.server``):
  :meth:`FaultHooks.refuse_connection` True -> the connection is closed at once;
* each command on a connected queue, Fabrics commands excepted
  (``nvmeof.controller.session``): :meth:`FaultHooks.on_command` returns None (run it
  normally) or a :class:`Decision`:

  - ``STATUS``: complete the command at once with ``status`` (not executed);
  - ``DELAY``: execute it, hold its completion ``delay_ms`` (the asyncio edge provides
    the timer; the core only passes the value on);
  - ``DROP``: close the connection without executing or answering the command;
  - ``CORRUPT_DIGEST``: execute it and send the first C2HData PDU of its data with a wrong
    data digest (``nvmeof.transport.controller_side``);

* a Keep Alive command (``nvmeof.controller.controller``):
  :meth:`FaultHooks.ignore_keep_alive` True -> no completion and no keep-alive credit,
  as if the command had been lost, so the host's keep-alive times out.

The hooks never raise into the target; an implementation decides, counts and logs.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from .model import Target



class FaultAction(Enum):
    STATUS = "status"
    DELAY = "delay"
    DROP = "drop"
    CORRUPT_DIGEST = "corrupt_digest"


class Decision(NamedTuple):
    action: FaultAction
    status: int = 0  # STATUS: the 16-bit CQE status field
    delay_ms: int = 0  # DELAY


class CommandInfo(NamedTuple):
    """What a fault may match a command on."""

    subnqn: str
    hostnqn: str
    qid: int
    opcode: int
    nsid: int
    cid: int
    ddgst: bool  # data digests are on for this connection
    listener: int = 0  # port id of the listener the connection came in on (0: unknown)


class FaultHooks(Protocol):
    active: bool

    def refuse_connection(self, portid: int) -> bool: ...

    def on_command(self, cmd: CommandInfo) -> Decision | None: ...

    def ignore_keep_alive(self, subnqn: str, hostnqn: str) -> bool: ...


class NoFaults:
    """The default: nothing is ever injected."""

    active = False

    def refuse_connection(self, portid: int) -> bool:
        return False

    def on_command(self, cmd: CommandInfo) -> Decision | None:
        return None

    def ignore_keep_alive(self, subnqn: str, hostnqn: str) -> bool:
        return False


NO_FAULTS: FaultHooks = NoFaults()
_ATTR = "fault_hooks"


def hooks_of(target: Target) -> FaultHooks:
    """The hooks installed on ``target`` (:data:`NO_FAULTS` if none)."""
    hooks: FaultHooks = getattr(target, _ATTR, NO_FAULTS)
    return hooks


def install(target: Target, hooks: FaultHooks) -> None:
    setattr(target, _ATTR, hooks)
