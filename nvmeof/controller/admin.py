"""Admin command handlers: Identify, Get Log Page, Get/Set Features, Keep Alive, Abort.

Each handler takes the controller and the received command and returns
``(status, dw0, data)`` or raises an :class:`~nvmeof.errors.NvmeStatus`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import FeatureNotSaveable, InvalidField, InvalidLogPage, InvalidNamespace
from ..wire.constants import (
    AEC_ANA_CHANGE,
    AEC_DISCOVERY_LOG_CHANGE,
    AEC_NS_ATTRIBUTE,
    ANA_LOG_LSP_RGO,
    ANACAP_CHANGE,
    ANACAP_INACCESSIBLE,
    ANACAP_NON_OPTIMIZED,
    ANACAP_OPTIMIZED,
    ANACAP_PERSISTENT_LOSS,
    CC_CSS_ALL_IO_SETS,
    DISCOVERY_NQN,
    KV_SPEC_VERSION_1_0,
    NVME_VERSION_2_0,
    AdminOpcode,
    Cns,
    ControllerType,
    Csi,
    FeatureId,
    LogPage,
    NsIdType,
    SubsystemType,
    TcpSecurityType,
    TreqSecureChannel,
)
from ..wire.queue_entry import SQE_CDW10, SQE_CDW11, SQE_CDW12, SQE_CDW13, SQE_CDW14, SQE_NSID
from . import ana
from . import identify as idf
from . import logpages as lp
from .backend import AbortableBackend
from .model import ANA_GROUP_MAX, NSID_ALL, Namespace, TargetConfig

if TYPE_CHECKING:
    from ..transport.controller_side import CommandReceived
    from .controller import Controller, Reply

FEATURE_AEC = FeatureId.ASYNC_EVENT_CONFIG
SEL_CURRENT, SEL_DEFAULT, SEL_SAVED, SEL_SUPPORTED = range(4)
CAPABILITY_CHANGEABLE = 1 << 2
SAVE_BIT = 1 << 31
RETAIN_ASYNC_EVENT = 1 << 15
LOG_LSP_SHIFT = 8
LOG_LSP_MASK = 0x7F  # CDW10 bits 14:08
ANACAP_ALL_STATES = ANACAP_OPTIMIZED | ANACAP_NON_OPTIMIZED | ANACAP_INACCESSIBLE | ANACAP_PERSISTENT_LOSS \
    | ANACAP_CHANGE  # ANAGRPID may change (PATCH ana_group), so ANACAP bit 6 stays clear
IO_AEC_SUPPORTED = AEC_NS_ATTRIBUTE | AEC_ANA_CHANGE
DEFAULT_TEMPERATURE_THRESHOLD = 0x157  # 343 K, as the Linux target reports
CRITICAL_TEMPERATURE = 0x175
NUM_QUEUES_INVALID = 0xFFFF
MIN_AQ_DEPTH = 32
FIRMWARE_LOG_SIZE = 512
FIRMWARE_SLOT1_OFFSET = 8
FIRMWARE_ACTIVE_SLOT1 = 1
NVMET_STYLE_ACL = 3
POWER_STATE0_MAX_POWER = 0x9C4
POWER_STATE0_LATENCY = 0x10
IDENTIFY_RAB = 6
DWORD = 4
ABORTED = 0
NOT_ABORTED = 1


def default_features(config: TargetConfig) -> dict[int, int]:
    queues = config.max_io_queues - 1
    return {
        FeatureId.ARBITRATION: 0,
        FeatureId.POWER_MANAGEMENT: 0,
        FeatureId.TEMPERATURE_THRESHOLD: DEFAULT_TEMPERATURE_THRESHOLD,
        FeatureId.ERROR_RECOVERY: 0,
        FeatureId.VOLATILE_WRITE_CACHE: 1,
        FeatureId.NUMBER_OF_QUEUES: queues | (queues << 16),
        FeatureId.ASYNC_EVENT_CONFIG: 0,
        FeatureId.KEEP_ALIVE_TIMER: 0,
    }


def _log2(value: int) -> int:
    return value.bit_length() - 1


# -- Identify ----------------------------------------------------------------------


def identify_controller(ctrl: Controller) -> bytes:
    cfg = ctrl.target.config
    sub = ctrl.subsystem
    common = dict(
        rab=IDENTIFY_RAB, mdts=_log2(cfg.mdts_bytes // 4096), cntlid=ctrl.cntlid, ver=NVME_VERSION_2_0,
        ctratt=idf.CTRATT_HOST_ID_128, acl=NVMET_STYLE_ACL, aerl=cfg.aer_limit - 1,
        elpe=64 - 1, kas=cfg.kas_100ms, sqes=idf.SQES_NVM, cqes=idf.CQES_NVM,
        maxcmd=cfg.max_queue_depth, sgls=idf.SGLS_SUPPORTED | idf.SGLS_OFFSET,
        ioccsz=(64 + cfg.in_capsule_size) // 16, iorcsz=1, msdbd=1,
        wctemp=DEFAULT_TEMPERATURE_THRESHOLD, cctemp=CRITICAL_TEMPERATURE,
        psd0_mp=POWER_STATE0_MAX_POWER, psd0_enlat=POWER_STATE0_LATENCY, psd0_exlat=POWER_STATE0_LATENCY,
    )
    if sub is None:
        return idf.ID_CTRL.pack(
            **common, sn=idf.fixed_str("", 20), mn=idf.fixed_str("dpu-emu discovery", 40),
            fr=idf.fixed_str("0.1.0", 8), cntrltype=ControllerType.DISCOVERY,
            oaes=AEC_DISCOVERY_LOG_CHANGE, lpa=idf.LPA_EXTENDED, subnqn=idf.nqn_field(DISCOVERY_NQN))
    return idf.ID_CTRL.pack(
        **common, sn=idf.fixed_str(sub.serial, 20), mn=idf.fixed_str(sub.model, 40),
        fr=idf.fixed_str(sub.firmware, 8), cmic=idf.CMIC_MULTI_PORT | idf.CMIC_MULTI_CTRL | idf.CMIC_ANA,
        cntrltype=ControllerType.IO, oaes=IO_AEC_SUPPORTED, frmw=idf.FRMW_SLOT1_RO,
        anatt=sub.ana.anatt_s, anacap=ANACAP_ALL_STATES, anagrpmax=ANA_GROUP_MAX, nanagrpid=ANA_GROUP_MAX,
        lpa=idf.LPA_CMD_EFFECTS | idf.LPA_EXTENDED, nn=sub.max_namespaces, mnan=sub.max_namespaces,
        oncs=idf.ONCS_WRITE_ZEROES | idf.ONCS_DSM, vwc=idf.VWC_PRESENT | idf.VWC_FLUSH_NSID_ALL,
        subnqn=idf.nqn_field(sub.nqn))


def identify_namespace_nvm(ns: Namespace) -> bytes:
    return idf.ID_NS.pack(
        nsze=ns.num_blocks, ncap=ns.num_blocks, nuse=ns.num_blocks, nsfeat=0, nlbaf=0, flbas=0,
        dlfeat=idf.DLFEAT_READ_ZEROES | idf.DLFEAT_WRITE_ZEROES_DEAC, nmic=idf.NMIC_SHARED,
        anagrpid=ns.ana_group, nvmcap=lp.u128(ns.size_bytes), nguid=ns.nguid, eui64=ns.eui64 or bytes(8),
        lbaf0_lbads=_log2(ns.block_size))


def identify_namespace_kv(ns: Namespace) -> bytes:
    return idf.ID_NS_KV.pack(
        nsze=ns.capacity_bytes, nuse=ns.usage() if ns.usage is not None else 0, nkvf=0, nmic=idf.NMIC_SHARED,
        anagrpid=ns.ana_group, novg=ns.block_size, nguid=ns.nguid, eui64=ns.eui64 or bytes(8),
        kvf0_kvkml=ns.max_key_size, kvf0_kvvml=ns.max_value_size, kvf0_mnks=ns.max_keys)


def _namespace(ctrl: Controller, nsid: int) -> Namespace | None:
    """The active namespace, None for a valid but inactive NSID; Invalid Namespace otherwise."""
    sub = ctrl.subsystem
    if sub is None or nsid == 0 or (nsid > sub.max_namespaces and nsid != NSID_ALL):
        raise InvalidNamespace(f"NSID {nsid:#x} is not valid")
    if nsid == NSID_ALL:
        raise InvalidNamespace("NSID FFFFFFFFh is not valid for this Identify")
    return ctrl.visible_namespaces().get(nsid)


def handle_identify(ctrl: Controller, ev: CommandReceived) -> Reply:
    sqe = ev.sqe
    cns = sqe[SQE_CDW10] & 0xFF
    csi = (sqe[SQE_CDW11] >> 24) & 0xFF
    nsid = sqe[SQE_NSID]
    blank = bytes(idf.IDENTIFY_DATA_SIZE)
    if cns == Cns.CONTROLLER:
        return 0, 0, identify_controller(ctrl)
    if ctrl.is_discovery:
        raise InvalidField(f"CNS {cns:#x} not supported by a discovery controller")
    if cns == Cns.NAMESPACE:
        ns = _namespace(ctrl, nsid)
        return 0, 0, identify_namespace_nvm(ns) if ns is not None and ns.csi == Csi.NVM else blank
    if cns in (Cns.ACTIVE_NS_LIST, Cns.CSI_ACTIVE_NS_LIST):
        if nsid >= 0xFFFFFFFE:
            raise InvalidNamespace(f"NSID {nsid:#x} cannot start an active namespace list")
        nss = ctrl.visible_namespaces()
        chosen = [n for n, ns in nss.items() if cns == Cns.ACTIVE_NS_LIST or ns.csi == csi]
        return 0, 0, idf.nsid_list(chosen, nsid)
    if cns == Cns.NS_ID_DESCRIPTORS:
        ns = _namespace(ctrl, nsid)
        if ns is None:
            raise InvalidNamespace(f"namespace {nsid} is not active")
        descs: list[tuple[NsIdType, bytes]] = []
        if ns.eui64:
            descs.append((NsIdType.EUI64, ns.eui64))
        descs += [(NsIdType.NGUID, ns.nguid), (NsIdType.UUID, ns.uuid), (NsIdType.CSI, bytes([ns.csi]))]
        return 0, 0, idf.ns_id_descriptors(descs)
    if cns == Cns.CSI_INDEPENDENT_NAMESPACE:
        ns = _namespace(ctrl, nsid)
        if ns is None:
            return 0, 0, blank
        return 0, 0, idf.ID_NS_CS_INDEP.pack(nmic=idf.NMIC_SHARED, anagrpid=ns.ana_group, nstat=idf.NSTAT_READY)
    if cns == Cns.CSI_NAMESPACE:
        ns = _namespace(ctrl, nsid)
        if csi not in (Csi.NVM, Csi.KV):
            raise InvalidField(f"command set {csi} not supported")
        if ns is None:
            return 0, 0, blank
        if ns.csi != csi:
            raise InvalidField(f"namespace {nsid} does not use command set {csi}")
        return 0, 0, identify_namespace_kv(ns) if csi == Csi.KV else blank
    if cns == Cns.CSI_CONTROLLER:
        if csi == Csi.NVM:
            return 0, 0, idf.ID_CTRL_NVM.pack()
        if csi == Csi.KV and ctrl.command_set == CC_CSS_ALL_IO_SETS:
            return 0, 0, idf.ID_CTRL_KV.pack(ver=KV_SPEC_VERSION_1_0)
        raise InvalidField(f"command set {csi} not supported")
    if cns == Cns.IO_COMMAND_SET_PROFILE:
        vector = idf.IO_CMD_SET_VECTOR_NVM | idf.IO_CMD_SET_VECTOR_KV
        page = bytearray(idf.IDENTIFY_DATA_SIZE)
        idf.IO_CMD_SET_VECTOR.pack_into(page, 0, vector=vector)
        return 0, 0, bytes(page)
    raise InvalidField(f"CNS {cns:#x} not supported")


# -- Get Log Page ------------------------------------------------------------------


def handle_get_log_page(ctrl: Controller, ev: CommandReceived) -> Reply:
    sqe = ev.sqe
    cdw10 = sqe[SQE_CDW10]
    lid = cdw10 & 0xFF
    retain = bool(cdw10 & RETAIN_ASYNC_EVENT)
    numd = ((sqe[SQE_CDW11] & 0xFFFF) << 16 | (cdw10 >> 16)) + 1
    length = numd * DWORD
    offset = sqe[SQE_CDW12] | (sqe[SQE_CDW13] << 32)
    csi = (sqe[SQE_CDW14] >> 24) & 0xFF
    lsp = (cdw10 >> LOG_LSP_SHIFT) & LOG_LSP_MASK
    if offset % DWORD:
        raise InvalidField("log page offset must be dword aligned")
    if length > ctrl.target.config.mdts_bytes:
        raise InvalidField(f"log page length {length} exceeds MDTS")
    if lid == LogPage.ANA and not ctrl.is_discovery:
        page = ana.ana_log_page(ctrl, groups_only=bool(lsp & ANA_LOG_LSP_RGO))
    else:
        page = _log_page(ctrl, lid, csi, length + offset)
    if offset > len(page):
        raise InvalidField(f"log page offset {offset} beyond the page ({len(page)} bytes)")
    ctrl.log_page_read(lid, retain)
    if lid == LogPage.CHANGED_NS_LIST and not retain:
        ctrl.changed_nsids.clear()
        ctrl.changed_overflow = False
    chunk = page[offset:offset + length]
    return 0, 0, chunk + bytes(length - len(chunk))


def _log_page(ctrl: Controller, lid: int, csi: int, want: int) -> bytes:
    if ctrl.is_discovery:
        if lid != LogPage.DISCOVERY:
            raise InvalidLogPage(f"log page {lid:#x} not supported by a discovery controller")
        return discovery_log_page(ctrl)
    if lid == LogPage.ERROR_INFO:
        return lp.error_log(list(ctrl.error_log), max(want, lp.ERROR_LOG_ENTRY.size))
    if lid == LogPage.SMART_HEALTH:
        return smart_log(ctrl)
    if lid == LogPage.FIRMWARE_SLOT:
        page = bytearray(FIRMWARE_LOG_SIZE)
        page[0] = FIRMWARE_ACTIVE_SLOT1
        assert ctrl.subsystem is not None
        page[FIRMWARE_SLOT1_OFFSET:FIRMWARE_SLOT1_OFFSET + 8] = idf.fixed_str(ctrl.subsystem.firmware, 8)
        return bytes(page)
    if lid == LogPage.CHANGED_NS_LIST:
        return lp.changed_ns_list(sorted(ctrl.changed_nsids), ctrl.changed_overflow)
    if lid == LogPage.COMMANDS_SUPPORTED_EFFECTS:
        if csi == Csi.NVM:
            return lp.commands_supported_and_effects(lp.ADMIN_EFFECTS, lp.NVM_EFFECTS)
        if csi == Csi.KV:
            return lp.commands_supported_and_effects(lp.ADMIN_EFFECTS, lp.KV_EFFECTS)
        raise InvalidField(f"no effects log for command set {csi}")
    raise InvalidLogPage(f"log page {lid:#x} not supported")


def smart_log(ctrl: Controller) -> bytes:
    s = ctrl.smart
    units_read = -(-s.bytes_read // lp.DATA_UNIT_BYTES)
    units_written = -(-s.bytes_written // lp.DATA_UNIT_BYTES)
    hours = int((ctrl.target.clock() - ctrl.created) // 3600)
    return lp.SMART_LOG.pack(
        composite_temperature=lp.KELVIN_ROOM_TEMPERATURE, available_spare=lp.FULL_SPARE,
        available_spare_threshold=lp.SPARE_THRESHOLD, data_units_read=lp.u128(units_read),
        data_units_written=lp.u128(units_written), host_read_commands=lp.u128(s.read_commands),
        host_write_commands=lp.u128(s.write_commands), power_cycles=lp.u128(1),
        power_on_hours=lp.u128(hours), media_errors=lp.u128(s.media_errors),
        num_error_log_entries=lp.u128(ctrl.error_count), temp_sensor1=lp.KELVIN_ROOM_TEMPERATURE)


def discovery_log_page(ctrl: Controller) -> bytes:
    target = ctrl.target
    entries: list[bytes] = []
    local_addr = ctrl.local_addr[0]
    for listener in target.listeners.values():
        traddr = listener.traddr
        if traddr in ("0.0.0.0", "::", "") and local_addr:
            traddr = local_addr
        common: dict[str, Any] = dict(
            trtype=listener.trtype, adrfam=listener.adrfam,
            treq=TreqSecureChannel.NOT_SPECIFIED | lp.TREQ_SQ_FLOW_CONTROL_DISABLE_SUPPORTED,
            portid=listener.portid, cntlid=0xFFFF, asqsz=MIN_AQ_DEPTH, trsvcid=listener.trsvcid,
            traddr=traddr, sectype=TcpSecurityType.NONE)
        if listener.discovery:
            entries.append(lp.discovery_entry(
                **common, subtype=SubsystemType.CURRENT_DISCOVERY, subnqn=DISCOVERY_NQN, eflags=0))
        if listener.io:
            for sub in target.subsystems.values():
                if sub.listeners is not None and listener.portid not in sub.listeners:
                    continue
                if not target.host_may_see(sub, ctrl.hostnqn):
                    continue
                entries.append(lp.discovery_entry(**common, subtype=SubsystemType.NVM, eflags=0,
                                                  subnqn=sub.nqn))
    return lp.discovery_log(target.discovery_genctr, entries)


# -- Features ----------------------------------------------------------------------

CHANGEABLE = frozenset({
    FeatureId.ARBITRATION, FeatureId.POWER_MANAGEMENT, FeatureId.TEMPERATURE_THRESHOLD,
    FeatureId.ERROR_RECOVERY, FeatureId.VOLATILE_WRITE_CACHE, FeatureId.NUMBER_OF_QUEUES,
    FeatureId.ASYNC_EVENT_CONFIG, FeatureId.KEEP_ALIVE_TIMER,
})
DISCOVERY_FEATURES = frozenset({FeatureId.ASYNC_EVENT_CONFIG, FeatureId.KEEP_ALIVE_TIMER})


def _feature_id(ctrl: Controller, cdw10: int) -> int:
    fid = cdw10 & 0xFF
    allowed = DISCOVERY_FEATURES if ctrl.is_discovery else CHANGEABLE
    if fid not in allowed:
        raise InvalidField(f"feature {fid:#x} not supported")
    return fid


def handle_get_features(ctrl: Controller, ev: CommandReceived) -> Reply:
    cdw10 = ev.sqe[SQE_CDW10]
    fid = _feature_id(ctrl, cdw10)
    sel = (cdw10 >> 8) & 0x7
    if sel == SEL_SUPPORTED:
        return 0, CAPABILITY_CHANGEABLE, None
    if sel in (SEL_DEFAULT, SEL_SAVED):
        return 0, default_features(ctrl.target.config).get(fid, 0), None
    if sel != SEL_CURRENT:
        raise InvalidField(f"SEL {sel} reserved")
    if fid == FeatureId.KEEP_ALIVE_TIMER:
        return 0, ctrl.kato_ms, None
    return 0, ctrl.features.get(fid, 0), None


def handle_set_features(ctrl: Controller, ev: CommandReceived) -> Reply:
    cdw10 = ev.sqe[SQE_CDW10]
    value = ev.sqe[SQE_CDW11]
    if cdw10 & SAVE_BIT:
        raise FeatureNotSaveable()
    fid = _feature_id(ctrl, cdw10)
    if fid == FeatureId.NUMBER_OF_QUEUES:
        nsqr, ncqr = value & 0xFFFF, value >> 16
        if NUM_QUEUES_INVALID in (nsqr, ncqr):
            raise InvalidField("number of queues 65536 is invalid")
        limit = ctrl.target.config.max_io_queues - 1
        granted = min(nsqr, limit) | (min(ncqr, limit) << 16)
        ctrl.features[fid] = granted
        ctrl.num_io_queues = min(nsqr, ncqr, limit) + 1
        ctrl.features_set_queues = True
        return 0, granted, None
    if fid == FeatureId.POWER_MANAGEMENT and value & 0x1F:
        raise InvalidField("only power state 0 exists")
    if fid == FeatureId.ASYNC_EVENT_CONFIG:
        supported = AEC_DISCOVERY_LOG_CHANGE if ctrl.is_discovery else IO_AEC_SUPPORTED
        value &= supported
    if fid == FeatureId.KEEP_ALIVE_TIMER:
        ctrl.kato_ms = value
        ctrl.touch()
    if fid == FeatureId.VOLATILE_WRITE_CACHE:
        value &= 1
    ctrl.features[fid] = value
    return 0, 0, None


def handle_keep_alive(ctrl: Controller, ev: CommandReceived) -> Reply:
    ctrl.touch()
    return 0, 0, None


def handle_abort(ctrl: Controller, ev: CommandReceived) -> Reply:
    """Abort a command still waiting in a backend (QoS admission); commands already
    executing run to completion.  DW0 bit 0 clear = aborted, set = not aborted."""
    cdw10 = ev.sqe[SQE_CDW10]
    sqid, cid = cdw10 & 0xFFFF, cdw10 >> 16
    for ns in ctrl.visible_namespaces().values():
        if isinstance(ns.backend, AbortableBackend) and ns.backend.abort(cid, sqid, ctrl.cntlid):
            return 0, ABORTED, None
    return 0, NOT_ABORTED, None


def handle_async_event_request(ctrl: Controller, ev: CommandReceived) -> Reply:
    raise AssertionError("AER is queued by the controller, never dispatched here")


HANDLERS: dict[int, Callable[[Controller, CommandReceived], Reply]] = {
    AdminOpcode.IDENTIFY: handle_identify,
    AdminOpcode.GET_LOG_PAGE: handle_get_log_page,
    AdminOpcode.GET_FEATURES: handle_get_features,
    AdminOpcode.SET_FEATURES: handle_set_features,
    AdminOpcode.KEEP_ALIVE: handle_keep_alive,
    AdminOpcode.ABORT: handle_abort,
    AdminOpcode.ASYNC_EVENT_REQUEST: handle_async_event_request,
}
DISCOVERY_OPCODES = frozenset({
    AdminOpcode.IDENTIFY, AdminOpcode.GET_LOG_PAGE, AdminOpcode.GET_FEATURES, AdminOpcode.SET_FEATURES,
    AdminOpcode.KEEP_ALIVE, AdminOpcode.ASYNC_EVENT_REQUEST,
})
