"""NVMe Key Value command set (CSI 01h) from the host: Store, Retrieve, Delete, Exist, List.

    kv = await KvNamespace.open(ctrl, nsid=2)
    await kv.store(b"block-0001", value)
    value = await kv.retrieve(b"block-0001")
    async for key in kv.keys():
        ...

Every command may go to any I/O queue (round-robin unless ``queue`` is given), so many
can be in flight at once: ``asyncio.gather`` of stores or retrieves pipelines them.  A
failing command raises the KV-specific error class (``KvKeyDoesNotExist``,
``KvKeyExists``, ``KvCapacityExceeded``, ``KvInvalidKeySize``, ``KvInvalidValueSize``,
``KvUnrecoveredError``) from :mod:`nvmeof.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..controller import kv as kvproto
from ..controller.identify import ID_NS_KV
from ..errors import KvKeyDoesNotExist, ProtocolMisuse, status_error
from ..wire.constants import Cns, Csi, KvOpcode
from .commands import Completion
from .controller import HostController

DEFAULT_LIST_BUFFER = 64 * 1024
MIN_LIST_BUFFER = kvproto.LIST_HEADER.size + 2 * kvproto.list_entry_size(kvproto.KEY_MAX)


class KvValueTruncated(ValueError):
    """Retrieve's buffer was smaller than the value (``length`` is the whole value's size)."""

    def __init__(self, key: bytes, length: int, data: bytes) -> None:
        super().__init__(f"value of key {key!r} is {length} bytes; the buffer took {len(data)}")
        self.length = length
        self.data = data


@dataclass(frozen=True)
class KvLimits:
    """What the KV Identify Namespace data (CNS 05h, CSI 01h) advertises."""

    capacity_bytes: int
    used_bytes: int
    max_key_size: int
    max_value_size: int
    max_keys: int


def _cdw11(key: bytes, options: int = 0) -> int:
    return len(key) | (options << kvproto.OPTIONS_SHIFT)


class KvNamespace:
    def __init__(self, ctrl: HostController, nsid: int, limits: KvLimits) -> None:
        self.ctrl = ctrl
        self.nsid = nsid
        self.limits = limits

    @classmethod
    async def open(cls, ctrl: HostController, nsid: int) -> KvNamespace:
        """Identify the KV namespace and bind to it."""
        page = await ctrl.identify(Cns.CSI_NAMESPACE, nsid, csi=Csi.KV)
        ident = ID_NS_KV.unpack(page)
        if ident.kvf0_kvkml == 0:
            raise ProtocolMisuse(f"namespace {nsid} is not an active KV namespace")
        return cls(ctrl, nsid, KvLimits(ident.nsze, ident.nuse, ident.kvf0_kvkml, ident.kvf0_kvvml,
                                        ident.kvf0_mnks))

    async def _command(self, opcode: int, key: bytes, *, cdw10: int = 0, options: int = 0,
                       data: bytes | bytearray | memoryview | None = None, read_length: int = 0,
                       queue: int | None = None) -> Completion:
        cdw2, cdw3, cdw14, cdw15 = kvproto.key_to_dwords(key)
        completion = await self.ctrl.io_raw(
            opcode, nsid=self.nsid, cdw2=cdw2, cdw3=cdw3, cdw14=cdw14, cdw15=cdw15, cdw10=cdw10,
            cdw11=_cdw11(key, options), data=data, read_length=read_length, queue=queue, check_status=False)
        if completion.status:
            raise status_error(completion.status, completion.dw0, kv=True)
        return completion

    async def store(self, key: bytes, value: bytes | bytearray | memoryview, *, must_exist: bool = False,
                    must_not_exist: bool = False, queue: int | None = None) -> None:
        options = (kvproto.STORE_MUST_EXIST if must_exist else 0) | (
            kvproto.STORE_MUST_NOT_EXIST if must_not_exist else 0)
        await self._command(KvOpcode.STORE, key, cdw10=len(value), options=options, data=value or None,
                            queue=queue)

    async def retrieve_into(self, key: bytes, buffer_size: int, *,
                            queue: int | None = None) -> tuple[bytes, int]:
        """(data, whole value length); data is shorter than the value when the buffer was."""
        completion = await self._command(KvOpcode.RETRIEVE, key, cdw10=buffer_size, read_length=buffer_size,
                                         queue=queue)
        data = bytes(completion.data or b"")
        return data[:completion.dw0], completion.dw0

    async def retrieve(self, key: bytes, *, buffer_size: int | None = None, queue: int | None = None) -> bytes:
        """The whole value; raises KvValueTruncated if ``buffer_size`` was too small."""
        size = self.limits.max_value_size if buffer_size is None else buffer_size
        data, length = await self.retrieve_into(key, size, queue=queue)
        if length > len(data):
            raise KvValueTruncated(key, length, data)
        return data

    async def get(self, key: bytes, *, queue: int | None = None) -> bytes | None:
        """The value, or None when the key does not exist."""
        try:
            return await self.retrieve(key, queue=queue)
        except KvKeyDoesNotExist:
            return None

    async def exist(self, key: bytes, *, queue: int | None = None) -> bool:
        try:
            await self._command(KvOpcode.EXIST, key, queue=queue)
        except KvKeyDoesNotExist:
            return False
        return True

    async def delete(self, key: bytes, *, queue: int | None = None) -> None:
        await self._command(KvOpcode.DELETE, key, queue=queue)

    async def list(self, start: bytes = b"", *, buffer_size: int = DEFAULT_LIST_BUFFER,
                   queue: int | None = None) -> list[bytes]:
        """One List command: keys >= ``start`` (all keys from the first when empty)."""
        completion = await self._command(KvOpcode.LIST, start, cdw10=buffer_size, read_length=buffer_size,
                                         queue=queue)
        return kvproto.unpack_list(bytes(completion.data or b""))

    async def keys(self, start: bytes = b"", *, buffer_size: int = DEFAULT_LIST_BUFFER) -> AsyncIterator[bytes]:
        """Every key >= ``start`` exactly once, continuing List from the last key returned
        (the controller includes the start key itself, so it is skipped on continuation)."""
        if buffer_size < MIN_LIST_BUFFER:
            raise ValueError(f"a List buffer must hold two keys of the maximum size ({MIN_LIST_BUFFER} bytes)")
        previous: bytes | None = None
        cursor = start
        while True:
            batch = await self.list(cursor, buffer_size=buffer_size)
            if previous is not None and batch and batch[0] == previous:
                batch = batch[1:]
            if not batch:
                return
            for key in batch:
                yield key
            previous = cursor = batch[-1]
