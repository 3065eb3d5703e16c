"""Identify data structures (NVMe base 2.0, NVM command set 1.0, KV command set 1.0).

Each structure is declared once as a :class:`Layout`; builders fill a zeroed 4096-byte
page from keyword fields.
"""

from __future__ import annotations

from ..wire.constants import NQN_FIELD_SIZE, NS_ID_LENGTH, NsIdType
from ..wire.layout import Layout, fixed_str

IDENTIFY_DATA_SIZE = 4096
NSID_LIST_ENTRIES = IDENTIFY_DATA_SIZE // 4

ID_CTRL = Layout("IdentifyController", IDENTIFY_DATA_SIZE, [
    ("vid", "H", 0),
    ("ssvid", "H", 2),
    ("sn", "20s", 4),
    ("mn", "40s", 24),
    ("fr", "8s", 64),
    ("rab", "B", 72),
    ("ieee", "3s", 73),
    ("cmic", "B", 76),
    ("mdts", "B", 77),
    ("cntlid", "H", 78),
    ("ver", "I", 80),
    ("rtd3r", "I", 84),
    ("rtd3e", "I", 88),
    ("oaes", "I", 92),
    ("ctratt", "I", 96),
    ("rrls", "H", 100),
    ("cntrltype", "B", 111),
    ("fguid", "16s", 112),
    ("crdt1", "H", 128),
    ("crdt2", "H", 130),
    ("crdt3", "H", 132),
    ("nvmsr", "B", 253),
    ("vwci", "B", 254),
    ("mec", "B", 255),
    ("oacs", "H", 256),
    ("acl", "B", 258),
    ("aerl", "B", 259),
    ("frmw", "B", 260),
    ("lpa", "B", 261),
    ("elpe", "B", 262),
    ("npss", "B", 263),
    ("avscc", "B", 264),
    ("apsta", "B", 265),
    ("wctemp", "H", 266),
    ("cctemp", "H", 268),
    ("mtfa", "H", 270),
    ("hmpre", "I", 272),
    ("hmmin", "I", 276),
    ("tnvmcap", "16s", 280),
    ("unvmcap", "16s", 296),
    ("rpmbs", "I", 312),
    ("edstt", "H", 316),
    ("dsto", "B", 318),
    ("fwug", "B", 319),
    ("kas", "H", 320),
    ("hctma", "H", 322),
    ("mntmt", "H", 324),
    ("mxtmt", "H", 326),
    ("sanicap", "I", 328),
    ("hmminds", "I", 332),
    ("hmmaxd", "H", 336),
    ("nsetidmax", "H", 338),
    ("endgidmax", "H", 340),
    ("anatt", "B", 342),
    ("anacap", "B", 343),
    ("anagrpmax", "I", 344),
    ("nanagrpid", "I", 348),
    ("pels", "I", 352),
    ("domainid", "H", 356),
    ("megcap", "16s", 368),
    ("sqes", "B", 512),
    ("cqes", "B", 513),
    ("maxcmd", "H", 514),
    ("nn", "I", 516),
    ("oncs", "H", 520),
    ("fuses", "H", 522),
    ("fna", "B", 524),
    ("vwc", "B", 525),
    ("awun", "H", 526),
    ("awupf", "H", 528),
    ("icsvscc", "B", 530),
    ("nwpc", "B", 531),
    ("acwu", "H", 532),
    ("ocfs", "H", 534),
    ("sgls", "I", 536),
    ("mnan", "I", 540),
    ("maxdna", "16s", 544),
    ("maxcna", "I", 560),
    ("subnqn", f"{NQN_FIELD_SIZE}s", 768),
    ("ioccsz", "I", 1792),
    ("iorcsz", "I", 1796),
    ("icdoff", "H", 1800),
    ("fcatt", "B", 1802),
    ("msdbd", "B", 1803),
    ("ofcs", "H", 1804),
    ("dctype", "B", 1806),
    ("psd0_mp", "H", 2048),
    ("psd0_enlat", "I", 2052),
    ("psd0_exlat", "I", 2056),
])

# Identify Controller bit fields used here
CMIC_MULTI_PORT = 1 << 0
CMIC_MULTI_CTRL = 1 << 1
CMIC_ANA = 1 << 3
LPA_SMART_PER_NS = 1 << 0
LPA_CMD_EFFECTS = 1 << 1
LPA_EXTENDED = 1 << 2
ONCS_WRITE_ZEROES = 1 << 3
ONCS_DSM = 1 << 2
VWC_PRESENT = 1 << 0
VWC_FLUSH_NSID_ALL = 0x3 << 1  # 11b: Flush with NSID FFFFFFFFh is supported
SGLS_SUPPORTED = 1 << 0
SGLS_KEYED = 1 << 2
SGLS_OFFSET = 1 << 20
SGLS_DATA_BLOCK_TRANSPORT = 1 << 0  # with bit 0 (SGLs supported, no alignment requirement)
CTRATT_HOST_ID_128 = 1 << 0
FCATT_DYNAMIC = 0  # bit 0 clear: dynamic controller model
SQES_NVM = 0x66  # required and maximum: 64 bytes
CQES_NVM = 0x44  # 16 bytes
OACS_NONE = 0
FRMW_SLOT1_RO = 0x3  # one slot, slot 1 read-only
ENDURANCE_MW_DEFAULT = 2500  # 25.00 W in 0.01 W units for power state 0

