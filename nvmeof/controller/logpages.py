"""Log page layouts and builders: error information, SMART / health, commands supported
and effects, changed namespace list, discovery log."""

from __future__ import annotations

from ..wire.constants import (
    NQN_FIELD_SIZE,
    AdminOpcode,
    FabricsType,
    KvOpcode,
    NvmOpcode,
)
from ..wire.layout import Layout, fixed_str

ERROR_LOG_ENTRY = Layout("ErrorLogEntry", 64, [
    ("error_count", "Q", 0),
    ("sqid", "H", 8),
    ("cid", "H", 10),
    ("status", "H", 12),  # status field incl. phase tag bit 0
    ("param_error_location", "H", 14),
    ("lba", "Q", 16),
    ("nsid", "I", 24),
    ("vs", "B", 28),
    ("trtype", "B", 29),
    ("csi", "B", 30),
    ("cmd_specific", "Q", 32),
    ("trtype_specific", "H", 40),
])
PARAM_LOCATION_NONE = 0xFFFF

SMART_LOG = Layout("SmartHealthLog", 512, [
    ("critical_warning", "B", 0),
    ("composite_temperature", "H", 1),
    ("available_spare", "B", 3),
    ("available_spare_threshold", "B", 4),
    ("percentage_used", "B", 5),
    ("endurance_group_critical_warning", "B", 6),
    ("data_units_read", "16s", 32),
    ("data_units_written", "16s", 48),
    ("host_read_commands", "16s", 64),
    ("host_write_commands", "16s", 80),
    ("controller_busy_time", "16s", 96),
    ("power_cycles", "16s", 112),
    ("power_on_hours", "16s", 128),
    ("unsafe_shutdowns", "16s", 144),
    ("media_errors", "16s", 160),
    ("num_error_log_entries", "16s", 176),
    ("warning_temp_time", "I", 192),
    ("critical_comp_time", "I", 196),
    ("temp_sensor1", "H", 200),
])
DATA_UNIT_BYTES = 512 * 1000  # SMART data units: thousands of 512-byte units
KELVIN_ROOM_TEMPERATURE = 308  # 35 C, an emulated composite temperature
FULL_SPARE = 100
SPARE_THRESHOLD = 10

EFFECTS_LOG_SIZE = 4096
EFFECTS_ENTRIES = 256
EFFECTS_IOCS_OFFSET = 1024
CSUPP = 1 << 0
LBCC = 1 << 1
NCC = 1 << 2
NIC = 1 << 3
CCC = 1 << 4

CHANGED_NS_LIST_SIZE = 4096
CHANGED_NS_MAX = CHANGED_NS_LIST_SIZE // 4
CHANGED_NS_OVERFLOW = 0xFFFFFFFF

DISCOVERY_LOG_HEADER = Layout("DiscoveryLogHeader", 1024, [
    ("genctr", "Q", 0),
    ("numrec", "Q", 8),
    ("recfmt", "H", 16),
])
DISCOVERY_LOG_ENTRY = Layout("DiscoveryLogEntry", 1024, [
    ("trtype", "B", 0),
    ("adrfam", "B", 1),
    ("subtype", "B", 2),
    ("treq", "B", 3),
    ("portid", "H", 4),
    ("cntlid", "H", 6),
    ("asqsz", "H", 8),
    ("eflags", "H", 10),
    ("trsvcid", "32s", 32),
    ("subnqn", f"{NQN_FIELD_SIZE}s", 256),
    ("traddr", "256s", 512),
    ("tsas_sectype", "B", 768),
])
NUL = b"\0"  # the Linux target NUL-pads TRSVCID/TRADDR (SPDK pads with spaces); hosts accept both
TRSVCID_SIZE = 32
TRADDR_SIZE = 256
TREQ_SQ_FLOW_CONTROL_DISABLE_SUPPORTED = 1 << 2
EFLAGS_DUPLICATE_RETURNED_INFO = 1 << 0
EFLAGS_EXPLICIT_PERSISTENT_CONNECTION = 1 << 1


def u128(value: int) -> bytes:
    return value.to_bytes(16, "little")


def error_log(entries: list[dict[str, int]], length: int) -> bytes:
    """``entries`` newest first; unused entries are zero."""
    page = bytearray(max(length, 0))
    for i, entry in enumerate(entries):
        pos = i * ERROR_LOG_ENTRY.size
        if pos + ERROR_LOG_ENTRY.size > len(page):
            break
        ERROR_LOG_ENTRY.pack_into(page, pos, **entry)
    return bytes(page)


def commands_supported_and_effects(admin: dict[int, int], io: dict[int, int]) -> bytes:
    page = bytearray(EFFECTS_LOG_SIZE)
    for opcode, flags in admin.items():
        page[opcode * 4:opcode * 4 + 4] = flags.to_bytes(4, "little")
    for opcode, flags in io.items():
        pos = EFFECTS_IOCS_OFFSET + opcode * 4
        page[pos:pos + 4] = flags.to_bytes(4, "little")
    return bytes(page)


