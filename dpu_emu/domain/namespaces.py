"""Namespaces of a subsystem: NVM (block) or KV command set, RAM or file backed.

Adding or removing a namespace goes through the live subsystem, which raises Namespace
Attribute Changed on the controllers whose host sees that NSID.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..keys import KeyStoreError
from ..storage.kv import KvError
from .ana import ANA_GROUP_FIELD, attach_namespace, move_namespace, namespace_group
from .errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from .qos import QOS_SECTION, QosService
from .records import BackendKind, NamespaceRecord, SubsystemRecord, check_int, derived_ids, fresh_ids
from .state import ADMIN, Scope, State, require_admin
from .stats import CountingBackend, IoStats


@dataclass(frozen=True)
class NamespaceView:
    subsystem: str
    subsystem_id: str
    nsid: int
    command_set: str
    backend: str
    path: str | None
    uuid: str
    nguid: str
    block_size: int | None
    size_bytes: int | None
    capacity_bytes: int | None
    used_bytes: int | None
    max_key_size: int | None
    max_value_size: int | None
    max_keys: int | None
    mode: str | None
    ttl_s: float | None
    qos: dict[str, Any] | str | None
    integrity: bool
    key: str | None
    ana_group: int = 1


class NamespaceService:
    def __init__(self, state: State, qos: QosService | None = None) -> None:
        self.state = state
        self.qos = qos

    def _view(self, sub: SubsystemRecord, rec: NamespaceRecord) -> NamespaceView:
        nvm = rec.command_set.value == "nvm"
        live = self.state.live(sub.nqn).namespaces.get(rec.nsid)
        used = live.usage() if live is not None and live.usage is not None else None
        return NamespaceView(
            subsystem=sub.nqn, subsystem_id=sub.id, nsid=rec.nsid, command_set=rec.command_set.value,
            backend=rec.backend.value, path=rec.path, uuid=rec.uuid, nguid=rec.nguid,
            block_size=rec.block_size if nvm else None, size_bytes=rec.size_bytes if nvm else None,
            capacity_bytes=None if nvm else rec.capacity_bytes, used_bytes=used,
            max_key_size=None if nvm else rec.max_key_size, max_value_size=None if nvm else rec.max_value_size,
            max_keys=None if nvm else rec.max_keys, mode=None if nvm else rec.mode.value,
            ttl_s=None if nvm else rec.ttl_s, qos=rec.extra.get(QOS_SECTION),
            integrity=bool(rec.extra.get("integrity") or rec.extra.get("key")), key=rec.extra.get("key"),
            ana_group=live.ana_group if live is not None else namespace_group(rec.extra))

    def _scoped(self, ref: str, scope: Scope) -> tuple[SubsystemRecord, frozenset[int] | None]:
        sub = self.state.subsystem(ref)
        visible = self.state.visible_to(scope, sub.nqn)
        if visible is not None and not visible:
            raise NotFound(f"no subsystem {ref!r}")
        return sub, visible

    def _free_nsid(self, sub: SubsystemRecord) -> int:
        for nsid in range(1, sub.max_namespaces + 1):
            if nsid not in sub.namespaces:
                return nsid
        raise Conflict(f"subsystem {sub.nqn} has all {sub.max_namespaces} namespaces in use")

    def _resolve(self, path: str) -> str:
        """A backend path as the store opens it: under the data directory when the device
        has one (and never outside it), else as given."""
        root = self.state.data_dir
        if root is None:
            return os.path.realpath(path)
        resolved = os.path.realpath(os.path.join(root, path))
        base = os.path.realpath(root)
        if os.path.commonpath([resolved, base]) != base:
            raise InvalidArgument(f"backend.path {path!r} lies outside the data directory")
        return resolved

    def _check_path_unused(self, rec: NamespaceRecord) -> str | None:
        if rec.backend is not BackendKind.FILE or rec.path is None:
            return None
        mine = self._resolve(rec.path)
        for sub in self.state.subsystems.values():
            for other in sub.namespaces.values():
                if other.path is not None and self._resolve(other.path) == mine:
                    raise Conflict(f"{rec.path} already backs namespace {other.nsid} of {sub.nqn}")
        return mine

    def add(self, ref: str, spec: dict[str, Any], scope: Scope = ADMIN, *, derive_ids: bool = False,
            commit: bool = True) -> NamespaceView:
        """Create a namespace; ``nsid`` is allocated (lowest free) when not given.  UUID and
        NGUID are generated unless given (derived from subsystem and NSID when loading a
        configuration written without them)."""
        require_admin(scope)
        sub = self.state.subsystem(ref)
        nsid = spec.get("nsid")
        if nsid is None:
            nsid = self._free_nsid(sub)
        else:
            nsid = check_int(nsid, "nsid", 1, sub.max_namespaces)
            if nsid in sub.namespaces:
                raise AlreadyExists(f"namespace {nsid} exists in {sub.nqn}")
        ids = derived_ids(sub.nqn, nsid) if derive_ids else fresh_ids()
        if commit and self.qos is not None and spec.get(QOS_SECTION) is not None:
            spec = {**spec, QOS_SECTION: self.qos.check_namespace_spec(spec[QOS_SECTION], f"namespace {nsid}: qos")}
        rec = NamespaceRecord.build(spec, default_ids=ids, nsid=nsid)
        grpid = namespace_group(spec)
        ns_cfg = rec.to_config()
        resolved = self._check_path_unused(rec)
        if resolved is not None:
            ns_cfg["backend"]["path"] = resolved
        try:
            ns = self.state.device.build_namespace(sub.nqn, ns_cfg)
        except (OSError, ValueError, KvError) as exc:
            raise InvalidArgument(f"cannot open the namespace's backend: {exc}") from exc
        except KeyStoreError as exc:
            raise InvalidArgument(f"namespace key: {exc}") from exc
        stats = IoStats()
        ns.backend = CountingBackend(ns.backend, stats)
        self.state.stats[(sub.nqn, nsid)] = stats
        attach_namespace(self.state.live(sub.nqn), ns, grpid)
        self.state.live(sub.nqn).add_namespace(ns)
        sub.namespaces[nsid] = rec
        if commit:
            self.state.commit()
        return self._view(sub, rec)

    def list(self, ref: str, scope: Scope = ADMIN) -> list[NamespaceView]:
        sub, visible = self._scoped(ref, scope)
        return [self._view(sub, sub.namespaces[n]) for n in sorted(sub.namespaces)
                if visible is None or n in visible]

    def get(self, ref: str, nsid: int, scope: Scope = ADMIN) -> NamespaceView:
        sub, visible = self._scoped(ref, scope)
        rec = sub.namespaces.get(nsid)
        if rec is None or (visible is not None and nsid not in visible):
            raise NotFound(f"no namespace {nsid} in {ref!r}")
        return self._view(sub, rec)

    def update(self, ref: str, nsid: int, changes: dict[str, Any], scope: Scope = ADMIN) -> NamespaceView:
        """Change what may change on a live namespace: its QoS (applies at once)."""
        require_admin(scope)
        unknown = set(changes) - {QOS_SECTION, ANA_GROUP_FIELD}
        if unknown:
            raise InvalidArgument(f"cannot change {sorted(unknown)}; changeable: ['{ANA_GROUP_FIELD}', "
                                  f"'{QOS_SECTION}']")
        if ANA_GROUP_FIELD in changes:
            grpid = namespace_group(changes)
            sub, _ = self._scoped(ref, scope)
            if nsid not in sub.namespaces:
                raise NotFound(f"no namespace {nsid} in {ref!r}")
            if move_namespace(self.state.live(sub.nqn), nsid, grpid):
                sub.namespaces[nsid].extra[ANA_GROUP_FIELD] = grpid
                self.state.commit()
        if QOS_SECTION in changes:
            if self.qos is None:
                raise Conflict("QoS is not available on this device")
            self.qos.set_namespace(ref, nsid, changes[QOS_SECTION], scope)
        return self.get(ref, nsid, scope)

    def remove(self, ref: str, nsid: int, scope: Scope = ADMIN) -> None:
        """Detach (hosts that saw it get the event), close its store, drop tenant grants.
        A file backend's data stays on disk."""
        require_admin(scope)
        state = self.state
        sub = state.subsystem(ref)
        if nsid not in sub.namespaces:
            raise NotFound(f"no namespace {nsid} in {sub.nqn}")
        with state.visibility_change():
            state.live(sub.nqn).remove_namespace(nsid)
            del sub.namespaces[nsid]
            for tenant in state.tenants.values():
                tenant.namespaces.discard((sub.nqn, nsid))
        state.device.close_namespace(sub.nqn, nsid)
        state.stats.pop((sub.nqn, nsid), None)
        state.commit()
