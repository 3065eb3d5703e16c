"""Numbers of the NVMe base, Fabrics, NVMe/TCP and KV specifications: one enum per space.

Admin opcode 0x02 (Get Log Page) and NVM opcode 0x02 (Read) are different things, so
every opcode space has its own enum.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# --- NVMe/TCP transport -------------------------------------------------------------

NVME_TCP_IO_PORT = 4420
NVME_TCP_DISCOVERY_PORT = 8009
CH_SIZE = 8
DIGEST_SIZE = 4
ICREQ_SIZE = 128
TERM_REQ_HLEN = 24
TERM_REQ_MAX_DATA = 128  # copy of the offending header carried in a TermReq
CAPSULE_CMD_HLEN = 72
CAPSULE_RESP_HLEN = 24
DATA_PDU_HLEN = 24
R2T_HLEN = 24
PFV_1_0 = 0
MAX_HPDA = 31
MIN_MAXH2CDATA = 4096


class PduType(IntEnum):
    ICREQ = 0x00
    ICRESP = 0x01
    H2C_TERM_REQ = 0x02
    C2H_TERM_REQ = 0x03
    CAPSULE_CMD = 0x04
    CAPSULE_RESP = 0x05
    H2C_DATA = 0x06
    C2H_DATA = 0x07
    R2T = 0x09


class PduFlag(IntFlag):
    HDGSTF = 0x01
    DDGSTF = 0x02
    LAST_PDU = 0x04
    SUCCESS = 0x08


# Plain-int copies for hot paths: IntFlag arithmetic builds a new enum object per operation.
F_HDGSTF = PduFlag.HDGSTF.value
F_DDGSTF = PduFlag.DDGSTF.value
F_LAST_PDU = PduFlag.LAST_PDU.value
F_SUCCESS = PduFlag.SUCCESS.value


class DigestFlag(IntFlag):
    """ICReq/ICResp DGST field."""

    HDGST_ENABLE = 0x01
    DDGST_ENABLE = 0x02


class Fes(IntEnum):
    """Fatal Error Status carried by H2C/C2HTermReq."""

    INVALID_HEADER_FIELD = 0x01
    PDU_SEQUENCE_ERROR = 0x02
    HEADER_DIGEST_ERROR = 0x03
    DATA_TRANSFER_OUT_OF_RANGE = 0x04
    DATA_TRANSFER_LIMIT_EXCEEDED = 0x05
    UNSUPPORTED_PARAMETER = 0x06


# --- Submission / completion queue entries ---------------------------------------------

SQE_SIZE = 64
CQE_SIZE = 16
PSDT_SHIFT = 6
PSDT_MASK = 0xC0
PSDT_SGL_MPTR_CONTIG = 0x1  # 01b: SGL, MPTR is an address
PSDT_SGL_MPTR_SGL = 0x2  # 10b: SGL, MPTR points at an SGL segment


class SglType(IntEnum):
    """SGL descriptor identifier byte (type << 4 | subtype) used on NVMe/TCP."""

    DATA_BLOCK_OFFSET = 0x01  # in-capsule data
    TRANSPORT_DATA_BLOCK = 0x5A  # data moved by R2T/H2CData or C2HData


class AdminOpcode(IntEnum):
    DELETE_IO_SQ = 0x00
    CREATE_IO_SQ = 0x01
    GET_LOG_PAGE = 0x02
    DELETE_IO_CQ = 0x04
    CREATE_IO_CQ = 0x05
    IDENTIFY = 0x06
    ABORT = 0x08
    SET_FEATURES = 0x09
    GET_FEATURES = 0x0A
    ASYNC_EVENT_REQUEST = 0x0C
    KEEP_ALIVE = 0x18
    FABRICS = 0x7F


class NvmOpcode(IntEnum):
    FLUSH = 0x00
    WRITE = 0x01
    READ = 0x02
    WRITE_UNCORRECTABLE = 0x04
    COMPARE = 0x05
    WRITE_ZEROES = 0x08
    DATASET_MANAGEMENT = 0x09
    FABRICS = 0x7F


class KvOpcode(IntEnum):
    STORE = 0x01
    RETRIEVE = 0x02
    LIST = 0x06
    DELETE = 0x10
    EXIST = 0x14


class FabricsType(IntEnum):
    PROPERTY_SET = 0x00
    CONNECT = 0x01
    PROPERTY_GET = 0x04
    AUTH_SEND = 0x05
    AUTH_RECV = 0x06
    DISCONNECT = 0x08


class LogPage(IntEnum):
    ERROR_INFO = 0x01
    SMART_HEALTH = 0x02
    FIRMWARE_SLOT = 0x03
    CHANGED_NS_LIST = 0x04
    COMMANDS_SUPPORTED_EFFECTS = 0x05
    ANA = 0x0C
    DISCOVERY = 0x70


class Cns(IntEnum):
    NAMESPACE = 0x00
    CONTROLLER = 0x01
    ACTIVE_NS_LIST = 0x02
    NS_ID_DESCRIPTORS = 0x03
    CSI_NAMESPACE = 0x05
    CSI_CONTROLLER = 0x06
    CSI_ACTIVE_NS_LIST = 0x07
    CSI_INDEPENDENT_NAMESPACE = 0x08
    IO_COMMAND_SET_PROFILE = 0x1C


class FeatureId(IntEnum):
    ARBITRATION = 0x01
    POWER_MANAGEMENT = 0x02
    TEMPERATURE_THRESHOLD = 0x04
    ERROR_RECOVERY = 0x05
    VOLATILE_WRITE_CACHE = 0x06
    NUMBER_OF_QUEUES = 0x07
    INTERRUPT_COALESCING = 0x08
    WRITE_ATOMICITY = 0x0A
    ASYNC_EVENT_CONFIG = 0x0B
    TIMESTAMP = 0x0E
    KEEP_ALIVE_TIMER = 0x0F
    HOST_BEHAVIOR = 0x16
    IO_COMMAND_SET_PROFILE = 0x19
    KV_CONFIGURATION = 0x20


class Csi(IntEnum):
    NVM = 0x00
    KV = 0x01
    ZNS = 0x02


class NsIdType(IntEnum):
    """Namespace Identification Descriptor types (Identify CNS 03h)."""

    EUI64 = 0x01
    NGUID = 0x02
    UUID = 0x03
    CSI = 0x04


NS_ID_LENGTH = {NsIdType.EUI64: 8, NsIdType.NGUID: 16, NsIdType.UUID: 16, NsIdType.CSI: 1}


# --- Status ----------------------------------------------------------------------------


class StatusCodeType(IntEnum):
    GENERIC = 0x0
    COMMAND_SPECIFIC = 0x1
    MEDIA_ERROR = 0x2
    PATH_RELATED = 0x3
    VENDOR_SPECIFIC = 0x7


class GenericStatus(IntEnum):
    SUCCESS = 0x00
    INVALID_OPCODE = 0x01
    INVALID_FIELD = 0x02
    COMMAND_ID_CONFLICT = 0x03
    DATA_TRANSFER_ERROR = 0x04
    ABORTED_POWER_LOSS = 0x05
    INTERNAL_ERROR = 0x06
    ABORTED_BY_REQUEST = 0x07
    ABORTED_SQ_DELETION = 0x08
    INVALID_NAMESPACE = 0x0B
    COMMAND_SEQUENCE_ERROR = 0x0C
    INVALID_SGL_SEGMENT_DESCRIPTOR = 0x0D
    INVALID_SGL_DESCRIPTOR_COUNT = 0x0E
    DATA_SGL_LENGTH_INVALID = 0x0F
    SGL_DESCRIPTOR_TYPE_INVALID = 0x11
    INVALID_PRP_OFFSET = 0x13
    SGL_OFFSET_INVALID = 0x16
    HOST_ID_INCONSISTENT = 0x18
    KEEP_ALIVE_EXPIRED = 0x19
    KEEP_ALIVE_INVALID = 0x1A
    TRANSIENT_TRANSPORT_ERROR = 0x22
    NAMESPACE_NOT_READY = 0x82  # NVM-command-set range, listed for completeness
    # I/O command set specific range (SCT 0, 0x80-0xBF)
    LBA_OUT_OF_RANGE = 0x80
    CAPACITY_EXCEEDED = 0x81


class CommandSpecificStatus(IntEnum):
    INVALID_QUEUE_IDENTIFIER = 0x01
    INVALID_QUEUE_SIZE = 0x02
    ABORT_LIMIT_EXCEEDED = 0x03
    ASYNC_EVENT_LIMIT_EXCEEDED = 0x05
    INVALID_LOG_PAGE = 0x09
    FEATURE_NOT_SAVEABLE = 0x0D
    FEATURE_NOT_CHANGEABLE = 0x0E
    # Fabrics (opcode 7Fh)
    INCOMPATIBLE_FORMAT = 0x80
    CONTROLLER_BUSY = 0x81
    CONNECT_INVALID_PARAMETERS = 0x82
    CONNECT_RESTART_DISCOVERY = 0x83
    CONNECT_INVALID_HOST = 0x84
    LOG_PAGE_RESTART_DISCOVERY = 0x90
    AUTHENTICATION_REQUIRED = 0x91


class KvStatus(IntEnum):
    """KV command set specific status codes (SCT 0)."""

    CAPACITY_EXCEEDED = 0x81
    NAMESPACE_NOT_READY = 0x82
    RESERVATION_CONFLICT = 0x83
    FORMAT_IN_PROGRESS = 0x84
    INVALID_VALUE_SIZE = 0x85
    INVALID_KEY_SIZE = 0x86
    KEY_DOES_NOT_EXIST = 0x87
    UNRECOVERED_ERROR = 0x88
    KEY_EXISTS = 0x89


class MediaStatus(IntEnum):
    WRITE_FAULT = 0x80
    UNRECOVERED_READ_ERROR = 0x81
    END_TO_END_GUARD_CHECK = 0x82
    COMPARE_FAILURE = 0x85
    ACCESS_DENIED = 0x86


# CQE status field (upper 16 bits of DW3): bit 0 phase, 8:1 SC, 11:9 SCT, 13:12 CRD, 14 M, 15 DNR
STATUS_SC_SHIFT = 1
STATUS_SCT_SHIFT = 9
STATUS_DNR_BIT = 1 << 15
STATUS_MORE_BIT = 1 << 14


def encode_status(sct: int, sc: int, dnr: bool = False) -> int:
    return (sc << STATUS_SC_SHIFT) | (sct << STATUS_SCT_SHIFT) | (STATUS_DNR_BIT if dnr else 0)


def decode_status(status: int) -> tuple[int, int, bool]:
    """-> (sct, sc, dnr) from the 16-bit CQE status field."""
    return (status >> STATUS_SCT_SHIFT) & 0x7, (status >> STATUS_SC_SHIFT) & 0xFF, bool(status & STATUS_DNR_BIT)


# --- Controller registers (Fabrics properties) -----------------------------------------


class Property(IntEnum):
    CAP = 0x00
    VS = 0x08
    INTMS = 0x0C
    INTMC = 0x10
    CC = 0x14
    CSTS = 0x1C
    NSSR = 0x20
    CRTO = 0x68  # Controller Ready Timeouts (NVMe 2.0)


PROPERTY_SIZE_4 = 0
PROPERTY_SIZE_8 = 1
NSSR_RESET_VALUE = 0x4E564D65  # "NVMe"

CC_EN = 0x1
CC_CSS_SHIFT = 4
CC_CSS_MASK = 0x7 << CC_CSS_SHIFT
CC_MPS_SHIFT = 7
CC_MPS_MASK = 0xF << CC_MPS_SHIFT
CC_AMS_SHIFT = 11
CC_AMS_MASK = 0x7 << CC_AMS_SHIFT
CC_SHN_SHIFT = 14
CC_SHN_MASK = 0x3 << CC_SHN_SHIFT
CC_IOSQES_SHIFT = 16
CC_IOSQES_MASK = 0xF << CC_IOSQES_SHIFT
CC_IOCQES_SHIFT = 20
CC_IOCQES_MASK = 0xF << CC_IOCQES_SHIFT
CC_CSS_NVM = 0x0
CC_CSS_ALL_IO_SETS = 0x6
CC_CSS_ADMIN_ONLY = 0x7

CSTS_RDY = 0x1
CSTS_CFS = 0x2
CSTS_SHST_SHIFT = 2
CSTS_SHST_MASK = 0x3 << CSTS_SHST_SHIFT
CSTS_SHST_NORMAL = 0x0
CSTS_SHST_OCCURRING = 0x1
CSTS_SHST_COMPLETE = 0x2
CSTS_NSSRO = 0x10

CAP_MQES_MASK = 0xFFFF
CAP_CQR = 1 << 16
CAP_TO_SHIFT = 24
CAP_DSTRD_SHIFT = 32
CAP_CSS_SHIFT = 37
CAP_CSS_NVM = 0x01
CAP_CSS_IO_SETS = 0x40  # "one or more I/O command sets" (CAP bit 43)
CAP_CSS_ADMIN_ONLY = 0x80
CAP_MPSMIN_SHIFT = 48
CRTO_CRIMT_SHIFT = 16
CAP_MPSMAX_SHIFT = 52


def version(major: int, minor: int, tertiary: int = 0) -> int:
    """VS register encoding."""
    return (major << 16) | (minor << 8) | tertiary


NVME_VERSION_2_0 = version(2, 0, 0)
KV_SPEC_VERSION_1_0 = version(1, 0, 0)

# --- Fabrics / discovery ---------------------------------------------------------------

DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
NQN_MAX_LENGTH = 223
NQN_FIELD_SIZE = 256
CONNECT_DATA_SIZE = 1024
CNTLID_DYNAMIC = 0xFFFF
CNTLID_MAX = 0xFFEF
ADMIN_QID = 0


class TransportType(IntEnum):
    RDMA = 1
    FC = 2
    TCP = 3
    LOOP = 0xFE


class AddressFamily(IntEnum):
    IPV4 = 1
    IPV6 = 2
    IB = 3
    FC = 4
    LOOP = 0xFE


class SubsystemType(IntEnum):
    REFERRAL = 1
    NVM = 2
    CURRENT_DISCOVERY = 3


class ControllerType(IntEnum):
    IO = 1
    DISCOVERY = 2
    ADMIN = 3


class TreqSecureChannel(IntEnum):
    NOT_SPECIFIED = 0
    REQUIRED = 1
    NOT_REQUIRED = 2


class TcpSecurityType(IntEnum):
    NONE = 0
    TLS_1_2 = 1
    TLS_1_3 = 2


# --- Asynchronous events ---------------------------------------------------------------


class AsyncEventType(IntEnum):
    ERROR = 0x0
    SMART_HEALTH = 0x1
    NOTICE = 0x2
    IMMEDIATE = 0x3
    IO_COMMAND_SET = 0x6
    VENDOR = 0x7


class AsyncEventNotice(IntEnum):
    NAMESPACE_ATTRIBUTE_CHANGED = 0x00
    FIRMWARE_ACTIVATION_STARTING = 0x01
    TELEMETRY_LOG_CHANGED = 0x02
    ANA_CHANGE = 0x03
    DISCOVERY_LOG_CHANGE = 0xF0


# Async Event Configuration (FID 0Bh) / OAES bits
AEC_NS_ATTRIBUTE = 1 << 8
AEC_FW_ACTIVATION = 1 << 9
AEC_ANA_CHANGE = 1 << 11
AEC_DISCOVERY_LOG_CHANGE = 1 << 31


# --- Asymmetric Namespace Access (NVMe base 2.0, 8.1.1 / 5.16.1.12) ---------------------


class AnaState(IntEnum):
    """ANA state of a namespace group as seen through one controller (ANAS, bits 3:0)."""

    OPTIMIZED = 0x1
    NON_OPTIMIZED = 0x2
    INACCESSIBLE = 0x3
    PERSISTENT_LOSS = 0x4
    CHANGE = 0xF


class PathStatus(IntEnum):
    """Path Related Status (SCT 3h)."""

    INTERNAL_PATH_ERROR = 0x00
    ASYMMETRIC_ACCESS_PERSISTENT_LOSS = 0x01
    ASYMMETRIC_ACCESS_INACCESSIBLE = 0x02
    ASYMMETRIC_ACCESS_TRANSITION = 0x03
    HOST_PATHING_ERROR = 0x71
    HOST_ABORTED = 0x72


# ANACAP (Identify Controller byte 343) bits
ANACAP_OPTIMIZED = 1 << 0
ANACAP_NON_OPTIMIZED = 1 << 1
ANACAP_INACCESSIBLE = 1 << 2
ANACAP_PERSISTENT_LOSS = 1 << 3
ANACAP_CHANGE = 1 << 4
ANACAP_GRPID_STATIC = 1 << 6
ANACAP_GRPID_NS_MGMT = 1 << 7
ANA_LOG_LSP_RGO = 1 << 0  # Get Log Page 0Ch LSP bit 0: Return Groups Only

# Dataset Management attributes
DSM_ATTR_DEALLOCATE = 1 << 2
DSM_RANGE_SIZE = 16
DSM_MAX_RANGES = 256

# Read/Write CDW12 bits
RW_FUA = 1 << 30
RW_LIMITED_RETRY = 1 << 31
WZ_DEAC = 1 << 25
