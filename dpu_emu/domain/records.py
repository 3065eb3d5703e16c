"""The device's domain model as plain dataclasses, and their one JSON (config) shape.

Each record converts to the configuration shape (``to_config``) and back
(``from_config``); the services keep these records and the live nvmeof objects in step.
Defaults are filled in on the way in, so an exported configuration is complete and a
save -> load -> save round trip is byte-identical.  Keys a record does not know are kept
in ``extra`` and written back unchanged (other parts of the device extend the shape).
"""

from __future__ import annotations

import ipaddress
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nvmeof.controller.model import NSID_MAX, validate_nqn
from nvmeof.wire.constants import DISCOVERY_NQN

from ..storage.kv import KvMode
from .errors import InvalidArgument

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
HEX_NGUID = re.compile(r"^[0-9a-f]{32}$")
TOKEN_HASH = re.compile(r"^[0-9a-f]{64}$")
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 65536
DEFAULT_BLOCK_SIZE = 512
DEFAULT_MAX_NAMESPACES = 1024
MAX_SIZE_BYTES = 1 << 50  # 1 PiB: stores are sparse, but a bound keeps arithmetic sane
KV_MAX_KEY_SIZE = 16
KV_DEFAULT_MAX_VALUE_SIZE = 1 << 20
PORT_MIN = 1
PORT_MAX = 65535
EPHEMERAL_PORT = 0  # "let the kernel choose": allowed for tests and ad-hoc runs
PORTID_MAX = 0xFFFE
SERIAL_MAX = 20  # Identify Controller SN is 20 ASCII characters
MODEL_MAX = 40  # MN is 40
DEFAULT_SERIAL = "DPUEMU0001"
DEFAULT_MODEL = "dpu-emu"
ID_NAMESPACE = uuidlib.UUID("6f1c1a52-8a5e-4f43-9d0c-1b6e0dd5e7a1")
SUBSYSTEM_ID_PREFIX = "ss-"
SUBSYSTEM_ID_HEX = 12


class CommandSet(StrEnum):
    NVM = "nvm"
    KV = "kv"


class BackendKind(StrEnum):
    RAM = "ram"
    FILE = "file"


