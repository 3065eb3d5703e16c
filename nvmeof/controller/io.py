"""NVM command set I/O: decode, validate against the namespace, hand to the backend.

Read/Write/Write Zeroes carry SLBA in CDW10-11 and NLB (0's based) in CDW12 bits 15:0;
FUA is CDW12 bit 30; Write Zeroes' DEAC is CDW12 bit 25; Dataset Management carries the
number of ranges (0's based) in CDW10 and the attributes in CDW11, with 16-byte ranges
(context attributes, length in logical blocks, starting LBA) as data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import (
    DataSglLengthInvalid,
    InvalidField,
    InvalidNamespace,
    InvalidOpcode,
    LbaOutOfRange,
)
from ..wire.constants import (
    DSM_ATTR_DEALLOCATE,
    DSM_MAX_RANGES,
    DSM_RANGE_SIZE,
    RW_FUA,
    WZ_DEAC,
    Csi,
    NvmOpcode,
)
from ..wire.layout import Layout
from ..wire.queue_entry import (
    SQE_CDW10,
    SQE_CDW11,
    SQE_CDW12,
    SQE_CID,
    SQE_NSID,
    SQE_OPCODE,
    SQE_SGL_LEN,
)
from . import kv
from .backend import IoCommand
from .model import NSID_ALL

if TYPE_CHECKING:
    from ..transport.controller_side import CommandReceived
    from .controller import Controller

DSM_RANGE = Layout("DsmRange", DSM_RANGE_SIZE, [
    ("context_attributes", "I", 0),
    ("nlb", "I", 4),
    ("slba", "Q", 8),
])
_DSM = DSM_RANGE.struct
NLB_MASK = 0xFFFF
IO_OPCODES = frozenset({NvmOpcode.FLUSH, NvmOpcode.WRITE, NvmOpcode.READ, NvmOpcode.WRITE_ZEROES,
                        NvmOpcode.DATASET_MANAGEMENT})


def decode_io(ctrl: Controller, qid: int, ev: CommandReceived) -> IoCommand | list[IoCommand]:
    """Validate one I/O command; a Flush of NSID FFFFFFFFh expands to every namespace."""
    sqe = ev.sqe
    opcode = sqe[SQE_OPCODE]
    nsid = sqe[SQE_NSID]
    cid = sqe[SQE_CID]
    namespaces = ctrl.visible_namespaces()
    if opcode == NvmOpcode.FLUSH and nsid == NSID_ALL:
        return [IoCommand(opcode, n, cid, qid=qid, cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn)
                for n, ns in sorted(namespaces.items()) if ns.csi in (Csi.NVM, Csi.KV)]
    ns = namespaces.get(nsid)
    if ns is None:
        raise InvalidNamespace(f"namespace {nsid} is not active")
    if ns.csi == Csi.KV:
        return kv.decode_kv(ctrl, qid, ev, ns)
    if ns.csi != Csi.NVM:
        raise InvalidOpcode(f"NVM opcode {opcode:#x} on a {Csi(ns.csi).name} namespace")
    if opcode not in IO_OPCODES:
        raise InvalidOpcode(f"I/O opcode {opcode:#x} not supported")
    if opcode == NvmOpcode.FLUSH:
        return IoCommand(opcode, nsid, cid, qid=qid, cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn)
    if opcode == NvmOpcode.DATASET_MANAGEMENT:
        return _decode_dsm(ctrl, qid, ev, ns.num_blocks)
    slba = sqe[SQE_CDW10] | (sqe[SQE_CDW11] << 32)
    cdw12 = sqe[SQE_CDW12]
    nlb = (cdw12 & NLB_MASK) + 1
    if slba + nlb > ns.num_blocks:
        raise LbaOutOfRange(f"LBA {slba}+{nlb} beyond namespace end ({ns.num_blocks} blocks)")
    fua = bool(cdw12 & RW_FUA)
    if opcode == NvmOpcode.WRITE_ZEROES:
        return IoCommand(opcode, nsid, cid, qid=qid, cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn, slba=slba,
                         nlb=nlb, fua=fua, deallocate=bool(cdw12 & WZ_DEAC))
    length = nlb * ns.block_size
    if length > ctrl.target.config.mdts_bytes:
        raise InvalidField(f"transfer of {length} bytes exceeds MDTS")
    if opcode == NvmOpcode.WRITE:
        data = ev.data
        if data is None or len(data) != length:
            raise DataSglLengthInvalid(f"write of {nlb} blocks carries {0 if data is None else len(data)} bytes")
        return IoCommand(opcode, nsid, cid, qid=qid, cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn, slba=slba,
                         nlb=nlb, data=data, fua=fua)
    if sqe[SQE_SGL_LEN] < length:
        raise DataSglLengthInvalid(f"read of {length} bytes into a {sqe[SQE_SGL_LEN]}-byte buffer")
    return IoCommand(opcode, nsid, cid, qid=qid, cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn, slba=slba, nlb=nlb,
                     fua=fua, read_length=length)


def _decode_dsm(ctrl: Controller, qid: int, ev: CommandReceived, num_blocks: int) -> IoCommand:
    sqe = ev.sqe
    nr = (sqe[SQE_CDW10] & 0xFF) + 1
    attributes = sqe[SQE_CDW11]
    data = ev.data
    if data is None or len(data) < nr * DSM_RANGE_SIZE or nr > DSM_MAX_RANGES:
        raise DataSglLengthInvalid(f"Dataset Management with {nr} ranges needs {nr * DSM_RANGE_SIZE} bytes")
    ranges: list[tuple[int, int]] = []
    for i in range(nr):
        _, nlb, slba = _DSM.unpack_from(data, i * DSM_RANGE_SIZE)
        if slba + nlb > num_blocks:
            raise LbaOutOfRange(f"DSM range {slba}+{nlb} beyond namespace end")
        if nlb:
            ranges.append((slba, nlb))
    return IoCommand(NvmOpcode.DATASET_MANAGEMENT, sqe[SQE_NSID], sqe[SQE_CID], qid=qid,
                     cntlid=ctrl.cntlid, hostnqn=ctrl.hostnqn, ranges=ranges,
                     deallocate=bool(attributes & DSM_ATTR_DEALLOCATE))


def account(ctrl: Controller, cmd: IoCommand, status: int,
            data: bytes | bytearray | memoryview | None) -> None:
    """SMART counters (host read/write commands, data units); Retrieve and Store share the
    Read and Write opcodes, so they count the same way."""
    smart = ctrl.smart
    if cmd.opcode == NvmOpcode.READ:
        smart.read_commands += 1
        if not status and data is not None:
            smart.bytes_read += len(data)
    elif cmd.opcode == NvmOpcode.WRITE:
        smart.write_commands += 1
        if not status and cmd.data is not None:
            smart.bytes_written += len(cmd.data)
