"""Device configuration: one JSON shape for load and save (nvmetcli's ports / subsystems /
hosts, extended as the device grows), validated on load, written atomically."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SUBSYSTEM_NQN = "nqn.2026-11.io.dpu-emu:default"
MIB = 1 << 20
GIB = 1 << 30
KV_MAX_KEY_SIZE = 16

DEFAULT_CONFIG: dict[str, Any] = {
    "ports": [
        {"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "4420"},
         "discovery": True, "io": True},
        {"portid": 2, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "8009"},
         "discovery": True, "io": False},
    ],
    "subsystems": [
        {
            "nqn": DEFAULT_SUBSYSTEM_NQN,
            "serial": "DPUEMU0001",
            "model": "dpu-emu",
            "allow_any_host": True,
            "hosts": [],
            "namespaces": [
                {"nsid": 1, "size_bytes": GIB, "block_size": 512, "backend": {"kind": "ram"}},
                {"nsid": 2, "command_set": "kv", "capacity_bytes": 256 * MIB, "max_value_size": MIB,
                 "mode": "cache", "backend": {"kind": "ram"}},
            ],
        }
    ],
    # limits that protect the process (README "Transport limits"; nvmeof.target.limits)
    "transport": {"max_r2t_per_connection": 64, "max_connection_memory": 64 * MIB,
                  "max_connections_per_listener": 1024, "icreq_timeout_s": 10},
}

# name -> (minimum, maximum, number type); 0 means unlimited where the minimum is 0
LIMIT_KEYS: dict[str, tuple[float, float, type | tuple[type, ...]]] = {
    "max_r2t_per_connection": (1, 1024, int),
    "max_connection_memory": (0, 64 * GIB, int),  # 0 or at least MIN_CONNECTION_MEMORY
    "max_connections_per_listener": (0, 1 << 20, int),
    "icreq_timeout_s": (0, 3600, (int, float)),  # 0 disables the deadline
}
MIN_CONNECTION_MEMORY = MIB
TRANSPORT_KEYS = frozenset({"maxh2cdata", "in_capsule_size", "mdts_bytes", "max_queue_depth",
                            "max_io_queues", "c2h_success", "kas_100ms", *LIMIT_KEYS})


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending field."""


def default_config() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_CONFIG)


