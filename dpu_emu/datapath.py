"""The device side of the controller's backend port: NVM commands onto a block store.

Every failure becomes an NVMe status: a range the controller did not catch becomes LBA
Out of Range, an I/O error on write a Write Fault, on read an Unrecovered Read Error.
Nothing is acknowledged before the store accepted it (FUA and Flush reach the disk).
"""

from __future__ import annotations

import logging

from nvmeof.controller.backend import Done, IoCommand
from nvmeof.errors import LbaOutOfRange, NvmeStatus, UnrecoveredReadError, WriteFault
from nvmeof.wire.constants import NvmOpcode

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