class AddressFamilyName(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


# -- invariants on single values ---------------------------------------------------------


def check_nqn(nqn: Any, what: str = "NQN") -> str:
    if not isinstance(nqn, str):
        raise InvalidArgument(f"{what} must be a string")
    try:
        validate_nqn(nqn)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None
    if not nqn.isprintable() or any(c.isspace() for c in nqn):
        raise InvalidArgument(f"{what} must be printable without spaces: {nqn!r}")
    return nqn


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidArgument(f"{what} must match {ID_PATTERN.pattern}: {value!r}")
    return value


def check_int(value: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidArgument(f"{what} must be an integer in {lo}..{hi}: {value!r}")
    return value


def check_ascii(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isascii() \
            or not value.isprintable():
        raise InvalidArgument(f"{what} must be 1..{limit} printable ASCII characters: {value!r}")
    return value


def check_block_size(value: Any) -> int:
    bs = check_int(value, "block_size", MIN_BLOCK_SIZE, MAX_BLOCK_SIZE)
    if bs & (bs - 1):
        raise InvalidArgument(f"block_size must be a power of two: {bs}")
    return bs


def check_port(value: Any, what: str = "port") -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if value == EPHEMERAL_PORT:
        return EPHEMERAL_PORT
    return check_int(value, what, PORT_MIN, PORT_MAX)


def default_subsystem_id(nqn: str) -> str:
    return SUBSYSTEM_ID_PREFIX + uuidlib.uuid5(ID_NAMESPACE, nqn).hex[:SUBSYSTEM_ID_HEX]


def derived_ids(subnqn: str, nsid: int) -> tuple[str, str]:
    """UUID and NGUID derived from (subsystem, nsid) for namespaces configured without them."""
    ident = uuidlib.uuid5(ID_NAMESPACE, f"{subnqn}/{nsid}")
    nguid = uuidlib.uuid5(ID_NAMESPACE, f"nguid:{subnqn}/{nsid}")
    return str(ident), nguid.hex


def fresh_ids() -> tuple[str, str]:
    return str(uuidlib.uuid4()), uuidlib.uuid4().hex


def _enum(cls: type[StrEnum], value: Any, what: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in cls)
        raise InvalidArgument(f"{what} must be one of {choices}: {value!r}") from None


# -- namespaces ----------------------------------------------------------------------------

NAMESPACE_KEYS = frozenset({"nsid", "command_set", "size_bytes", "block_size", "backend", "uuid", "nguid",
                            "capacity_bytes", "max_key_size", "max_value_size", "max_keys", "mode", "ttl_s"})


@dataclass
class NamespaceRecord:
    nsid: int
    command_set: CommandSet
    backend: BackendKind
    uuid: str
    nguid: str
    path: str | None = None
    block_size: int = DEFAULT_BLOCK_SIZE  # NVM
    size_bytes: int = 0  # NVM
    capacity_bytes: int = 0  # KV
    max_key_size: int = KV_MAX_KEY_SIZE
    max_value_size: int = KV_DEFAULT_MAX_VALUE_SIZE
    max_keys: int | None = None
    mode: KvMode = KvMode.STRICT
    ttl_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: dict[str, Any], *, default_ids: tuple[str, str], nsid: int) -> NamespaceRecord:
        """Validate a namespace description (config or API) and fill in the defaults."""
        command_set = _enum(CommandSet, spec.get("command_set") or CommandSet.NVM, "command_set")
        backend_spec = spec.get("backend") or {"kind": "ram"}
        if not isinstance(backend_spec, dict):
            raise InvalidArgument("backend must be an object {kind, path}")
        kind = _enum(BackendKind, backend_spec.get("kind", BackendKind.RAM), "backend.kind")
        path = backend_spec.get("path")
        if kind is BackendKind.FILE:
            if not isinstance(path, str) or not path or "\0" in path:
                raise InvalidArgument("backend.path is required for a file backend")
        elif path is not None:
            raise InvalidArgument("a RAM backend takes no path")
        ident, nguid = _ids(spec, default_ids)
        rec = cls(nsid=nsid, command_set=command_set, backend=kind, path=path, uuid=ident, nguid=nguid,
                  extra={k: v for k, v in spec.items() if k not in NAMESPACE_KEYS})
        if command_set is CommandSet.NVM:
            rec.block_size = check_block_size(spec.get("block_size") or DEFAULT_BLOCK_SIZE)
            rec.size_bytes = check_int(spec.get("size_bytes"), "size_bytes", rec.block_size, MAX_SIZE_BYTES)
            if rec.size_bytes % rec.block_size:
                raise InvalidArgument(f"size_bytes {rec.size_bytes} is not a multiple of the block size "
                                      f"{rec.block_size}")
            for key in ("capacity_bytes", "max_keys", "mode", "ttl_s"):
                if spec.get(key) is not None:
                    raise InvalidArgument(f"{key} applies to KV namespaces only")
            return rec
        for key in ("size_bytes", "block_size"):
            if spec.get(key) is not None:
                raise InvalidArgument(f"{key} applies to NVM namespaces only (KV: capacity_bytes)")
        rec.capacity_bytes = check_int(spec.get("capacity_bytes"), "capacity_bytes", 1, MAX_SIZE_BYTES)
        rec.max_key_size = check_int(spec.get("max_key_size") or KV_MAX_KEY_SIZE, "max_key_size", 1,
                                     KV_MAX_KEY_SIZE)
        rec.max_value_size = check_int(spec.get("max_value_size") or min(KV_DEFAULT_MAX_VALUE_SIZE,
                                                                          rec.capacity_bytes),
                                       "max_value_size", 1, rec.capacity_bytes)
        if spec.get("max_keys") is not None:
            rec.max_keys = check_int(spec["max_keys"], "max_keys", 1, MAX_SIZE_BYTES)
        rec.mode = _enum(KvMode, spec.get("mode") or KvMode.STRICT, "mode")
        ttl = spec.get("ttl_s")
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
                raise InvalidArgument(f"ttl_s must be a positive number of seconds: {ttl!r}")
            if rec.mode is not KvMode.CACHE:
                raise InvalidArgument("ttl_s applies to cache-mode KV namespaces only")
            rec.ttl_s = ttl
        return rec

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        backend: dict[str, Any] = {"kind": self.backend.value}
        if self.path is not None:
            backend["path"] = self.path
        out.update(nsid=self.nsid, command_set=self.command_set.value, backend=backend, uuid=self.uuid,
                   nguid=self.nguid)
        if self.command_set is CommandSet.NVM:
            out.update(size_bytes=self.size_bytes, block_size=self.block_size)
        else:
            out.update(capacity_bytes=self.capacity_bytes, max_key_size=self.max_key_size,
                       max_value_size=self.max_value_size, mode=self.mode.value)
            if self.max_keys is not None:
                out["max_keys"] = self.max_keys
            if self.ttl_s is not None:
                out["ttl_s"] = self.ttl_s
        return out


def _ids(spec: dict[str, Any], default_ids: tuple[str, str]) -> tuple[str, str]:
    ident, nguid = default_ids
    if spec.get("uuid") is not None:
        try:
            ident = str(uuidlib.UUID(str(spec["uuid"])))
        except ValueError:
            raise InvalidArgument(f"uuid is not a UUID: {spec['uuid']!r}") from None
    if spec.get("nguid") is not None:
        raw = str(spec["nguid"]).replace("-", "").lower()
        if not HEX_NGUID.match(raw):
            raise InvalidArgument(f"nguid must be 32 hex digits: {spec['nguid']!r}")
        nguid = raw
    if uuidlib.UUID(ident).int == 0 or int(nguid, 16) == 0:
        raise InvalidArgument("uuid and nguid must not be zero")
    return ident, nguid


# -- subsystems ----------------------------------------------------------------------------

SUBSYSTEM_KEYS = frozenset({"id", "nqn", "serial", "model", "allow_any_host", "hosts", "max_namespaces",
                            "namespaces"})


@dataclass
class SubsystemRecord:
    id: str
    nqn: str
    serial: str = DEFAULT_SERIAL
    model: str = DEFAULT_MODEL
    allow_any_host: bool = False
    hosts: set[str] = field(default_factory=set)
    max_namespaces: int = DEFAULT_MAX_NAMESPACES
    namespaces: dict[int, NamespaceRecord] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: dict[str, Any], *, allow_any_host_default: bool) -> SubsystemRecord:
        nqn = check_nqn(spec.get("nqn"), "nqn")
        if nqn == DISCOVERY_NQN:
            raise InvalidArgument("the discovery NQN is reserved")
        sid = spec.get("id")
        sid = default_subsystem_id(nqn) if sid is None else check_id(sid, "id")
        allow = spec.get("allow_any_host")
        if allow is None:
            allow = allow_any_host_default
        if not isinstance(allow, bool):
            raise InvalidArgument("allow_any_host must be a boolean")
        hosts = spec.get("hosts") or []
        if not isinstance(hosts, list):
            raise InvalidArgument("hosts must be a list of host NQNs")
        return cls(id=sid, nqn=nqn, serial=check_ascii(spec.get("serial") or DEFAULT_SERIAL, "serial", SERIAL_MAX),
                   model=check_ascii(spec.get("model") or DEFAULT_MODEL, "model", MODEL_MAX),
                   allow_any_host=allow, hosts={check_nqn(h, "host NQN") for h in hosts},
                   max_namespaces=check_int(spec.get("max_namespaces") or DEFAULT_MAX_NAMESPACES, "max_namespaces",
                                            1, NSID_MAX),
                   extra={k: v for k, v in spec.items() if k not in SUBSYSTEM_KEYS})

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(id=self.id, nqn=self.nqn, serial=self.serial, model=self.model,
                   allow_any_host=self.allow_any_host, hosts=sorted(self.hosts), max_namespaces=self.max_namespaces,
                   namespaces=[self.namespaces[n].to_config() for n in sorted(self.namespaces)])
        return out


# -- listeners -----------------------------------------------------------------------------

PORT_KEYS = frozenset({"portid", "addr", "discovery", "io"})


@dataclass
class ListenerRecord:
    portid: int
    traddr: str
    trsvcid: int
    adrfam: AddressFamilyName = AddressFamilyName.IPV4
    discovery: bool = True
    io: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: dict[str, Any]) -> ListenerRecord:
        addr = spec.get("addr")
        if not isinstance(addr, dict):
            raise InvalidArgument("addr must be an object {trtype, adrfam, traddr, trsvcid}")
        if addr.get("trtype", "tcp") != "tcp":
            raise InvalidArgument("addr.trtype: only 'tcp' is supported")
        traddr = addr.get("traddr")
        if not isinstance(traddr, str) or not traddr:
            raise InvalidArgument("addr.traddr is required")
        adrfam = _enum(AddressFamilyName, addr.get("adrfam") or ("ipv6" if ":" in traddr else "ipv4"),
                       "addr.adrfam")
        _check_address(traddr, adrfam)
        discovery, io = spec.get("discovery", True), spec.get("io", True)
        if not isinstance(discovery, bool) or not isinstance(io, bool):
            raise InvalidArgument("discovery and io must be booleans")
        if not discovery and not io:
            raise InvalidArgument("a listener must serve discovery, I/O, or both")
        return cls(portid=check_int(spec.get("portid"), "portid", 1, PORTID_MAX), traddr=traddr,
                   trsvcid=check_port(addr.get("trsvcid"), "addr.trsvcid"), adrfam=adrfam, discovery=discovery,
                   io=io, extra={k: v for k, v in spec.items() if k not in PORT_KEYS})

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(portid=self.portid, discovery=self.discovery, io=self.io,
                   addr={"trtype": "tcp", "adrfam": self.adrfam.value, "traddr": self.traddr,
                         "trsvcid": str(self.trsvcid)})
        return out


