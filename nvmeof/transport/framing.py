"""Incremental PDU framing: bytes in, whole validated PDUs out.

Theory of operation
-------------------
Received bytes accumulate in one buffer (``receive_data`` copies them in, or an asyncio
``BufferedProtocol`` writes straight into :meth:`PduReader.get_buffer`).  :meth:`next_pdu`
walks the buffer through four states for each PDU::

    HEADER (8-byte common header, validated as soon as it is complete)
      -> PSH + HDGST (whole header present; header digest checked)
      -> DATA + DDGST (plen bytes present; data digest checked, a mismatch is *not* fatal:
         the PDU is delivered with ``data_digest_ok=False``)
      -> next PDU

Every rule violation raises :class:`~nvmeof.errors.PduError` with the FES and FEI the
transport spec defines (FEI = byte offset of the offending field in the header); the
reader is then dead and the connection sends a TermReq.  Payloads are copied out of the
buffer once, so a delivered PDU never aliases memory that later reads overwrite.
"""

from __future__ import annotations

from ..errors import PduError, ProtocolMisuse
from ..wire.constants import (
    CH_SIZE,
    DIGEST_SIZE,
    F_DDGSTF,
    F_HDGSTF,
    TERM_REQ_HLEN,
    TERM_REQ_MAX_DATA,
    Fes,
    PduType,
)
from ..wire.crc import crc32c, read_digest
from ..wire.pdu import COMMON_HEADER, DATA_DIGEST_TYPES, DATA_TYPES, HEADER_DIGEST_TYPES, HLEN, VALID_FLAGS

FEI_TYPE = COMMON_HEADER.offset_of("pdu_type")
FEI_FLAGS = COMMON_HEADER.offset_of("flags")
FEI_HLEN = COMMON_HEADER.offset_of("hlen")
FEI_PDO = COMMON_HEADER.offset_of("pdo")
FEI_PLEN = COMMON_HEADER.offset_of("plen")
PDO_ALIGNMENT = 4
MAX_PDO_PADDING = 124  # PDA is at most 31 (0's based dwords): 128-byte alignment, <= 124 pad bytes
_INITIAL_CAPACITY = 256 * 1024
_MIN_READ_SPACE = 64 * 1024
_KNOWN_TYPES = frozenset(int(t) for t in PduType)
_CH = COMMON_HEADER.struct


class Pdu:
    """One received PDU: the header (``hlen`` bytes, digest stripped) and its data."""

    __slots__ = ("pdu_type", "flags", "hlen", "pdo", "plen", "header", "data", "data_digest_ok")

    def __init__(self, pdu_type: int, flags: int, hlen: int, pdo: int, plen: int,
                 header: bytes, data: bytes | None, data_digest_ok: bool) -> None:
        self.pdu_type = pdu_type
        self.flags = flags
        self.hlen = hlen
        self.pdo = pdo
        self.plen = plen
        self.header = header
        self.data = data
        self.data_digest_ok = data_digest_ok

    def __repr__(self) -> str:
        name = PduType(self.pdu_type).name if self.pdu_type in _KNOWN_TYPES else hex(self.pdu_type)
        size = 0 if self.data is None else len(self.data)
        return f"Pdu({name}, flags={self.flags:#x}, plen={self.plen}, data={size})"


