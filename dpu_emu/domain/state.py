"""The live device model: records, the nvmeof objects they drive, masking, persistence.

Theory of operation
-------------------
:class:`State` holds the records (subsystems with their namespaces and hosts,
listeners, tenants) and links them to the device's live :class:`nvmeof` target.  The
services change records and live objects together and end every accepted change with
:meth:`State.commit`, which exports the whole model and saves it atomically.

Per-host namespace masking: a host NQN that belongs to a tenant sees, in a subsystem,
only the namespaces its tenant was granted there, and may connect to a subsystem only
if the tenant holds at least one namespace in it (``Target.host_filter``).  Hosts that
belong to no tenant see every namespace of the subsystems that admit them.  Changes to
who sees what go through :meth:`State.visibility_change`: it notes what each live
controller sees, applies the change, then disconnects controllers whose host lost the
subsystem and raises Namespace Attribute Changed for every NSID that appeared or
vanished for the others.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nvmeof.controller.controller import Controller
from nvmeof.controller.model import Namespace, Subsystem, Target
from nvmeof.target.server import NvmeTcpServer

from .. import config as cfgmod
from .errors import Forbidden, NotFound, PersistError
from .records import ListenerRecord, SubsystemRecord, TenantRecord
from .stats import IoStats

log = logging.getLogger("dpu_emu.domain")
MANAGED_SECTIONS = ("ports", "subsystems", "tenants")


class DevicePort(Protocol):
    """What the services need from the device (the composition root)."""

    target: Target
    server: NvmeTcpServer
    bound: dict[int, tuple[str, int]]

    def build_namespace(self, subnqn: str, ns_cfg: dict[str, Any]) -> Namespace: ...

    def close_namespace(self, subnqn: str, nsid: int) -> None: ...

    def tenant_changed(self, name: str, qos: str | None, hosts: list[str]) -> None: ...

    def tenant_removed(self, name: str) -> None: ...


@dataclass(frozen=True)
class Scope:
    """Who is asking: the administrator (``tenant`` None) or one tenant."""

    tenant: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.tenant is None


ADMIN = Scope()


def require_admin(scope: Scope) -> None:
    if not scope.is_admin:
        raise Forbidden("this operation needs the administrator's token")


@dataclass(eq=False)
class MaskedSubsystem(Subsystem):
    """A subsystem whose namespace list depends on the host (tenant masking)."""

    state: State | None = field(default=None, repr=False)
    _visible: dict[str, dict[int, Namespace]] = field(default_factory=dict, repr=False)

    def visible_namespaces(self, hostnqn: str) -> dict[int, Namespace]:
        cached = self._visible.get(hostnqn)
        if cached is not None:
            return cached
        allowed = self.state.allowed_nsids(self.nqn, hostnqn) if self.state is not None else None
        if allowed is None:
            return self.namespaces
        view = {nsid: ns for nsid, ns in sorted(self.namespaces.items()) if nsid in allowed}
        self._visible[hostnqn] = view
        return view

    def invalidate(self) -> None:
        self._visible.clear()

    def add_namespace(self, ns: Namespace) -> None:
        if ns.nsid in self.namespaces:
            raise ValueError(f"NSID {ns.nsid} already exists in {self.nqn}")
        if ns.nsid > self.max_namespaces:
            raise ValueError(f"NSID {ns.nsid} exceeds the subsystem's {self.max_namespaces} namespaces")
        self.namespaces[ns.nsid] = ns
        self.invalidate()
        for ctrl in list(self.controllers.values()):
            if ns.nsid in self.visible_namespaces(ctrl.hostnqn):
                ctrl.namespace_changed(ns.nsid)

    def remove_namespace(self, nsid: int) -> Namespace:
        saw = [c for c in self.controllers.values() if nsid in self.visible_namespaces(c.hostnqn)]
        ns = self.namespaces.pop(nsid)
        self.invalidate()
        for ctrl in saw:
            ctrl.namespace_changed(nsid)
        return ns


class State:
    def __init__(self, device: DevicePort, *, config_path: Path | None, base_config: dict[str, Any],
                 on_commit: Callable[[dict[str, Any]], None] | None = None, data_dir: Path | None = None) -> None:
        self.device = device
        self.data_dir = data_dir  # file backends must lie under it (relative paths resolve there)
        self.target = device.target
        self.config_path = config_path
        self.base = {k: copy.deepcopy(v) for k, v in base_config.items() if k not in MANAGED_SECTIONS}
        self.on_commit = on_commit
        self.subsystems: dict[str, SubsystemRecord] = {}  # by NQN
        self.listeners: dict[int, ListenerRecord] = {}  # by port id
        self.tenants: dict[str, TenantRecord] = {}  # by name
        self.stats: dict[tuple[str, int], IoStats] = {}
        self._host_tenant: dict[str, str] = {}
        self._token_index: dict[str, str] = {}  # token hash -> tenant name
        # Other parts of the device (QoS, keys...) may own top-level sections: name -> exporter.
        self.exporters: dict[str, Callable[[], Any]] = {}
        self.target.host_filter = self.host_filter

    # -- lookups ---------------------------------------------------------------------------

    def subsystem(self, ref: str) -> SubsystemRecord:
        """By NQN or by id."""
        rec = self.subsystems.get(ref)
        if rec is not None:
            return rec
        for rec in self.subsystems.values():
            if rec.id == ref:
                return rec
        raise NotFound(f"no subsystem {ref!r}")

    def live(self, nqn: str) -> MaskedSubsystem:
        sub = self.target.subsystems[nqn]
        assert isinstance(sub, MaskedSubsystem)
        return sub

    def tenant_of(self, hostnqn: str) -> TenantRecord | None:
        name = self._host_tenant.get(hostnqn)
        return None if name is None else self.tenants[name]

    def tenant_for_token(self, digest: str) -> str | None:
        return self._token_index.get(digest)

    def reindex_tenants(self) -> None:
        self._host_tenant = {h: t.name for t in self.tenants.values() for h in t.hosts}
        self._token_index = {t.token_sha256: t.name for t in self.tenants.values() if t.token_sha256}

    def visible_to(self, scope: Scope, subnqn: str) -> frozenset[int] | None:
        """NSIDs of ``subnqn`` the scope may see (None: all of them)."""
        if scope.is_admin:
            return None
        tenant = self.tenants.get(scope.tenant or "")
        return frozenset() if tenant is None else tenant.grants_in(subnqn)

    # -- masking ---------------------------------------------------------------------------

    def allowed_nsids(self, subnqn: str, hostnqn: str) -> frozenset[int] | None:
        tenant = self.tenant_of(hostnqn)
        return None if tenant is None else tenant.grants_in(subnqn)

    def host_filter(self, subsystem: Subsystem, hostnqn: str) -> bool:
        tenant = self.tenant_of(hostnqn)
        return tenant is None or bool(tenant.grants_in(subsystem.nqn))

    def all_controllers(self) -> Iterator[Controller]:
        for sub in list(self.target.subsystems.values()):
            yield from list(sub.controllers.values())

    @contextmanager
    def visibility_change(self) -> Iterator[None]:
        before = [(ctrl, frozenset(ctrl.subsystem.visible_namespaces(ctrl.hostnqn)))
                  for ctrl in self.all_controllers() if ctrl.subsystem is not None]
        try:
            yield
        finally:
            self.reindex_tenants()
            for live in self.target.subsystems.values():
                if isinstance(live, MaskedSubsystem):
                    live.invalidate()
            for ctrl, saw in before:
                sub = ctrl.subsystem
                if not ctrl.alive or sub is None or sub.nqn not in self.target.subsystems:
                    continue
                if not self.target.host_may_see(sub, ctrl.hostnqn):
                    ctrl.release("host access to the subsystem was removed")
                    continue
                for nsid in sorted(saw ^ frozenset(sub.visible_namespaces(ctrl.hostnqn))):
                    ctrl.namespace_changed(nsid)

    # -- persistence -----------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        cfg = copy.deepcopy(self.base)
        cfg["ports"] = [self.listeners[p].to_config() for p in sorted(self.listeners)]
        cfg["subsystems"] = [self.subsystems[n].to_config() for n in sorted(self.subsystems)]
        cfg["tenants"] = [self.tenants[n].to_config() for n in sorted(self.tenants)]
        for section, exporter in sorted(self.exporters.items()):
            value = exporter()
            if value is None:  # the section is absent (nothing to save)
                cfg.pop(section, None)
            else:
                cfg[section] = value
        return cfg

    def commit(self) -> None:
        """Save the model (temp file + fsync + rename) and tell the device."""
        cfg = self.export()
        if self.on_commit is not None:
            self.on_commit(cfg)
        if self.config_path is None:
            return
        try:
            cfgmod.save_config(cfg, self.config_path)
        except (OSError, cfgmod.ConfigError) as exc:
            log.error("could not save the configuration to %s: %s", self.config_path, exc)
            raise PersistError(f"the change is live but was not saved to {self.config_path}: {exc}") from exc


def export_text(cfg: dict[str, Any]) -> str:
    """The exact text save_config writes for ``cfg``."""
    return json.dumps(cfg, indent=2, sort_keys=True) + "\n"