def load_config(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    try:
        validate_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return cfg


def save_config(cfg: dict[str, Any], path: str | Path) -> None:
    """Write atomically: temp file in the same directory, fsync, rename."""
    validate_config(cfg)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(cfg, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class PortConfig:
    portid: int
    traddr: str
    trsvcid: str
    adrfam: str
    discovery: bool
    io: bool


def _require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected an object, got {obj!r}")
    if key not in obj:
        raise ConfigError(f"{where}: missing '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def validate_config(cfg: Any) -> None:
    _validate_core(cfg)
    _validate_extensions(cfg)


def _validate_extensions(cfg: dict[str, Any]) -> None:
    """Sections owned by the offload pipeline (pipeline, keys_file, per-namespace integrity
    and key) and by QoS (qos, per-namespace qos); both modules raise ValueErrors."""
    from .protect.build import validate_namespace_protection, validate_pipeline_config
    from .qos import validate_qos_config

    validate_pipeline_config(cfg)
    for i, sub in enumerate(cfg.get("subsystems", [])):
        for j, ns in enumerate(sub.get("namespaces", [])):
            validate_namespace_protection(ns, f"subsystems[{i}].namespaces[{j}]")
    try:
        validate_qos_config(cfg, check_tenants=False)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _validate_core(cfg: Any) -> None:
    if not isinstance(cfg, dict):
        raise ConfigError("configuration must be a JSON object")
    ports = _require(cfg, "ports", list, "config")
    seen_ports: set[int] = set()
    for i, port in enumerate(ports):
        where = f"ports[{i}]"
        portid = _require(port, "portid", int, where)
        if portid in seen_ports or not 0 < portid < 0xFFFF:
            raise ConfigError(f"{where}.portid: {portid} duplicate or out of range")
        seen_ports.add(portid)
        addr = _require(port, "addr", dict, where)
        if addr.get("trtype", "tcp") != "tcp":
            raise ConfigError(f"{where}.addr.trtype: only 'tcp' is supported")
        if addr.get("adrfam", "ipv4") not in ("ipv4", "ipv6"):
            raise ConfigError(f"{where}.addr.adrfam: 'ipv4' or 'ipv6'")
        _require(addr, "traddr", str, f"{where}.addr")
        svc = _require(addr, "trsvcid", str, f"{where}.addr")
        if not svc.isdigit() or int(svc) > 65535:
            raise ConfigError(f"{where}.addr.trsvcid: {svc!r} is not a TCP port")
    nqns: set[str] = set()
    for i, sub in enumerate(_require(cfg, "subsystems", list, "config")):
        where = f"subsystems[{i}]"
        nqn = _require(sub, "nqn", str, where)
        if nqn in nqns:
            raise ConfigError(f"{where}.nqn: duplicate {nqn}")
        nqns.add(nqn)
        _optional(sub, "id", str, where)
        for h, host in enumerate(_optional(sub, "hosts", list, where) or []):
            if not isinstance(host, str):
                raise ConfigError(f"{where}.hosts[{h}]: expected a host NQN string")
        nsids: set[int] = set()
        for j, ns in enumerate(_optional(sub, "namespaces", list, where) or []):
            nwhere = f"{where}.namespaces[{j}]"
            nsid = _require(ns, "nsid", int, nwhere)
            if nsid in nsids or nsid < 1:
                raise ConfigError(f"{nwhere}.nsid: {nsid} duplicate or invalid")
            nsids.add(nsid)
            command_set = ns.get("command_set", "nvm")
            if command_set == "kv":
                _validate_kv_namespace(ns, nwhere)
            elif command_set == "nvm":
                size = _require(ns, "size_bytes", int, nwhere)
                bs = ns.get("block_size", 512)
                if not isinstance(bs, int) or bs & (bs - 1) or not 512 <= bs <= 65536:
                    raise ConfigError(f"{nwhere}.block_size: power of two in 512..65536")
                if size <= 0 or size % bs:
                    raise ConfigError(f"{nwhere}.size_bytes: positive multiple of the block size")
            else:
                raise ConfigError(f"{nwhere}.command_set: 'nvm' or 'kv'")
            backend = _require(ns, "backend", dict, nwhere)
            kind = backend.get("kind")
            if kind not in ("ram", "file"):
                raise ConfigError(f"{nwhere}.backend.kind: 'ram' or 'file'")
            if kind == "file":
                _require(backend, "path", str, f"{nwhere}.backend")
    _validate_tenants(cfg)
    unknown = set(_optional(cfg, "transport", dict, "config") or {}) - TRANSPORT_KEYS
    if unknown:
        raise ConfigError(f"transport: unknown keys {sorted(unknown)}")
    _validate_limits(cfg.get("transport") or {})
    capture = _optional(cfg, "capture", dict, "config") or {}
    if set(capture) - {"dir"}:
        raise ConfigError(f"capture: unknown keys {sorted(set(capture) - {'dir'})}; known: ['dir']")
    if capture.get("dir") is not None and (not isinstance(capture["dir"], str) or not capture["dir"]):
        raise ConfigError("capture.dir: a directory path (string)")


def _validate_limits(transport: dict[str, Any]) -> None:
    for key, (low, high, kind) in LIMIT_KEYS.items():
        if key not in transport:
            continue
        value = transport[key]
        typed = isinstance(value, kind) and not isinstance(value, bool)
        if not typed or not low <= transport[key] <= high:
            raise ConfigError(f"transport.{key}: expected a number in {low}..{high}, got {value!r}")
    memory = transport.get("max_connection_memory")
    if memory:
        floor = max(MIN_CONNECTION_MEMORY, transport.get("mdts_bytes", MIB))
        if memory < floor:
            raise ConfigError(f"transport.max_connection_memory: {memory} is below {floor} "
                              "(at least 1 MiB and mdts_bytes, or 0 for unlimited)")


def _optional(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if obj.get(key) is None:
        return None
    return _require(obj, key, kind, where)


def _validate_tenants(cfg: dict[str, Any]) -> None:
    """Shape only; the domain services check names, NQNs and references on load."""
    for i, tenant in enumerate(_optional(cfg, "tenants", list, "config") or []):
        where = f"tenants[{i}]"
        _require(tenant, "name", str, where)
        _optional(tenant, "token_sha256", str, where)
        _optional(tenant, "qos", str, where)
        for h, host in enumerate(_optional(tenant, "hosts", list, where) or []):
            if not isinstance(host, str):
                raise ConfigError(f"{where}.hosts[{h}]: expected a host NQN string")
        for j, grant in enumerate(_optional(tenant, "namespaces", list, where) or []):
            _require(grant, "subsystem", str, f"{where}.namespaces[{j}]")
            _require(grant, "nsid", int, f"{where}.namespaces[{j}]")


def _validate_kv_namespace(ns: dict[str, Any], where: str) -> None:
    capacity = _require(ns, "capacity_bytes", int, where)
    if capacity <= 0:
        raise ConfigError(f"{where}.capacity_bytes: must be positive")
    max_value = ns.get("max_value_size", MIB)
    if not isinstance(max_value, int) or not 0 < max_value <= capacity:
        raise ConfigError(f"{where}.max_value_size: 1..capacity_bytes")
    max_key = ns.get("max_key_size", KV_MAX_KEY_SIZE)
    if not isinstance(max_key, int) or not 1 <= max_key <= KV_MAX_KEY_SIZE:
        raise ConfigError(f"{where}.max_key_size: 1..{KV_MAX_KEY_SIZE}")
    if ns.get("mode", "strict") not in ("strict", "cache"):
        raise ConfigError(f"{where}.mode: 'strict' or 'cache'")
    ttl = ns.get("ttl_s")
    if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0 or ns.get("mode") != "cache"):
        raise ConfigError(f"{where}.ttl_s: a positive number of seconds, cache mode only")
    max_keys = ns.get("max_keys")
    if max_keys is not None and (not isinstance(max_keys, int) or max_keys <= 0):
        raise ConfigError(f"{where}.max_keys: a positive integer")


def ports(cfg: dict[str, Any]) -> list[PortConfig]:
    return [PortConfig(p["portid"], p["addr"]["traddr"], p["addr"]["trsvcid"], p["addr"].get("adrfam", "ipv4"),
                       bool(p.get("discovery", True)), bool(p.get("io", True))) for p in cfg["ports"]]


def with_overrides(cfg: dict[str, Any], *, address: str | None = None, port: int | None = None,
                   discovery_port: int | None = None) -> dict[str, Any]:
    """Apply the CLI's --address/--port/--discovery-port to the I/O and discovery-only ports."""
    cfg = copy.deepcopy(cfg)
    for p in cfg["ports"]:
        addr = p["addr"]
        if address is not None:
            addr["traddr"] = address
            addr["adrfam"] = "ipv6" if ":" in address else "ipv4"
        if p.get("io", True) and port is not None:
            addr["trsvcid"] = str(port)
        elif not p.get("io", True) and discovery_port is not None:
            addr["trsvcid"] = str(discovery_port)
    validate_config(cfg)
    return cfg
