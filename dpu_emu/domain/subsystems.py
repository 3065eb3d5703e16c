"""Subsystems and the hosts each one admits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvmeof.controller.model import NSID_MAX

from .ana import ANA_SECTION, load_states
from .dhchap import view_of
from .errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from .records import MODEL_MAX, SERIAL_MAX, SubsystemRecord, check_ascii, check_int, check_nqn
from .state import ADMIN, MaskedSubsystem, Scope, State, require_admin

UPDATABLE = frozenset({"serial", "model", "allow_any_host", "max_namespaces"})


@dataclass(frozen=True)
class SubsystemView:
    id: str
    nqn: str
    serial: str
    model: str
    allow_any_host: bool
    hosts: list[str]
    max_namespaces: int
    namespaces: list[int]
    controllers: int


@dataclass(frozen=True)
class HostView:
    nqn: str
    subsystem: str
    subsystem_id: str
    tenant: str | None
    connected_controllers: int
    dhchap: dict[str, Any] | None = None  # DH-HMAC-CHAP settings, never the secrets


class SubsystemService:
    def __init__(self, state: State) -> None:
        self.state = state

    def _view(self, rec: SubsystemRecord, scope: Scope) -> SubsystemView:
        visible = self.state.visible_to(scope, rec.nqn)
        nsids = sorted(n for n in rec.namespaces if visible is None or n in visible)
        live = self.state.live(rec.nqn)
        return SubsystemView(id=rec.id, nqn=rec.nqn, serial=rec.serial, model=rec.model,
                             allow_any_host=rec.allow_any_host,
                             hosts=sorted(rec.hosts) if scope.is_admin else [],
                             max_namespaces=rec.max_namespaces, namespaces=nsids,
                             controllers=len(live.controllers) if scope.is_admin else 0)

    def _scoped(self, ref: str, scope: Scope) -> SubsystemRecord:
        rec = self.state.subsystem(ref)
        visible = self.state.visible_to(scope, rec.nqn)
        if visible is not None and not visible:
            raise NotFound(f"no subsystem {ref!r}")
        return rec

    def create(self, spec: dict[str, Any], scope: Scope = ADMIN, *, allow_any_host_default: bool = False,
               commit: bool = True) -> SubsystemView:
        require_admin(scope)
        rec = SubsystemRecord.build(spec, allow_any_host_default=allow_any_host_default)
        state = self.state
        if rec.nqn in state.subsystems:
            raise AlreadyExists(f"subsystem {rec.nqn} exists")
        if any(other.id == rec.id for other in state.subsystems.values()):
            raise AlreadyExists(f"a subsystem with id {rec.id!r} exists")
        live = MaskedSubsystem(nqn=rec.nqn, serial=rec.serial, model=rec.model, allow_any_host=rec.allow_any_host,
                               hosts=set(rec.hosts), max_namespaces=rec.max_namespaces, state=state)
        load_states(live, rec.extra.get(ANA_SECTION), state.target.clock(), set(state.listeners))
        state.target.add_subsystem(live)
        state.subsystems[rec.nqn] = rec
        if commit:
            state.commit()
        return self._view(rec, scope)

    def list(self, scope: Scope = ADMIN) -> list[SubsystemView]:
        out = []
        for nqn in sorted(self.state.subsystems):
            visible = self.state.visible_to(scope, nqn)
            if visible is None or visible:
                out.append(self._view(self.state.subsystems[nqn], scope))
        return out

    def get(self, ref: str, scope: Scope = ADMIN) -> SubsystemView:
        return self._view(self._scoped(ref, scope), scope)

    def update(self, ref: str, changes: dict[str, Any], scope: Scope = ADMIN) -> SubsystemView:
        require_admin(scope)
        rec = self.state.subsystem(ref)
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise InvalidArgument(f"cannot change {sorted(unknown)}; changeable: {sorted(UPDATABLE)}")
        changes = {k: v for k, v in changes.items() if v is not None}
        serial = check_ascii(changes.get("serial", rec.serial), "serial", SERIAL_MAX)
        model = check_ascii(changes.get("model", rec.model), "model", MODEL_MAX)
        allow = changes.get("allow_any_host", rec.allow_any_host)
        if not isinstance(allow, bool):
            raise InvalidArgument("allow_any_host must be a boolean")
        limit = check_int(changes.get("max_namespaces", rec.max_namespaces), "max_namespaces", 1, NSID_MAX)
        if rec.namespaces and limit < max(rec.namespaces):
            raise Conflict(f"max_namespaces {limit} is below the highest NSID in use ({max(rec.namespaces)})")
        live = self.state.live(rec.nqn)
        with self.state.visibility_change():
            rec.serial, rec.model, rec.allow_any_host, rec.max_namespaces = serial, model, allow, limit
            live.serial, live.model, live.allow_any_host, live.max_namespaces = serial, model, allow, limit
        self.state.commit()
        return self._view(rec, scope)

    def delete(self, ref: str, scope: Scope = ADMIN) -> None:
        require_admin(scope)
        state = self.state
        rec = state.subsystem(ref)
        with state.visibility_change():
            state.target.remove_subsystem(rec.nqn)
            for tenant in state.tenants.values():
                tenant.namespaces = {(nqn, nsid) for nqn, nsid in tenant.namespaces if nqn != rec.nqn}
        for nsid in sorted(rec.namespaces):
            state.device.close_namespace(rec.nqn, nsid)
            state.stats.pop((rec.nqn, nsid), None)
        del state.subsystems[rec.nqn]
        state.commit()


class HostService:
    """Hosts a subsystem admits by NQN (beside ``allow_any_host``)."""

    def __init__(self, state: State) -> None:
        self.state = state

    def _view(self, rec: SubsystemRecord, hostnqn: str) -> HostView:
        tenant = self.state.tenant_of(hostnqn)
        live = self.state.live(rec.nqn)
        return HostView(nqn=hostnqn, subsystem=rec.nqn, subsystem_id=rec.id,
                        tenant=tenant.name if tenant else None,
                        connected_controllers=sum(c.hostnqn == hostnqn for c in live.controllers.values()),
                        dhchap=view_of(live.host_auth.get(hostnqn)))

    def add(self, ref: str, hostnqn: str, scope: Scope = ADMIN) -> HostView:
        require_admin(scope)
        rec = self.state.subsystem(ref)
        check_nqn(hostnqn, "host NQN")
        if hostnqn in rec.hosts:
            raise AlreadyExists(f"host {hostnqn} is already allowed on {rec.nqn}")
        with self.state.visibility_change():
            rec.hosts.add(hostnqn)
            self.state.live(rec.nqn).hosts.add(hostnqn)
        self.state.commit()
        return self._view(rec, hostnqn)

    def list(self, ref: str, scope: Scope = ADMIN) -> list[HostView]:
        require_admin(scope)
        rec = self.state.subsystem(ref)
        return [self._view(rec, h) for h in sorted(rec.hosts)]

    def get(self, ref: str, hostnqn: str, scope: Scope = ADMIN) -> HostView:
        require_admin(scope)
        rec = self.state.subsystem(ref)
        if hostnqn not in rec.hosts:
            raise NotFound(f"host {hostnqn!r} is not in the allow list of {rec.nqn}")
        return self._view(rec, hostnqn)

    def remove(self, ref: str, hostnqn: str, scope: Scope = ADMIN) -> None:
        """Revoke access; the host's controllers on this subsystem are disconnected
        (unless the subsystem still admits any host)."""
        require_admin(scope)
        rec = self.state.subsystem(ref)
        if hostnqn not in rec.hosts:
            raise NotFound(f"host {hostnqn!r} is not in the allow list of {rec.nqn}")
        with self.state.visibility_change():
            rec.hosts.discard(hostnqn)
            self.state.live(rec.nqn).hosts.discard(hostnqn)
        self.state.commit()
