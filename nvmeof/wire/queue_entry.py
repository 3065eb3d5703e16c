"""Submission and completion queue entries, SGL descriptor and Fabrics command layouts."""

from __future__ import annotations

from .constants import CONNECT_DATA_SIZE, CQE_SIZE, NQN_FIELD_SIZE, SQE_SIZE
from .layout import Layout

# SGL descriptor (16 bytes); on NVMe/TCP only Data Block (offset) and Transport Data Block.
SGL_DESCRIPTOR = Layout("SglDescriptor", 16, [
    ("sgl_addr", "Q", 0),
    ("sgl_len", "I", 8),
    ("sgl_type", "B", 15),  # SGL identifier: type << 4 | subtype
])
SQE_DPTR_OFFSET = 24

# Common command format (NVMe base spec, figure "Common Command Format"), fabrics SGL view.
SQE = Layout("Sqe", SQE_SIZE, [
    ("opcode", "B", 0),
    ("flags", "B", 1),  # bits 1:0 FUSE, bits 7:6 PSDT
    ("cid", "H", 2),
    ("nsid", "I", 4),
    ("cdw2", "I", 8),
    ("cdw3", "I", 12),
    ("mptr", "Q", 16),
    *[(f, code, SQE_DPTR_OFFSET + off) for f, code, off in SGL_DESCRIPTOR.fields],
    ("cdw10", "I", 40),
    ("cdw11", "I", 44),
    ("cdw12", "I", 48),
    ("cdw13", "I", 52),
    ("cdw14", "I", 56),
    ("cdw15", "I", 60),
])
# Field positions in SQE.struct.unpack_from() tuples, for the hot path.
SQE_OPCODE, SQE_FLAGS, SQE_CID, SQE_NSID, SQE_CDW2, SQE_CDW3 = range(6)
SQE_SGL_ADDR, SQE_SGL_LEN, SQE_SGL_TYPE = 7, 8, 9
SQE_CDW10, SQE_CDW11, SQE_CDW12, SQE_CDW13, SQE_CDW14, SQE_CDW15 = range(10, 16)

# Fabrics command view of the same 64 bytes (fctype at byte 4 instead of NSID).
FABRICS_CMD = Layout("FabricsCmd", SQE_SIZE, [
    ("opcode", "B", 0),
    ("flags", "B", 1),
    ("cid", "H", 2),
    ("fctype", "B", 4),
    ("sgl_addr", "Q", 24),
    ("sgl_len", "I", 32),
    ("sgl_type", "B", 39),
    ("cdw10", "I", 40),
    ("cdw11", "I", 44),
    ("cdw12", "I", 48),
    ("cdw13", "I", 52),
])
FABRICS_FCTYPE_OFFSET = FABRICS_CMD.offset_of("fctype")

# The part every Fabrics command shares (opcode 7Fh, FCTYPE, SGL1); commands added since
# derive their layouts from it.
FABRICS_CMD_HEADER = Layout("FabricsCmdHeader", 40, [
    ("opcode", "B", 0),
    ("flags", "B", 1),
    ("cid", "H", 2),
    ("fctype", "B", 4),
    ("sgl_addr", "Q", 24),
    ("sgl_len", "I", 32),
    ("sgl_type", "B", 39),
])

CONNECT_CMD = Layout("ConnectCmd", SQE_SIZE, [
    ("opcode", "B", 0),
    ("flags", "B", 1),
    ("cid", "H", 2),
    ("fctype", "B", 4),
    ("sgl_addr", "Q", 24),
    ("sgl_len", "I", 32),
    ("sgl_type", "B", 39),
    ("recfmt", "H", 40),
    ("qid", "H", 42),
    ("sqsize", "H", 44),
    ("cattr", "B", 46),
    ("kato", "I", 48),
])

PROPERTY_CMD = Layout("PropertyCmd", SQE_SIZE, [
    ("opcode", "B", 0),
    ("flags", "B", 1),
    ("cid", "H", 2),
    ("fctype", "B", 4),
    ("attrib", "B", 40),
    ("ofst", "I", 44),
    ("value", "Q", 48),
])

CONNECT_DATA = Layout("ConnectData", CONNECT_DATA_SIZE, [
    ("hostid", "16s", 0),
    ("cntlid", "H", 16),
    ("subnqn", f"{NQN_FIELD_SIZE}s", 256),
    ("hostnqn", f"{NQN_FIELD_SIZE}s", 512),
])

CQE = Layout("Cqe", CQE_SIZE, [
    ("dw0", "I", 0),
    ("dw1", "I", 4),
    ("sqhd", "H", 8),
    ("sqid", "H", 10),
    ("cid", "H", 12),
    ("status", "H", 14),
])
CQE_DW0, CQE_DW1, CQE_SQHD, CQE_SQID, CQE_CID, CQE_STATUS = range(6)

# Connect CATTR bits
CATTR_PRIORITY_MASK = 0x3
CATTR_DISABLE_SQ_FLOW_CONTROL = 1 << 2

# Connect response DW0 on Connect Invalid Parameters: IPO (bits 15:0) and IATTR (bit 16).
CONNECT_IATTR_DATA = 1 << 16
