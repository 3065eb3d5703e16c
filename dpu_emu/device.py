"""The composition root: builds the target from the configuration and runs it.

``Device`` owns the stores, the offload pipeline engine and the data keys, the QoS
registry, the protocol target (subsystems, namespaces, listeners) and the NVMe/TCP
server, and shuts all of them down cleanly.  Each namespace's backend is stacked as
QoS admission -> (protected: CRC32C / AES-XTS in the pipeline) -> store.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from nvmeof.controller.faults import install as install_fault_hooks
from nvmeof.controller.model import Namespace, Target, TargetConfig
from nvmeof.target.server import NvmeTcpServer
from nvmeof.wire.constants import Csi

from . import config as cfgmod
from .domain import DomainError, Services
from .domain.capture import CaptureService
from .faults import FaultService
from .frontends import Frontend
from .protect.build import build_engine, namespace_backend, open_key_manager, start_engine
from .protect.kv import kv_namespace
from .qos import QosBackend, QosRegistry
from .storage.block import open_block_store

log = logging.getLogger("dpu_emu.device")
KV_NOVG = 4096  # optimal value granularity advertised for KV namespaces
UUID_NAMESPACE = uuid.UUID("6f1c1a52-8a5e-4f43-9d0c-1b6e0dd5e7a1")


@runtime_checkable
class Closable(Protocol):
    def flush(self) -> None: ...

    def close(self) -> None: ...


def _stable_ids(subnqn: str, nsid: int) -> tuple[bytes, bytes]:
    """UUID and NGUID derived from (subsystem, nsid), so they survive restarts."""
    ident = uuid.uuid5(UUID_NAMESPACE, f"{subnqn}/{nsid}")
    nguid = uuid.uuid5(UUID_NAMESPACE, f"nguid:{subnqn}/{nsid}")
    return ident.bytes, nguid.bytes


class Device:
    """``config_path``: where every accepted change is saved (None: changes stay in memory).
    ``frontends``: started after the listeners, stopped first (see :mod:`dpu_emu.frontends`)."""

    def __init__(self, cfg: dict[str, Any], *, config_path: str | Path | None = None,
                 frontends: Sequence[Frontend] = (), data_dir: str | Path | None = None) -> None:
        cfgmod.validate_config(cfg)
        self.cfg = cfg
        self.target = Target(TargetConfig(**cfg.get("transport", {})))
        self.server = NvmeTcpServer(self.target)
        self.faults = FaultService()  # fault injection, off until a fault is added
        install_fault_hooks(self.target, self.faults)
        self.stores: dict[tuple[str, int], Closable] = {}
        self.qos_backends: dict[tuple[str, int], QosBackend] = {}
        self.engine = build_engine(cfg.get("pipeline"))
        self.keys = open_key_manager(cfg.get("keys_file"))
        self.qos = QosRegistry(cfg.get("qos"))
        self.bound: dict[int, tuple[str, int]] = {}
        self.frontends = list(frontends)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.services = Services(self, config_path=Path(config_path) if config_path is not None else None,
                                 base_config=cfg, on_commit=self._committed,
                                 data_dir=Path(data_dir) if data_dir is not None else None)
        capture_dir = (cfg.get("capture") or {}).get("dir")
        self.captures = CaptureService(self.services.state, Path(capture_dir) if capture_dir else None)
        try:
            self.services.load(cfg)
        except DomainError as exc:
            self._close_stores()
            self.engine.close()
            raise cfgmod.ConfigError(str(exc)) from exc
        except BaseException:
            self._close_stores()
            self.engine.close()
            raise

    def _committed(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg

    def build_namespace(self, subnqn: str, ns_cfg: dict[str, Any]) -> Namespace:
        """Open the store a namespace's configuration describes and wrap it as a namespace
        (called by the domain services, on load and when one is added at run time)."""
        key = (subnqn, ns_cfg["nsid"])
        if key in self.stores:
            raise ValueError(f"namespace {key} already has a store")
        backend = ns_cfg["backend"]
        nsid = ns_cfg["nsid"]
        ident, nguid = _stable_ids(subnqn, nsid)
        ids: dict[str, Any] = dict(uuid=uuid.UUID(ns_cfg["uuid"]).bytes if "uuid" in ns_cfg else ident,
                                   nguid=bytes.fromhex(ns_cfg["nguid"]) if "nguid" in ns_cfg else nguid)
        if ns_cfg.get("command_set", "nvm") == "kv":
            # plain, or values AES-XTS + keys sealed ("key"): see dpu_emu.protect.kv
            parts = kv_namespace(ns_cfg, engine=self.engine, keys=self.keys, identity=ids["uuid"],
                                 name=f"{subnqn}/{nsid}", max_key_size=cfgmod.KV_MAX_KEY_SIZE,
                                 default_max_value_size=cfgmod.MIB)
            kv = parts.store
            self.stores[key] = parts.closable
            return Namespace(nsid=nsid, backend=self._admit(key, parts.backend, ns_cfg), csi=Csi.KV,
                             block_size=KV_NOVG,
                             max_key_size=kv.max_key_size, max_value_size=parts.max_value_size,
                             max_keys=ns_cfg.get("max_keys") or 0, capacity_bytes=ns_cfg["capacity_bytes"],
                             usage=lambda: kv.stats.bytes_used, **ids)
        bs = ns_cfg.get("block_size", 512)
        store = open_block_store(backend["kind"], size_bytes=ns_cfg["size_bytes"], block_size=bs,
                                 path=backend.get("path"))
        try:
            inner = namespace_backend(store, ns_cfg, engine=self.engine, keys=self.keys, name=f"{subnqn}/{nsid}")
        except BaseException:
            store.close()
            raise
        # a protected backend's flush/close also cover its integrity tags and its key
        self.stores[key] = inner if isinstance(inner, Closable) else store
        return Namespace(nsid=nsid, backend=self._admit(key, inner, ns_cfg), block_size=bs,
                         num_blocks=store.num_blocks, **ids)

    def _admit(self, key: tuple[str, int], inner: Any, ns_cfg: dict[str, Any]) -> QosBackend:
        """Every namespace goes through QoS admission, limited or not, so device-wide fair
        sharing and tenant limits see all traffic."""
        backend = self.qos.wrap(inner, subnqn=key[0], nsid=key[1], ns_cfg=ns_cfg)
        self.qos_backends[key] = backend
        return backend

    def tenant_changed(self, name: str, qos: str | None, hosts: list[str]) -> None:
        """A tenant was created or changed: its hosts share its QoS group."""
        if qos is not None and qos not in self.qos.policies:
            log.warning("tenant %s: QoS policy %r is not defined in the configuration's qos.policies; "
                        "the tenant gets its fair share but no limits", name, qos)
            qos = None
        self.qos.set_tenant(name, qos, hosts)

    def tenant_removed(self, name: str) -> None:
        self.qos.remove_tenant(name)

    def close_namespace(self, subnqn: str, nsid: int) -> None:
        """Flush and close the store of a namespace that was removed."""
        admitted = self.qos_backends.pop((subnqn, nsid), None)
        if admitted is not None:  # commands still waiting for admission complete with a status
            admitted.abort_queue()
            self.qos.forget_namespace(subnqn, nsid)
        store = self.stores.pop((subnqn, nsid), None)
        if store is not None:
            try:
                store.flush()
            finally:
                store.close()

    def _close_stores(self) -> None:
        for key in list(self.stores):
            self.close_namespace(*key)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await start_engine(self.engine)
        await self.services.listeners.start_all()
        for frontend in self.frontends:
            await frontend.start(self)

    @property
    def io_port(self) -> int:
        return next(self.bound[p.portid][1] for p in cfgmod.ports(self.cfg) if p.io)

    @property
    def discovery_port(self) -> int:
        only = [p for p in cfgmod.ports(self.cfg) if p.discovery and not p.io]
        chosen = only[0] if only else next(p for p in cfgmod.ports(self.cfg) if p.discovery)
        return self.bound[chosen.portid][1]

    @property
    def subnqn(self) -> str:
        return str(self.cfg["subsystems"][0]["nqn"])

    async def stop(self) -> None:
        for frontend in reversed(self.frontends):
            try:
                await frontend.stop()
            except Exception:  # one frontend failing to stop must not keep the stores open
                log.exception("frontend %s did not stop cleanly", getattr(frontend, "name", frontend))
        await self.server.close()
        self._close_stores()
        self.qos.close()
        await self.engine.aclose()

    async def run_forever(self) -> None:
        """Serve until SIGINT or SIGTERM, then shut down cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            log.info("dpu-emu serving %d subsystem(s)", len(self.target.subsystems))
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()