class PduReader:
    """Frames PDUs of the types in ``accept`` (the peer's direction)."""

    def __init__(self, accept: frozenset[int], max_data: int) -> None:
        self.accept = accept
        self.max_data = max_data  # largest data field accepted in one PDU
        # per PDU type, overriding max_data (e.g. CapsuleCmd: in-capsule size, H2CData: MAXH2CDATA)
        self.max_data_by_type: dict[int, int] = {}
        self.hdgst = False
        self.ddgst = False
        self._buf = bytearray(_INITIAL_CAPACITY)
        self._start = 0
        self._end = 0
        self._checked_at = -1  # start offset whose common header was already validated
        self.dead = False

    # -- input ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        view = self.get_buffer(n)
        view[:n] = data
        self.buffer_updated(n)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable space after the buffered bytes (BufferedProtocol.get_buffer)."""
        want = max(sizehint, _MIN_READ_SPACE)
        if len(self._buf) - self._end < want:
            self._make_room(want)
        return memoryview(self._buf)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes

    @property
    def buffered(self) -> int:
        return self._end - self._start

    @property
    def capacity(self) -> int:
        """Bytes of memory the receive buffer holds (what a memory budget counts)."""
        return len(self._buf)

    def _make_room(self, want: int) -> None:
        pending = self._end - self._start
        was_checked = self._checked_at == self._start
        if pending + want > len(self._buf):
            new = bytearray(max(len(self._buf) * 2, pending + want))
            new[:pending] = self._buf[self._start:self._end]
            self._buf = new
        elif self._start:
            self._buf[:pending] = self._buf[self._start:self._end]
        self._checked_at = 0 if was_checked else -1
        self._start = 0
        self._end = pending

    # -- output ---------------------------------------------------------------------

    def next_pdu(self) -> Pdu | None:
        """The next whole PDU, ``None`` if more bytes are needed; raises PduError."""
        if self.dead:
            raise ProtocolMisuse("PduReader used after a fatal PDU error")
        start = self._start
        avail = self._end - start
        if avail < CH_SIZE:
            return None
        buf = self._buf
        pdu_type, flags, hlen, pdo, plen = _CH.unpack_from(buf, start)
        if self._checked_at != start:
            self._check_common_header(pdu_type, flags, hlen, pdo, plen, avail)
            self._checked_at = start
        if avail < plen:
            return None
        is_term = pdu_type == PduType.H2C_TERM_REQ or pdu_type == PduType.C2H_TERM_REQ
        # TermReqs never carry digests (their flags are not validated): ignore HDGSTF there.
        hd = DIGEST_SIZE if flags & F_HDGSTF and not is_term else 0
        view = memoryview(buf)
        if hd:
            if crc32c(view[start:start + hlen]) != read_digest(buf, start + hlen):
                self._fail(Fes.HEADER_DIGEST_ERROR, 0, "header digest mismatch", hlen)
        header = bytes(view[start:start + hlen])
        data: bytes | None = None
        ok = True
        if is_term:
            if plen > hlen:
                data = bytes(view[start + hlen:start + plen])
        elif plen > hlen + hd:
            dd = DIGEST_SIZE if flags & F_DDGSTF else 0
            data = bytes(view[start + pdo:start + plen - dd])
            if dd:
                ok = crc32c(data) == read_digest(buf, start + plen - dd)
        self._start = start + plen
        if self._start == self._end:
            self._start = self._end = 0
        self._checked_at = -1
        return Pdu(pdu_type, flags, hlen, pdo, plen, header, data, ok)

    def _fail(self, fes: Fes, fei: int, message: str, hlen: int = CH_SIZE) -> None:
        self.dead = True
        take = min(max(hlen, CH_SIZE), self._end - self._start, TERM_REQ_MAX_DATA)
        raise PduError(fes, fei, message, bytes(self._buf[self._start:self._start + take]))

    def _check_common_header(self, pdu_type: int, flags: int, hlen: int, pdo: int, plen: int,
                             avail: int) -> None:
        if pdu_type not in self.accept:
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_TYPE, f"unexpected PDU type {pdu_type:#x}")
        expected_hlen = HLEN[pdu_type]
        if hlen != expected_hlen:
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_HLEN, f"hlen {hlen} != {expected_hlen}")
        if pdu_type in (PduType.H2C_TERM_REQ, PduType.C2H_TERM_REQ):
            if not TERM_REQ_HLEN <= plen <= TERM_REQ_HLEN + TERM_REQ_MAX_DATA:
                self._fail(Fes.INVALID_HEADER_FIELD, FEI_PLEN, f"TermReq plen {plen}")
            return
        if flags & ~VALID_FLAGS[pdu_type]:
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_FLAGS, f"flags {flags:#x} invalid for this PDU type")
        hd_flag = bool(flags & F_HDGSTF)
        hd_expected = self.hdgst and pdu_type in HEADER_DIGEST_TYPES
        if hd_flag != hd_expected:
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_FLAGS, "HDGSTF does not match the negotiated digest")
        hd = DIGEST_SIZE if hd_flag else 0
        dd_flag = bool(flags & F_DDGSTF)
        if dd_flag and not (self.ddgst and pdu_type in DATA_DIGEST_TYPES):
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_FLAGS, "DDGSTF set but data digest not negotiated")
        if plen < hlen + hd:
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_PLEN, f"plen {plen} shorter than the header")
        if plen == hlen + hd:
            if dd_flag:
                self._fail(Fes.INVALID_HEADER_FIELD, FEI_FLAGS, "DDGSTF set on a PDU without data")
            if pdo not in (0, hlen + hd):
                self._fail(Fes.INVALID_HEADER_FIELD, FEI_PDO, f"pdo {pdo} on a PDU without data")
            return
        if pdu_type not in DATA_TYPES:
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_PLEN, f"plen {plen} but this PDU type carries no data")
        if self.ddgst and not dd_flag:
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_FLAGS, "data digest negotiated but DDGSTF clear")
        dd = DIGEST_SIZE if dd_flag else 0
        if pdo < hlen + hd or pdo % PDO_ALIGNMENT or pdo + dd >= plen or pdo - hlen - hd > MAX_PDO_PADDING:
            self._fail(Fes.INVALID_HEADER_FIELD, FEI_PDO, f"pdo {pdo} invalid for hlen {hlen}, plen {plen}")
        limit = self.max_data_by_type.get(pdu_type, self.max_data)
        if plen - pdo - dd > limit:  # refused from the common header: the body is never buffered
            self._fail(Fes.DATA_TRANSFER_LIMIT_EXCEEDED, FEI_PLEN,
                       f"{plen - pdo - dd} data bytes exceed the limit {limit} for this PDU type", hlen)