ADMIN_EFFECTS: dict[int, int] = {
    AdminOpcode.GET_LOG_PAGE: CSUPP,
    AdminOpcode.IDENTIFY: CSUPP,
    AdminOpcode.ABORT: CSUPP,
    AdminOpcode.SET_FEATURES: CSUPP,
    AdminOpcode.GET_FEATURES: CSUPP,
    AdminOpcode.ASYNC_EVENT_REQUEST: CSUPP,
    AdminOpcode.KEEP_ALIVE: CSUPP,
    AdminOpcode.FABRICS: CSUPP,
}
NVM_EFFECTS: dict[int, int] = {
    NvmOpcode.FLUSH: CSUPP | LBCC,
    NvmOpcode.WRITE: CSUPP | LBCC,
    NvmOpcode.READ: CSUPP,
    NvmOpcode.WRITE_ZEROES: CSUPP | LBCC,
    NvmOpcode.DATASET_MANAGEMENT: CSUPP | LBCC,
}
KV_EFFECTS: dict[int, int] = {
    NvmOpcode.FLUSH: CSUPP | LBCC,
    KvOpcode.STORE: CSUPP | LBCC,
    KvOpcode.RETRIEVE: CSUPP,
    KvOpcode.LIST: CSUPP,
    KvOpcode.DELETE: CSUPP | LBCC,
    KvOpcode.EXIST: CSUPP,
}
FABRICS_EFFECTS: dict[int, int] = {FabricsType.PROPERTY_GET: CSUPP}


def changed_ns_list(nsids: list[int], overflow: bool) -> bytes:
    page = bytearray(CHANGED_NS_LIST_SIZE)
    if overflow or len(nsids) > CHANGED_NS_MAX:
        page[0:4] = CHANGED_NS_OVERFLOW.to_bytes(4, "little")
        return bytes(page)
    for i, nsid in enumerate(sorted(nsids)):
        page[i * 4:i * 4 + 4] = nsid.to_bytes(4, "little")
    return bytes(page)


def discovery_entry(*, trtype: int, adrfam: int, subtype: int, treq: int, portid: int, cntlid: int,
                    asqsz: int, eflags: int, trsvcid: str, subnqn: str, traddr: str, sectype: int) -> bytes:
    return DISCOVERY_LOG_ENTRY.pack(
        trtype=trtype, adrfam=adrfam, subtype=subtype, treq=treq, portid=portid, cntlid=cntlid,
        asqsz=asqsz, eflags=eflags, trsvcid=fixed_str(trsvcid, TRSVCID_SIZE, NUL),
        subnqn=fixed_str(subnqn, NQN_FIELD_SIZE, NUL), traddr=fixed_str(traddr, TRADDR_SIZE, NUL),
        tsas_sectype=sectype)


def discovery_log(genctr: int, entries: list[bytes]) -> bytes:
    header = DISCOVERY_LOG_HEADER.pack(genctr=genctr, numrec=len(entries), recfmt=0)
    return header + b"".join(entries)


# Asymmetric Namespace Access log (LID 0Ch): a header, then per ANA group a 32-byte
# descriptor followed by NNSIDS 4-byte NSIDs (none with LSP bit 0, Return Groups Only).
ANA_LOG_HEADER = Layout("AnaLogHeader", 16, [
    ("chgcnt", "Q", 0),
    ("ngrps", "H", 8),
])
ANA_GROUP_DESCRIPTOR = Layout("AnaGroupDescriptor", 32, [
    ("anagrpid", "I", 0),
    ("nnsids", "I", 4),
    ("chgcnt", "Q", 8),
    ("anas", "B", 16),  # bits 3:0 ANA state
])
ANA_NSID_SIZE = 4


def ana_log_size(groups: int, nsids: int) -> int:
    """Bytes of an ANA log with ``groups`` descriptors listing ``nsids`` NSIDs in total."""
    return ANA_LOG_HEADER.size + groups * ANA_GROUP_DESCRIPTOR.size + nsids * ANA_NSID_SIZE


def ana_log(chgcnt: int, groups: list[tuple[int, int, int, list[int]]], *, groups_only: bool) -> bytes:
    """``groups``: ``(anagrpid, chgcnt, state, nsids)`` in ascending ANAGRPID order; NSIDs
    are listed ascending (the Linux host walks them in step with its sorted namespaces)."""
    total = 0 if groups_only else sum(len(nsids) for *_, nsids in groups)
    page = bytearray(ana_log_size(len(groups), total))
    ANA_LOG_HEADER.pack_into(page, 0, chgcnt=chgcnt, ngrps=len(groups))
    pos = ANA_LOG_HEADER.size
    for grpid, grp_chgcnt, state, nsids in groups:
        listed = [] if groups_only else sorted(nsids)
        ANA_GROUP_DESCRIPTOR.pack_into(page, pos, anagrpid=grpid, nnsids=len(listed), chgcnt=grp_chgcnt,
                                       anas=state)
        pos += ANA_GROUP_DESCRIPTOR.size
        for nsid in listed:
            page[pos:pos + ANA_NSID_SIZE] = nsid.to_bytes(ANA_NSID_SIZE, "little")
            pos += ANA_NSID_SIZE
    return bytes(page)
