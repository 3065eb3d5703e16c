"""Wiring QoS from the device configuration (for the composition root, ``device.py``).

Proposed configuration (validated by :func:`validate_qos_config`)::

    {
      "qos": {                                   # optional, device-wide
        "timeslice_us": 1000,                    # bucket refill period (SPDK: 1000)
        "max_inflight_ios": 256,                 # device budget shared by DRR (0 = none)
        "max_inflight_bytes": 67108864,          #   "       "      in bytes    (0 = none)
        "quantum_bytes": 131072,                 # DRR credit per turn at weight 1
        "policies": {                            # named policies, referenced by name
          "gold":   {"rw_ios_per_sec": 50000, "rw_mbytes_per_sec": 800, "weight": 4},
          "bronze": {"rw_ios_per_sec": 2000, "w_mbytes_per_sec": 50, "burst_ms": 10}
        }
      },
      "subsystems": [{"namespaces": [
        {"nsid": 1, ..., "qos": {"rw_ios_per_sec": 10000}},   # inline policy, or
        {"nsid": 2, ..., "qos": "bronze"}                      # a policy name
      ]}],
      "tenants": [{"name": "acme", "hosts": [...], "qos": "gold"}]   # a policy name
    }

A policy referenced by several tenants or namespaces is a template: each gets its own
buckets.  A tenant's group is shared by all its hosts, namespaces and connections.  Every
tenant gets a group (unlimited without a ``qos``) so that it is its own DRR class.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nvmeof.controller.backend import NamespaceBackend

from .backend import KV, NVM, QosBackend
from .bucket import DEFAULT_TIMESLICE_US
from .group import NAMESPACE, TENANT, QosGroup
from .policy import QosPolicy, QosPolicyError
from .scheduler import (
    DEFAULT_MAX_INFLIGHT_BYTES,
    DEFAULT_MAX_INFLIGHT_IOS,
    DEFAULT_QUANTUM_BYTES,
    LoopLike,
    QosScheduler,
)

SECTION_KEYS = frozenset({"timeslice_us", "max_inflight_ios", "max_inflight_bytes", "quantum_bytes", "policies"})
PolicySpec = dict[str, Any] | str | None


def _int_field(section: dict[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise QosPolicyError(f"qos.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def validate_qos_config(cfg: dict[str, Any], *, check_tenants: bool = True) -> None:
    """Check the ``qos`` section, every namespace's ``qos`` and (unless ``check_tenants`` is
    false) every tenant's reference.  Raises :class:`QosPolicyError` (a ValueError) naming
    the field."""
    section = cfg.get("qos") or {}
    policies = _parse_section(section)[1]
    for sub in cfg.get("subsystems") or []:
        for ns in sub.get("namespaces") or []:
            where = f"subsystem {sub.get('nqn')} namespace {ns.get('nsid')}: qos"
            _resolve(ns.get("qos"), policies, where)
    for tenant in cfg.get("tenants") or [] if check_tenants else []:
        ref = tenant.get("qos")
        if ref is not None and ref not in policies:
            raise QosPolicyError(f"tenant {tenant.get('name')}: qos {ref!r} is not in qos.policies")


def _parse_section(section: Any) -> tuple[dict[str, int], dict[str, QosPolicy]]:
    if not isinstance(section, dict):
        raise QosPolicyError(f"qos must be an object, got {type(section).__name__}")
    unknown = set(section) - SECTION_KEYS
    if unknown:
        raise QosPolicyError(f"qos: unknown key(s) {sorted(unknown)}; allowed: {sorted(SECTION_KEYS)}")
    settings = {"timeslice_us": _int_field(section, "timeslice_us", DEFAULT_TIMESLICE_US, minimum=1),
                "max_inflight_ios": _int_field(section, "max_inflight_ios", DEFAULT_MAX_INFLIGHT_IOS, minimum=0),
                "max_inflight_bytes": _int_field(section, "max_inflight_bytes", DEFAULT_MAX_INFLIGHT_BYTES, minimum=0),
                "quantum_bytes": _int_field(section, "quantum_bytes", DEFAULT_QUANTUM_BYTES, minimum=1)}
    raw = section.get("policies") or {}
    if not isinstance(raw, dict):
        raise QosPolicyError("qos.policies must be an object mapping names to policies")
    policies = {name: QosPolicy.from_dict(spec, f"qos.policies.{name}") for name, spec in raw.items()}
    return settings, policies


def _resolve(spec: PolicySpec, policies: dict[str, QosPolicy], where: str) -> QosPolicy | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in policies:
            raise QosPolicyError(f"{where}: {spec!r} is not in qos.policies")
        return policies[spec]
    return QosPolicy.from_dict(spec, where)


class QosRegistry:
    """The device's scheduler plus its namespace and tenant groups, kept by name."""

    def __init__(self, section: dict[str, Any] | None = None, *, loop: LoopLike | None = None) -> None:
        settings, self.policies = _parse_section(section or {})
        self.timeslice_us = settings["timeslice_us"]
        self.scheduler = QosScheduler(max_inflight_ios=settings["max_inflight_ios"],
                                      max_inflight_bytes=settings["max_inflight_bytes"],
                                      quantum_bytes=settings["quantum_bytes"], loop=loop)
        self.namespaces: dict[tuple[str, int], QosGroup] = {}
        self.tenants: dict[str, QosGroup] = {}
        self._refs: dict[QosGroup, str | None] = {}  # group -> the policy name it follows
        self._host_group: dict[str, QosGroup] = {}

    @classmethod
    def from_config(cls, cfg: dict[str, Any], *, loop: LoopLike | None = None) -> QosRegistry:
        """Registry with every tenant of ``cfg`` (namespaces come through :meth:`wrap`)."""
        validate_qos_config(cfg)
        registry = cls(cfg.get("qos"), loop=loop)
        for tenant in cfg.get("tenants") or []:
            registry.set_tenant(tenant["name"], tenant.get("qos"), tenant.get("hosts") or [])
        return registry

    def _policy(self, spec: PolicySpec, where: str) -> QosPolicy:
        return _resolve(spec, self.policies, where) or QosPolicy()

    # -- namespaces -----------------------------------------------------------------------

    def wrap(self, inner: NamespaceBackend, *, subnqn: str, nsid: int, ns_cfg: dict[str, Any]) -> QosBackend:
        """Wrap a namespace's backend.  Wrap every namespace, limited or not, so that the
        device budget and tenant limits see all traffic."""
        where = f"subsystem {subnqn} namespace {nsid}: qos"
        spec = ns_cfg.get("qos")
        group = QosGroup(f"{subnqn}:{nsid}", self._policy(spec, where), level=NAMESPACE,
                         timeslice_us=self.timeslice_us)
        self.namespaces[(subnqn, nsid)] = group
        self._refs[group] = spec if isinstance(spec, str) else None
        kv = ns_cfg.get("command_set", NVM) == KV
        return QosBackend(inner, [group], self.scheduler, block_size=ns_cfg.get("block_size", 512),
                          command_set=KV if kv else NVM, classify=self._classify, name=group.name)

    def set_namespace_policy(self, subnqn: str, nsid: int, spec: PolicySpec) -> None:
        """Change a namespace's limits live (inline dict, policy name, or None = unlimited)."""
        group = self.namespaces[(subnqn, nsid)]
        group.update(self._policy(spec, f"subsystem {subnqn} namespace {nsid}: qos"))
        self._refs[group] = spec if isinstance(spec, str) else None

    def forget_namespace(self, subnqn: str, nsid: int) -> None:
        """Drop a removed namespace's group (close its QosBackend first)."""
        group = self.namespaces.pop((subnqn, nsid), None)
        if group is not None:
            self._refs.pop(group, None)

    # -- tenants --------------------------------------------------------------------------

    def set_tenant(self, name: str, ref: str | None, hosts: Iterable[str]) -> QosGroup:
        """Create or update a tenant: its policy reference and the hosts acting for it."""
        policy = self._policy(ref, f"tenant {name}: qos")
        group = self.tenants.get(name)
        if group is None:
            group = self.tenants[name] = QosGroup(name, policy, level=TENANT, timeslice_us=self.timeslice_us)
        else:
            group.update(policy)
        self._refs[group] = ref
        for host, owner in list(self._host_group.items()):
            if owner is group:
                del self._host_group[host]
        for host in hosts:
            self._host_group[host] = group
        return group

    def remove_tenant(self, name: str) -> None:
        group = self.tenants.pop(name, None)
        if group is None:
            return
        self._refs.pop(group, None)
        for host, owner in list(self._host_group.items()):
            if owner is group:
                del self._host_group[host]
        self.scheduler.forget(group)

    def group_for_host(self, hostnqn: str) -> QosGroup | None:
        return self._host_group.get(hostnqn)

    def _classify(self, cmd: Any) -> tuple[QosGroup, ...]:
        group = self._host_group.get(cmd.hostnqn)
        return (group,) if group is not None else ()

    # -- policies -------------------------------------------------------------------------

    def set_policy(self, name: str, spec: dict[str, Any]) -> None:
        """Create or change a named policy; every group following it changes live."""
        policy = QosPolicy.from_dict(spec, f"qos.policies.{name}")
        self.policies[name] = policy
        for group, ref in self._refs.items():
            if ref == name:
                group.update(policy)

    def remove_policy(self, name: str) -> None:
        users = [g.name for g, ref in self._refs.items() if ref == name]
        if users:
            raise QosPolicyError(f"qos policy {name!r} is still used by {sorted(users)}")
        self.policies.pop(name, None)

    # -- runtime --------------------------------------------------------------------------

    def abort(self, cid: int, qid: int, cntlid: int | None = None) -> bool:
        """The controller's Abort: True if the command still waited for QoS (and is now
        completed with Aborted by Request)."""
        return self.scheduler.abort(cid, qid, cntlid)

    def abort_queue(self, qid: int | None = None, cntlid: int | None = None) -> int:
        return self.scheduler.abort_queue(qid, cntlid)

    def snapshot(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.snapshot(),
                "policies": {name: p.to_dict() for name, p in self.policies.items()},
                "namespaces": {g.name: g.snapshot() for g in self.namespaces.values()},
                "tenants": {name: g.snapshot() for name, g in self.tenants.items()}}

    def close(self) -> None:
        self.scheduler.close()
