"""Tenants: a name, the host NQNs that act for it, the namespaces it may see, a QoS
policy reference (enforced: the tenant's hosts share one QoS group following that named
policy, which must exist) and a bearer token (kept as a hash).

A host NQN belongs to at most one tenant.  Such a host sees, in each subsystem, only the
namespaces granted to its tenant there, and cannot connect to a subsystem where its
tenant holds none (see :mod:`dpu_emu.domain.state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .auth import TENANT_TOKEN_PREFIX, hash_token, new_token, same_hash
from .errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from .qos import QosService
from .records import TOKEN_HASH, TenantRecord, check_id, check_int, check_nqn
from .state import ADMIN, Scope, State, require_admin

UPDATABLE = frozenset({"hosts", "namespaces", "qos"})
NSID_LIMIT = 0xFFFFFFFE


@dataclass(frozen=True)
class NamespaceGrant:
    subsystem: str
    subsystem_id: str
    nsid: int


@dataclass(frozen=True)
class TenantView:
    name: str
    hosts: list[str]
    namespaces: list[NamespaceGrant]
    qos: str | None


class TenantService:
    def __init__(self, state: State, qos: QosService | None = None) -> None:
        self.state = state
        self.qos = qos

    def _view(self, rec: TenantRecord) -> TenantView:
        grants = [NamespaceGrant(subsystem=nqn, subsystem_id=self.state.subsystems[nqn].id, nsid=nsid)
                  for nqn, nsid in sorted(rec.namespaces)]
        return TenantView(name=rec.name, hosts=sorted(rec.hosts), namespaces=grants, qos=rec.qos)

    def _get(self, name: str, scope: Scope) -> TenantRecord:
        rec = self.state.tenants.get(name)
        if rec is None or (not scope.is_admin and scope.tenant != name):
            raise NotFound(f"no tenant {name!r}")
        return rec

    def _hosts(self, hosts: Any, name: str) -> set[str]:
        if not isinstance(hosts, list):
            raise InvalidArgument("hosts must be a list of host NQNs")
        out = {check_nqn(h, "host NQN") for h in hosts}
        for host in sorted(out):
            owner = self.state.tenant_of(host)
            if owner is not None and owner.name != name:
                raise Conflict(f"host {host} already belongs to tenant {owner.name!r}")
        return out

    def _grants(self, grants: Any) -> set[tuple[str, int]]:
        if not isinstance(grants, list):
            raise InvalidArgument("namespaces must be a list of {subsystem, nsid}")
        out = set()
        for grant in grants:
            if not isinstance(grant, dict):
                raise InvalidArgument("namespaces must be a list of {subsystem, nsid}")
            ref, nsid = grant.get("subsystem"), check_int(grant.get("nsid"), "nsid", 1, NSID_LIMIT)
            try:
                sub = self.state.subsystem(str(ref))
            except NotFound:
                raise InvalidArgument(f"no subsystem {ref!r} to grant") from None
            if nsid not in sub.namespaces:
                raise InvalidArgument(f"no namespace {nsid} in {sub.nqn} to grant")
            out.add((sub.nqn, nsid))
        return out

    @staticmethod
    def _qos(qos: Any) -> str | None:
        return None if qos is None else check_id(qos, "qos")

    def _checked_qos(self, qos: Any) -> str | None:
        """A tenant's policy reference from the API: it must name an existing policy."""
        if self.qos is None:
            return self._qos(qos)
        return self.qos.check_reference(qos, "tenant qos")

    def load(self, spec: dict[str, Any]) -> None:
        """Restore a tenant from the configuration (its token hash included)."""
        name = check_id(spec.get("name"), "tenant name")
        if name in self.state.tenants:
            raise AlreadyExists(f"tenant {name!r} exists")
        digest = spec.get("token_sha256") or ""
        if digest and not TOKEN_HASH.match(digest):
            raise InvalidArgument(f"tenant {name}: token_sha256 must be 64 hex digits")
        rec = TenantRecord(name=name, hosts=self._hosts(spec.get("hosts") or [], name),
                           namespaces=self._grants(spec.get("namespaces") or []), qos=self._qos(spec.get("qos")),
                           token_sha256=digest,
                           extra={k: v for k, v in spec.items()
                                  if k not in {"name", "hosts", "namespaces", "qos", "token_sha256"}})
        with self.state.visibility_change():
            self.state.tenants[name] = rec
        self.state.device.tenant_changed(name, rec.qos, sorted(rec.hosts))

    def create(self, spec: dict[str, Any], scope: Scope = ADMIN) -> tuple[TenantView, str]:
        """Returns the view and the tenant's token (shown this once; only its hash is kept)."""
        require_admin(scope)
        name = check_id(spec.get("name"), "tenant name")
        if name in self.state.tenants:
            raise AlreadyExists(f"tenant {name!r} exists")
        token = new_token(TENANT_TOKEN_PREFIX)
        rec = TenantRecord(name=name, hosts=self._hosts(spec.get("hosts") or [], name),
                           namespaces=self._grants(spec.get("namespaces") or []),
                           qos=self._checked_qos(spec.get("qos")), token_sha256=hash_token(token))
        with self.state.visibility_change():
            self.state.tenants[name] = rec
        self.state.device.tenant_changed(name, rec.qos, sorted(rec.hosts))
        self.state.commit()
        return self._view(rec), token

    def list(self, scope: Scope = ADMIN) -> list[TenantView]:
        return [self._view(self.state.tenants[n]) for n in sorted(self.state.tenants)
                if scope.is_admin or n == scope.tenant]

    def get(self, name: str, scope: Scope = ADMIN) -> TenantView:
        return self._view(self._get(name, scope))

    def update(self, name: str, changes: dict[str, Any], scope: Scope = ADMIN) -> TenantView:
        """Replace the host list, the granted namespaces and/or the QoS reference."""
        require_admin(scope)
        rec = self._get(name, scope)
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise InvalidArgument(f"cannot change {sorted(unknown)}; changeable: {sorted(UPDATABLE)}")
        hosts = self._hosts(changes["hosts"], name) if changes.get("hosts") is not None else rec.hosts
        grants = self._grants(changes["namespaces"]) if changes.get("namespaces") is not None else rec.namespaces
        qos = self._checked_qos(changes["qos"]) if "qos" in changes else rec.qos
        with self.state.visibility_change():
            rec.hosts, rec.namespaces, rec.qos = hosts, grants, qos
        self.state.device.tenant_changed(name, rec.qos, sorted(rec.hosts))
        self.state.commit()
        return self._view(rec)

    def delete(self, name: str, scope: Scope = ADMIN) -> None:
        """Its hosts fall back to the subsystems' own access lists, unmasked."""
        require_admin(scope)
        self._get(name, scope)
        with self.state.visibility_change():
            del self.state.tenants[name]
        self.state.device.tenant_removed(name)
        self.state.commit()

    def rotate_token(self, name: str, scope: Scope = ADMIN) -> str:
        require_admin(scope)
        rec = self._get(name, scope)
        token = new_token(TENANT_TOKEN_PREFIX)
        rec.token_sha256 = hash_token(token)
        self.state.reindex_tenants()
        self.state.commit()
        return token

    def authenticate(self, token: str) -> str | None:
        """The tenant a bearer token belongs to, or None."""
        digest = hash_token(token)
        name = self.state.tenant_for_token(digest)
        if name is None or not same_hash(self.state.tenants[name].token_sha256, digest):
            return None
        return name
