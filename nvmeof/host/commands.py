"""Submission queue entries the host builds, and the completion it gets back.

Every builder returns a fresh 64-byte ``bytearray``: the queue writes the command
identifier into it and :class:`~nvmeof.transport.host_side.HostConnection` fills in the
SGL descriptor, so builders leave CID and DPTR zero.  Layouts come from
:mod:`nvmeof.wire.queue_entry`; nothing here re-declares a wire structure.

Hot-path commands (Read, Write) pack positionally into ``SQE.struct``; control-path
commands use the keyword form of the layouts.
"""

from __future__ import annotations

from ..controller.io import DSM_RANGE
from ..transport.host_side import Response
from ..wire.constants import (
    CC_CSS_SHIFT,
    CC_EN,
    CC_IOCQES_SHIFT,
    CC_IOSQES_SHIFT,
    CC_SHN_SHIFT,
    DSM_ATTR_DEALLOCATE,
    DSM_MAX_RANGES,
    RW_FUA,
    WZ_DEAC,
    AdminOpcode,
    FabricsType,
    NvmOpcode,
)
from ..wire.queue_entry import CATTR_DISABLE_SQ_FLOW_CONTROL, CONNECT_CMD, CONNECT_DATA, PROPERTY_CMD, SQE

Completion = Response
"""A completed command: ``cid``, ``status``, ``dw0``, ``dw1``, ``sqhd`` and ``data`` (the
bytes a read brought back, else ``None``).  It is the transport's Response event, handed
through unchanged so the hot path allocates nothing more."""

NLB_MAX = 0x10000  # NLB is a 16-bit 0's based field
NUMD_LOW_BITS = 16
CNS_MASK = 0xFF
CSI_SHIFT = 24
LOG_LSP_SHIFT = 8
LOG_RAE_BIT = 1 << 15
FEATURE_SEL_SHIFT = 8
FEATURE_SAVE_BIT = 1 << 31
IOSQES_64 = 6
IOCQES_16 = 4
CC_SHN_NORMAL = 0x1
DWORD = 4
_SQE = SQE.struct


def sqe(opcode: int, *, nsid: int = 0, cdw2: int = 0, cdw3: int = 0, cdw10: int = 0, cdw11: int = 0,
        cdw12: int = 0, cdw13: int = 0, cdw14: int = 0, cdw15: int = 0, flags: int = 0) -> bytearray:
    """Any command in the common command format (SGL and CID filled in later)."""
    buf = bytearray(_SQE.size)
    _SQE.pack_into(buf, 0, opcode, flags, 0, nsid, cdw2, cdw3, 0, 0, 0, 0,
                   cdw10, cdw11, cdw12, cdw13, cdw14, cdw15)
    return buf


# -- Fabrics ------------------------------------------------------------------------


def connect(qid: int, sqsize: int, kato_ms: int, disable_sqflow: bool = False) -> bytearray:
    """Fabrics Connect; ``sqsize`` is 0's based.  ``disable_sqflow`` sets CATTR bit 2 (the
    host ignores SQHD, which lets the controller complete reads with C2HData SUCCESS)."""
    return bytearray(CONNECT_CMD.pack(opcode=AdminOpcode.FABRICS, fctype=FabricsType.CONNECT, recfmt=0,
                                      qid=qid, sqsize=sqsize, kato=kato_ms,
                                      cattr=CATTR_DISABLE_SQ_FLOW_CONTROL if disable_sqflow else 0))


def connect_data(hostid: bytes, cntlid: int, subnqn: str, hostnqn: str) -> bytes:
    """The 1024-byte Connect data (NQNs NUL padded)."""
    width = CONNECT_DATA.offset_of("hostnqn") - CONNECT_DATA.offset_of("subnqn")
    return CONNECT_DATA.pack(hostid=hostid, cntlid=cntlid, subnqn=_nqn(subnqn, width),
                             hostnqn=_nqn(hostnqn, width))


def _nqn(nqn: str, width: int) -> bytes:
    raw = nqn.encode("ascii")
    if len(raw) >= width:
        raise ValueError(f"NQN longer than {width - 1} bytes: {nqn!r}")
    return raw.ljust(width, b"\0")


def property_get(offset: int, size: int) -> bytearray:
    """Property Get; ``size`` is PROPERTY_SIZE_4 or PROPERTY_SIZE_8."""
    return bytearray(PROPERTY_CMD.pack(opcode=AdminOpcode.FABRICS, fctype=FabricsType.PROPERTY_GET,
                                       attrib=size, ofst=offset))


def property_set(offset: int, size: int, value: int) -> bytearray:
    return bytearray(PROPERTY_CMD.pack(opcode=AdminOpcode.FABRICS, fctype=FabricsType.PROPERTY_SET,
                                       attrib=size, ofst=offset, value=value))


def cc_enable(css: int) -> int:
    """CC for enabling: EN, command set selection, 64-byte SQEs, 16-byte CQEs, MPS 4 KiB."""
    return CC_EN | (css << CC_CSS_SHIFT) | (IOSQES_64 << CC_IOSQES_SHIFT) | (IOCQES_16 << CC_IOCQES_SHIFT)


