"""The controller (target) end of an NVMe/TCP connection.

Theory of operation
-------------------
After ICReq/ICResp, every CapsuleCmd becomes one :class:`CommandReceived` event once its
data is complete.  Per command, host-to-controller data moves through::

    NEW --(in-capsule data)------------------------------> delivered
    NEW --(transport SGL, write)--> NEED_DATA: R2T sent, H2CData collected --> delivered
    NEW --(transport SGL, read or no data)---------------> delivered

The controller answers with :meth:`complete` or :meth:`complete_with_data`; the latter
sends C2HData PDUs of at most ``c2h_chunk`` bytes and, when ``c2h_success`` is on, the host
disabled SQ flow control at Connect (the SQHD it would lose is then meaningless, which is
when the Linux target uses it too) and the completion is a plain success, sets SUCCESS on
the last one instead of sending a CapsuleResp.  A data digest error completes the command here with Transient Transport
Error (non-fatal, as the spec says); every other transfer-rule violation is a PduError.
"""

from __future__ import annotations

from collections import deque

from ..errors import (
    CommandIdConflict,
    DataSglLengthInvalid,
    NvmeStatus,
    PduError,
    SglDescriptorTypeInvalid,
    SglOffsetInvalid,
    TransientTransportError,
)
from ..target.limits import ConnectionBudget
from ..wire.constants import (
    ADMIN_QID,
    F_LAST_PDU,
    F_SUCCESS,
    MIN_MAXH2CDATA,
    PFV_1_0,
    AdminOpcode,
    DigestFlag,
    Fes,
    PduType,
    SglType,
)
from ..wire.pdu import C2H_DATA, CAPSULE_RESP_HEADER, H2C_DATA, HOST_TO_CONTROLLER, ICREQ, ICRESP, R2T
from ..wire.queue_entry import (
    FABRICS_FCTYPE_OFFSET,
    SQE,
    SQE_CID,
    SQE_OPCODE,
    SQE_SGL_ADDR,
    SQE_SGL_LEN,
    SQE_SGL_TYPE,
)
from .connection import ConnectionState, Established, Event, TcpConnection
from .framing import Pdu

DIRECTION_MASK = 0x3
DIRECTION_HOST_TO_CTRL = 0x1
FEI_ICREQ_PFV = ICREQ.offset_of("pfv")
FEI_ICREQ_HPDA = ICREQ.offset_of("hpda")
FEI_CCCID = H2C_DATA.offset_of("cccid")
FEI_TTAG = H2C_DATA.offset_of("ttag")
FEI_DATAO = H2C_DATA.offset_of("datao")
FEI_DATAL = H2C_DATA.offset_of("datal")
FEI_PLEN = 4
DIGEST_CORRUPTION_MASK = 0xFF  # fault injection: XORed into each byte of a digest that must be wrong
_SQE = SQE.struct
_CQE_HDR = CAPSULE_RESP_HEADER.struct
_C2H = C2H_DATA.struct
_H2C = H2C_DATA.struct
_R2T = R2T.struct


class CommandReceived(Event):
    """A command with all of its host-to-controller data (``data``), ready to execute."""

    __slots__ = ("sqe", "raw", "data")

    def __init__(self, sqe: tuple, raw: bytes, data: bytes | bytearray | None) -> None:
        self.sqe = sqe  # SQE.struct tuple
        self.raw = raw  # the 64 bytes, for views such as the Fabrics layouts
        self.data = data

    @property
    def cid(self) -> int:
        return int(self.sqe[SQE_CID])

    def __repr__(self) -> str:
        size = 0 if self.data is None else len(self.data)
        return f"CommandReceived(opcode={self.sqe[SQE_OPCODE]:#x}, cid={self.cid}, data={size})"


class CommandFailedInTransport(Event):
    """A command the transport completed itself with an error (e.g. data digest)."""

    __slots__ = ("cid", "error")

    def __init__(self, cid: int, error: NvmeStatus) -> None:
        self.cid = cid
        self.error = error


class _H2CTransfer:
    __slots__ = ("sqe", "raw", "buf", "received", "error")

    def __init__(self, sqe: tuple, raw: bytes, length: int) -> None:
        self.sqe = sqe
        self.raw = raw
        self.buf: bytes | bytearray = bytearray(length)
        self.received = 0
        self.error: NvmeStatus | None = None


def writes_to_controller(sqe: tuple, raw: bytes) -> bool:
    """Data direction from the opcode (or the Fabrics command type) bits 1:0."""
    code = sqe[SQE_OPCODE]
    if code == AdminOpcode.FABRICS:
        code = raw[FABRICS_FCTYPE_OFFSET]
    return code & DIRECTION_MASK == DIRECTION_HOST_TO_CTRL


