"""Bodies of /v1/faults: one create schema per fault type (discriminated by ``type``), so the
OpenAPI document says exactly which match fields and parameters each type takes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from dpu_emu.faults.engine import (
    MAX_AFTER_COMMANDS,
    MAX_COUNT,
    MAX_DELAY_MS,
    MAX_OPCODES,
    OPCODE_MAX,
    PORTID_MAX,
    SC_MAX,
    SCT_MAX,
    SEED_MAX,
)

from .schemas import NQN_MAX, NSID_MAX, Strict

FAULT_ID_PATTERN = r"^fault-[0-9]{1,10}$"
FaultTypeName = Literal["delay", "status", "drop_connection", "corrupt_c2h_digest", "ignore_keep_alive",
                        "refuse_connection"]
QueueName = Literal["admin", "io", "any"]
NQN_PATTERN = r"^nqn\.\S+$"


def _nqn() -> Any:
    return Field(default=None, min_length=5, max_length=NQN_MAX, pattern=NQN_PATTERN)


class CommandMatch(Strict):
    """Which commands (Fabrics commands never match); an absent field matches anything."""

    subsystem: str | None = _nqn()
    nsid: int | None = Field(default=None, ge=1, le=NSID_MAX)
    host: str | None = _nqn()
    opcodes: list[Annotated[int, Field(ge=0, le=OPCODE_MAX)]] | None = Field(
        default=None, min_length=1, max_length=MAX_OPCODES, description="admin or I/O opcodes, per the queue")
    queue: QueueName = "any"
    listener: int | None = Field(default=None, ge=0, le=PORTID_MAX,
                                 description="listener (port) id the connection came in on; absent: every one")


class KeepAliveMatch(Strict):
    subsystem: str | None = _nqn()
    host: str | None = _nqn()


class ListenerMatch(Strict):
    listener: int | None = Field(default=None, ge=0, le=PORTID_MAX, description="listener (port) id; absent: every one")


class _Budget(Strict):
    count: int | None = Field(default=None, ge=1, le=MAX_COUNT, description="inject at most this many times")
    probability: float | None = Field(default=None, gt=0, le=1, description="chance of injecting at each match")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="seeds the draws (with probability)")


class DelayParams(Strict):
    delay_ms: int = Field(ge=1, le=MAX_DELAY_MS)


class StatusParams(Strict):
    sct: int = Field(default=0, ge=0, le=SCT_MAX)
    sc: int = Field(ge=0, le=SC_MAX)
    dnr: bool = False


class DropParams(Strict):
    after_commands: int = Field(ge=0, le=MAX_AFTER_COMMANDS,
                                description="matching commands served before the next one drops the connection")


class DelayFault(_Budget):
    """Execute matching commands, hold their completions ``delay_ms``."""

    type: Literal["delay"]
    match: CommandMatch = Field(default_factory=CommandMatch)
    params: DelayParams


class StatusFault(_Budget):
    """Complete matching commands at once with this status (they are not executed)."""

    type: Literal["status"]
    match: CommandMatch = Field(default_factory=CommandMatch)
    params: StatusParams


class DropFault(_Budget):
    type: Literal["drop_connection"]
    match: CommandMatch = Field(default_factory=CommandMatch)
    params: DropParams


class CorruptDigestFault(_Budget):
    """Matching read-type commands on connections with data digests: the first C2HData PDU
    carries a wrong data digest."""

    type: Literal["corrupt_c2h_digest"]
    match: CommandMatch = Field(default_factory=CommandMatch)


class IgnoreKeepAliveFault(_Budget):
    """Keep Alive gets no completion (and no keep-alive credit)."""

    type: Literal["ignore_keep_alive"]
    match: KeepAliveMatch = Field(default_factory=KeepAliveMatch)


class RefuseConnectionFault(_Budget):
    """New TCP connections on the listener are closed at once."""

    type: Literal["refuse_connection"]
    match: ListenerMatch = Field(default_factory=ListenerMatch)


FaultCreate = Annotated[DelayFault | StatusFault | DropFault | CorruptDigestFault | IgnoreKeepAliveFault
                        | RefuseConnectionFault, Field(discriminator="type")]


class FaultMatchPublic(BaseModel):
    subsystem: str | None = Field(default=None, max_length=NQN_MAX)
    nsid: int | None = None
    host: str | None = Field(default=None, max_length=NQN_MAX)
    opcodes: list[int] | None = None
    queue: QueueName | None = None
    listener: int | None = None


class FaultParamsPublic(BaseModel):
    delay_ms: int | None = None
    sct: int | None = None
    sc: int | None = None
    dnr: bool | None = None
    after_commands: int | None = None


class FaultPublic(BaseModel):
    id: str
    type: FaultTypeName
    match: FaultMatchPublic
    params: FaultParamsPublic
    count: int | None
    probability: float | None
    seed: int | None
    matched: int = Field(description="events that matched")
    injected: int = Field(description="times the fault was injected")
    exhausted: bool = Field(description="count reached: matches are still counted, nothing is injected")
