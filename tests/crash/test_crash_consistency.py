"""Crash consistency of file-backed namespaces: write load, `kill -9` at a random moment, restart, verify.

Each test runs ROUNDS rounds against one `dpu-emu serve` subprocess configuration whose namespace
lives in a file (block) or a directory (KV) under tmp_path.  A round: start the server on the
files the previous round left, verify every LBA / key against the host's records (see
models.py), run a write load with Flushes (and FUA writes) from the host library, and SIGKILL
the server, its process group and its pipeline workers after a random delay (seeded RNG).  After
the last round the server is started once more, verified, and stopped cleanly.  Leftover shared
memory segments of the killed servers must be gone once the next server has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import pytest

from nvmeof import errors
from nvmeof.host.controller import HostController, connect
from nvmeof.host.kv import KvNamespace

from .harness import LOOPBACK, SUBNQN, ServeProcess, leftover_segments, serve_config
from .models import BlockModel, KvModel, kv_key

pytestmark = pytest.mark.crash

ROUNDS: Final[int] = 20
SEED: Final[int] = 0x8C4A5E
NSID: Final[int] = 1
WORKERS: Final[int] = 8  # concurrent writers, each owning a slice of the LBAs / keys
KILL_AFTER_S: Final[tuple[float, float]] = (0.15, 0.9)
FLUSH_GAP_S: Final[tuple[float, float]] = (0.0, 0.03)
COMMAND_TIMEOUT_S: Final[float] = 10.0
FUA_FRACTION: Final[float] = 0.1
MAX_WRITE_BLOCKS: Final[int] = 4
INTEGRITY_ROUNDS: Final[int] = 10  # the protected variant (without the intent record it failed by round 4)

BLOCK_SIZE: Final[int] = 4096
NUM_LBAS: Final[int] = 256
NUM_KEYS: Final[int] = 64
MAX_VALUE: Final[int] = 3000
DELETE_FRACTION: Final[float] = 0.25

Load = Callable[[HostController, random.Random, asyncio.Event], Awaitable[None]]


class Tally:
    """Commands the load saw succeed, and failures before the kill (there must be none)."""

    def __init__(self) -> None:
        self.ok = 0
        self.flushes = 0
        self.errors_before_kill: list[str] = []


async def _until_killed(killed: asyncio.Event, tally: Tally, step: Callable[[], Awaitable[None]]) -> None:
    while not killed.is_set():
        try:
            await step()
        except Exception as exc:  # the connection dies with the server: stop this worker
            if not killed.is_set():
                tally.errors_before_kill.append(repr(exc))
            return


async def _flusher(ctrl: HostController, rng: random.Random, killed: asyncio.Event, tally: Tally,
                   snapshot: Callable[[], list[int]], flushed: Callable[[list[int]], None]) -> None:
    async def step() -> None:
        before = snapshot()
        await ctrl.flush(NSID)
        flushed(before)
        tally.flushes += 1
        await asyncio.sleep(rng.uniform(*FLUSH_GAP_S))

    await _until_killed(killed, tally, step)


async def block_load(model: BlockModel, ctrl: HostController, rng: random.Random, killed: asyncio.Event,
                     tally: Tally) -> None:
    span = model.num_lbas // WORKERS

    async def writer(first: int) -> None:
        async def step() -> None:
            nblocks = rng.randint(1, MAX_WRITE_BLOCKS)
            lba = rng.randrange(first, first + span - nblocks + 1)
            fua = rng.random() < FUA_FRACTION
            gens, data = model.begin_write(lba, nblocks)
            await ctrl.write(NSID, lba, data, fua=fua)
            model.write_acked(lba, gens, fua)
            tally.ok += 1

        await _until_killed(killed, tally, step)

    await asyncio.gather(*(writer(w * span) for w in range(WORKERS)),
                         _flusher(ctrl, rng, killed, tally, lambda: list(model.acked), model.flush_acked))


async def block_verify(model: BlockModel, ctrl: HostController) -> int:
    """Check every LBA; returns how many hold data."""
    data = await ctrl.read(NSID, 0, model.num_lbas)
    bs = model.block_size
    return sum(model.check(lba, bytes(data[lba * bs:(lba + 1) * bs])) > 0 for lba in range(model.num_lbas))


async def kv_load(model: KvModel, ctrl: HostController, rng: random.Random, killed: asyncio.Event,
                  tally: Tally) -> None:
    kv = await KvNamespace.open(ctrl, NSID)

    async def worker(w: int) -> None:
        mine = list(range(w, model.num_keys, WORKERS))

        async def step() -> None:
            index = rng.choice(mine)
            delete = rng.random() < DELETE_FRACTION
            seq, value = model.begin(index, None if delete else rng.randint(0, MAX_VALUE))
            key = kv_key(index)
            if value is None:
                with contextlib.suppress(errors.KvKeyDoesNotExist):  # absent already: the same outcome
                    await kv.delete(key)
            else:
                await kv.store(key, value)
            model.acked_op(index, seq)
            tally.ok += 1

        await _until_killed(killed, tally, step)

    await asyncio.gather(*(worker(w) for w in range(WORKERS)),
                         _flusher(ctrl, rng, killed, tally, lambda: list(model.acked), model.flush_acked))


async def kv_verify(model: KvModel, ctrl: HostController) -> int:
    """Check every key, and that List names exactly the keys that retrieve; returns how many exist."""
    kv = await KvNamespace.open(ctrl, NSID)
    present: set[bytes] = set()
    for index in range(model.num_keys):
        value = await kv.get(kv_key(index))
        model.check(index, value)
        if value is not None:
            present.add(kv_key(index))
    listed = [key async for key in kv.keys()]
    assert len(listed) == len(set(listed)), "List returned a key twice"
    assert set(listed) == present, f"List and Retrieve disagree: {sorted(set(listed) ^ present)}"
    return len(present)


def run_rounds(tmp_path: Path, namespace: dict[str, Any], load: Callable[..., Awaitable[None]],
               verify: Callable[[HostController], Awaitable[int]], rounds: int = ROUNDS) -> list[str]:
    server = ServeProcess(tmp_path, serve_config([namespace]))
    rng = random.Random(SEED)
    report: list[str] = []
    killed_pids = 0
    try:
        for round_no in range(rounds + 1):
            took = server.start()
            if round_no:  # the previous server's segments were swept by this start
                assert leftover_segments(server.pids[-2]) == [], "shared memory of a killed server leaked"
            last = round_no == rounds
            tally, kept = asyncio.run(_round(server, rng, load, verify, final=last))
            assert not tally.errors_before_kill, f"round {round_no}: errors under load: {tally.errors_before_kill}"
            if last:
                assert server.stop() == 0, server.log_tail()
            else:
                server.kill9()  # normally done by the round already
                killed_pids = max(killed_pids, len(server.last_killed))
            report.append(f"round {round_no}: start {took:.2f}s, {kept} items verified, "
                          f"{tally.ok} ops + {tally.flushes} flushes acked before kill")
    finally:
        with contextlib.suppress(Exception):
            server.kill9()
    assert killed_pids >= 2, "no pipeline worker was ever killed along with the server"
    for pid in server.pids:
        assert leftover_segments(pid) == [], f"shared memory of server {pid} left in /dev/shm"
    return report


async def _round(server: ServeProcess, rng: random.Random, load: Callable[..., Awaitable[None]],
                 verify: Callable[[HostController], Awaitable[int]], *, final: bool) -> tuple[Tally, int]:
    tally = Tally()
    ctrl = await connect(LOOPBACK, server.io_port, SUBNQN, nr_io_queues=2, timeout=COMMAND_TIMEOUT_S)
    try:
        kept = await verify(ctrl)
        if final:
            return tally, kept
        killed = asyncio.Event()
        running = asyncio.ensure_future(load(ctrl, rng, killed, tally))
        await asyncio.sleep(rng.uniform(*KILL_AFTER_S))
        if running.done():
            running.result()  # a load that ended early failed: say why
        killed.set()
        await asyncio.to_thread(server.kill9)
        await asyncio.wait_for(running, COMMAND_TIMEOUT_S * 2)
        return tally, kept
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctrl.close(), 2)


def test_crash_block_file_namespace(tmp_path: Path) -> None:
    model = BlockModel(NUM_LBAS, BLOCK_SIZE)
    namespace = {"nsid": NSID, "size_bytes": NUM_LBAS * BLOCK_SIZE, "block_size": BLOCK_SIZE,
                 "backend": {"kind": "file", "path": str(tmp_path / "block.img")}}
    report = run_rounds(tmp_path, namespace, lambda c, r, k, t: block_load(model, c, r, k, t),
                        lambda c: block_verify(model, c))
    print("\n" + "\n".join(report))
    assert any(model.durable), "nothing was ever flushed"


def test_crash_kv_file_namespace(tmp_path: Path) -> None:
    model = KvModel(NUM_KEYS)
    namespace = {"nsid": NSID, "command_set": "kv", "capacity_bytes": 64 << 20, "max_value_size": 4096,
                 "mode": "strict", "backend": {"kind": "file", "path": str(tmp_path / "kv")}}
    report = run_rounds(tmp_path, namespace, lambda c, r, k, t: kv_load(model, c, r, k, t),
                        lambda c: kv_verify(model, c))
    print("\n" + "\n".join(report))
    assert any(model.durable), "nothing was ever flushed"


def test_crash_integrity_block_file_namespace(tmp_path: Path) -> None:
    """CRC32C-protected: data and tags land with two writes; the intent record
    (dpu_emu/protect/intent.py) completes the tags of a write killed between them."""
    model = BlockModel(NUM_LBAS, BLOCK_SIZE)
    namespace = {"nsid": NSID, "size_bytes": NUM_LBAS * BLOCK_SIZE, "block_size": BLOCK_SIZE, "integrity": True,
                 "backend": {"kind": "file", "path": str(tmp_path / "block.img")}}
    run_rounds(tmp_path, namespace, lambda c, r, k, t: block_load(model, c, r, k, t),
               lambda c: block_verify(model, c), rounds=INTEGRITY_ROUNDS)
