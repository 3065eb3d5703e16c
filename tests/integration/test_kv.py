"""NVMe-KV end to end: the host library against the device's KV namespaces on real sockets."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

import nvmeof.host
from dpu_emu import config as cfgmod
from nvmeof import errors
from nvmeof.controller import kv as kvproto
from nvmeof.host import KvNamespace, KvValueTruncated
from nvmeof.wire.constants import Cns, Csi, KvOpcode, NvmOpcode

from ._support import LOOPBACK, run

KV_NSID = 2
MIB = 1 << 20


def kv_config(mode: str = "strict", capacity: int = 64 * MIB, backend: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:
    cfg = cfgmod.default_config()
    namespaces = cfg["subsystems"][0]["namespaces"]
    namespaces[1] = {"nsid": KV_NSID, "command_set": "kv", "capacity_bytes": capacity, "max_value_size": MIB,
                     "mode": mode, "backend": backend or {"kind": "ram"}, **extra}
    return cfg


async def open_kv(dev: Any, **kw: Any) -> tuple[nvmeof.host.HostController, KvNamespace]:
    ctrl = await nvmeof.host.connect(LOOPBACK, dev.io_port, dev.subnqn, **kw)
    return ctrl, await KvNamespace.open(ctrl, KV_NSID)


def test_kv_namespace_is_visible_with_the_kv_command_set(device: Any) -> None:
    async def body() -> None:
        ctrl, kv = await open_kv(device)
        async with ctrl:
            assert KV_NSID in await ctrl.active_namespaces()
            descs = dict(await ctrl.ns_descriptors(KV_NSID))
            assert descs[4] == bytes([Csi.KV])  # the CSI descriptor the Linux host requires
            assert kv.limits.max_key_size == 16 and kv.limits.max_value_size == MIB
            effects = await ctrl.get_log_page(0x05, 4096, csi=Csi.KV)
            for opcode in KvOpcode:
                entry = int.from_bytes(effects[1024 + 4 * opcode:1028 + 4 * opcode], "little")
                assert entry & 1, f"{opcode.name} not marked supported in the CSI 1 effects log"
            assert int.from_bytes(effects[1024:1028], "little") & 1, "Flush (00h) not supported on CSI 1"
            nvm_only = await ctrl.identify(Cns.CSI_ACTIVE_NS_LIST, 0, csi=Csi.KV)
            assert int.from_bytes(nvm_only[:4], "little") == KV_NSID
    run(body())


def test_random_operations_against_a_model(make_device: Any) -> None:
    """Store/Retrieve/Exist/Delete with values of 1 B .. 1 MiB, QD 32 over 4 queues, checked
    against a dict.  Keys are partitioned per in-flight slot so ordering is well defined."""
    dev = make_device(kv_config(capacity=512 * MIB))
    total_ops = 100_000
    depth = 32

    async def body() -> None:
        ctrl, kv = await open_kv(dev, nr_io_queues=4)
        model: dict[bytes, bytes] = {}
        rng = random.Random(1234)

        def value() -> bytes:
            roll = rng.random()
            size = rng.randint(1, 64) if roll < 0.6 else rng.randint(65, 8192) if roll < 0.995 else rng.randint(
                8193, MIB)
            return rng.randbytes(size)

        async def worker(slot: int, ops: int) -> None:
            keys = [bytes([slot]) + i.to_bytes(rng.randint(1, 15), "big") for i in range(40)]
            for _ in range(ops):
                key = rng.choice(keys)
                op = rng.random()
                if op < 0.4:
                    val = value()
                    await kv.store(key, val)
                    model[key] = val
                elif op < 0.7:
                    got = await kv.get(key)
                    assert got == model.get(key), f"wrong value for {key!r}"
                elif op < 0.85:
                    assert await kv.exist(key) == (key in model)
                elif key in model:
                    await kv.delete(key)
                    del model[key]
                else:
                    with pytest.raises(errors.KvKeyDoesNotExist):
                        await kv.delete(key)

        async with ctrl:
            await asyncio.gather(*(worker(slot, total_ops // depth) for slot in range(depth)))
            listed = [key async for key in kv.keys(buffer_size=256)]
            assert listed == sorted(model), "List must return every key once, in order"
    run(body(), timeout=600)


def test_list_continuation_returns_every_key_exactly_once(device: Any) -> None:
    async def body() -> None:
        ctrl, kv = await open_kv(device)
        async with ctrl:
            keys = sorted({random.Random(i).randbytes(1 + i % 16) for i in range(500)})
            await asyncio.gather(*(kv.store(k, k * 2) for k in keys))
            page = await kv.list(buffer_size=200)
            assert 0 < len(page) < len(keys)  # a small buffer really does cut the list
            assert [k async for k in kv.keys(buffer_size=200)] == keys
            assert [k async for k in kv.keys(keys[100], buffer_size=300)] == keys[100:]
    run(body())


def test_strict_mode_reports_capacity_exceeded(make_device: Any) -> None:
    dev = make_device(kv_config(mode="strict", capacity=MIB))

    async def body() -> None:
        ctrl, kv = await open_kv(dev)
        async with ctrl:
            await kv.store(b"a", b"x" * (MIB // 2))
            await kv.store(b"b", b"y" * (MIB // 4))
            with pytest.raises(errors.KvCapacityExceeded) as info:
                await kv.store(b"c", b"z" * (MIB // 2))
            assert (info.value.sct, info.value.sc) == (0, 0x81)
            assert await kv.retrieve(b"a") == b"x" * (MIB // 2)
    run(body())


def test_cache_mode_evicts_the_least_recently_used_and_never_returns_wrong_data(make_device: Any) -> None:
    dev = make_device(kv_config(mode="cache", capacity=MIB))
    chunk = MIB // 4

    async def body() -> None:
        ctrl, kv = await open_kv(dev)
        async with ctrl:
            for i in range(4):
                await kv.store(bytes([i]), bytes([i]) * chunk)
            await kv.retrieve(bytes([0]))  # key 0 becomes most recently used
            await kv.store(b"\x09", b"\x09" * chunk)  # evicts key 1
            assert await kv.get(bytes([1])) is None
            for key in (0, 2, 3, 9):
                assert await kv.retrieve(bytes([key])) == bytes([key]) * chunk
            rng = random.Random(7)
            live: dict[bytes, bytes] = {}
            for _ in range(200):
                key = rng.randbytes(4)
                val = rng.randbytes(rng.randint(1, chunk))
                await kv.store(key, val)
                live[key] = val
                probe = rng.choice(list(live))
                got = await kv.get(probe)
                assert got is None or got == live[probe]
    run(body())


def test_file_backed_kv_namespace_keeps_every_value_across_restart(make_device: Any, tmp_path: Path) -> None:
    cfg = kv_config(backend={"kind": "file", "path": str(tmp_path / "kv")})
    values = {f"key-{i:04d}".encode(): random.Random(i).randbytes(1 + (i * 997) % 70000) for i in range(300)}

    async def write(dev: Any) -> None:
        ctrl, kv = await open_kv(dev)
        async with ctrl:
            await asyncio.gather(*(kv.store(k, v) for k, v in values.items()))
            await kv.delete(b"key-0000")

    async def check(dev: Any) -> None:
        ctrl, kv = await open_kv(dev)
        async with ctrl:
            assert not await kv.exist(b"key-0000")
            for key, val in list(values.items())[1:]:
                assert await kv.retrieve(key) == val

    first = make_device(cfg)
    run(write(first))
    first.stop()
    run(check(make_device(cfg)))


def test_bad_input_gets_kv_status_codes(device: Any) -> None:
    async def body() -> None:
        ctrl, kv = await open_kv(device)
        async with ctrl:
            await kv.store(b"k", b"v" * 5000)
            for key_length in (0, 17):
                done = await ctrl.io_raw(KvOpcode.STORE, nsid=KV_NSID, cdw10=4, cdw11=key_length, data=b"abcd",
                                         check_status=False)
                assert errors.status_error(done.status, kv=True).sc == 0x86
            # Value Size above the namespace maximum: 85h, decided from CDW10 before any data moves
            done = await ctrl.io_raw(KvOpcode.STORE, nsid=KV_NSID, cdw10=MIB + 1, cdw11=1, data=b"abcd",
                                     check_status=False)
            assert isinstance(errors.status_error(done.status, kv=True), errors.KvInvalidValueSize)
            with pytest.raises(errors.KvKeyExists):
                await kv.store(b"k", b"new", must_not_exist=True)
            with pytest.raises(errors.KvKeyDoesNotExist):
                await kv.store(b"absent", b"new", must_exist=True)
            both = kvproto.STORE_MUST_EXIST | kvproto.STORE_MUST_NOT_EXIST
            with pytest.raises(errors.InvalidField):
                await kv._command(KvOpcode.STORE, b"k", cdw10=3, options=both, data=b"abc")
            data, length = await kv.retrieve_into(b"k", 1000)
            assert length == 5000 and data == b"v" * 1000
            with pytest.raises(KvValueTruncated):
                await kv.retrieve(b"k", buffer_size=100)
            with pytest.raises(errors.InvalidOpcode):  # 03h is no KV opcode
                await ctrl.io_raw(0x03, nsid=KV_NSID)
            for nvm_only in (NvmOpcode.WRITE_ZEROES, NvmOpcode.DATASET_MANAGEMENT):
                with pytest.raises(errors.InvalidOpcode):
                    await ctrl.io_raw(nvm_only, nsid=KV_NSID)
            await ctrl.flush(KV_NSID)  # Flush (00h) is common to all I/O command sets
            # An NVM Read to a KV namespace is, by opcode, a KV Retrieve: its CDW11 (SLBA high) gives
            # key length 0, so it is refused as an invalid key size - a status, never a crash.
            done = await ctrl.io_raw(NvmOpcode.READ, nsid=KV_NSID, cdw10=0, cdw12=7, read_length=4096,
                                     check_status=False)
            assert done.status and errors.status_error(done.status, kv=True).sc == 0x86
            with pytest.raises(errors.InvalidOpcode):  # KV Exist (14h) on the block namespace
                await ctrl.io_raw(KvOpcode.EXIST, nsid=1)
            assert await kv.retrieve(b"k") == b"v" * 5000  # and the namespace still works
    run(body())
