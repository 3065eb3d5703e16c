"""Errors that carry their wire meaning.

* :class:`PduError` is fatal for a connection: the peer is sent a TermReq with ``fes`` and
  ``fei`` and the connection closes.
* :class:`NvmeStatus` completes one command with ``(sct, sc, dnr)``; the connection lives on.
* :class:`ProtocolMisuse` means our own code called the API wrongly: a bug, never swallowed.
"""

from __future__ import annotations

from typing import Any

from .wire.constants import (
    CommandSpecificStatus,
    Fes,
    GenericStatus,
    KvStatus,
    MediaStatus,
    StatusCodeType,
    decode_status,
    encode_status,
)


class NvmeofError(Exception):
    """Base of every error raised by nvmeof."""


class ProtocolMisuse(NvmeofError):
    """Our own caller used the API in a way the protocol forbids (a bug)."""


class PduError(NvmeofError):
    """Fatal transport error: answer with a TermReq carrying ``fes``/``fei`` and close."""

    def __init__(self, fes: Fes, fei: int = 0, message: str = "", header: bytes = b"") -> None:
        super().__init__(f"{fes.name} (fei={fei}): {message}" if message else f"{fes.name} (fei={fei})")
        self.fes = fes
        self.fei = fei
        self.header = header


class PeerTerminated(NvmeofError):
    """The peer sent a TermReq."""

    def __init__(self, fes: int, fei: int) -> None:
        name = Fes(fes).name if fes in set(Fes) else f"0x{fes:x}"
        super().__init__(f"peer terminated the connection: {name} (fei={fei})")
        self.fes = fes
        self.fei = fei


class NvmeStatus(NvmeofError):
    """A command completes with this status (and optional DW0); the connection lives on."""

    sct: int = StatusCodeType.GENERIC
    sc: int = GenericStatus.INTERNAL_ERROR
    dnr: bool = True

    def __init__(self, message: str = "", *, sct: int | None = None, sc: int | None = None,
                 dnr: bool | None = None, dw0: int = 0) -> None:
        if sct is not None:
            self.sct = sct
        if sc is not None:
            self.sc = sc
        if dnr is not None:
            self.dnr = dnr
        self.dw0 = dw0
        super().__init__(message or self.describe())

    @property
    def status(self) -> int:
        """The 16-bit CQE status field (phase bit 0)."""
        return encode_status(self.sct, self.sc, self.dnr)

    def describe(self) -> str:
        return status_name(self.sct, self.sc)

    @classmethod
    def from_status(cls, status: int, dw0: int = 0, message: str = "") -> NvmeStatus:
        sct, sc, dnr = decode_status(status)
        return cls(message or status_name(sct, sc), sct=sct, sc=sc, dnr=dnr, dw0=dw0)


def status_name(sct: int, sc: int, *, kv: bool = False, fabrics: bool = False) -> str:
    """Human name of a status; the I/O-command-set range depends on context."""
    table: dict[int, Any] = {
        StatusCodeType.GENERIC: KvStatus if kv and sc >= 0x81 else GenericStatus,
        StatusCodeType.COMMAND_SPECIFIC: CommandSpecificStatus,
        StatusCodeType.MEDIA_ERROR: MediaStatus,
    }
    enum = table.get(sct)
    if enum is not None and sc in enum._value2member_map_:
        return f"{enum(sc).name} (sct={sct:#x}, sc={sc:#04x})"
    return f"status sct={sct:#x} sc={sc:#04x}"


def _status(name: str, sct: int, sc: int, dnr: bool = True) -> type[NvmeStatus]:
    return type(name, (NvmeStatus,), {"sct": sct, "sc": sc, "dnr": dnr})


