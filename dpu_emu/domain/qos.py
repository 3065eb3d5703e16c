"""QoS over the management API: named policies, a namespace's limits, telemetry.

The device's :class:`dpu_emu.qos.QosRegistry` enforces; this service keeps the model's
invariants and persistence around it.  Every change applies live (the groups following a
policy update their buckets at once, no reconnect) and is saved: the ``qos`` section of
the configuration is exported from the registry, a namespace's ``qos`` lives in its
record (inline limits or a policy name), a tenant's ``qos`` names a policy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..qos.policy import POLICY_KEYS, QosPolicy, QosPolicyError
from .errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from .records import check_id
from .state import ADMIN, Scope, State, require_admin

QOS_SECTION = "qos"
POLICIES_KEY = "policies"
DEFAULTS = QosPolicy().to_dict()
NamespaceQos = dict[str, Any] | str | None


@dataclass(frozen=True)
class PolicyView:
    name: str
    rw_ios_per_sec: float
    rw_mbytes_per_sec: float
    r_mbytes_per_sec: float
    w_mbytes_per_sec: float
    weight: float
    burst_ms: float
    used_by: list[str]


def compact(policy: QosPolicy) -> dict[str, Any]:
    """A policy as saved: only the fields that differ from the defaults."""
    return {k: v for k, v in policy.to_dict().items() if v != DEFAULTS[k]}


class QosService:
    def __init__(self, state: State) -> None:
        self.state = state
        self.registry: Any = getattr(state.device, "qos", None)
        base = state.base.get(QOS_SECTION)
        self._settings = {k: copy.deepcopy(v) for k, v in (base or {}).items() if k != POLICIES_KEY}
        self._had_section = base is not None
        if self.registry is not None:
            state.exporters[QOS_SECTION] = self.export

    # -- persistence ----------------------------------------------------------------------

    def export(self) -> dict[str, Any] | None:
        policies = {name: compact(p) for name, p in sorted(self._policies().items())}
        if not policies and not self._had_section:
            return None
        return {**self._settings, POLICIES_KEY: policies}

    def _policies(self) -> dict[str, QosPolicy]:
        if self.registry is None:
            raise Conflict("QoS is not available on this device")
        policies: dict[str, QosPolicy] = self.registry.policies
        return policies

    # -- references -----------------------------------------------------------------------

    def users(self, name: str) -> list[str]:
        """Who follows policy ``name``: tenants and namespaces (by record)."""
        out = [f"tenant {t.name}" for t in self.state.tenants.values() if t.qos == name]
        for sub in self.state.subsystems.values():
            out += [f"namespace {sub.nqn}/{nsid}" for nsid, rec in sorted(sub.namespaces.items())
                    if rec.extra.get(QOS_SECTION) == name]
        return sorted(out)

    def check_reference(self, name: Any, what: str) -> str | None:
        """A tenant's or namespace's policy name: it must exist (400 otherwise)."""
        if name is None:
            return None
        ref = check_id(name, what)
        if self.registry is not None and ref not in self._policies():
            raise InvalidArgument(f"{what}: no QoS policy {ref!r} (create it under /v1/qos/policies first)")
        return ref

    def check_namespace_spec(self, spec: Any, where: str) -> NamespaceQos:
        """Inline limits (validated), a policy name (must exist) or None."""
        if spec is None or isinstance(spec, str):
            return self.check_reference(spec, where)
        if not isinstance(spec, dict):
            raise InvalidArgument(f"{where}: an object of limits, a policy name or null")
        try:
            return compact(QosPolicy.from_dict(spec, where))
        except QosPolicyError as exc:
            raise InvalidArgument(str(exc)) from None

    # -- policies -------------------------------------------------------------------------

    def _view(self, name: str, policy: QosPolicy) -> PolicyView:
        return PolicyView(name=name, used_by=self.users(name), **policy.to_dict())

    def _get(self, name: str) -> QosPolicy:
        policy = self._policies().get(name)
        if policy is None:
            raise NotFound(f"no QoS policy {name!r}")
        return policy

    def list_policies(self, scope: Scope = ADMIN) -> list[PolicyView]:
        require_admin(scope)
        return [self._view(n, p) for n, p in sorted(self._policies().items())]

    def get_policy(self, name: str, scope: Scope = ADMIN) -> PolicyView:
        require_admin(scope)
        return self._view(name, self._get(name))

    def _set(self, name: str, spec: dict[str, Any]) -> None:
        unknown = set(spec) - POLICY_KEYS
        if unknown:
            raise InvalidArgument(f"unknown QoS field(s) {sorted(unknown)}; allowed: {sorted(POLICY_KEYS)}")
        try:
            self.registry.set_policy(name, spec)
        except QosPolicyError as exc:
            raise InvalidArgument(str(exc)) from None

    def create_policy(self, spec: dict[str, Any], scope: Scope = ADMIN) -> PolicyView:
        require_admin(scope)
        fields = dict(spec)
        name = check_id(fields.pop("name", None), "policy name")
        if name in self._policies():
            raise AlreadyExists(f"QoS policy {name!r} exists")
        self._set(name, {k: v for k, v in fields.items() if v is not None})
        self.state.commit()
        return self._view(name, self._get(name))

    def update_policy(self, name: str, changes: dict[str, Any], scope: Scope = ADMIN) -> PolicyView:
        """Change some fields (``null`` resets one to its default); every tenant and
        namespace following the policy changes at once."""
        require_admin(scope)
        current = compact(self._get(name))
        for key, value in changes.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        self._set(name, current)
        self.state.commit()
        return self._view(name, self._get(name))

    def delete_policy(self, name: str, scope: Scope = ADMIN) -> None:
        require_admin(scope)
        self._get(name)
        users = self.users(name)
        if users:
            raise Conflict(f"QoS policy {name!r} is in use by {', '.join(users)}")
        try:
            self.registry.remove_policy(name)
        except QosPolicyError as exc:
            raise Conflict(str(exc)) from None
        self.state.commit()

    # -- namespaces -----------------------------------------------------------------------

    def set_namespace(self, ref: str, nsid: int, spec: NamespaceQos, scope: Scope = ADMIN) -> None:
        """Replace a namespace's limits live (inline, policy name, or None = unlimited)."""
        require_admin(scope)
        sub = self.state.subsystem(ref)
        rec = sub.namespaces.get(nsid)
        if rec is None:
            raise NotFound(f"no namespace {nsid} in {sub.nqn}")
        checked = self.check_namespace_spec(spec, f"namespace {nsid}: qos")
        if self.registry is not None:
            try:
                self.registry.set_namespace_policy(sub.nqn, nsid, checked)
            except (KeyError, QosPolicyError) as exc:
                raise InvalidArgument(f"namespace {nsid}: qos: {exc}") from None
        if checked is None:
            rec.extra.pop(QOS_SECTION, None)
        else:
            rec.extra[QOS_SECTION] = checked
        self.state.commit()

    # -- telemetry ------------------------------------------------------------------------

    def telemetry(self, scope: Scope = ADMIN) -> dict[str, Any] | None:
        """Per-group counters (ops/bytes by direction, latency percentiles, throttled
        time, queue depth).  A tenant sees its own group and its namespaces' groups."""
        if self.registry is None:
            return None
        namespaces = []
        for (nqn, nsid), group in sorted(self.registry.namespaces.items()):
            visible = self.state.visible_to(scope, nqn)
            if visible is not None and nsid not in visible:
                continue
            sub = self.state.subsystems.get(nqn)
            namespaces.append({"subsystem": nqn, "subsystem_id": sub.id if sub else "", "nsid": nsid,
                               **group.snapshot()})
        tenants = [{"tenant": name, **group.snapshot()} for name, group in sorted(self.registry.tenants.items())
                   if scope.is_admin or name == scope.tenant]
        out: dict[str, Any] = {"namespaces": namespaces, "tenants": tenants}
        if scope.is_admin:
            out["scheduler"] = self.registry.scheduler.snapshot()
        return out
