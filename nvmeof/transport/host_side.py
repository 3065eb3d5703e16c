"""The host (initiator) end of an NVMe/TCP connection.

Theory of operation
-------------------
:meth:`HostConnection.initiate` queues the ICReq; the ICResp is checked the way the Linux
host checks it (PFV 0, digests echoed exactly, CPDA 0, MAXH2CDATA >= 4096 and a multiple
of 4).  :meth:`submit` sends one command, choosing in-capsule data when the payload fits
the capsule and a Transport SGL otherwise; per command, data then moves as::

    write: SUBMITTED --R2T--> H2CData PDUs (<= MAXH2CDATA each, LAST_PDU on the last)
    read:  SUBMITTED --C2HData...--> (SUCCESS flag | CapsuleResp) --> Response

Every response becomes a :class:`Response` event carrying status, DW0/DW1 and, for
reads, the bytes received.
"""

from __future__ import annotations

from ..errors import PduError
from ..wire.constants import (
    CH_SIZE,
    F_LAST_PDU,
    F_SUCCESS,
    MIN_MAXH2CDATA,
    PFV_1_0,
    PSDT_SGL_MPTR_CONTIG,
    PSDT_SHIFT,
    DigestFlag,
    Fes,
    GenericStatus,
    PduType,
    SglType,
    StatusCodeType,
    encode_status,
)
from ..wire.pdu import (
    C2H_DATA,
    CAPSULE_CMD_HEADER,
    CAPSULE_RESP_HEADER,
    CONTROLLER_TO_HOST,
    H2C_DATA,
    ICREQ,
    ICRESP,
    R2T,
)
from ..wire.queue_entry import SGL_DESCRIPTOR, SQE_DPTR_OFFSET
from .connection import ConnectionState, Established, Event, TcpConnection
from .framing import Pdu

FEI_DGST = ICRESP.offset_of("dgst")
FEI_PFV = ICRESP.offset_of("pfv")
FEI_CPDA = ICRESP.offset_of("cpda")
FEI_MAXH2CDATA = ICRESP.offset_of("maxh2cdata")
FEI_CCCID = C2H_DATA.offset_of("cccid")
FEI_DATAO = C2H_DATA.offset_of("datao")
FEI_FLAGS = 1
ADMIN_IN_CAPSULE_SIZE = 8192  # NVME_TCP_ADMIN_CCSZ - the SQE
_SGL = SGL_DESCRIPTOR.struct
_CMD_HDR_SIZE = CAPSULE_CMD_HEADER.size
_C2H = C2H_DATA.struct
_R2T = R2T.struct
_H2C = H2C_DATA.struct
_RESP = CAPSULE_RESP_HEADER.struct
_DIGEST_ERROR_STATUS = encode_status(StatusCodeType.GENERIC, GenericStatus.DATA_TRANSFER_ERROR)
_PSDT_SGL = PSDT_SGL_MPTR_CONTIG << PSDT_SHIFT


class Response(Event):
    """A completed command: CQE fields plus the data a read brought back."""

    __slots__ = ("cid", "status", "dw0", "dw1", "sqhd", "data")

    def __init__(self, cid: int, status: int, dw0: int, dw1: int, sqhd: int,
                 data: bytearray | None) -> None:
        self.cid = cid
        self.status = status
        self.dw0 = dw0
        self.dw1 = dw1
        self.sqhd = sqhd
        self.data = data

    def __repr__(self) -> str:
        return f"Response(cid={self.cid}, status={self.status:#x}, dw0={self.dw0:#x})"


class _Read:
    __slots__ = ("buf", "received", "digest_error")

    def __init__(self, length: int) -> None:
        self.buf = bytearray(length)
        self.received = 0
        self.digest_error = False


