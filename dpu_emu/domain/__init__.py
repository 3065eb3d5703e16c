"""Domain services: the device's model and its invariants, over the live nvmeof target.

Adapters (the REST API, the CLI) call these services and nothing below them.  Every
accepted change is saved atomically to the configuration file (when there is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .controllers import ControllerService
from .dhchap import DhchapService
from .errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    Forbidden,
    InvalidArgument,
    NotFound,
    PersistError,
    Unavailable,
)
from .keys import KeyService
from .listeners import ListenerService
from .namespaces import NamespaceService
from .qos import QosService
from .state import ADMIN, DevicePort, Scope, State, export_text
from .subsystems import HostService, SubsystemService
from .tenants import TenantService

__all__ = [
    "ADMIN", "AlreadyExists", "Conflict", "DomainError", "Forbidden", "InvalidArgument", "NotFound",
    "PersistError", "Scope", "Services", "Unavailable",
]


class Services:
    """One instance per device: the services share one :class:`State`."""

    def __init__(self, device: DevicePort, *, config_path: Path | None = None,
                 base_config: dict[str, Any] | None = None, on_commit: Any = None,
                 data_dir: Path | None = None) -> None:
        self.state = State(device, config_path=config_path, base_config=base_config or {}, on_commit=on_commit,
                           data_dir=data_dir)
        self.qos = QosService(self.state)
        self.subsystems = SubsystemService(self.state)
        self.hosts = HostService(self.state)
        self.namespaces = NamespaceService(self.state, self.qos)
        self.listeners = ListenerService(self.state)
        self.tenants = TenantService(self.state, self.qos)
        self.controllers = ControllerService(self.state)
        self.keys = KeyService(self.state)
        self.dhchap = DhchapService(self.state)

    def load(self, cfg: dict[str, Any]) -> None:
        """Build the model from a (validated) configuration; raises DomainError.  Nothing is
        saved; listeners are recorded here and started by the device."""
        for port in cfg.get("ports", []):
            self.listeners.register(port)
        for sub in cfg.get("subsystems", []):
            self.subsystems.create({k: v for k, v in sub.items() if k != "namespaces"},
                                   allow_any_host_default=True, commit=False)
            for ns in sub.get("namespaces", []):
                self.namespaces.add(sub["nqn"], ns, derive_ids=True, commit=False)
        for tenant in cfg.get("tenants", []):
            self.tenants.load(tenant)
        self.dhchap.load(cfg.get("dhchap"))

    def export(self) -> dict[str, Any]:
        return self.state.export()

    def export_text(self) -> str:
        """The configuration exactly as it is saved (sorted keys, stable order)."""
        return export_text(self.state.export())

    def save(self) -> None:
        self.state.commit()