def _check_address(traddr: str, adrfam: AddressFamilyName) -> None:
    try:
        ip = ipaddress.ip_address(traddr)
    except ValueError:
        raise InvalidArgument(f"addr.traddr must be an IP address: {traddr!r}") from None
    if (ip.version == 6) != (adrfam is AddressFamilyName.IPV6):
        raise InvalidArgument(f"addr.traddr {traddr} is not an {adrfam.value} address")


# -- tenants -------------------------------------------------------------------------------

TENANT_KEYS = frozenset({"name", "hosts", "namespaces", "qos", "token_sha256"})


@dataclass
class TenantRecord:
    name: str
    hosts: set[str] = field(default_factory=set)
    namespaces: set[tuple[str, int]] = field(default_factory=set)  # (subsystem NQN, nsid)
    qos: str | None = None  # a QoS policy name (the tenant's hosts share one group following it)
    token_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def grants_in(self, subnqn: str) -> frozenset[int]:
        return frozenset(nsid for nqn, nsid in self.namespaces if nqn == subnqn)

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(name=self.name, hosts=sorted(self.hosts),
                   namespaces=[{"subsystem": nqn, "nsid": nsid} for nqn, nsid in sorted(self.namespaces)],
                   qos=self.qos, token_sha256=self.token_sha256)
        return out
