"""A block namespace whose data goes through the offload pipeline: CRC32C, optionally AES-XTS.

Theory of operation
-------------------
:class:`ProtectedBlockBackend` implements the controller's backend port like
:class:`~dpu_emu.datapath.BlockNamespaceBackend`, with a :class:`~.crc_table.CrcTable`
beside the :class:`~dpu_emu.storage.block.BlockStore` and an offload engine in between.

Write (the engine runs the stages in the order given)::

    key:    ENCRYPT -> CRC_GENERATE    (tags at rest are CRCs of ciphertext: they say
    no key: CRC_GENERATE                nothing about the plaintext)
    then    store.write(data) -> table.set(tags) -> done(0)      (data first, then tags)

Read: the tags of the range are read and cut into runs (:func:`~.crc_table.decode_tags`).
An unwritten run is not sent to the engine: it reads as zeroes, after checking that the
store really holds zeroes there.  Written runs go through ``CRC_VERIFY -> DECRYPT`` (the
CRC is checked on the ciphertext before anything is decrypted).  A mismatch anywhere, a
corrupt tag or non-zero data under an unwritten tag completes the command with
Unrecovered Read Error (media error, SCT 2h SC 81h): wrong data is never returned.  A
command whose range is uniform costs one table read, one store read and one job; only a
mixed range pays per run.  Commands larger than the engine's largest slot are split into
jobs of at most that size.

Flush: ``store.flush()`` then ``table.flush()``.  Write Zeroes / Deallocate: the store
operation, then the tags are cleared.  FUA makes both the data and the tags durable.
A crash between the data and the tag update leaves a block whose tag does not match; on a
file namespace the update is recorded first (:mod:`.intent`) and the tags of blocks whose
data provably landed are completed at the next open.  Otherwise such a block reads as an
Unrecovered Read Error, never as stale or wrong data.

Completions are asynchronous with the process engine (the engine's callback runs on the
event loop) and inline with the inline engine; every path calls ``done`` exactly once.
Engine failures map to NVMe statuses: a worker that died -> Internal Error (not DNR: a
retry reaches the restarted worker), a job the engine refused -> Internal Error (DNR).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nvmeof.controller.backend import Done, IoCommand
from nvmeof.errors import InternalError, LbaOutOfRange, NvmeStatus, UnrecoveredReadError, WriteFault
from nvmeof.wire.constants import GenericStatus, NvmOpcode, StatusCodeType, encode_status

from ..pipeline import Completion, Engine, Job, PipelineError, Stage, Status
from ..storage.block import BlockRangeError, BlockStore
from .crc_table import CRC_BYTES, CrcTable, Run, TagCorruption, decode_tags, is_zero, pack_tags
from .intent import LandingIntent, replay_intent

log = logging.getLogger("dpu_emu.protect")

LBA_OUT_OF_RANGE = LbaOutOfRange().status
WRITE_FAULT = WriteFault().status
READ_ERROR = UnrecoveredReadError().status
INTERNAL_ERROR = InternalError().status                      # retryable (not DNR)
INTERNAL_ERROR_DNR = encode_status(StatusCodeType.GENERIC, GenericStatus.INTERNAL_ERROR, True)

WRITE_CHAIN_ENCRYPTED = (Stage.ENCRYPT, Stage.CRC_GENERATE)
WRITE_CHAIN_PLAIN = (Stage.CRC_GENERATE,)
READ_CHAIN_ENCRYPTED = (Stage.CRC_VERIFY, Stage.DECRYPT)
READ_CHAIN_PLAIN = (Stage.CRC_VERIFY,)

_OK = Status.OK


@dataclass(slots=True)
class ProtectedStats:
    reads: int = 0
    writes: int = 0
    unwritten_blocks_read: int = 0     # blocks answered with zeroes without the engine
    integrity_errors: int = 0          # CRC mismatches, corrupt tags, non-zero unwritten blocks
    pipeline_errors: int = 0           # engine failures (worker died, closed, refused job)
    io_errors: int = 0                 # OSError from the store or the table

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ProtectedBlockBackend:
    """NVM I/O onto ``store`` through ``engine``, with per-block tags in ``crc_table``.

    ``key_id`` is an engine key id (``engine.register_key``); None: CRC32C only.  With
    ``owns_key`` the key is unregistered from the engine when the backend is closed.
    """

    def __init__(self, store: BlockStore, crc_table: CrcTable, engine: Engine, key_id: int | None = None, *,
                 name: str = "", owns_key: bool = False, intent: LandingIntent | None = None) -> None:
        if crc_table.num_blocks != store.num_blocks:
            raise ValueError(f"integrity table has {crc_table.num_blocks} blocks, the store {store.num_blocks}")
        if key_id is not None and not engine.has_key(key_id):
            raise ValueError(f"engine has no key {key_id}")
        self.store = store
        self.crc_table = crc_table
        self.engine = engine
        self.key_id = key_id
        self.name = name or repr(store)
        self.block_size = store.block_size
        self.encrypted = key_id is not None
        self.stats = ProtectedStats()
        self._owns_key = owns_key and key_id is not None
        self._key = key_id or 0
        self._write_chain = WRITE_CHAIN_ENCRYPTED if self.encrypted else WRITE_CHAIN_PLAIN
        self._read_chain = READ_CHAIN_ENCRYPTED if self.encrypted else READ_CHAIN_PLAIN
        self._max_blocks = max(1, min(engine.max_payload, 1 << 40) // self.block_size)
        self._intent = intent  # crash consistency of data + tags (file namespaces), see .intent
        if intent is not None:
            replay_intent(intent, store, crc_table, self.name)

    # -- the port -------------------------------------------------------------------

    def execute(self, cmd: IoCommand, done: Done) -> None:
        op = cmd.opcode
        if op == NvmOpcode.READ:
            self._read(cmd, done)
        elif op == NvmOpcode.WRITE:
            self._write(cmd, done)
        else:
            status = self._admin_io(cmd)
            done(status, 0, None)

    def flush(self) -> None:
        """Data first, then tags (the device calls this when a namespace goes away)."""
        self.store.flush()
        self.crc_table.flush()

    def close(self) -> None:
        """Close the store and the tags (no flush: call :meth:`flush` first); drop an owned key."""
        try:
            self.store.close()
        finally:
            self.crc_table.close()
            if self._intent is not None:
                self._intent.close()
            if self._owns_key:
                self._owns_key = False
                try:
                    self.engine.unregister_key(self._key)
                except KeyError:
                    pass

    # -- Flush, Write Zeroes, Deallocate (synchronous) ------------------------------

    def _admin_io(self, cmd: IoCommand) -> int:
        op = cmd.opcode
        store, table = self.store, self.crc_table
        try:
            if op == NvmOpcode.FLUSH:
                store.flush()
                table.flush()
            elif op == NvmOpcode.WRITE_ZEROES:
                if self._intent is not None:
                    self._intent.note_zero(cmd.slba, cmd.nlb)
                store.write_zeroes(cmd.slba, cmd.nlb, deallocate=cmd.deallocate, fua=cmd.fua)
                table.clear(cmd.slba, cmd.nlb, durable=cmd.fua)
            elif op == NvmOpcode.DATASET_MANAGEMENT:
                if cmd.deallocate:
                    for slba, nlb in cmd.ranges or ():
                        if self._intent is not None:
                            self._intent.note_zero(slba, nlb)
                        store.deallocate(slba, nlb)
                        table.clear(slba, nlb)
            else:
                raise AssertionError(f"controller passed an undecoded opcode {op:#x}")
        except BlockRangeError as exc:
            log.warning("%s: %s", self.name, exc)
            return LBA_OUT_OF_RANGE
        except NvmeStatus as exc:
            return exc.status
        except OSError as exc:
            self.stats.io_errors += 1
            log.error("%s: I/O error on opcode %#x: %s", self.name, op, exc)
            return WRITE_FAULT
        return 0

    # -- Write ----------------------------------------------------------------------

    def _write(self, cmd: IoCommand, done: Done) -> None:
        self.stats.writes += 1
        slba, nlb, data = cmd.slba, cmd.nlb, cmd.data
        if data is None or len(data) != nlb * self.block_size:
            done(INTERNAL_ERROR_DNR, 0, None)
            return
        try:
            self.store.check_range(slba, nlb)
        except BlockRangeError as exc:
            log.warning("%s: %s", self.name, exc)
            done(LBA_OUT_OF_RANGE, 0, None)
            return
        if nlb <= self._max_blocks:
            def written(completion: Completion) -> None:
                done(self._store_written(slba, cmd.fua, completion), 0, None)
            refused = self._submit(Job(self._write_chain, self.block_size, self._key, slba), data, written, None)
            if refused:
                done(refused, 0, None)
            return
        gather = _Gather(lambda status: done(status, 0, None))
        view = memoryview(data).cast("B")
        bs = self.block_size
        for first in range(0, nlb, self._max_blocks):
            count = min(self._max_blocks, nlb - first)
            lba = slba + first
            gather.pending += 1

            def piece(completion: Completion, lba: int = lba) -> None:
                gather.arrive(self._store_written(lba, cmd.fua, completion))
            refused = self._submit(Job(self._write_chain, bs, self._key, lba),
                                   view[first * bs:(first + count) * bs], piece, None)
            if refused:
                gather.arrive(refused)
                break
        gather.arrive(0)

    def _store_written(self, lba: int, fua: bool, completion: Completion) -> int:
        """Land one completed write job: data, then tags.  Returns the status; never raises."""
        if completion.status != _OK:
            return self._pipeline_status(completion, lba, writing=True)
        try:
            assert completion.data is not None and completion.crcs is not None
            tags = pack_tags(completion.crcs)
            if self._intent is not None:
                self._intent.note_write(lba, tags)
            self.store.write(lba, completion.data, fua=fua)
            self.crc_table.set_raw(lba, tags, durable=fua)
        except BlockRangeError as exc:
            log.warning("%s: %s", self.name, exc)
            return LBA_OUT_OF_RANGE
        except OSError as exc:
            self.stats.io_errors += 1
            log.error("%s: write at LBA %d failed: %s", self.name, lba, exc)
            return WRITE_FAULT
        except Exception:
            log.exception("%s: write at LBA %d failed", self.name, lba)
            return INTERNAL_ERROR
        return 0

    # -- Read -----------------------------------------------------------------------

    def _read(self, cmd: IoCommand, done: Done) -> None:
        self.stats.reads += 1
        slba, nlb = cmd.slba, cmd.nlb
        bs = self.block_size
        try:
            self.store.check_range(slba, nlb)
            crcs, runs = decode_tags(self.crc_table.get(slba, nlb))
        except BlockRangeError as exc:
            log.warning("%s: %s", self.name, exc)
            done(LBA_OUT_OF_RANGE, 0, None)
            return
        except TagCorruption as exc:
            done(self._integrity_failure(slba + exc.index, f"corrupt integrity tag ({exc})"), 0, None)
            return
        except OSError as exc:
            done(self._io_failure(slba, exc), 0, None)
            return
        if len(runs) == 1 and nlb <= self._max_blocks:
            if runs[0].written:
                self._read_written(slba, nlb, crcs, done)
            else:
                self._read_unwritten(slba, nlb, done)
            return
        self._read_runs(slba, nlb * bs, crcs, runs, done)

    def _read_unwritten(self, slba: int, nlb: int, done: Done) -> None:
        try:
            data = self.store.read(slba, nlb)
        except OSError as exc:
            done(self._io_failure(slba, exc), 0, None)
            return
        if not is_zero(data):
            done(self._integrity_failure(slba + self._first_nonzero_block(data),
                                         "data under an unwritten tag is not zero"), 0, None)
            return
        self.stats.unwritten_blocks_read += nlb
        done(0, 0, data)

    def _read_written(self, slba: int, nlb: int, crcs: bytes, done: Done) -> None:
        """One uniform written range, one job: read straight into a slot when decrypting."""
        job = Job(self._read_chain, self.block_size, self._key, slba)
        length = nlb * self.block_size
        if self.encrypted:
            try:
                lease = self.engine.try_lease(length)
            except PipelineError as exc:                      # closed
                done(self._pipeline_status(Completion(exc.status, message=str(exc)), slba), 0, None)
                return
            except RuntimeError as exc:                       # never started
                done(self._refused(slba, exc), 0, None)
                return
            if lease is not None:
                try:
                    self.store.read_into(slba, lease.buf[:length])
                except OSError as exc:
                    lease.release()
                    done(self._io_failure(slba, exc), 0, None)
                    return

                def decrypted(completion: Completion) -> None:
                    if completion.status != _OK:
                        done(self._pipeline_status(completion, slba), 0, None)
                    else:
                        done(0, 0, completion.data)
                try:
                    self.engine.submit_lease(lease, job, length, decrypted, crcs=crcs)
                except (ValueError, RuntimeError) as exc:      # the engine released the lease
                    done(self._refused(slba, exc), 0, None)
                return
        try:
            data = self.store.read(slba, nlb)
        except OSError as exc:
            done(self._io_failure(slba, exc), 0, None)
            return
        if self.encrypted:
            def plain(completion: Completion) -> None:
                if completion.status != _OK:
                    done(self._pipeline_status(completion, slba), 0, None)
                else:
                    done(0, 0, completion.data)
            refused = self._submit(job, data, plain, crcs, borrow=False)
            if refused:
                done(refused, 0, None)
            return

        def verified(completion: Completion) -> None:
            if completion.status != _OK:
                done(self._pipeline_status(completion, slba), 0, None)
            else:
                done(0, 0, data)         # CRC_VERIFY leaves the data as it was: no copy back
        refused = self._submit(job, data, verified, crcs)
        if refused:
            done(refused, 0, None)

    def _read_runs(self, slba: int, length: int, crcs: bytes, runs: list[Run], done: Done) -> None:
        """A mixed (or large) range: one store read, zero checks, one job per written piece."""
        bs = self.block_size
        buf = bytearray(length)
        try:
            self.store.read_into(slba, buf)
        except OSError as exc:
            done(self._io_failure(slba, exc), 0, None)
            return
        view = memoryview(buf)
        gather = _Gather(lambda status: done(status, 0, None if status else buf))
        crc_view = memoryview(crcs)
        decrypting = self.encrypted
        for run in runs:
            if gather.status:
                break
            start, end = run.start * bs, run.end * bs
            if not run.written:
                if not is_zero(view[start:end]):
                    gather.status = self._integrity_failure(
                        slba + run.start + self._first_nonzero_block(view[start:end]),
                        "data under an unwritten tag is not zero")
                    break
                self.stats.unwritten_blocks_read += run.end - run.start
                continue
            for first in range(run.start, run.end, self._max_blocks):
                last = min(first + self._max_blocks, run.end)
                lba = slba + first
                gather.pending += 1

                def piece(completion: Completion, lba: int = lba, lo: int = first * bs, hi: int = last * bs) -> None:
                    if completion.status != _OK:
                        gather.arrive(self._pipeline_status(completion, lba))
                        return
                    if decrypting:
                        assert completion.data is not None
                        view[lo:hi] = completion.data
                    gather.arrive(0)
                refused = self._submit(Job(self._read_chain, bs, self._key, lba), view[first * bs:last * bs], piece,
                                       crc_view[first * CRC_BYTES:last * CRC_BYTES])
                if refused:
                    gather.arrive(refused)
                    break
        gather.arrive(0)

    # -- helpers --------------------------------------------------------------------

    def _submit(self, job: Job, payload: bytes | bytearray | memoryview, on_done: Callable[[Completion], None],
                crcs: bytes | memoryview | None, *, borrow: bool = True) -> int:
        """``engine.submit_cb``: 0, or the status of a job the engine refused outright
        (``ValueError``), or of an engine that cannot take jobs (not started, closed)."""
        try:
            self.engine.submit_cb(job, payload, on_done, crcs=crcs, borrow=borrow)
        except (ValueError, RuntimeError, PipelineError) as exc:
            return self._refused(job.tweak, exc)
        return 0

    def _refused(self, lba: int, exc: Exception) -> int:
        self.stats.pipeline_errors += 1
        log.error("%s: pipeline refused the job at LBA %d: %s", self.name, lba, exc)
        return INTERNAL_ERROR_DNR

    def _pipeline_status(self, completion: Completion, lba: int, *, writing: bool = False) -> int:
        status = completion.status
        if status == Status.INTEGRITY_ERROR and not writing:
            return self._integrity_failure(lba + completion.unit, "CRC32C mismatch")
        self.stats.pipeline_errors += 1
        log.error("%s: pipeline %s at LBA %d: %s", self.name, status.name, lba,
                  completion.message.strip().splitlines()[-1] if completion.message else "")
        if status == Status.INVALID_JOB:
            return INTERNAL_ERROR_DNR
        return INTERNAL_ERROR

    def _integrity_failure(self, lba: int, what: str) -> int:
        self.stats.integrity_errors += 1
        log.warning("%s: unrecovered read error at LBA %d: %s", self.name, lba, what)
        return READ_ERROR

    def _io_failure(self, lba: int, exc: OSError) -> int:
        self.stats.io_errors += 1
        log.error("%s: read at LBA %d failed: %s", self.name, lba, exc)
        return READ_ERROR

    def _first_nonzero_block(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        bs = self.block_size
        for index in range(view.nbytes // bs):
            if not is_zero(view[index * bs:(index + 1) * bs]):
                return index
        return 0

    def __repr__(self) -> str:
        return (f"ProtectedBlockBackend({self.name}, {'AES-256-XTS + ' if self.encrypted else ''}CRC32C, "
                f"engine={type(self.engine).__name__})")


class _Gather:
    """Completes a command made of several jobs once, with the first failure if any.

    ``pending`` starts at 1 for the submitting loop itself (released by its final
    ``arrive(0)``), so an inline engine completing jobs during the loop cannot finish early.
    """

    __slots__ = ("finish", "pending", "status")

    def __init__(self, finish: Callable[[int], None]) -> None:
        self.finish = finish
        self.pending = 1
        self.status = 0

    def arrive(self, status: int) -> None:
        if status and not self.status:
            self.status = status
        self.pending -= 1
        if self.pending == 0:
            self.finish(self.status)