class HostConnection(TcpConnection):
    accept = CONTROLLER_TO_HOST
    term_req_type = PduType.H2C_TERM_REQ

    def __init__(self, *, hdgst: bool = False, ddgst: bool = False, max_data: int = 1 << 20) -> None:
        super().__init__(max_data=max_data)
        self.want_hdgst = hdgst
        self.want_ddgst = ddgst
        self.maxh2cdata = 0
        self.in_capsule_size = ADMIN_IN_CAPSULE_SIZE
        self._writes: dict[int, memoryview] = {}
        self._reads: dict[int, _Read] = {}

    def initiate(self) -> None:
        dgst = (DigestFlag.HDGST_ENABLE if self.want_hdgst else 0) | (
            DigestFlag.DDGST_ENABLE if self.want_ddgst else 0)
        self._send([ICREQ.pack(pdu_type=PduType.ICREQ, hlen=ICREQ.size, plen=ICREQ.size, pfv=PFV_1_0,
                               hpda=0, dgst=int(dgst), maxr2t=0)])

    @property
    def outstanding(self) -> int:
        return len(self._writes) + len(self._reads)

    # -- output ---------------------------------------------------------------------

    def submit(self, sqe: bytearray, data: bytes | bytearray | memoryview | None = None,
               read_length: int = 0) -> None:
        """Send the 64-byte ``sqe`` (SGL fields are filled in here) with optional data."""
        if self.state is not ConnectionState.READY:
            raise ConnectionError(f"connection is {self.state.name}")
        cid = int.from_bytes(sqe[2:4], "little")
        sqe[1] = (sqe[1] & 0x3F) | _PSDT_SGL
        header = bytearray(_CMD_HDR_SIZE)
        header[0] = PduType.CAPSULE_CMD
        if data is not None and len(data):
            if len(data) <= self.in_capsule_size:
                _SGL.pack_into(sqe, SQE_DPTR_OFFSET, 0, len(data), SglType.DATA_BLOCK_OFFSET)
                header[CH_SIZE:] = sqe
                self.pdu(header, data)
                return
            _SGL.pack_into(sqe, SQE_DPTR_OFFSET, 0, len(data), SglType.TRANSPORT_DATA_BLOCK)
            self._writes[cid] = memoryview(data)
        else:
            _SGL.pack_into(sqe, SQE_DPTR_OFFSET, 0, read_length, SglType.TRANSPORT_DATA_BLOCK)
            if read_length:
                self._reads[cid] = _Read(read_length)
        header[CH_SIZE:] = sqe
        self.pdu(header)

    # -- input ----------------------------------------------------------------------

    def handle_pdu(self, pdu: Pdu, events: list[Event]) -> None:
        pdu_type = pdu.pdu_type
        if self.state is ConnectionState.AWAIT_IC:
            if pdu_type != PduType.ICRESP:
                raise PduError(Fes.PDU_SEQUENCE_ERROR, 0, "PDU before ICResp", pdu.header)
            self._icresp(pdu, events)
        elif pdu_type == PduType.CAPSULE_RESP:
            _, _, _, _, _, dw0, dw1, sqhd, _, cid, status = _RESP.unpack_from(pdu.header)
            read = self._reads.pop(cid, None)
            self._writes.pop(cid, None)
            data = None
            if read is not None:
                data = read.buf if read.received == len(read.buf) else read.buf[:read.received]
                if read.digest_error and status == 0:
                    status = _DIGEST_ERROR_STATUS
            events.append(Response(cid, status, dw0, dw1, sqhd, data))
        elif pdu_type == PduType.C2H_DATA:
            self._c2h(pdu, events)
        elif pdu_type == PduType.R2T:
            self._r2t(pdu)
        else:
            raise PduError(Fes.PDU_SEQUENCE_ERROR, 0, f"unexpected {PduType(pdu_type).name}", pdu.header)

    def _icresp(self, pdu: Pdu, events: list[Event]) -> None:
        resp = ICRESP.unpack(pdu.header)
        if resp.pfv != PFV_1_0:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_PFV, f"PFV {resp.pfv}", pdu.header)
        hd = bool(resp.dgst & DigestFlag.HDGST_ENABLE)
        dd = bool(resp.dgst & DigestFlag.DDGST_ENABLE)
        if hd != self.want_hdgst or dd != self.want_ddgst:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_DGST, "controller changed the digest choice",
                           pdu.header)
        if resp.cpda != 0:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_CPDA, f"CPDA {resp.cpda} unsupported", pdu.header)
        if resp.maxh2cdata < MIN_MAXH2CDATA or resp.maxh2cdata % 4:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_MAXH2CDATA, f"MAXH2CDATA {resp.maxh2cdata}",
                           pdu.header)
        self.hdgst, self.ddgst = hd, dd
        self.reader.hdgst, self.reader.ddgst = hd, dd
        self.maxh2cdata = resp.maxh2cdata
        self._move(ConnectionState.READY)
        events.append(Established(hd, dd, resp.maxh2cdata))

    def _c2h(self, pdu: Pdu, events: list[Event]) -> None:
        flags = pdu.flags
        _, _, _, _, _, cid, datao, datal = _C2H.unpack_from(pdu.header)
        read = self._reads.get(cid)
        if read is None:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_CCCID, f"C2HData for unknown command {cid}",
                           pdu.header)
        data = pdu.data or b""
        if datal != len(data) or datao != read.received or datao + datal > len(read.buf):
            raise PduError(Fes.DATA_TRANSFER_OUT_OF_RANGE, FEI_DATAO,
                           f"C2HData {datao}+{datal} outside {read.received}/{len(read.buf)}", pdu.header)
        read.buf[datao:datao + datal] = data
        read.received += datal
        if not pdu.data_digest_ok:
            read.digest_error = True
        if flags & F_SUCCESS:
            if not flags & F_LAST_PDU:
                raise PduError(Fes.INVALID_HEADER_FIELD, FEI_FLAGS, "SUCCESS without LAST_PDU", pdu.header)
            del self._reads[cid]
            status = _DIGEST_ERROR_STATUS if read.digest_error else 0
            buf = read.buf if read.received == len(read.buf) else read.buf[:read.received]
            events.append(Response(cid, status, 0, 0, 0, buf))

    def _r2t(self, pdu: Pdu) -> None:
        _, _, _, _, _, cid, ttag, r2to, r2tl = _R2T.unpack_from(pdu.header)
        data = self._writes.get(cid)
        if data is None:
            raise PduError(Fes.INVALID_HEADER_FIELD, FEI_CCCID, f"R2T for unknown command {cid}", pdu.header)
        if r2tl == 0 or r2to + r2tl > len(data):
            raise PduError(Fes.DATA_TRANSFER_OUT_OF_RANGE, FEI_DATAO, f"R2T {r2to}+{r2tl} beyond {len(data)}",
                           pdu.header)
        end = r2to + r2tl
        offset = r2to
        chunk = self.maxh2cdata
        while offset < end:
            n = min(chunk, end - offset)
            last = F_LAST_PDU if offset + n == end else 0
            self.pdu(_H2C.pack(PduType.H2C_DATA, 0, H2C_DATA.size, 0, 0, cid, ttag, offset, n),
                     data[offset:offset + n], extra_flags=last)
            offset += n
