"""The composition root: builds the target from the configuration and runs it.

``Device`` owns the block stores, the protocol target (subsystems, namespaces,
listeners) and the NVMe/TCP server, and shuts all of them down cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from typing import Any

from nvmeof.controller.model import Listener, Namespace, Subsystem, Target, TargetConfig
from nvmeof.target.server import NvmeTcpServer
from nvmeof.wire.constants import AddressFamily, Csi

from . import config as cfgmod
from .datapath import BlockNamespaceBackend, KvNamespaceBackend
from .storage.block import BlockStore, open_block_store
from .storage.kv import KvMode, KvStore
from .storage.kv_file import open_kv_store

log = logging.getLogger("dpu_emu.device")
KV_NOVG = 4096  # optimal value granularity advertised for KV namespaces
UUID_NAMESPACE = uuid.UUID("6f1c1a52-8a5e-4f43-9d0c-1b6e0dd5e7a1")


def _stable_ids(subnqn: str, nsid: int) -> tuple[bytes, bytes]:
    """UUID and NGUID derived from (subsystem, nsid), so they survive restarts."""
    ident = uuid.uuid5(UUID_NAMESPACE, f"{subnqn}/{nsid}")
    nguid = uuid.uuid5(UUID_NAMESPACE, f"nguid:{subnqn}/{nsid}")
    return ident.bytes, nguid.bytes


class Device:
    def __init__(self, cfg: dict[str, Any]) -> None:
        cfgmod.validate_config(cfg)
        self.cfg = cfg
        self.target = Target(TargetConfig(**cfg.get("transport", {})))
        self.server = NvmeTcpServer(self.target)
        self.stores: list[BlockStore | KvStore] = []
        self.bound: dict[int, tuple[str, int]] = {}
        self._build()

    def _build(self) -> None:
        for sub_cfg in self.cfg["subsystems"]:
            sub = Subsystem(
                nqn=sub_cfg["nqn"], serial=sub_cfg.get("serial", "DPUEMU0001"),
                model=sub_cfg.get("model", "dpu-emu"), allow_any_host=sub_cfg.get("allow_any_host", True),
                hosts=set(sub_cfg.get("hosts", [])), max_namespaces=sub_cfg.get("max_namespaces", 1024))
            for ns_cfg in sub_cfg.get("namespaces", []):
                sub.add_namespace(self._namespace(sub.nqn, ns_cfg))
            self.target.add_subsystem(sub)

    def _namespace(self, subnqn: str, ns_cfg: dict[str, Any]) -> Namespace:
        backend = ns_cfg["backend"]
        nsid = ns_cfg["nsid"]
        ident, nguid = _stable_ids(subnqn, nsid)
        ids: dict[str, Any] = dict(uuid=uuid.UUID(ns_cfg["uuid"]).bytes if "uuid" in ns_cfg else ident,
                                   nguid=bytes.fromhex(ns_cfg["nguid"]) if "nguid" in ns_cfg else nguid)
        if ns_cfg.get("command_set", "nvm") == "kv":
            kv = open_kv_store(backend["kind"], path=backend.get("path"), capacity_bytes=ns_cfg["capacity_bytes"],
                               max_key_size=ns_cfg.get("max_key_size", cfgmod.KV_MAX_KEY_SIZE),
                               max_value_size=ns_cfg.get("max_value_size", cfgmod.MIB),
                               max_keys=ns_cfg.get("max_keys"), mode=KvMode(ns_cfg.get("mode", "strict")),
                               ttl_s=ns_cfg.get("ttl_s"))
            self.stores.append(kv)
            return Namespace(nsid=nsid, backend=KvNamespaceBackend(kv), csi=Csi.KV, block_size=KV_NOVG,
                             max_key_size=kv.max_key_size, max_value_size=kv.max_value_size,
                             max_keys=ns_cfg.get("max_keys") or 0, capacity_bytes=ns_cfg["capacity_bytes"],
                             usage=lambda: kv.stats.bytes_used, **ids)
        bs = ns_cfg.get("block_size", 512)
        store = open_block_store(backend["kind"], size_bytes=ns_cfg["size_bytes"], block_size=bs,
                                 path=backend.get("path"))
        self.stores.append(store)
        return Namespace(nsid=nsid, backend=BlockNamespaceBackend(store), block_size=bs,
                         num_blocks=store.num_blocks, **ids)

    async def start(self) -> None:
        for port in cfgmod.ports(self.cfg):
            listener = Listener(traddr=port.traddr, trsvcid=port.trsvcid, portid=port.portid,
                                adrfam=AddressFamily.IPV6 if port.adrfam == "ipv6" else AddressFamily.IPV4,
                                discovery=port.discovery, io=port.io)
            self.bound[port.portid] = await self.server.listen(listener)

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
        await self.server.close()
        for store in self.stores:
            try:
                store.flush()
            finally:
                store.close()
        self.stores.clear()

    async def run_forever(self) -> None:
        """Serve until SIGINT or SIGTERM, then shut down cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        log.info("dpu-emu serving %d subsystem(s)", len(self.target.subsystems))
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()
