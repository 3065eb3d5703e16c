"""Listeners: the NVMe/TCP addresses the device serves (discovery, I/O, or both).

Creating one starts the real asyncio listener before the change is recorded; removing
one stops it.  Connections already accepted on a removed listener stay up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvmeof.controller.model import Listener
from nvmeof.wire.constants import AddressFamily

from .errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from .records import EPHEMERAL_PORT, PORTID_MAX, AddressFamilyName, ListenerRecord
from .state import ADMIN, Scope, State, require_admin

UPDATABLE = frozenset({"discovery", "io"})


@dataclass(frozen=True)
class ListenerView:
    id: int
    trtype: str
    adrfam: str
    traddr: str
    trsvcid: int
    bound_port: int | None
    discovery: bool
    io: bool
    listening: bool


class ListenerService:
    def __init__(self, state: State) -> None:
        self.state = state

    def _view(self, rec: ListenerRecord) -> ListenerView:
        bound = self.state.device.bound.get(rec.portid)
        return ListenerView(id=rec.portid, trtype="tcp", adrfam=rec.adrfam.value, traddr=rec.traddr,
                            trsvcid=rec.trsvcid, bound_port=bound[1] if bound else None,
                            discovery=rec.discovery, io=rec.io, listening=bound is not None)

    def _get(self, portid: int) -> ListenerRecord:
        rec = self.state.listeners.get(portid)
        if rec is None:
            raise NotFound(f"no listener {portid}")
        return rec

    def register(self, spec: dict[str, Any]) -> ListenerRecord:
        """Validate and record a listener without starting it (configuration load)."""
        state = self.state
        if spec.get("portid") is None:
            spec = dict(spec, portid=next((p for p in range(1, PORTID_MAX + 1) if p not in state.listeners), None))
        rec = ListenerRecord.build(spec)
        if rec.portid in state.listeners:
            raise AlreadyExists(f"listener {rec.portid} exists")
        for other in state.listeners.values():
            if rec.trsvcid != EPHEMERAL_PORT and (other.traddr, other.trsvcid) == (rec.traddr, rec.trsvcid):
                raise AlreadyExists(f"listener {other.portid} already uses {rec.traddr}:{rec.trsvcid}")
        state.listeners[rec.portid] = rec
        return rec

    async def start(self, rec: ListenerRecord) -> None:
        adrfam = AddressFamily.IPV6 if rec.adrfam is AddressFamilyName.IPV6 else AddressFamily.IPV4
        listener = Listener(traddr=rec.traddr, trsvcid=str(rec.trsvcid), portid=rec.portid, adrfam=adrfam,
                            discovery=rec.discovery, io=rec.io)
        self.state.device.bound[rec.portid] = await self.state.device.server.listen(listener)

    async def start_all(self) -> None:
        for portid in sorted(self.state.listeners):
            await self.start(self.state.listeners[portid])

    async def create(self, spec: dict[str, Any], scope: Scope = ADMIN) -> ListenerView:
        require_admin(scope)
        rec = self.register(spec)
        try:
            await self.start(rec)
        except OSError as exc:
            del self.state.listeners[rec.portid]
            raise Conflict(f"cannot listen on {rec.traddr}:{rec.trsvcid}: {exc.strerror or exc}") from None
        self.state.commit()
        return self._view(rec)

    def list(self, scope: Scope = ADMIN) -> list[ListenerView]:
        require_admin(scope)
        return [self._view(self.state.listeners[p]) for p in sorted(self.state.listeners)]

    def get(self, portid: int, scope: Scope = ADMIN) -> ListenerView:
        require_admin(scope)
        return self._view(self._get(portid))

    def update(self, portid: int, changes: dict[str, Any], scope: Scope = ADMIN) -> ListenerView:
        """Change what a listener serves (discovery and/or I/O); the discovery log changes."""
        require_admin(scope)
        rec = self._get(portid)
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise InvalidArgument(f"cannot change {sorted(unknown)}; changeable: {sorted(UPDATABLE)}")
        discovery, io = changes.get("discovery", rec.discovery), changes.get("io", rec.io)
        if not isinstance(discovery, bool) or not isinstance(io, bool):
            raise InvalidArgument("discovery and io must be booleans")
        if not discovery and not io:
            raise InvalidArgument("a listener must serve discovery, I/O, or both")
        rec.discovery, rec.io = discovery, io
        live = self.state.target.listeners.get(portid)
        if live is not None:
            live.discovery, live.io = discovery, io
            self.state.target.discovery_changed()
        self.state.commit()
        return self._view(rec)

    async def delete(self, portid: int, scope: Scope = ADMIN) -> None:
        require_admin(scope)
        self._get(portid)
        if portid in self.state.device.server.servers:
            await self.state.device.server.stop_listener(portid)
        self.state.device.bound.pop(portid, None)
        del self.state.listeners[portid]
        self.state.commit()