class ControllerConnection(TcpConnection):
    accept = HOST_TO_CONTROLLER
    term_req_type = PduType.C2H_TERM_REQ

    def __init__(self, *, maxh2cdata: int = 131072, in_capsule_size: int = 8192,
                 max_transfer: int = 1 << 20, c2h_chunk: int = 131072, c2h_success: bool = True,
                 max_outstanding_r2t: int = 128, max_connection_memory: int = 0) -> None:
        if maxh2cdata < MIN_MAXH2CDATA or maxh2cdata % 4:
            raise ValueError("MAXH2CDATA must be a multiple of 4 and at least 4096")
        super().__init__(max_data=max(maxh2cdata, in_capsule_size))
        # refused from the common header, before the body is buffered (FES 05h, FEI = PLEN)
        self.reader.max_data_by_type = {PduType.CAPSULE_CMD: in_capsule_size, PduType.H2C_DATA: maxh2cdata}
        self.budget = ConnectionBudget(max_connection_memory, max_outstanding_r2t)
        self.backlog = 0  # bytes the edge accepted but the socket has not taken yet (set by the edge)
        self._h2c_bytes = 0  # buffers of H2C transfers being collected
        self._c2h_owed: dict[int, int] = {}  # cid -> bytes of read data the command will send
        self._c2h_owed_bytes = 0
        self.maxh2cdata = maxh2cdata
        self.in_capsule_size = in_capsule_size
        self.max_transfer = max_transfer
        self.c2h_chunk = c2h_chunk
        self.c2h_success = c2h_success
        self.max_outstanding_r2t = max_outstanding_r2t
        self.qid = ADMIN_QID
        self.sqsize = 32
        self.sqhd = 0
        self.sq_flow_control = True
        self._transfers: dict[int, _H2CTransfer] = {}
        self._free_ttags = deque(range(max_outstanding_r2t))
        self._waiting_r2t: deque[tuple[tuple, bytes, int]] = deque()

    def bind_queue(self, qid: int, sqsize: int, *, sq_flow_control: bool = True) -> None:
        """Fabrics Connect accepted: this connection is queue ``qid`` with ``sqsize`` entries."""
        self.qid = qid
        self.sqsize = sqsize
        self.sq_flow_control = sq_flow_control

    # -- memory budget ----------------------------------------------------------------

    def memory_used(self) -> int:
        """Bytes held for this connection: receive buffer, H2C data being collected, read
        data owed by commands in flight, output not yet taken by the socket."""
        return (self.reader.capacity + self._h2c_bytes + self._c2h_owed_bytes + self.pending_output
                + self.backlog)

    def input_held(self) -> bool:
        """Over budget with output the host has yet to take: stop taking PDUs (backpressure).
        H2C transfers alone never hold input: only more input completes them."""
        limit = self.budget.limit  # checked before every PDU: kept cheap
        if not limit:
            return False
        owed = self._c2h_owed_bytes + self._out_bytes + self.backlog
        return owed > 0 and owed + self._h2c_bytes + self.reader.capacity > limit

    # -- input ----------------------------------------------------------------------

    def handle_pdu(self, pdu: Pdu, events: list[Event]) -> None:
        pdu_type = pdu.pdu_type
        if self.state is ConnectionState.AWAIT_IC:
            if pdu_type != PduType.ICREQ:
                raise PduError(Fes.PDU_SEQUENCE_ERROR, 0, "PDU before ICReq", pdu.header)
            self._icreq(pdu, events)
        elif pdu_type == PduType.CAPSULE_CMD:
            self._capsule(pdu, events)
        elif pdu_type == PduType.H2C_DATA:
            self._h2c_data(pdu, events)
        else:  # a second ICReq
            raise PduError(Fes.PDU_SEQUENCE_ERROR, 0, f"unexpected {PduType(pdu_type).name}", pdu.header)

    def _icreq(self, pdu: Pdu, events: list[Event]) -> None:
        req = ICREQ.unpack(pdu.header)
        if req.pfv != PFV_1_0:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_ICREQ_PFV, f"PFV {req.pfv}", pdu.header)
        if req.hpda > 31:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_ICREQ_HPDA, f"HPDA {req.hpda}", pdu.header)
        self.peer_data_alignment = (req.hpda + 1) * 4  # C2HData data starts on this boundary
        self.hdgst = bool(req.dgst & DigestFlag.HDGST_ENABLE)
        self.ddgst = bool(req.dgst & DigestFlag.DDGST_ENABLE)
        self.reader.hdgst = self.hdgst
        self.reader.ddgst = self.ddgst
        self._send([ICRESP.pack(pdu_type=PduType.ICRESP, hlen=ICRESP.size, plen=ICRESP.size,
                                pfv=PFV_1_0, cpda=0, dgst=req.dgst & 0x3, maxh2cdata=self.maxh2cdata)])
        self._move(ConnectionState.READY)
        events.append(Established(self.hdgst, self.ddgst, self.maxh2cdata))

    def _capsule(self, pdu: Pdu, events: list[Event]) -> None:
        raw = pdu.header[8:72]
        sqe = _SQE.unpack_from(raw)
        self.sqhd = (self.sqhd + 1) % self.sqsize if self.sqsize else 0
        cid = sqe[SQE_CID]
        if self._awaiting_data(cid):  # that CID is still outstanding on this queue
            self._fail_command(cid, CommandIdConflict(f"CID {cid} is a write still awaiting its data"), events)
            return
        data = pdu.data
        sgl_type = sqe[SQE_SGL_TYPE]
        sgl_len = sqe[SQE_SGL_LEN]
        if data is not None:
            if len(data) > self.in_capsule_size:  # the framing refuses it first; kept as a guard
                raise PduError(Fes.DATA_TRANSFER_LIMIT_EXCEEDED, FEI_PLEN,
                               f"{len(data)} bytes of in-capsule data, limit {self.in_capsule_size}",
                               pdu.header)
            if not pdu.data_digest_ok:
                self._fail_command(cid, TransientTransportError("data digest error on in-capsule data"),
                                   events)
                return
            if sgl_type != SglType.DATA_BLOCK_OFFSET:
                self._fail_command(cid, SglDescriptorTypeInvalid("in-capsule data needs an offset SGL"),
                                   events)
                return
            if sqe[SQE_SGL_ADDR] != 0:
                self._fail_command(cid, SglOffsetInvalid("in-capsule offset must be 0"), events)
                return
            if sgl_len != len(data):
                self._fail_command(cid, DataSglLengthInvalid(
                    f"SGL length {sgl_len} != {len(data)} in-capsule bytes"), events)
                return
            events.append(CommandReceived(sqe, raw, data))
            return
        if sgl_type == SglType.TRANSPORT_DATA_BLOCK:
            if sgl_len and writes_to_controller(sqe, raw):
                if sgl_len > self.max_transfer:
                    self._fail_command(cid, DataSglLengthInvalid(
                        f"transfer of {sgl_len} bytes exceeds MDTS ({self.max_transfer})"), events)
                    return
                if len(self._waiting_r2t) >= max(self.sqsize, 1):  # more writes than the SQ has entries
                    raise PduError(Fes.DATA_TRANSFER_LIMIT_EXCEEDED, 0,  # 05h, once named "R2T Limit Exceeded"
                                   f"over {self.sqsize} writes wait for an R2T: the host overruns its SQ",
                                   pdu.header)
                self._waiting_r2t.append((sqe, raw, sgl_len))
                self._pump_r2t()
                return
            if sgl_len and cid not in self._c2h_owed:
                self._c2h_owed[cid] = sgl_len
                self._c2h_owed_bytes += sgl_len
            events.append(CommandReceived(sqe, raw, None))
            return
        if sgl_type == SglType.DATA_BLOCK_OFFSET and sgl_len == 0:
            events.append(CommandReceived(sqe, raw, None))
            return
        self._fail_command(cid, SglDescriptorTypeInvalid(f"SGL identifier {sgl_type:#x}"), events)

    def _awaiting_data(self, cid: int) -> bool:
        """Whether a write with this CID waits for an R2T or for its H2CData."""
        return (any(x.sqe[SQE_CID] == cid for x in self._transfers.values())
                or any(w[0][SQE_CID] == cid for w in self._waiting_r2t))

    def _pump_r2t(self) -> None:
        """Send R2Ts for waiting commands, in order, while a TTAG and the budget allow."""
        waiting = self._waiting_r2t
        while waiting and self._free_ttags and self.open:
            sqe, raw, length = waiting[0]
            if not self.budget.may_start_transfer(self.memory_used(), length, len(self._transfers)):
                return
            waiting.popleft()
            ttag = self._free_ttags.popleft()
            self._transfers[ttag] = _H2CTransfer(sqe, raw, length)
            self._h2c_bytes += length
            self.pdu(_R2T.pack(PduType.R2T, 0, R2T.size, 0, 0, sqe[SQE_CID], ttag, 0, length))

    def _h2c_data(self, pdu: Pdu, events: list[Event]) -> None:
        _, _, _, _, _, cccid, ttag, datao, datal = _H2C.unpack_from(pdu.header)
        xfer = self._transfers.get(ttag)
        if xfer is None:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_TTAG, f"unknown TTAG {ttag}", pdu.header)
        if cccid != xfer.sqe[SQE_CID]:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_CCCID, f"CCCID {cccid} != {xfer.sqe[SQE_CID]}",
                           pdu.header)
        size = 0 if pdu.data is None else len(pdu.data)
        if datal != size:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_DATAL, f"DATAL {datal} != {size} data bytes",
                           pdu.header)
        if datal > self.maxh2cdata:
            raise PduError(Fes.DATA_TRANSFER_LIMIT_EXCEEDED, FEI_DATAL,
                           f"DATAL {datal} > MAXH2CDATA {self.maxh2cdata}", pdu.header)
        if datao != xfer.received or datao + datal > len(xfer.buf) or datal == 0:
            raise PduError(Fes.DATA_TRANSFER_OUT_OF_RANGE, FEI_DATAO,
                           f"DATAO {datao}+{datal} outside expected {xfer.received}/{len(xfer.buf)}",
                           pdu.header)
        assert pdu.data is not None
        if not pdu.data_digest_ok and xfer.error is None:
            xfer.error = TransientTransportError("data digest error on H2CData")
        if datal == len(xfer.buf):  # the whole transfer in one PDU: keep its buffer, no copy
            xfer.buf = pdu.data
        else:
            assert isinstance(xfer.buf, bytearray)
            xfer.buf[datao:datao + datal] = pdu.data
        xfer.received += datal
        if xfer.received < len(xfer.buf):
            return
        del self._transfers[ttag]
        self._free_ttags.append(ttag)
        self._h2c_bytes -= len(xfer.buf)
        if xfer.error is not None:
            self._fail_command(xfer.sqe[SQE_CID], xfer.error, events)
        else:
            events.append(CommandReceived(xfer.sqe, xfer.raw, xfer.buf))
        self._pump_r2t()

    def _fail_command(self, cid: int, error: NvmeStatus, events: list[Event]) -> None:
        self.complete(cid, error.status, error.dw0)
        events.append(CommandFailedInTransport(cid, error))

    # -- output ---------------------------------------------------------------------

    def complete(self, cid: int, status: int = 0, dw0: int = 0, dw1: int = 0) -> None:
        if not self.open:
            return
        self._settle(cid)
        self.pdu(_CQE_HDR.pack(PduType.CAPSULE_RESP, 0, CAPSULE_RESP_HEADER.size, 0, 0,
                               dw0, dw1, self.sqhd, self.qid, cid, status))

    def complete_with_data(self, cid: int, data: bytes | bytearray | memoryview, status: int = 0,
                           dw0: int = 0, dw1: int = 0, corrupt_ddgst: bool = False) -> None:
        """C2HData PDUs carrying ``data``, then the completion (or SUCCESS on the last PDU).
        ``corrupt_ddgst`` (fault injection): the first PDU's data digest is made wrong."""
        if not self.open:
            return
        self._settle(cid)
        view = memoryview(data)
        total = len(view)
        chunk = self.c2h_chunk
        success = self.c2h_success and not self.sq_flow_control and status == 0 and dw0 == 0 and dw1 == 0
        offset = 0
        while offset < total:
            n = min(chunk, total - offset)
            flags = 0
            if offset + n == total:
                flags = F_LAST_PDU | (F_SUCCESS if success else 0)
            self.pdu(_C2H.pack(PduType.C2H_DATA, 0, C2H_DATA.size, 0, 0, cid, offset, n),
                     view[offset:offset + n], extra_flags=flags)
            if corrupt_ddgst and self.ddgst:  # the digest is the PDU's last piece
                self._out[-1] = bytes(b ^ DIGEST_CORRUPTION_MASK for b in bytes(self._out[-1]))
                corrupt_ddgst = False
            offset += n
        if not success or total == 0:
            self.complete(cid, status, dw0, dw1)

    def _settle(self, cid: int) -> None:
        """The read data ``cid`` owed is now output (or will never come): budget again."""
        owed = self._c2h_owed.pop(cid, 0)
        if owed:
            self._c2h_owed_bytes -= owed
        if self._waiting_r2t:
            self._pump_r2t()

