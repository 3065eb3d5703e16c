"""Request and response bodies: XCreate / XUpdate / XPublic per resource.

Bounds here describe the API to clients (and to schemathesis); the domain services
enforce the invariants themselves, so a request the schema admits may still be refused
with 400/409.  Secrets are write-only: a tenant token appears once, in TenantCreated.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas_auth import DhchapFields, DhchapPublic

NQN_MAX = 223
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
KEY_MATERIAL_MAX = 128  # base64 of a 64-byte key is 88 characters
SIZE_MAX = 1 << 50
NSID_MAX = 0xFFFFFFFE
ANA_GROUP_MAX = 128  # ANAGRPMAX (nvmeof.controller.model)
PATH_MAX = 4096


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Nqn = Field(min_length=5, max_length=NQN_MAX, pattern=r"^nqn\.\S+$")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, object]] | None = None


# -- subsystems ---------------------------------------------------------------------------


class SubsystemCreate(Strict):
    nqn: str = Nqn
    id: str | None = Field(None, pattern=ID_PATTERN, description="stable id; derived from the NQN if absent")
    serial: str | None = Field(None, min_length=1, max_length=20)
    model: str | None = Field(None, min_length=1, max_length=40)
    max_namespaces: int | None = Field(None, ge=1, le=NSID_MAX)
    allow_any_host: bool = False
    hosts: list[str] = Field(default_factory=list, max_length=1024)


class SubsystemUpdate(Strict):
    serial: str | None = Field(None, min_length=1, max_length=20)
    model: str | None = Field(None, min_length=1, max_length=40)
    max_namespaces: int | None = Field(None, ge=1, le=NSID_MAX)
    allow_any_host: bool | None = None


class SubsystemPublic(BaseModel):
    id: str
    nqn: str
    serial: str
    model: str
    allow_any_host: bool
    hosts: list[str]
    max_namespaces: int
    namespaces: list[int]
    controllers: int


# -- namespaces ---------------------------------------------------------------------------


class Backend(Strict):
    kind: Literal["ram", "file"] = "ram"
    path: str | None = Field(None, min_length=1, max_length=PATH_MAX)


# -- QoS ----------------------------------------------------------------------------------

RATE_MAX = 1e12
WEIGHT_MAX = 1000.0


class QosLimits(Strict):
    """SPDK ``bdev_set_qos_limit`` names; per second, 0 = unlimited, MB = MiB."""

    rw_ios_per_sec: float | None = Field(None, ge=0, le=RATE_MAX)
    rw_mbytes_per_sec: float | None = Field(None, ge=0, le=RATE_MAX)
    r_mbytes_per_sec: float | None = Field(None, ge=0, le=RATE_MAX)
    w_mbytes_per_sec: float | None = Field(None, ge=0, le=RATE_MAX)
    weight: float | None = Field(None, gt=0, le=WEIGHT_MAX, description="share of a saturated device (DRR)")
    burst_ms: float | None = Field(None, ge=0, le=RATE_MAX, description="burst size in ms of the limit")


class QosPolicyCreate(QosLimits):
    name: str = Field(pattern=ID_PATTERN)


class QosPolicyUpdate(QosLimits):
    """Fields to change; ``null`` resets one to its default."""


class QosPolicyPublic(BaseModel):
    name: str
    rw_ios_per_sec: float
    rw_mbytes_per_sec: float
    r_mbytes_per_sec: float
    w_mbytes_per_sec: float
    weight: float
    burst_ms: float
    used_by: list[str] = Field(description="tenants and namespaces following this policy")


NamespaceQos = QosLimits | Annotated[str, Field(pattern=ID_PATTERN)] | None


class NamespaceCreate(Strict):
    nsid: int | None = Field(None, ge=1, le=NSID_MAX, description="allocated (lowest free) if absent")
    command_set: Literal["nvm", "kv"] = "nvm"
    backend: Backend = Field(default_factory=lambda: Backend(kind="ram", path=None))
    size_bytes: int | None = Field(None, ge=512, le=SIZE_MAX, description="NVM: a multiple of block_size")
    block_size: int | None = Field(None, ge=512, le=65536, description="NVM: power of two (default 512)")
    uuid: str | None = Field(None, max_length=64)
    nguid: str | None = Field(None, max_length=64)
    capacity_bytes: int | None = Field(None, ge=1, le=SIZE_MAX, description="KV: bytes of keys and values")
    max_key_size: int | None = Field(None, ge=1, le=16)
    max_value_size: int | None = Field(None, ge=1, le=SIZE_MAX)
    max_keys: int | None = Field(None, ge=1, le=SIZE_MAX)
    mode: Literal["strict", "cache"] | None = None
    ttl_s: float | None = Field(None, gt=0, le=1e9)
    qos: NamespaceQos = Field(None, description="inline limits or a QoS policy name")
    integrity: bool | None = Field(None, description="NVM: CRC32C tag per block (offload pipeline)")
    key: str | None = Field(None, pattern=KEY_ID_PATTERN, description="NVM: AES-256-XTS with this data key "
                                                                  "(implies integrity)")
    ana_group: int | None = Field(None, ge=1, le=ANA_GROUP_MAX, description="ANA group (multipath), default 1")


class NamespaceUpdate(Strict):
    qos: NamespaceQos = Field(None, description="inline limits, a QoS policy name, or null (unlimited)")
    ana_group: int = Field(1, ge=1, le=ANA_GROUP_MAX, description="move to this ANA group (hosts are told)")


class NamespacePublic(BaseModel):
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
    qos: dict[str, float] | str | None = None
    integrity: bool = False
    key: str | None = None
    ana_group: int = 1


# -- keys ---------------------------------------------------------------------------------


class KeyCreate(Strict):
    """Without ``material`` the device generates the key."""

    id: str | None = Field(None, pattern=KEY_ID_PATTERN, description="generated if absent")
    material: str | None = Field(None, min_length=1, max_length=KEY_MATERIAL_MAX, json_schema_extra={"writeOnly": True},
                                 description="base64 of a 64-byte AES-256-XTS key (halves differ); write-only")


class KeyPublic(BaseModel):
    id: str
    fingerprint: str = Field(description="first 8 bytes of SHA-256 of the wrapped key, hex")
    created: str
    used_by: list[str]


# -- hosts --------------------------------------------------------------------------------


class HostCreate(DhchapFields, Strict):
    nqn: str = Nqn


class HostPublic(BaseModel):
    nqn: str
    subsystem: str
    subsystem_id: str
    tenant: str | None
    connected_controllers: int
    dhchap: DhchapPublic | None = Field(None, exclude_if=lambda v: v is None,
                                        description="DH-HMAC-CHAP settings (absent: not required)")


# -- listeners ----------------------------------------------------------------------------


class ListenerCreate(Strict):
    id: int | None = Field(None, ge=1, le=0xFFFE, description="port id; allocated if absent")
    trtype: Literal["tcp"] = "tcp"
    adrfam: Literal["ipv4", "ipv6"] | None = None
    traddr: str = Field(min_length=2, max_length=64)
    trsvcid: int = Field(ge=0, le=65535, description="TCP port; 0 lets the kernel choose (see bound_port)")
    discovery: bool = True
    io: bool = True


class ListenerUpdate(Strict):
    discovery: bool | None = None
    io: bool | None = None


class ListenerPublic(BaseModel):
    id: int
    trtype: str
    adrfam: str
    traddr: str
    trsvcid: int
    bound_port: int | None
    discovery: bool
    io: bool
    listening: bool


# -- tenants ------------------------------------------------------------------------------


class NamespaceRef(Strict):
    subsystem: str = Field(min_length=1, max_length=NQN_MAX, description="subsystem NQN or id")
    nsid: int = Field(ge=1, le=NSID_MAX)


class NamespaceGrant(BaseModel):
    subsystem: str
    subsystem_id: str
    nsid: int


class TenantCreate(Strict):
    name: str = Field(pattern=ID_PATTERN)
    hosts: list[str] = Field(default_factory=list, max_length=1024)
    namespaces: list[NamespaceRef] = Field(default_factory=list, max_length=4096)
    qos: str | None = Field(None, pattern=ID_PATTERN, description="QoS policy name (must exist)")


class TenantUpdate(Strict):
    hosts: list[str] | None = Field(None, max_length=1024)
    namespaces: list[NamespaceRef] | None = Field(None, max_length=4096)
    qos: str | None = Field(None, pattern=ID_PATTERN)


class TenantPublic(BaseModel):
    name: str
    hosts: list[str]
    namespaces: list[NamespaceGrant]
    qos: str | None


class TenantCreated(TenantPublic):
    token: str = Field(description="bearer token for this tenant; shown once, only its hash is kept")


class TokenIssued(BaseModel):
    token: str


# -- controllers and statistics -----------------------------------------------------------


class ControllerPublic(BaseModel):
    id: str
    subsystem: str
    subsystem_id: str
    cntlid: int
    hostnqn: str
    hostid: str
    queues: list[int]
    io_queues: int
    kato_ms: int
    connected_since: float
    local_address: str
    local_port: int | None


class DirectionStats(BaseModel):
    ops: int
    bytes: int | None
    latency_us: dict[str, int | None]


class NamespaceStats(BaseModel):
    subsystem: str
    subsystem_id: str
    nsid: int
    errors: int
    read: DirectionStats
    write: DirectionStats
    other: DirectionStats


class ControllerStats(BaseModel):
    id: str
    subsystem: str
    cntlid: int
    hostnqn: str
    read_ops: int
    write_ops: int
    bytes_read: int
    bytes_written: int
    errors: int


class QosGroupStats(BaseModel):
    name: str
    level: str
    policy: dict[str, float]
    credit: dict[str, float]
    ops: dict[str, int]
    bytes: dict[str, int]
    errors: int
    aborted: int
    latency: dict[str, float] = Field(description="count, mean_us, max_us, p50_us, p99_us, p999_us")
    throttled_ios: int
    throttled_seconds: float
    limited_ios: int
    fair_wait_seconds: float
    queue_depth: int
    waiting_tokens: int
    waiting_budget: int
    inflight: int


class QosNamespaceStats(QosGroupStats):
    subsystem: str
    subsystem_id: str
    nsid: int


class QosTenantStats(QosGroupStats):
    tenant: str


class QosStats(BaseModel):
    namespaces: list[QosNamespaceStats]
    tenants: list[QosTenantStats]
    scheduler: dict[str, object] | None = None


class StatsPublic(BaseModel):
    namespaces: list[NamespaceStats]
    controllers: list[ControllerStats]
    qos: QosStats | None = None