def cc_shutdown(cc: int) -> int:
    """``cc`` with a normal shutdown notification (SHN = 01b)."""
    return cc | (CC_SHN_NORMAL << CC_SHN_SHIFT)


# -- admin --------------------------------------------------------------------------


def identify(cns: int, nsid: int = 0, csi: int = 0, cntid: int = 0) -> bytearray:
    return sqe(AdminOpcode.IDENTIFY, nsid=nsid, cdw10=(cns & CNS_MASK) | (cntid << 16),
               cdw11=csi << CSI_SHIFT)


def get_log_page(lid: int, length: int, offset: int = 0, nsid: int = 0xFFFFFFFF, csi: int = 0,
                 rae: bool = False, lsp: int = 0) -> bytearray:
    """Get Log Page for ``length`` bytes (a multiple of 4) at byte ``offset``."""
    if length <= 0 or length % DWORD or offset % DWORD:
        raise ValueError("log page length and offset must be positive multiples of 4")
    numd = length // DWORD - 1
    cdw10 = lid | (lsp << LOG_LSP_SHIFT) | (LOG_RAE_BIT if rae else 0) | ((numd & 0xFFFF) << NUMD_LOW_BITS)
    return sqe(AdminOpcode.GET_LOG_PAGE, nsid=nsid, cdw10=cdw10, cdw11=numd >> NUMD_LOW_BITS,
               cdw12=offset & 0xFFFFFFFF, cdw13=offset >> 32, cdw14=csi << CSI_SHIFT)


def get_features(fid: int, sel: int = 0, cdw11: int = 0, nsid: int = 0) -> bytearray:
    return sqe(AdminOpcode.GET_FEATURES, nsid=nsid, cdw10=fid | (sel << FEATURE_SEL_SHIFT), cdw11=cdw11)


def set_features(fid: int, value: int, save: bool = False, nsid: int = 0) -> bytearray:
    return sqe(AdminOpcode.SET_FEATURES, nsid=nsid, cdw10=fid | (FEATURE_SAVE_BIT if save else 0),
               cdw11=value)


def number_of_queues(count: int) -> int:
    """Set Features Number of Queues value: 0's based NSQR and NCQR."""
    return (count - 1) | ((count - 1) << 16)


def keep_alive() -> bytearray:
    return sqe(AdminOpcode.KEEP_ALIVE)


# -- NVM I/O ------------------------------------------------------------------------


def _check_nlb(nlb: int) -> None:
    if not 1 <= nlb <= NLB_MAX:
        raise ValueError(f"NLB {nlb} outside 1..{NLB_MAX}")


def read(nsid: int, slba: int, nlb: int) -> bytearray:
    _check_nlb(nlb)
    buf = bytearray(_SQE.size)
    _SQE.pack_into(buf, 0, NvmOpcode.READ, 0, 0, nsid, 0, 0, 0, 0, 0, 0,
                   slba & 0xFFFFFFFF, slba >> 32, nlb - 1, 0, 0, 0)
    return buf


def write(nsid: int, slba: int, nlb: int, fua: bool = False) -> bytearray:
    _check_nlb(nlb)
    buf = bytearray(_SQE.size)
    _SQE.pack_into(buf, 0, NvmOpcode.WRITE, 0, 0, nsid, 0, 0, 0, 0, 0, 0,
                   slba & 0xFFFFFFFF, slba >> 32, (nlb - 1) | (RW_FUA if fua else 0), 0, 0, 0)
    return buf


def flush(nsid: int) -> bytearray:
    return sqe(NvmOpcode.FLUSH, nsid=nsid)


def write_zeroes(nsid: int, slba: int, nlb: int, deallocate: bool = False) -> bytearray:
    _check_nlb(nlb)
    return sqe(NvmOpcode.WRITE_ZEROES, nsid=nsid, cdw10=slba & 0xFFFFFFFF, cdw11=slba >> 32,
               cdw12=(nlb - 1) | (WZ_DEAC if deallocate else 0))


def dataset_management(nsid: int, ranges: list[tuple[int, int]],
                       attributes: int = DSM_ATTR_DEALLOCATE) -> tuple[bytearray, bytes]:
    """Dataset Management (deallocate by default) and its range list data."""
    if not 1 <= len(ranges) <= DSM_MAX_RANGES:
        raise ValueError(f"Dataset Management takes 1..{DSM_MAX_RANGES} ranges, got {len(ranges)}")
    data = bytearray(len(ranges) * DSM_RANGE.size)
    for i, (slba, nlb) in enumerate(ranges):
        DSM_RANGE.pack_into(data, i * DSM_RANGE.size, context_attributes=0, nlb=nlb, slba=slba)
    return sqe(NvmOpcode.DATASET_MANAGEMENT, nsid=nsid, cdw10=len(ranges) - 1, cdw11=attributes), bytes(data)
