"""The host's view of one NVMe-oF controller (an association): admin queue, I/O queues,
keep-alive, and the admin and NVM commands as coroutines.

Theory of operation
-------------------
:func:`connect` follows the Linux host (drivers/nvme/host/fabrics.c, core.c)::

    TCP + ICReq/ICResp -> Connect(QID 0, SQSIZE 31, CNTLID FFFFh, KATO)
      -> Property Get CAP -> Property Set CC (EN=1, CSS, IOSQES 6, IOCQES 4)
      -> poll CSTS.RDY (bounded by CAP.TO and the timeout) -> Identify Controller
      -> Set Features Number of Queues -> per I/O queue: TCP + ICReq + Connect(QID n)
      -> keep-alive task (every KATO/2)

:meth:`HostController.close` sends CC.SHN = 01b, polls CSTS.SHST for "complete" and
closes every socket.  Any non-zero completion status raises
:class:`~nvmeof.errors.NvmeStatus` (``sct``, ``sc``, ``dnr``, ``dw0``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid as uuidlib
from typing import Any

from ..controller.identify import ID_CTRL, ID_NS, IDENTIFY_DATA_SIZE, NS_ID_DESC_HEADER, NSID_LIST_ENTRIES
from ..errors import InvalidField, InvalidNamespace, NvmeStatus, ProtocolMisuse, status_error
from ..wire.constants import (
    ADMIN_QID,
    CAP_CSS_IO_SETS,
    CAP_CSS_SHIFT,
    CAP_TO_SHIFT,
    CC_CSS_ALL_IO_SETS,
    CC_CSS_NVM,
    CNTLID_DYNAMIC,
    CSTS_CFS,
    CSTS_RDY,
    CSTS_SHST_COMPLETE,
    CSTS_SHST_MASK,
    CSTS_SHST_SHIFT,
    DISCOVERY_NQN,
    NVME_TCP_IO_PORT,
    PROPERTY_SIZE_4,
    PROPERTY_SIZE_8,
    Cns,
    FeatureId,
    NsIdType,
    Property,
)
from ..wire.layout import c_string
from . import commands as cmds
from .auth import DhchapSecrets, authenticate_if_required
from .commands import Completion
from .queue import DEFAULT_TIMEOUT_S, Buffer, HostQueue

log = logging.getLogger("nvmeof.host")

ADMIN_SQSIZE = 31  # 0's based: 32 entries, what the Linux host asks for
ADMIN_DEPTH = ADMIN_SQSIZE + 1
DEFAULT_QUEUE_SIZE = 128
DEFAULT_KATO_MS = 5000
HOSTNQN_UUID_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"
HOSTID_SIZE = 16
CAP_TO_UNIT_S = 0.5
CSTS_POLL_FIRST_S = 0.001
CSTS_POLL_MAX_S = 0.05
MPS_4K = 4096
DEFAULT_MAX_TRANSFER = 1 << 20  # when MDTS is 0 ("no limit"), split transfers at 1 MiB
CAPSULE_SQE_BYTES = 64
IOCCSZ_UNIT = 16
LBAF_BASE = ID_NS.offset_of("lbaf0_ms")
LBAF_SIZE = ID_NS.offset_of("lbaf0_rp") + 1 - LBAF_BASE
LBADS_IN_LBAF = ID_NS.offset_of("lbaf0_lbads") - LBAF_BASE
FLBAS_INDEX_LOW = 0xF
FLBAS_INDEX_HIGH_SHIFT = 5
FLBAS_INDEX_HIGH = 0x3 << FLBAS_INDEX_HIGH_SHIFT
NSID_ALL = 0xFFFFFFFF
MIN_LBADS = 9  # 512 bytes


def default_hostnqn() -> str:
    """A fresh UUID-based host NQN, as nvme-cli generates one."""
    return f"{HOSTNQN_UUID_PREFIX}{uuidlib.uuid4()}"


def check(completion: Completion) -> Completion:
    """Raise :class:`NvmeStatus` for a non-zero status, else return ``completion``."""
    if completion.status:
        raise status_error(completion.status, completion.dw0)
    return completion


class NamespaceInfo:
    """What the host needs to address one namespace: block size and capacity."""

    __slots__ = ("nsid", "block_size", "num_blocks", "identify")

    def __init__(self, nsid: int, page: bytes) -> None:
        self.nsid = nsid
        self.identify = ID_NS.unpack(page)
        self.block_size = lba_data_size(page)
        self.num_blocks = self.identify.nsze

    @property
    def size_bytes(self) -> int:
        return self.block_size * self.num_blocks

    def __repr__(self) -> str:
        return f"NamespaceInfo(nsid={self.nsid}, block_size={self.block_size}, num_blocks={self.num_blocks})"


def lba_data_size(page: bytes) -> int:
    """Block size of the current LBA format of an Identify Namespace page.

    FLBAS bits 3:0 (and 6:5 above 16 formats) select an entry of the LBA format table,
    which starts where the ID_NS layout places format 0; LBADS is a power of two."""
    flbas = page[ID_NS.offset_of("flbas")]
    index = (flbas & FLBAS_INDEX_LOW) | ((flbas & FLBAS_INDEX_HIGH) >> FLBAS_INDEX_HIGH_SHIFT << 4)
    lbads = page[LBAF_BASE + index * LBAF_SIZE + LBADS_IN_LBAF]
    if lbads < MIN_LBADS:
        raise InvalidField(f"namespace reports LBADS {lbads} (block size below 512)")
    return 1 << lbads


class HostController:
    """A connected controller.  Build it with :func:`connect`; use it as an async context
    manager or call :meth:`close`."""

    def __init__(self, admin: HostQueue, *, address: str, port: int, subnqn: str, hostnqn: str,
                 hostid: bytes, kato_ms: int, timeout: float, hdgst: bool, ddgst: bool,
                 disable_sqflow: bool = False) -> None:
        self.admin = admin
        self.io_queues: list[HostQueue] = []
        self.address = address
        self.port = port
        self.subnqn = subnqn
        self.hostnqn = hostnqn
        self.hostid = hostid
        self.kato_ms = kato_ms
        self.timeout = timeout
        self.hdgst = hdgst
        self.ddgst = ddgst
        self.disable_sqflow = disable_sqflow
        self.dhchap: DhchapSecrets | None = None  # DH-HMAC-CHAP secrets for every queue
        self.cntlid = CNTLID_DYNAMIC
        self.cap = 0
        self.cc = 0
        self.id_ctrl: Any = None
        self.max_transfer = DEFAULT_MAX_TRANSFER
        self._namespaces: dict[int, NamespaceInfo] = {}
        self._rr = itertools.count()
        self._keep_alive: asyncio.Task[None] | None = None
        self._closed = False

    # -- identity -----------------------------------------------------------------------

    @property
    def serial(self) -> str:
        return c_string(self.id_ctrl.sn)

    @property
    def model(self) -> str:
        return c_string(self.id_ctrl.mn)

    @property
    def firmware(self) -> str:
        return c_string(self.id_ctrl.fr)

    @property
    def io_in_capsule_size(self) -> int:
        """Largest write carried in the command capsule: IOCCSZ * 16 - 64."""
        return max(self.id_ctrl.ioccsz * IOCCSZ_UNIT - CAPSULE_SQE_BYTES, 0)

    # -- raw commands -------------------------------------------------------------------

    async def admin_raw(self, opcode: int, *, nsid: int = 0, cdw2: int = 0, cdw3: int = 0, cdw10: int = 0,
                        cdw11: int = 0, cdw12: int = 0, cdw13: int = 0, cdw14: int = 0, cdw15: int = 0,
                        data: Buffer | None = None, read_length: int = 0, timeout: float | None = None,
                        check_status: bool = True) -> Completion:
        """Any admin command; raises NvmeStatus on error unless ``check_status`` is false."""
        sqe = cmds.sqe(opcode, nsid=nsid, cdw2=cdw2, cdw3=cdw3, cdw10=cdw10, cdw11=cdw11, cdw12=cdw12,
                       cdw13=cdw13, cdw14=cdw14, cdw15=cdw15)
        completion = await self.admin.submit(sqe, data, read_length, timeout)
        return check(completion) if check_status else completion

    async def io_raw(self, opcode: int, *, nsid: int = 0, cdw2: int = 0, cdw3: int = 0, cdw10: int = 0,
                     cdw11: int = 0, cdw12: int = 0, cdw13: int = 0, cdw14: int = 0, cdw15: int = 0,
                     data: Buffer | None = None, read_length: int = 0, queue: int | None = None,
                     timeout: float | None = None, check_status: bool = True) -> Completion:
        """Any I/O command (e.g. the KV command set) on an I/O queue."""
        sqe = cmds.sqe(opcode, nsid=nsid, cdw2=cdw2, cdw3=cdw3, cdw10=cdw10, cdw11=cdw11, cdw12=cdw12,
                       cdw13=cdw13, cdw14=cdw14, cdw15=cdw15)
        completion = await self.queue(queue).submit(sqe, data, read_length, timeout)
        return check(completion) if check_status else completion

    async def _admin(self, sqe: bytearray, data: Buffer | None = None, read_length: int = 0) -> Completion:
        return check(await self.admin.submit(sqe, data, read_length))

    def queue(self, index: int | None = None) -> HostQueue:
        """I/O queue ``index`` (0 = QID 1), or the next one round-robin when ``None``."""
        queues = self.io_queues
        if not queues:
            raise ProtocolMisuse("this controller has no I/O queues")
        if index is None:
            return queues[next(self._rr) % len(queues)]
        return queues[index]

    # -- Fabrics properties -------------------------------------------------------------

    async def property_get(self, offset: int, size: int = PROPERTY_SIZE_4) -> int:
        completion = await self._admin(cmds.property_get(offset, size))
        return completion.dw0 | (completion.dw1 << 32)

    async def property_set(self, offset: int, value: int, size: int = PROPERTY_SIZE_4) -> None:
        await self._admin(cmds.property_set(offset, size, value))

    # -- admin commands -----------------------------------------------------------------

    async def identify(self, cns: int, nsid: int = 0, csi: int = 0, cntid: int = 0) -> bytes:
        """Raw 4096-byte Identify data."""
        completion = await self._admin(cmds.identify(cns, nsid, csi, cntid), read_length=IDENTIFY_DATA_SIZE)
        return bytes(completion.data or b"")

    async def identify_controller(self) -> Any:
        """Identify Controller decoded with the ID_CTRL layout (a named tuple)."""
        return ID_CTRL.unpack(await self.identify(Cns.CONTROLLER))

    async def identify_namespace(self, nsid: int) -> Any:
        """Identify Namespace (NVM) decoded with the ID_NS layout (a named tuple)."""
        return ID_NS.unpack(await self.identify(Cns.NAMESPACE, nsid))

    async def namespace(self, nsid: int, refresh: bool = False) -> NamespaceInfo:
        """Block size and capacity of ``nsid`` (cached after the first Identify)."""
        info = self._namespaces.get(nsid)
        if info is None or refresh:
            info = NamespaceInfo(nsid, await self.identify(Cns.NAMESPACE, nsid))
            if info.num_blocks == 0:
                raise InvalidNamespace(f"namespace {nsid} is not active")
            self._namespaces[nsid] = info
        return info

    async def active_namespaces(self) -> list[int]:
        """Every active NSID (Identify CNS 02h, paged from the last NSID seen)."""
        found: list[int] = []
        after = 0
        while True:
            page = await self.identify(Cns.ACTIVE_NS_LIST, nsid=after)
            batch = [n for n in memoryview(page).cast("I") if n]
            found.extend(batch)
            if len(batch) < NSID_LIST_ENTRIES:
                return found
            after = batch[-1]

    async def ns_descriptors(self, nsid: int) -> list[tuple[NsIdType | int, bytes]]:
        """Namespace Identification Descriptors (Identify CNS 03h) as (type, value)."""
        page = await self.identify(Cns.NS_ID_DESCRIPTORS, nsid)
        out: list[tuple[NsIdType | int, bytes]] = []
        pos = 0
        while pos + NS_ID_DESC_HEADER.size <= len(page):
            desc = NS_ID_DESC_HEADER.unpack(page, pos)
            if desc.nidt == 0 or desc.nidl == 0:
                break
            start = pos + NS_ID_DESC_HEADER.size
            nidt = NsIdType(desc.nidt) if desc.nidt in NsIdType._value2member_map_ else desc.nidt
            out.append((nidt, bytes(page[start:start + desc.nidl])))
            pos = start + desc.nidl
        return out

    async def get_log_page(self, lid: int, length: int, offset: int = 0, nsid: int = NSID_ALL, csi: int = 0,
                           rae: bool = False, lsp: int = 0) -> bytes:
        """``length`` bytes of log page ``lid`` from byte ``offset`` (split at MDTS)."""
        if length <= 0:
            return b""
        end = offset + length
        pos = offset - offset % cmds.DWORD
        parts: list[bytes] = []
        while pos < end:
            want = min(end - pos, self.max_transfer)
            want += -want % cmds.DWORD
            completion = await self._admin(cmds.get_log_page(lid, want, pos, nsid, csi, rae, lsp),
                                           read_length=want)
            parts.append(bytes(completion.data or b""))
            pos += want
        whole = b"".join(parts)
        skip = offset % cmds.DWORD
        return whole[skip:skip + length]

    async def get_features(self, fid: int, sel: int = 0, cdw11: int = 0, nsid: int = 0) -> int:
        """Get Features: the value in completion DW0."""
        return (await self._admin(cmds.get_features(fid, sel, cdw11, nsid))).dw0

    async def set_features(self, fid: int, value: int, save: bool = False, nsid: int = 0) -> int:
        """Set Features: returns completion DW0 (e.g. queues granted)."""
        return (await self._admin(cmds.set_features(fid, value, save, nsid))).dw0

    async def keep_alive(self) -> None:
        await self._admin(cmds.keep_alive())

    # -- NVM I/O ------------------------------------------------------------------------

    def _chunks(self, info: NamespaceInfo, slba: int, nlb: int) -> list[tuple[int, int]]:
        per = max(min(self.max_transfer // info.block_size, cmds.NLB_MAX), 1)
        return [(slba + done, min(per, nlb - done)) for done in range(0, nlb, per)]

    async def read(self, nsid: int, slba: int, nlb: int, *, queue: int | None = None,
                   timeout: float | None = None) -> bytearray:
        """Read ``nlb`` blocks from ``slba``; split into MDTS-sized commands when needed."""
        info = self._namespaces.get(nsid) or await self.namespace(nsid)
        size = nlb * info.block_size
        if size <= self.max_transfer and nlb <= cmds.NLB_MAX:
            completion = await self.queue(queue).submit(cmds.read(nsid, slba, nlb), None, size, timeout)
            if completion.status:
                raise status_error(completion.status, completion.dw0)
            return completion.data if completion.data is not None else bytearray()
        parts = await asyncio.gather(*(self.read(nsid, s, n, queue=queue, timeout=timeout)
                                       for s, n in self._chunks(info, slba, nlb)))
        return bytearray().join(parts)

    async def write(self, nsid: int, slba: int, data: Buffer, *, fua: bool = False, queue: int | None = None,
                    timeout: float | None = None) -> None:
        """Write ``data`` (a whole number of blocks) at ``slba``; split at MDTS."""
        info = self._namespaces.get(nsid) or await self.namespace(nsid)
        nlb, rest = divmod(len(data), info.block_size)
        if rest or not nlb:
            raise ValueError(f"write of {len(data)} bytes is not a whole number of "
                             f"{info.block_size}-byte blocks")
        if len(data) <= self.max_transfer and nlb <= cmds.NLB_MAX:
            completion = await self.queue(queue).submit(cmds.write(nsid, slba, nlb, fua), data, 0, timeout)
            if completion.status:
                raise status_error(completion.status, completion.dw0)
            return
        view = memoryview(data)
        bs = info.block_size
        await asyncio.gather(*(self.write(nsid, s, view[(s - slba) * bs:(s - slba + n) * bs], fua=fua,
                                          queue=queue, timeout=timeout)
                               for s, n in self._chunks(info, slba, nlb)))

    async def flush(self, nsid: int = NSID_ALL, *, queue: int | None = None) -> None:
        check(await self.queue(queue).submit(cmds.flush(nsid)))

    async def write_zeroes(self, nsid: int, slba: int, nlb: int, deallocate: bool = False, *,
                           queue: int | None = None) -> None:
        check(await self.queue(queue).submit(cmds.write_zeroes(nsid, slba, nlb, deallocate)))

    async def deallocate(self, nsid: int, ranges: list[tuple[int, int]], *, queue: int | None = None) -> None:
        """Dataset Management with the Deallocate attribute over ``(slba, nlb)`` ranges."""
        sqe, data = cmds.dataset_management(nsid, ranges)
        check(await self.queue(queue).submit(sqe, data))

    # -- keep-alive ---------------------------------------------------------------------

    def start_keep_alive(self) -> None:
        if self.kato_ms and self._keep_alive is None:
            self._keep_alive = asyncio.create_task(self._keep_alive_loop(), name=f"keep-alive {self.admin.name}")

    def stop_keep_alive(self) -> None:
        """Stop sending Keep Alive (the controller will then tear the association down)."""
        if self._keep_alive is not None:
            self._keep_alive.cancel()
            self._keep_alive = None

    async def _keep_alive_loop(self) -> None:
        interval = self.kato_ms / 2000.0
        while self.admin.is_open:
            await asyncio.sleep(interval)
            try:
                await self.admin.submit(cmds.keep_alive(), timeout=interval or None)
            except (ConnectionError, NvmeStatus) as exc:
                log.warning("%s: keep-alive failed: %s", self.admin.name, exc)
                return
            except TimeoutError:
                log.warning("%s: keep-alive not answered within %.1f s", self.admin.name, interval)

    # -- shutdown -----------------------------------------------------------------------

    async def close(self) -> None:
        """Clean shutdown: close I/O queues, CC.SHN = 01b, wait for CSTS.SHST, close."""
        if self._closed:
            return
        self._closed = True
        self.stop_keep_alive()
        await asyncio.gather(*(q.close() for q in self.io_queues), return_exceptions=True)
        if self.admin.is_open and self.cc:
            try:
                async with asyncio.timeout(self.timeout):
                    await self.property_set(Property.CC, cmds.cc_shutdown(self.cc))
                    await self._poll_csts(lambda csts: (csts & CSTS_SHST_MASK) >> CSTS_SHST_SHIFT
                                          == CSTS_SHST_COMPLETE, "shutdown")
            except (ConnectionError, NvmeStatus, TimeoutError) as exc:
                log.warning("%s: shutdown incomplete: %s", self.admin.name, exc)
        await self.admin.close()

    async def __aenter__(self) -> HostController:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- bring-up -----------------------------------------------------------------------

    async def _poll_csts(self, done: Any, what: str) -> int:
        delay = CSTS_POLL_FIRST_S
        while True:
            csts = await self.property_get(Property.CSTS)
            if csts & CSTS_CFS:
                raise ConnectionError(f"{self.admin.name}: controller fatal status during {what} "
                                      f"(CSTS {csts:#x})")
            if done(csts):
                return csts
            await asyncio.sleep(delay)
            delay = min(delay * 2, CSTS_POLL_MAX_S)

    async def _enable(self) -> None:
        self.cap = await self.property_get(Property.CAP, PROPERTY_SIZE_8)
        css = CC_CSS_ALL_IO_SETS if (self.cap >> CAP_CSS_SHIFT) & CAP_CSS_IO_SETS else CC_CSS_NVM
        self.cc = cmds.cc_enable(css)
        await self.property_set(Property.CC, self.cc)
        ready_within = ((self.cap >> CAP_TO_SHIFT) & 0xFF) * CAP_TO_UNIT_S or self.timeout
        async with asyncio.timeout(min(ready_within, self.timeout)):
            await self._poll_csts(lambda csts: csts & CSTS_RDY, "enable")

    async def _identify_self(self) -> None:
        self.id_ctrl = await self.identify_controller()
        if self.id_ctrl.cntlid != self.cntlid:
            raise ConnectionError(f"mismatching cntlid: Connect returned {self.cntlid}, Identify says "
                                  f"{self.id_ctrl.cntlid}")
        if self.id_ctrl.mdts:
            self.max_transfer = min((1 << self.id_ctrl.mdts) * MPS_4K, 1 << 30)

    async def _open_io_queue(self, qid: int, queue_size: int) -> HostQueue:
        queue = await HostQueue.open(self.address, self.port, qid, queue_size, hdgst=self.hdgst,
                                     ddgst=self.ddgst, timeout=self.timeout)
        try:
            await connect_queue(queue, qid, queue_size - 1, 0, self.subnqn, self.hostnqn, self.hostid,
                                self.cntlid, self.disable_sqflow, self.dhchap)
        except BaseException:
            await queue.close()
            raise
        queue.in_capsule_size = self.io_in_capsule_size
        return queue


def _uuid_of(hostnqn: str) -> bytes | None:
    """The UUID of a ``nqn.2014-08.org.nvmexpress:uuid:<uuid>`` host NQN."""
    if not hostnqn.startswith(HOSTNQN_UUID_PREFIX):
        return None
    try:
        return uuidlib.UUID(hostnqn[len(HOSTNQN_UUID_PREFIX):]).bytes
    except ValueError:
        return None


async def connect_queue(queue: HostQueue, qid: int, sqsize: int, kato_ms: int, subnqn: str, hostnqn: str,
                        hostid: bytes, cntlid: int, disable_sqflow: bool = False,
                        dhchap: DhchapSecrets | None = None) -> int:
    """Fabrics Connect on an established queue (then DH-HMAC-CHAP if the controller asks
    for it); returns the controller ID."""
    data = cmds.connect_data(hostid, cntlid, subnqn, hostnqn)
    completion = check(await queue.submit(cmds.connect(qid, sqsize, kato_ms, disable_sqflow), data))
    await authenticate_if_required(queue, completion.dw0, dhchap, subnqn, hostnqn)
    return completion.dw0 & 0xFFFF


async def connect(address: str, port: int = NVME_TCP_IO_PORT, subnqn: str = "", *, hostnqn: str | None = None,
                  hostid: bytes | None = None, hdgst: bool = False, ddgst: bool = False, nr_io_queues: int = 1,
                  queue_size: int = DEFAULT_QUEUE_SIZE, kato_ms: int = DEFAULT_KATO_MS,
                  timeout: float = DEFAULT_TIMEOUT_S, disable_sqflow: bool = False,
                  dhchap_secret: str | None = None, dhchap_ctrl_secret: str | None = None) -> HostController:
    """Create an association with ``subnqn`` at ``address:port`` and open its I/O queues.

    ``hdgst``/``ddgst`` request header/data digests; ``disable_sqflow`` asks the controller
    to disable SQ flow control on every queue (Linux ``--disable-sqflow``; the discovery
    entry's TREQ bit 2 says whether a target supports it).  Every step is bounded by
    ``timeout``, which is also the default deadline of each later command.  For the
    discovery NQN no I/O queues are created.  ``hostid`` defaults to the UUID of a
    UUID-form ``hostnqn`` (as nvme-cli does), else to a fresh UUID.  ``dhchap_secret`` (a
    DHHC-1 string) answers DH-HMAC-CHAP on every queue; ``dhchap_ctrl_secret`` also makes
    the controller prove itself (bidirectional)."""
    dhchap = DhchapSecrets.from_strings(dhchap_secret, dhchap_ctrl_secret)
    if not subnqn:
        raise ValueError("subnqn is required")
    if not 2 <= queue_size <= CNTLID_DYNAMIC:
        raise ValueError(f"queue_size {queue_size} outside 2..65535")
    hostnqn = hostnqn or default_hostnqn()
    if hostid is None:
        hostid = _uuid_of(hostnqn) or uuidlib.uuid4().bytes
    if len(hostid) != HOSTID_SIZE:
        raise ValueError(f"hostid must be {HOSTID_SIZE} bytes")
    admin = await HostQueue.open(address, port, ADMIN_QID, ADMIN_DEPTH, hdgst=hdgst, ddgst=ddgst,
                                 timeout=timeout)
    ctrl = HostController(admin, address=address, port=port, subnqn=subnqn, hostnqn=hostnqn, hostid=hostid,
                          kato_ms=kato_ms, timeout=timeout, hdgst=hdgst, ddgst=ddgst,
                          disable_sqflow=disable_sqflow)
    ctrl.dhchap = dhchap
    try:
        async with asyncio.timeout(timeout):
            ctrl.cntlid = await connect_queue(admin, ADMIN_QID, ADMIN_SQSIZE, kato_ms, subnqn, hostnqn, hostid,
                                              CNTLID_DYNAMIC, disable_sqflow, dhchap)
            await ctrl._enable()
            await ctrl._identify_self()
        ctrl.start_keep_alive()
        if subnqn != DISCOVERY_NQN and nr_io_queues > 0:
            async with asyncio.timeout(timeout):
                granted = await ctrl.set_features(FeatureId.NUMBER_OF_QUEUES, cmds.number_of_queues(nr_io_queues))
            count = min(nr_io_queues, (granted & 0xFFFF) + 1, (granted >> 16) + 1)
            opened = await asyncio.gather(*(ctrl._open_io_queue(qid, queue_size)
                                            for qid in range(1, count + 1)), return_exceptions=True)
            ctrl.io_queues = [q for q in opened if isinstance(q, HostQueue)]
            failed = [e for e in opened if not isinstance(e, HostQueue)]
            if failed:
                raise failed[0]
    except BaseException:
        await ctrl.close()
        raise
    log.info("connected to %s at %s:%d: cntlid %d, %d I/O queue(s)", subnqn, address, port, ctrl.cntlid,
             len(ctrl.io_queues))
    return ctrl
