"""Frontends: management interfaces that run beside the device (the REST API is one).

dpu_emu does not know them by name: an installed package registers a factory in the
entry-point group ``dpu_emu.frontends`` (control_api registers ``rest``).  A factory is
called with :class:`FrontendOptions` and returns a :class:`Frontend`, which the device
starts after its listeners and stops before them, on the device's event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .device import Device

log = logging.getLogger("dpu_emu.frontends")
ENTRY_POINT_GROUP = "dpu_emu.frontends"
DEFAULT_REST_ADDRESS = "127.0.0.1"
DEFAULT_REST_PORT = 8080


@dataclass(frozen=True)
class FrontendOptions:
    address: str = DEFAULT_REST_ADDRESS
    port: int = DEFAULT_REST_PORT  # 0: an ephemeral port (the frontend reports what it bound)
    admin_token_file: Path | None = None  # None: DPU_EMU_ADMIN_TOKEN or the default state file


@runtime_checkable
class Frontend(Protocol):
    name: str

    async def start(self, device: Device) -> None: ...

    async def stop(self) -> None: ...


class FrontendError(RuntimeError):
    """A frontend could not be loaded or built."""


def available() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_frontends(options: FrontendOptions, *, exclude: frozenset[str] = frozenset()) -> list[Frontend]:
    """Build every installed frontend not in ``exclude``.  Logs a warning when none is
    installed, so a missing REST API is never silent."""
    found = available()
    if not found:
        log.warning("no management frontend is installed (entry-point group %r is empty): the REST API is "
                    "not served; install dpu-emu with its dependencies (pip install -e .)", ENTRY_POINT_GROUP)
    built: list[Frontend] = []
    for name in sorted(set(found) - exclude):
        try:
            factory = found[name].load()
            frontend = factory(options)
        except Exception as exc:
            raise FrontendError(f"frontend {name!r} ({found[name].value}) could not be loaded: {exc}") from exc
        if not isinstance(frontend, Frontend):
            raise FrontendError(f"frontend {name!r} does not provide start(device) and stop()")
        built.append(frontend)
    return built
