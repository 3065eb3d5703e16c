"""Protected namespaces end to end: nvmeof.host -> NVMe/TCP -> ProtectedBlockBackend ->
ProcessEngine workers -> file or RAM store.

The target is assembled here from the protocol model (Target, Subsystem, Namespace,
NvmeTcpServer) and the builders of :mod:`dpu_emu.protect`, the same calls the device makes,
and served on 127.0.0.1 with an ephemeral port from the test's own event loop.  Every test
is bounded by ``pytest.mark.timeout`` and by the ``run`` helper's deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dpu_emu.keys import KeyManager
from dpu_emu.pipeline import ProcessEngine
from dpu_emu.pipeline.shm import our_segments
from dpu_emu.protect import ProtectedBlockBackend, build_engine, namespace_backend, sidecar_path, start_engine
from dpu_emu.storage.block import open_block_store
from nvmeof.controller.model import Listener, Namespace, Subsystem, Target, TargetConfig
from nvmeof.errors import NvmeStatus
from nvmeof.host import connect
from nvmeof.target.server import NvmeTcpServer

from ._support import LOOPBACK, pattern, run

pytestmark = pytest.mark.timeout(120)

SUBNQN = "nqn.2026-11.io.dpu-emu:protected"
KIB = 1024
MIB = 1024 * KIB
MASTER = bytes(range(200, 232))
DATA_KEY = bytes(range(64, 128))
WORKERS = 2
SEQ_IO = 128 * KIB
LOAD_QD = 32
KILL_DEADLINE_S = 1.0
RESTART_WAIT_S = 10.0
TEST_TIMEOUT_S = 60.0
SCT_MEDIA, SC_UNRECOVERED_READ = 2, 0x81
SCT_GENERIC, SC_INTERNAL = 0, 0x06


@dataclass
class Served:
    port: int
    engine: ProcessEngine
    backends: dict[int, Any] = field(default_factory=dict)


def file_ns(nsid: int, path: Path, size: int = 4 * MIB, block_size: int = 512, **extra: Any) -> dict[str, Any]:
    return {"nsid": nsid, "size_bytes": size, "block_size": block_size,
            "backend": {"kind": "file", "path": str(path)}, **extra}


def ram_ns(nsid: int, size: int = 64 * MIB, block_size: int = 4096, **extra: Any) -> dict[str, Any]:
    return {"nsid": nsid, "size_bytes": size, "block_size": block_size, "backend": {"kind": "ram"}, **extra}


@contextlib.asynccontextmanager
async def serve(namespaces: list[dict[str, Any]], keys: KeyManager | None = None) -> AsyncIterator[Served]:
    """A target with these namespaces over a started process engine; torn down in order."""
    engine = build_engine({"engine": "process", "workers": WORKERS})
    assert isinstance(engine, ProcessEngine)
    await start_engine(engine)
    target = Target(TargetConfig())
    server = NvmeTcpServer(target)
    served = Served(0, engine)
    try:
        sub = Subsystem(nqn=SUBNQN)
        for ns_cfg in namespaces:
            store = open_block_store(ns_cfg["backend"]["kind"], size_bytes=ns_cfg["size_bytes"],
                                     block_size=ns_cfg["block_size"], path=ns_cfg["backend"].get("path"))
            backend = namespace_backend(store, ns_cfg, engine=engine, keys=keys, name=f"ns{ns_cfg['nsid']}")
            served.backends[ns_cfg["nsid"]] = backend
            sub.add_namespace(Namespace(nsid=ns_cfg["nsid"], backend=backend, block_size=ns_cfg["block_size"],
                                        num_blocks=store.num_blocks))
        target.add_subsystem(sub)
        _, served.port = await server.listen(Listener(traddr=LOOPBACK, trsvcid="0", portid=1))
        yield served
    finally:
        await server.close()
        for backend in served.backends.values():
            try:
                (backend if isinstance(backend, ProtectedBlockBackend) else backend.store).flush()
            finally:
                backend.close()
        await engine.aclose()


def key_manager(tmp_path: Path) -> KeyManager:
    keys = KeyManager(MASTER, tmp_path / "keys.json")
    keys.import_key(DATA_KEY, "disk")
    return keys


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([old[0] ^ 0x5A]))


def xts_block(key: bytes, block: bytes, lba: int) -> bytes:
    ctx = Cipher(algorithms.AES(key), modes.XTS(lba.to_bytes(16, "little"))).encryptor()
    return ctx.update(block) + ctx.finalize()


def test_round_trips_over_tcp(tmp_path: Path) -> None:
    namespaces = [file_ns(1, tmp_path / "crc.img", integrity=True),
                  file_ns(2, tmp_path / "xts.img", key="disk"),
                  ram_ns(3, key="disk"),
                  ram_ns(4)]                                        # unprotected, beside them

    async def body() -> None:
        async with serve(namespaces, key_manager(tmp_path)) as srv:
            assert isinstance(srv.backends[2], ProtectedBlockBackend) and srv.backends[2].encrypted
            async with await connect(LOOPBACK, srv.port, SUBNQN, nr_io_queues=2) as ctrl:
                for nsid, bs in ((1, 512), (2, 512), (3, 4096), (4, 4096)):
                    big = pattern(nsid, SEQ_IO)
                    small = pattern(nsid + 100, bs)
                    await ctrl.write(nsid, 8, big)
                    await ctrl.write(nsid, 2, small, fua=True)
                    nblk = SEQ_IO // bs
                    assert await ctrl.read(nsid, 8, nblk) == big
                    got = await ctrl.read(nsid, 0, 8 + nblk + 4)           # unwritten, small, big, unwritten
                    assert got == bytes(2 * bs) + small + bytes(5 * bs) + big + bytes(4 * bs)
                    await ctrl.deallocate(nsid, [(9, 2)])
                    await ctrl.write_zeroes(nsid, 12, 1)
                    expect = bytearray(big)
                    expect[bs:3 * bs] = bytes(2 * bs)
                    expect[4 * bs:5 * bs] = bytes(bs)
                    assert await ctrl.read(nsid, 8, nblk) == expect
                    await ctrl.flush(nsid)
                    # 1 MiB (MDTS) in one command, many in flight
                    await asyncio.gather(*(ctrl.write(nsid, 512 + i * (MIB // bs), pattern(i, MIB))
                                           for i in range(3)))
                    assert await ctrl.read(nsid, 512 + MIB // bs, MIB // bs) == pattern(1, MIB)
            assert srv.engine.stats.failed == 0

    run(body(), TEST_TIMEOUT_S)


@pytest.mark.parametrize("protection", [{"integrity": True}, {"key": "disk"}], ids=["crc", "xts"])
def test_corrupted_backing_file_is_a_media_error_and_the_connection_lives_on(
        tmp_path: Path, protection: dict[str, Any]) -> None:
    path = tmp_path / "ns.img"
    bs = 512

    async def body() -> None:
        async with serve([file_ns(1, path, **protection)], key_manager(tmp_path)) as srv, \
                await connect(LOOPBACK, srv.port, SUBNQN) as ctrl:
            data = pattern(7, 64 * bs)
            await ctrl.write(1, 0, data)
            await ctrl.flush(1)
            flip_byte(path, 10 * bs + 100)
            for slba, nlb in ((10, 1), (0, 64), (8, 4)):
                with pytest.raises(NvmeStatus) as info:
                    await ctrl.read(1, slba, nlb)
                assert (info.value.sct, info.value.sc) == (SCT_MEDIA, SC_UNRECOVERED_READ)
                assert not info.value.dnr
            assert await ctrl.read(1, 11, 4) == data[11 * bs:15 * bs], "the next read works"
            assert await ctrl.read(1, 0, 10) == data[:10 * bs]
            await ctrl.write(1, 10, data[10 * bs:11 * bs])         # rewriting the block heals it
            assert await ctrl.read(1, 0, 64) == data
            flip_byte(Path(sidecar_path(path)), 4096 + 20 * 8 + 1)  # now the tag of block 20
            with pytest.raises(NvmeStatus) as info:
                await ctrl.read(1, 20, 1)
            assert (info.value.sct, info.value.sc) == (SCT_MEDIA, SC_UNRECOVERED_READ)
            assert await ctrl.read(1, 21, 2) == data[21 * bs:23 * bs]
            assert srv.backends[1].stats.integrity_errors == 4

    run(body(), TEST_TIMEOUT_S)


def test_nothing_readable_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "secret.img"
    keys = key_manager(tmp_path)
    stamp = b"TOP-SECRET-PATTERN-0123456789ab!"            # 32 bytes, repeated
    plaintext = stamp * (SEQ_IO // len(stamp))

    async def body() -> None:
        async with serve([file_ns(1, path, key="disk")], keys) as srv, \
                await connect(LOOPBACK, srv.port, SUBNQN) as ctrl:
            for slba in range(0, 2048, SEQ_IO // 512):
                await ctrl.write(1, slba, plaintext)
            await ctrl.flush(1)
            assert await ctrl.read(1, 256, SEQ_IO // 512) == plaintext

    run(body(), TEST_TIMEOUT_S)
    files = {"data": path.read_bytes(), "tags": Path(sidecar_path(path)).read_bytes(),
             "keys": (tmp_path / "keys.json").read_bytes()}
    assert files["data"][:512] == xts_block(DATA_KEY, plaintext[:512], 0), "AES-XTS, tweak = LBA"
    assert files["data"][512 * 300:512 * 301] == xts_block(DATA_KEY, plaintext[:512], 300)
    secrets = [DATA_KEY, DATA_KEY[:32], DATA_KEY[32:], MASTER]
    for name, blob in files.items():
        assert stamp[:16] not in blob, f"plaintext pattern found in the {name} file"
        for secret in secrets:
            for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
                assert form not in blob, f"key material found in the {name} file"


def test_sigkill_a_worker_under_load(tmp_path: Path) -> None:
    data = pattern(3, SEQ_IO)
    nblk = SEQ_IO // 4096
    slots = 256

    async def body() -> tuple[list[int], str | None]:
        async with serve([ram_ns(1, size=slots * SEQ_IO, key="disk")], key_manager(tmp_path)) as srv, \
                await connect(LOOPBACK, srv.port, SUBNQN, queue_size=LOAD_QD * 2) as ctrl:
            engine = srv.engine
            for i in range(slots // 4):
                await ctrl.write(1, i * nblk, data)
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            outcomes: list[tuple[float, float, BaseException | None]] = []      # (start, end, error)

            async def worker(index: int) -> None:
                n = index
                while not stop.is_set():
                    start = loop.time()
                    try:
                        if n % 2:
                            assert await ctrl.read(1, (n % (slots // 4)) * nblk, nblk) == data
                        else:
                            await ctrl.write(1, (n % slots) * nblk, data)
                        outcomes.append((start, loop.time(), None))
                    except NvmeStatus as exc:
                        outcomes.append((start, loop.time(), exc))
                    n += LOAD_QD

            tasks = [asyncio.create_task(worker(i)) for i in range(LOAD_QD)]
            async with asyncio.timeout(10):
                while not engine.in_flight_by_worker or max(engine.in_flight_by_worker.values()) < 2:
                    await asyncio.sleep(0.001)
            busy = engine.in_flight_by_worker
            victim = max(busy, key=lambda pid: busy[pid])
            os.kill(victim, signal.SIGKILL)
            killed_at = loop.time()
            await asyncio.sleep(KILL_DEADLINE_S + 0.2)
            stop.set()
            await asyncio.gather(*tasks)
            before = [o for o in outcomes if o[0] <= killed_at]
            failed = [o for o in outcomes if o[2] is not None]
            assert failed, "the killed worker held jobs: some commands must have failed"
            for start, _end, exc in failed:
                assert isinstance(exc, NvmeStatus)
                assert (exc.sct, exc.sc, exc.dnr) == (SCT_GENERIC, SC_INTERNAL, False)
                assert start <= killed_at + 0.05, "only commands in flight at the kill may fail"
            assert max(end for _, end, _ in before) - killed_at < KILL_DEADLINE_S
            assert engine.stats.worker_restarts == 1
            assert victim not in engine.worker_pids and len(engine.worker_pids) == WORKERS
            for i in range(4):                                    # new commands succeed
                await ctrl.write(1, i * nblk, data)
                assert await ctrl.read(1, i * nblk, nblk) == data
            assert srv.backends[1].stats.pipeline_errors == len(failed)
            return engine.worker_pids, engine.segment_name

    started = time.monotonic()
    pids, segment = run(body(), TEST_TIMEOUT_S)
    assert time.monotonic() - started < TEST_TIMEOUT_S
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the engine"
    assert our_segments() == [], "shared memory left in /dev/shm"
    assert segment is not None and not Path(f"/dev/shm/{segment}").exists()
