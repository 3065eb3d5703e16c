"""Fault injection for initiator testing: the records, their validation and the engine.

Theory of operation
-------------------
A fault is ``{type, match, count, probability, seed, params}``.  :class:`FaultService`
validates a request (every refusal is a :class:`~dpu_emu.domain.InvalidArgument` or
:class:`~dpu_emu.domain.NotFound`), keeps the faults in creation order and is installed
on the device's nvmeof target as its :class:`nvmeof.controller.faults.FaultHooks`.  With no
fault, ``active`` is False and the target never calls in.

For each event the target reports (a command, a Keep Alive, a new connection), the faults
of the matching kind are tried in creation order.  A fault *matches* when every field of
its ``match`` holds (an absent field matches anything); the match is counted.  It then
*injects* if it still has budget (``count``: at most that many injections; none: no limit)
and the seeded draw passes (``probability``; none: always).  The first fault that injects
decides; later ones are not consulted for that event.

``drop_connection`` counts matching commands since it last dropped: the first
``after_commands`` of them run normally, the next one closes its connection.  Faults live in
memory only (they are test instruments, never saved in the configuration).
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nvmeof.controller.faults import CommandInfo, Decision, FaultAction
from nvmeof.controller.model import NSID_MAX
from nvmeof.wire.constants import ADMIN_QID, NQN_MAX_LENGTH, encode_status

from ..domain.errors import InvalidArgument, NotFound
from ..domain.state import ADMIN, Scope, require_admin

log = logging.getLogger("dpu_emu.faults")

MAX_FAULTS = 256
MAX_DELAY_MS = 60_000
MAX_COUNT = 1_000_000
MAX_AFTER_COMMANDS = 1_000_000
MAX_OPCODES = 16
OPCODE_MAX = 0xFF
SCT_MAX = 0x7
SC_MAX = 0xFF
PORTID_MAX = 0xFFFF
SEED_MAX = 2**63 - 1
DATA_DIRECTION_MASK = 0x3
DATA_TO_HOST = 0x2  # opcode bits 1:0 = 10b: the command returns data (C2HData)
ID_PREFIX = "fault-"


class FaultType(StrEnum):
    DELAY = "delay"
    STATUS = "status"
    DROP_CONNECTION = "drop_connection"
    CORRUPT_C2H_DIGEST = "corrupt_c2h_digest"
    IGNORE_KEEP_ALIVE = "ignore_keep_alive"
    REFUSE_CONNECTION = "refuse_connection"


class QueueKind(StrEnum):
    ADMIN = "admin"
    IO = "io"
    ANY = "any"


COMMAND_TYPES = frozenset({FaultType.DELAY, FaultType.STATUS, FaultType.DROP_CONNECTION,
                           FaultType.CORRUPT_C2H_DIGEST})
# which match fields each type understands
MATCH_FIELDS: dict[FaultType, frozenset[str]] = {
    **{t: frozenset({"subsystem", "nsid", "host", "opcodes", "queue", "listener"}) for t in COMMAND_TYPES},
    FaultType.IGNORE_KEEP_ALIVE: frozenset({"subsystem", "host"}),
    FaultType.REFUSE_CONNECTION: frozenset({"listener"}),
}
PARAMS: dict[FaultType, frozenset[str]] = {
    FaultType.DELAY: frozenset({"delay_ms"}),
    FaultType.STATUS: frozenset({"sct", "sc", "dnr"}),
    FaultType.DROP_CONNECTION: frozenset({"after_commands"}),
    FaultType.CORRUPT_C2H_DIGEST: frozenset(),
    FaultType.IGNORE_KEEP_ALIVE: frozenset(),
    FaultType.REFUSE_CONNECTION: frozenset(),
}
REQUIRED_PARAMS: dict[FaultType, frozenset[str]] = {
    FaultType.DELAY: frozenset({"delay_ms"}),
    FaultType.STATUS: frozenset({"sc"}),
    FaultType.DROP_CONNECTION: frozenset({"after_commands"}),
}


@dataclass(frozen=True)
class FaultView:
    id: str
    type: str
    match: dict[str, Any]
    count: int | None
    probability: float | None
    seed: int | None
    params: dict[str, Any]
    matched: int
    injected: int
    exhausted: bool


@dataclass
class Fault:
    id: str
    type: FaultType
    match: dict[str, Any]
    count: int | None
    probability: float | None
    seed: int | None
    params: dict[str, Any]
    rng: random.Random
    status: int = 0
    matched: int = 0
    injected: int = 0
    since_drop: int = 0
    opcodes: frozenset[int] = field(default_factory=frozenset)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.injected >= self.count

    def matches_command(self, cmd: CommandInfo) -> bool:
        m = self.match
        if "subsystem" in m and m["subsystem"] != cmd.subnqn:
            return False
        if "host" in m and m["host"] != cmd.hostnqn:
            return False
        if "nsid" in m and m["nsid"] != cmd.nsid:
            return False
        if "listener" in m and m["listener"] != cmd.listener:
            return False
        if self.opcodes and cmd.opcode not in self.opcodes:
            return False
        queue = m.get("queue", QueueKind.ANY.value)
        if queue != QueueKind.ANY.value and (cmd.qid == ADMIN_QID) != (queue == QueueKind.ADMIN.value):
            return False
        if self.type is FaultType.CORRUPT_C2H_DIGEST:
            return cmd.ddgst and cmd.opcode & DATA_DIRECTION_MASK == DATA_TO_HOST
        return True

    def fire(self) -> bool:
        """One matching event: count it; True when this one is injected."""
        self.matched += 1
        if self.type is FaultType.DROP_CONNECTION:
            self.since_drop += 1
            if self.since_drop <= self.params["after_commands"]:
                return False
        if self.exhausted:
            return False
        if self.probability is not None and self.rng.random() >= self.probability:
            return False
        self.injected += 1
        self.since_drop = 0
        return True

    def view(self) -> FaultView:
        return FaultView(id=self.id, type=self.type.value, match=dict(self.match), count=self.count,
                         probability=self.probability, seed=self.seed, params=dict(self.params),
                         matched=self.matched, injected=self.injected, exhausted=self.exhausted)


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be an integer in {low}..{high}")
    return value


def _nqn(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.startswith("nqn.") or len(value.encode()) > NQN_MAX_LENGTH:
        raise InvalidArgument(f"{name} must be an NQN (nqn...., at most {NQN_MAX_LENGTH} bytes)")
    return value


def _match(ftype: FaultType, raw: Any) -> dict[str, Any]:
    raw = {k: v for k, v in dict(raw or {}).items() if v is not None}
    unknown = set(raw) - MATCH_FIELDS[ftype]
    if unknown:
        raise InvalidArgument(f"a {ftype.value} fault cannot match on {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for key in ("subsystem", "host"):
        if key in raw:
            out[key] = _nqn(raw[key], f"match.{key}")
    if "nsid" in raw:
        out["nsid"] = _int(raw["nsid"], "match.nsid", 1, NSID_MAX)
    if "listener" in raw:
        out["listener"] = _int(raw["listener"], "match.listener", 0, PORTID_MAX)
    if "opcodes" in raw:
        ops = raw["opcodes"]
        if not isinstance(ops, list) or not 1 <= len(ops) <= MAX_OPCODES:
            raise InvalidArgument(f"match.opcodes must list 1..{MAX_OPCODES} opcodes")
        out["opcodes"] = sorted({_int(op, "an opcode", 0, OPCODE_MAX) for op in ops})
    if "queue" in raw:
        try:
            out["queue"] = QueueKind(raw["queue"]).value
        except ValueError:
            raise InvalidArgument("match.queue must be admin, io or any") from None
    return out


def _params(ftype: FaultType, raw: Any) -> dict[str, Any]:
    raw = {k: v for k, v in dict(raw or {}).items() if v is not None}
    unknown = set(raw) - PARAMS[ftype]
    if unknown:
        raise InvalidArgument(f"a {ftype.value} fault takes no {', '.join(sorted(unknown))}")
    missing = REQUIRED_PARAMS.get(ftype, frozenset()) - set(raw)
    if missing:
        raise InvalidArgument(f"a {ftype.value} fault needs params.{', params.'.join(sorted(missing))}")
    out: dict[str, Any] = {}
    if "delay_ms" in raw:
        out["delay_ms"] = _int(raw["delay_ms"], "params.delay_ms", 1, MAX_DELAY_MS)
    if "after_commands" in raw:
        out["after_commands"] = _int(raw["after_commands"], "params.after_commands", 0, MAX_AFTER_COMMANDS)
    if ftype is FaultType.STATUS:
        out["sct"] = _int(raw.get("sct", 0), "params.sct", 0, SCT_MAX)
        out["sc"] = _int(raw["sc"], "params.sc", 0, SC_MAX)
        if not isinstance(raw.get("dnr", False), bool):
            raise InvalidArgument("params.dnr must be true or false")
        out["dnr"] = raw.get("dnr", False)
        if out["sct"] == 0 and out["sc"] == 0:
            raise InvalidArgument("a status fault needs an error status (sct 0, sc 0 is success)")
    return out


class FaultService:
    """The faults of one device, and the target's fault hooks (``active``, the ``on_*``)."""

    def __init__(self) -> None:
        self.faults: dict[str, Fault] = {}
        self.active = False
        self._ids = itertools.count(1)

    # -- management (called on the device's loop) -------------------------------------------

    def create(self, spec: dict[str, Any], scope: Scope = ADMIN) -> FaultView:
        require_admin(scope)
        if len(self.faults) >= MAX_FAULTS:
            raise InvalidArgument(f"at most {MAX_FAULTS} faults at a time")
        try:
            ftype = FaultType(str(spec.get("type")))
        except ValueError:
            raise InvalidArgument(f"type must be one of {', '.join(t.value for t in FaultType)}") from None
        match = _match(ftype, spec.get("match"))
        params = _params(ftype, spec.get("params"))
        count = spec.get("count")
        if count is not None:
            count = _int(count, "count", 1, MAX_COUNT)
        probability = spec.get("probability")
        if probability is not None:
            if isinstance(probability, bool) or not isinstance(probability, int | float) \
                    or not 0.0 < probability <= 1.0:
                raise InvalidArgument("probability must be a number in (0, 1]")
            probability = float(probability)
        seed = spec.get("seed")
        if seed is not None:
            seed = _int(seed, "seed", 0, SEED_MAX)
            if probability is None:
                raise InvalidArgument("seed only makes sense with probability")
        fault = Fault(id=f"{ID_PREFIX}{next(self._ids)}", type=ftype, match=match, count=count,
                      probability=probability, seed=seed, params=params, rng=random.Random(seed),
                      opcodes=frozenset(match.get("opcodes", ())))
        if ftype is FaultType.STATUS:
            fault.status = encode_status(params["sct"], params["sc"], params["dnr"])
        self.faults[fault.id] = fault
        self.active = True
        log.info("fault %s added: %s match %s params %s count %s probability %s", fault.id, ftype.value,
                 match, params, count, probability)
        return fault.view()

    def list(self, scope: Scope = ADMIN) -> list[FaultView]:
        require_admin(scope)
        return [f.view() for f in self.faults.values()]

    def get(self, fault_id: str, scope: Scope = ADMIN) -> FaultView:
        require_admin(scope)
        return self._fault(fault_id).view()

    def delete(self, fault_id: str, scope: Scope = ADMIN) -> None:
        require_admin(scope)
        self._fault(fault_id)
        del self.faults[fault_id]
        self.active = bool(self.faults)
        log.info("fault %s removed", fault_id)

    def clear(self, scope: Scope = ADMIN) -> int:
        require_admin(scope)
        removed = len(self.faults)
        self.faults.clear()
        self.active = False
        log.info("all faults cleared (%d)", removed)
        return removed

    def _fault(self, fault_id: str) -> Fault:
        fault = self.faults.get(fault_id)
        if fault is None:
            raise NotFound(f"no fault {fault_id!r}")
        return fault

    # -- nvmeof.controller.faults.FaultHooks ------------------------------------------------

    def refuse_connection(self, portid: int) -> bool:
        for fault in self.faults.values():
            if fault.type is FaultType.REFUSE_CONNECTION and fault.match.get("listener", portid) == portid \
                    and fault.fire():
                return True
        return False

    def on_command(self, cmd: CommandInfo) -> Decision | None:
        for fault in self.faults.values():
            if fault.type not in COMMAND_TYPES or not fault.matches_command(cmd) or not fault.fire():
                continue
            log.info("fault %s (%s) injected: %s cid %d opcode %#x qid %d", fault.id, fault.type.value,
                     cmd.hostnqn, cmd.cid, cmd.opcode, cmd.qid)
            if fault.type is FaultType.STATUS:
                return Decision(FaultAction.STATUS, status=fault.status)
            if fault.type is FaultType.DELAY:
                return Decision(FaultAction.DELAY, delay_ms=fault.params["delay_ms"])
            if fault.type is FaultType.DROP_CONNECTION:
                return Decision(FaultAction.DROP)
            return Decision(FaultAction.CORRUPT_DIGEST)
        return None

    def ignore_keep_alive(self, subnqn: str, hostnqn: str) -> bool:
        for fault in self.faults.values():
            if fault.type is not FaultType.IGNORE_KEEP_ALIVE:
                continue
            m = fault.match
            if m.get("subsystem", subnqn) == subnqn and m.get("host", hostnqn) == hostnqn and fault.fire():
                log.info("fault %s: Keep Alive from %s ignored", fault.id, hostnqn)
                return True
        return False
