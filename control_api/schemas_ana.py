"""Bodies of the ANA (multipath) resources: /v1/subsystems/{nqn}/ana."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .schemas import Strict

AnaStateName = Literal["optimized", "non_optimized", "inaccessible", "persistent_loss", "change"]


class AnaPathPublic(BaseModel):
    listener: int = Field(description="listener (port id)")
    state: AnaStateName


class AnaGroupPublic(BaseModel):
    grpid: int
    namespaces: list[int] = Field(description="NSIDs in this ANA group, ascending")
    states: list[AnaPathPublic] = Field(description="the group's state on each I/O listener")


class AnaPublic(BaseModel):
    subsystem: str
    anatt_s: int = Field(description="ANA Transition Time: longest a group stays in 'change'")
    groups: list[AnaGroupPublic]


class AnaStateUpdate(Strict):
    state: AnaStateName
