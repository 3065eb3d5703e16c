"""Encrypted NVMe-KV end to end: nvmeof.host.KvNamespace -> NVMe/TCP -> the device (keys file,
master key from the environment, process engine) -> ProtectedKvBackend -> file log."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

import nvmeof.host
from dpu_emu import config as cfgmod
from dpu_emu.keys import MASTER_KEY_ENV, KeyManager
from dpu_emu.protect.kv import ProtectedKvBackend
from nvmeof import errors
from nvmeof.host import KvNamespace

from ._support import LOOPBACK, pattern, run

pytestmark = pytest.mark.timeout(120)

KV_NSID = 2
MIB = 1 << 20
MASTER = bytes(range(200, 232))
DATA_KEY = bytes(range(64, 128))
SECRET_KEYS = [b"tenant-a/secret", b"zz-last-key", b"A", b"0123456789abcdef"]
PATTERN_TAG = 0xC0FFEE
KILL_SETTLE_S = 1.2


def encrypted_kv_config(tmp_path: Path) -> dict[str, Any]:
    keys = KeyManager(MASTER, tmp_path / "keys.json")
    keys.import_key(DATA_KEY, "kv-key")
    cfg = cfgmod.default_config()
    cfg["keys_file"] = str(tmp_path / "keys.json")
    cfg["pipeline"] = {"engine": "process", "workers": 2}
    cfg["subsystems"][0]["namespaces"][1] = {
        "nsid": KV_NSID, "command_set": "kv", "capacity_bytes": 64 * MIB, "max_value_size": MIB,
        "backend": {"kind": "file", "path": str(tmp_path / "kv")}, "key": "kv-key"}
    return cfg


async def open_kv(dev: Any) -> tuple[nvmeof.host.HostController, KvNamespace]:
    ctrl = await nvmeof.host.connect(LOOPBACK, dev.io_port, dev.subnqn, nr_io_queues=2)
    return ctrl, await KvNamespace.open(ctrl, KV_NSID)


def values() -> dict[bytes, bytes]:
    rng = random.Random(11)
    out = {key: pattern(PATTERN_TAG, size) for key, size in zip(SECRET_KEYS, (1, 15, 17, MIB), strict=True)}
    out.update({f"k{i:03d}".encode(): rng.randbytes(1 + (i * 7919) % 70000) for i in range(60)})
    return out


def test_encrypted_kv_over_tcp_survives_a_restart(make_device: Any, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER.hex())
    cfg = encrypted_kv_config(tmp_path)
    data = values()

    async def write(dev: Any) -> None:
        ctrl, kv = await open_kv(dev)
        async with ctrl:
            assert kv.limits.max_value_size == MIB
            await asyncio.gather(*(kv.store(k, v) for k, v in data.items()))
            for key, value in data.items():
                assert await kv.retrieve(key) == value
                assert await kv.exist(key)
            assert await kv.list() == sorted(data)
            with pytest.raises(errors.KvKeyExists):
                await kv.store(b"A", b"other", must_not_exist=True)
            await kv.delete(b"k000")
            assert not await kv.exist(b"k000")
            assert await kv.get(b"k000") is None
            head, length = await kv.retrieve_into(SECRET_KEYS[3], 100)
            assert length == MIB and head == data[SECRET_KEYS[3]][:100]

    async def check(dev: Any) -> None:
        ctrl, kv = await open_kv(dev)
        async with ctrl:
            assert await kv.list() == sorted(k for k in data if k != b"k000")
            for key, value in data.items():
                if key != b"k000":
                    assert await kv.retrieve(key) == value
            await kv.store(b"after", b"restart")
            assert await kv.retrieve(b"after") == b"restart"

    first = make_device(cfg)
    backend = first.device.stores[(first.subnqn, KV_NSID)]
    assert isinstance(backend, ProtectedKvBackend)
    run(write(first), timeout=60)
    first.stop()
    assert_no_plaintext(tmp_path / "kv", data)
    second = make_device(cfg)
    run(check(second), timeout=60)
    second.stop()
    assert_no_plaintext(tmp_path / "kv", data)


def assert_no_plaintext(directory: Path, data: dict[bytes, bytes]) -> None:
    files = [p for p in directory.iterdir() if p.is_file()]
    assert files
    needle = pattern(PATTERN_TAG, 16)
    for path in files:
        raw = path.read_bytes()
        assert needle not in raw and b"restart" not in raw, path
        for key in data:
            if len(key) >= 4:
                assert key not in raw, (path, key)


def test_an_encrypted_namespace_does_not_start_without_its_key(make_device: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, bytes(32).hex())               # not the master key of keys.json
    cfg = encrypted_kv_config(tmp_path)
    with pytest.raises(cfgmod.ConfigError, match="does not unwrap"):
        make_device(cfg)


def test_a_killed_worker_fails_only_its_commands_with_a_retryable_internal_error(
        make_device: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASTER_KEY_ENV, MASTER.hex())
    dev = make_device(encrypted_kv_config(tmp_path))
    engine = dev.device.engine
    value = pattern(PATTERN_TAG, 128 * 1024)
    depth = 32

    async def body() -> None:
        ctrl, kv = await open_kv(dev)
        async with ctrl:
            for i in range(depth):
                await kv.store(f"v{i}".encode(), value)
            stop = asyncio.Event()
            failures: list[errors.NvmeStatus] = []

            async def worker(index: int) -> None:
                n = index
                while not stop.is_set():
                    key = f"v{n % depth}".encode()
                    try:
                        if n % 2:
                            assert await kv.retrieve(key) == value
                        else:
                            await kv.store(key, value)
                    except errors.NvmeStatus as exc:
                        failures.append(exc)
                    n += depth

            victim = dev.call_soon(lambda: list(engine.worker_pids))[0]
            os.kill(victim, signal.SIGSTOP)          # it holds the jobs it gets until it is killed
            tasks = [asyncio.create_task(worker(i)) for i in range(depth)]
            try:
                async with asyncio.timeout(10):
                    while dev.call_soon(lambda: engine.in_flight_by_worker.get(victim, 0)) < 1:
                        await asyncio.sleep(0.001)
            finally:
                os.kill(victim, signal.SIGKILL)
            await asyncio.sleep(KILL_SETTLE_S)
            stop.set()
            await asyncio.gather(*tasks)
            assert failures, "the killed worker held jobs: some commands must have failed"
            for exc in failures:
                assert (exc.sct, exc.sc, exc.dnr) == (0, 0x06, False)
            assert dev.call_soon(lambda: engine.stats.worker_restarts) == 1
            for i in range(depth):                                     # afterwards everything works
                assert await kv.retrieve(f"v{i}".encode()) == value
            await kv.store(b"fresh", value)
            assert await kv.retrieve(b"fresh") == value
    run(body(), timeout=60)