G, C, M = StatusCodeType.GENERIC, StatusCodeType.COMMAND_SPECIFIC, StatusCodeType.MEDIA_ERROR
InvalidOpcode = _status("InvalidOpcode", G, GenericStatus.INVALID_OPCODE)
InvalidField = _status("InvalidField", G, GenericStatus.INVALID_FIELD)
CommandSequenceError = _status("CommandSequenceError", G, GenericStatus.COMMAND_SEQUENCE_ERROR)
CommandIdConflict = _status("CommandIdConflict", G, GenericStatus.COMMAND_ID_CONFLICT)
InvalidNamespace = _status("InvalidNamespace", G, GenericStatus.INVALID_NAMESPACE)
InternalError = _status("InternalError", G, GenericStatus.INTERNAL_ERROR, dnr=False)
DataTransferError = _status("DataTransferError", G, GenericStatus.DATA_TRANSFER_ERROR, dnr=False)
DataSglLengthInvalid = _status("DataSglLengthInvalid", G, GenericStatus.DATA_SGL_LENGTH_INVALID)
SglDescriptorTypeInvalid = _status("SglDescriptorTypeInvalid", G, GenericStatus.SGL_DESCRIPTOR_TYPE_INVALID)
SglOffsetInvalid = _status("SglOffsetInvalid", G, GenericStatus.SGL_OFFSET_INVALID)
TransientTransportError = _status("TransientTransportError", G, GenericStatus.TRANSIENT_TRANSPORT_ERROR, dnr=False)
AbortedByRequest = _status("AbortedByRequest", G, GenericStatus.ABORTED_BY_REQUEST, dnr=False)
AbortedSqDeletion = _status("AbortedSqDeletion", G, GenericStatus.ABORTED_SQ_DELETION, dnr=False)
LbaOutOfRange = _status("LbaOutOfRange", G, GenericStatus.LBA_OUT_OF_RANGE)
KeepAliveExpired = _status("KeepAliveExpired", G, GenericStatus.KEEP_ALIVE_EXPIRED)
InvalidQueueIdentifier = _status("InvalidQueueIdentifier", C, CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
InvalidQueueSize = _status("InvalidQueueSize", C, CommandSpecificStatus.INVALID_QUEUE_SIZE)
AsyncEventLimitExceeded = _status("AsyncEventLimitExceeded", C, CommandSpecificStatus.ASYNC_EVENT_LIMIT_EXCEEDED)
InvalidLogPage = _status("InvalidLogPage", C, CommandSpecificStatus.INVALID_LOG_PAGE)
FeatureNotSaveable = _status("FeatureNotSaveable", C, CommandSpecificStatus.FEATURE_NOT_SAVEABLE)
FeatureNotChangeable = _status("FeatureNotChangeable", C, CommandSpecificStatus.FEATURE_NOT_CHANGEABLE)
IncompatibleFormat = _status("IncompatibleFormat", C, CommandSpecificStatus.INCOMPATIBLE_FORMAT)
ControllerBusy = _status("ControllerBusy", C, CommandSpecificStatus.CONTROLLER_BUSY, dnr=False)
ConnectInvalidParameters = _status(
    "ConnectInvalidParameters", C, CommandSpecificStatus.CONNECT_INVALID_PARAMETERS)
ConnectInvalidHost = _status("ConnectInvalidHost", C, CommandSpecificStatus.CONNECT_INVALID_HOST)
WriteFault = _status("WriteFault", M, MediaStatus.WRITE_FAULT, dnr=False)
UnrecoveredReadError = _status("UnrecoveredReadError", M, MediaStatus.UNRECOVERED_READ_ERROR, dnr=False)
KvCapacityExceeded = _status("KvCapacityExceeded", G, KvStatus.CAPACITY_EXCEEDED)
KvInvalidValueSize = _status("KvInvalidValueSize", G, KvStatus.INVALID_VALUE_SIZE)
KvInvalidKeySize = _status("KvInvalidKeySize", G, KvStatus.INVALID_KEY_SIZE)
KvKeyDoesNotExist = _status("KvKeyDoesNotExist", G, KvStatus.KEY_DOES_NOT_EXIST)
KvUnrecoveredError = _status("KvUnrecoveredError", G, KvStatus.UNRECOVERED_ERROR)
KvKeyExists = _status("KvKeyExists", G, KvStatus.KEY_EXISTS)

# (sct, sc) -> class, for turning a completion status back into a typed error.  SCT 0 codes
# from 80h up mean different things in the NVM and KV command sets, so those two tables differ.
_NVM_CLASSES: dict[tuple[int, int], type[NvmeStatus]] = {}
_KV_CLASSES: dict[tuple[int, int], type[NvmeStatus]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, NvmeStatus) and _cls is not NvmeStatus:
        _kv = _cls.__name__.startswith("Kv")
        _table = _KV_CLASSES if _kv else _NVM_CLASSES
        _table.setdefault((int(_cls.sct), int(_cls.sc)), _cls)
for _code, _cls in _NVM_CLASSES.items():
    if _code[0] != StatusCodeType.GENERIC or _code[1] < 0x80:
        _KV_CLASSES.setdefault(_code, _cls)


def status_error(status: int, dw0: int = 0, *, kv: bool = False, message: str = "") -> NvmeStatus:
    """The typed error for a CQE status (``kv``: interpret SCT 0 80h+ as KV codes)."""
    sct, sc, dnr = decode_status(status)
    cls = (_KV_CLASSES if kv else _NVM_CLASSES).get((sct, sc), NvmeStatus)
    return cls(message or status_name(sct, sc, kv=kv), sct=sct, sc=sc, dnr=dnr, dw0=dw0)
