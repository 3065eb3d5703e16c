"""The device side of the controller's backend port: NVM commands onto a block store,
KV commands onto a KV store.

Every failure becomes an NVMe status: a range the controller did not catch becomes LBA
Out of Range, an I/O error on write a Write Fault, on read an Unrecovered Read Error.
Nothing is acknowledged before the store accepted it (FUA and Flush reach the disk).
"""

from __future__ import annotations

import logging

from nvmeof import errors
from nvmeof.controller import kv as kvproto
from nvmeof.controller.backend import Done, IoCommand
from nvmeof.errors import LbaOutOfRange, NvmeStatus, UnrecoveredReadError, WriteFault
from nvmeof.wire.constants import KvOpcode, NvmOpcode

from .storage import kv as kvs
from .storage.block import BlockRangeError, BlockStore

log = logging.getLogger("dpu_emu.datapath")

_LBA_OUT_OF_RANGE = LbaOutOfRange().status
_WRITE_FAULT = WriteFault().status
_READ_ERROR = UnrecoveredReadError().status


class BlockNamespaceBackend:
    """Executes NVM I/O commands synchronously against a :class:`BlockStore`."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def execute(self, cmd: IoCommand, done: Done) -> None:
        store = self.store
        op = cmd.opcode
        try:
            if op == NvmOpcode.READ:
                data = store.read(cmd.slba, cmd.nlb)
                done(0, 0, data)
                return
            if op == NvmOpcode.WRITE:
                assert cmd.data is not None
                store.write(cmd.slba, cmd.data, fua=cmd.fua)
            elif op == NvmOpcode.FLUSH:
                store.flush()
            elif op == NvmOpcode.WRITE_ZEROES:
                store.write_zeroes(cmd.slba, cmd.nlb, deallocate=cmd.deallocate, fua=cmd.fua)
            elif op == NvmOpcode.DATASET_MANAGEMENT:
                if cmd.deallocate:
                    for slba, nlb in cmd.ranges or ():
                        store.deallocate(slba, nlb)
            else:
                raise AssertionError(f"controller passed an undecoded opcode {op:#x}")
        except BlockRangeError as exc:
            log.warning("namespace %d: %s", cmd.nsid, exc)
            done(_LBA_OUT_OF_RANGE, 0, None)
            return
        except NvmeStatus as exc:
            done(exc.status, exc.dw0, None)
            return
        except OSError as exc:
            log.error("namespace %d: I/O error on opcode %#x: %s", cmd.nsid, op, exc)
            done(_READ_ERROR if op == NvmOpcode.READ else _WRITE_FAULT, 0, None)
            return
        done(0, 0, None)

    def close(self) -> None:
        self.store.close()


_KV_STATUS: dict[type[kvs.KvError], int] = {
    kvs.KvCapacityExceeded: errors.KvCapacityExceeded().status,
    kvs.KvInvalidValueSize: errors.KvInvalidValueSize().status,
    kvs.KvInvalidKeySize: errors.KvInvalidKeySize().status,
    kvs.KvKeyNotFound: errors.KvKeyDoesNotExist().status,
    kvs.KvKeyExists: errors.KvKeyExists().status,
    kvs.KvIoError: errors.KvUnrecoveredError().status,
    kvs.KvStoreCorrupt: errors.KvUnrecoveredError().status,
    kvs.KvStoreClosedError: errors.KvUnrecoveredError().status,
}


def kv_status(exc: kvs.KvError) -> int:
    for cls in type(exc).__mro__:
        status = _KV_STATUS.get(cls)
        if status is not None:
            return status
    return errors.KvUnrecoveredError().status


class KvNamespaceBackend:
    """Executes NVMe-KV commands against a :class:`KvStore`.

    Retrieve returns as much of the value as the host buffer holds, with the whole
    value's length in DW0; List packs keys (>= the given key, ascending) into the
    host buffer.
    """

    def __init__(self, store: kvs.KvStore) -> None:
        self.store = store

    def execute(self, cmd: IoCommand, done: Done) -> None:
        store = self.store
        op = cmd.opcode
        try:
            if op == KvOpcode.STORE:
                store.store(cmd.key, cmd.data or b"", must_exist=bool(cmd.options & kvproto.STORE_MUST_EXIST),
                            must_not_exist=bool(cmd.options & kvproto.STORE_MUST_NOT_EXIST))
                done(0, 0, None)
            elif op == KvOpcode.RETRIEVE:
                value = store.retrieve(cmd.key)
                buffer = cmd.read_length
                done(0, len(value), memoryview(value)[:buffer] if buffer else None)
            elif op == KvOpcode.EXIST:
                done(0, store.exists(cmd.key), None)
            elif op == KvOpcode.DELETE:
                store.delete(cmd.key)
                done(0, 0, None)
            elif op == NvmOpcode.FLUSH:
                store.flush()
                done(0, 0, None)
            elif op == KvOpcode.LIST:
                limit = kvproto.max_keys_in(cmd.read_length)
                keys = store.list_keys(cmd.key or None, limit) if limit else []
                data = kvproto.pack_list(keys, cmd.read_length)
                done(0, 0, data if data else None)
            else:
                raise AssertionError(f"controller passed an undecoded KV opcode {op:#x}")
        except kvs.KvError as exc:
            if isinstance(exc, kvs.KvIoError):
                log.error("KV namespace %d: %s", cmd.nsid, exc)
            done(kv_status(exc), 0, None)
        except ValueError as exc:  # option combinations the controller already rejects
            done(errors.InvalidField(str(exc)).status, 0, None)

    def close(self) -> None:
        self.store.close()