ID_NS = Layout("IdentifyNamespace", IDENTIFY_DATA_SIZE, [
    ("nsze", "Q", 0),
    ("ncap", "Q", 8),
    ("nuse", "Q", 16),
    ("nsfeat", "B", 24),
    ("nlbaf", "B", 25),
    ("flbas", "B", 26),
    ("mc", "B", 27),
    ("dpc", "B", 28),
    ("dps", "B", 29),
    ("nmic", "B", 30),
    ("rescap", "B", 31),
    ("fpi", "B", 32),
    ("dlfeat", "B", 33),
    ("nawun", "H", 34),
    ("nawupf", "H", 36),
    ("nacwu", "H", 38),
    ("nabsn", "H", 40),
    ("nabo", "H", 42),
    ("nabspf", "H", 44),
    ("noiob", "H", 46),
    ("nvmcap", "16s", 48),
    ("npwg", "H", 64),
    ("npwa", "H", 66),
    ("npdg", "H", 68),
    ("npda", "H", 70),
    ("nows", "H", 72),
    ("mssrl", "H", 74),
    ("mcl", "I", 76),
    ("msrc", "B", 80),
    ("nulbaf", "B", 81),
    ("anagrpid", "I", 92),
    ("nsattr", "B", 99),
    ("nvmsetid", "H", 100),
    ("endgid", "H", 102),
    ("nguid", "16s", 104),
    ("eui64", "8s", 120),
    ("lbaf0_ms", "H", 128),
    ("lbaf0_lbads", "B", 130),
    ("lbaf0_rp", "B", 131),
])
NSFEAT_THIN = 1 << 0
NSFEAT_DEALLOC_ERR = 1 << 2
NMIC_SHARED = 1 << 0
DLFEAT_READ_ZEROES = 0x1
DLFEAT_WRITE_ZEROES_DEAC = 1 << 3

ID_NS_CS_INDEP = Layout("IdentifyNsCsIndependent", IDENTIFY_DATA_SIZE, [
    ("nsfeat", "B", 0),
    ("nmic", "B", 1),
    ("rescap", "B", 2),
    ("fpi", "B", 3),
    ("anagrpid", "I", 4),
    ("nsattr", "B", 8),
    ("nvmsetid", "H", 10),
    ("endgid", "H", 12),
    ("nstat", "B", 14),
])
NSTAT_READY = 1 << 0

ID_CTRL_NVM = Layout("IdentifyControllerNvm", IDENTIFY_DATA_SIZE, [
    ("vsl", "B", 0),
    ("wzsl", "B", 1),
    ("wusl", "B", 2),
    ("dmrl", "B", 3),
    ("dmrsl", "I", 4),
    ("dmsl", "Q", 8),
])

NS_ID_DESC_HEADER = Layout("NsIdDescriptorHeader", 4, [
    ("nidt", "B", 0),
    ("nidl", "B", 1),
])

IO_CMD_SET_VECTOR = Layout("IoCommandSetVector", 8, [("vector", "Q", 0)])
IO_CMD_SET_VECTOR_NVM = 1 << 0
IO_CMD_SET_VECTOR_KV = 1 << 1

# KV command set (KV spec 1.0c, figures for Identify Namespace / Controller, CSI 01h)
KV_FORMAT = Layout("KvFormat", 16, [
    ("kvkml", "H", 0),
    ("afo", "B", 3),
    ("kvvml", "I", 4),
    ("mnks", "I", 8),
])
KV_FORMATS_OFFSET = 72
ID_NS_KV = Layout("IdentifyNamespaceKv", IDENTIFY_DATA_SIZE, [
    ("nsze", "Q", 0),
    ("nuse", "Q", 16),
    ("nsfeat", "B", 24),
    ("nkvf", "B", 25),
    ("nmic", "B", 26),
    ("rescap", "B", 27),
    ("fpi", "B", 28),
    ("kvfc", "B", 29),
    ("novg", "I", 32),
    ("anagrpid", "I", 36),
    ("nsattr", "B", 43),
    ("nvmsetid", "H", 44),
    ("endgid", "H", 46),
    ("nguid", "16s", 48),
    ("eui64", "8s", 64),
    *[(f"kvf0_{f}", code, KV_FORMATS_OFFSET + off) for f, code, off in KV_FORMAT.fields],
])
ID_CTRL_KV = Layout("IdentifyControllerKv", IDENTIFY_DATA_SIZE, [("ver", "I", 0)])


def nsid_list(nsids: list[int], after: int) -> bytes:
    """Active NSID list page: up to 1024 NSIDs greater than ``after``, ascending."""
    chosen = [n for n in sorted(nsids) if n > after][:NSID_LIST_ENTRIES]
    page = bytearray(IDENTIFY_DATA_SIZE)
    for i, nsid in enumerate(chosen):
        page[i * 4:i * 4 + 4] = nsid.to_bytes(4, "little")
    return bytes(page)


def ns_id_descriptors(descriptors: list[tuple[NsIdType, bytes]]) -> bytes:
    page = bytearray(IDENTIFY_DATA_SIZE)
    pos = 0
    for nidt, value in descriptors:
        if len(value) != NS_ID_LENGTH[nidt]:
            raise ValueError(f"{nidt.name} identifier must be {NS_ID_LENGTH[nidt]} bytes")
        NS_ID_DESC_HEADER.pack_into(page, pos, nidt=nidt, nidl=len(value))
        pos += NS_ID_DESC_HEADER.size
        page[pos:pos + len(value)] = value
        pos += len(value)
    return bytes(page)


def ascii_field(value: str, layout: Layout, name: str) -> bytes:
    width = int(next(code for f, code, _ in layout.fields if f == name)[:-1])
    return fixed_str(value, width)


def nqn_field(nqn: str) -> bytes:
    return nqn.encode("ascii").ljust(NQN_FIELD_SIZE, b"\0")
