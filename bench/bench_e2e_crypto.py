"""End-to-end cost of integrity and encryption: nvmeof.host -> NVMe/TCP -> protected namespaces.

Starts a target in a subprocess (this script with ``--serve``: host and target each get
their own interpreter, the pipeline its worker processes) with one RAM namespace per
variant, all with the same block size:

* ``plain``: no pipeline (the baseline);
* ``crc32c``: CRC32C tags, jobs through the process engine;
* ``crc32c inline``: CRC32C tags, jobs run in the target's event loop (inline engine);
* ``xts+crc32c``: AES-256-XTS + CRC32C tags through the process engine;
* ``xts+crc32c inline``: the same in the event loop (what offloading saves).

For each, 128 KiB sequential writes then reads at queue depth ``--qd`` for ``--duration``
seconds each, variants interleaved, ``--rounds`` times; prints one table of the medians:
GB/s, and the cost relative to ``plain`` in %.
``openssl speed -evp aes-256-xts`` (one core, 128 KiB and one-block data units) is
measured in the same run as the ceiling of the cipher.  Usage::

    python bench/bench_e2e_crypto.py [--duration 1] [--rounds 3] [--qd 32] [--workers N] [--block-size 4096]

Bounded in time: each phase runs ``--duration`` seconds, openssl one second per size, and
an alarm aborts the run after ``--deadline`` seconds.  Numbers compare runs on the same
machine; nothing asserts them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dpu_emu.keys import KeyManager  # noqa: E402
from dpu_emu.pipeline import Engine, InlineEngine, default_workers  # noqa: E402
from dpu_emu.protect import build_engine, namespace_backend, start_engine  # noqa: E402
from dpu_emu.storage.block import RamBlockStore  # noqa: E402
from nvmeof.controller.model import Listener, Namespace, Subsystem, Target, TargetConfig  # noqa: E402
from nvmeof.host import connect  # noqa: E402
from nvmeof.target.server import NvmeTcpServer  # noqa: E402

LOOPBACK = "127.0.0.1"
SUBNQN = "nqn.2026-11.io.dpu-emu:bench-crypto"
KIB = 1024
MIB = 1024 * KIB
SEQ_IO = 128 * KIB
DEFAULT_QD = 32
DEFAULT_DURATION_S = 1.0
DEFAULT_ROUNDS = 3
DEFAULT_BLOCK = 4096
REGION_BYTES = 128 * MIB            # per namespace: written by the write phase, read by the read phase
OPENSSL_SECONDS = 1
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
GB = 1e9
BENCH_KEY_ID = "bench"
_OPENSSL_LINE = re.compile(r"^aes-256-xts\s+([\d.]+)k\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Variant:
    nsid: int
    name: str
    ns_cfg: dict[str, Any]
    inline: bool = False


VARIANTS = (
    Variant(1, "plain", {}),
    Variant(2, "crc32c", {"integrity": True}),
    Variant(3, "crc32c inline", {"integrity": True}, inline=True),
    Variant(4, "xts+crc32c", {"key": BENCH_KEY_ID}),
    Variant(5, "xts+crc32c inline", {"key": BENCH_KEY_ID}, inline=True),
)


# -- the target (subprocess) ------------------------------------------------------------------

async def serve(port: int, workers: int, block_size: int) -> None:
    """Serve every variant until stdin closes, then print the engines' stats as JSON."""
    process_engine = build_engine({"engine": "process", "workers": workers})
    inline_engine: Engine = InlineEngine()
    await start_engine(process_engine)
    keys = KeyManager(os.urandom(32))                   # in memory: a throwaway key
    keys.create(BENCH_KEY_ID)
    target = Target(TargetConfig())
    server = NvmeTcpServer(target)
    sub = Subsystem(nqn=SUBNQN)
    backends = []
    for v in VARIANTS:
        store = RamBlockStore(block_size, REGION_BYTES // block_size)
        backend = namespace_backend(store, {"nsid": v.nsid, **v.ns_cfg}, keys=keys, name=v.name,
                                    engine=inline_engine if v.inline else process_engine)
        backends.append(backend)
        sub.add_namespace(Namespace(nsid=v.nsid, backend=backend, block_size=block_size, num_blocks=store.num_blocks))
    target.add_subsystem(sub)
    await server.listen(Listener(traddr=LOOPBACK, trsvcid=str(port), portid=1))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)      # until the parent closes it
    await server.close()
    for backend in backends:
        backend.close()
    stats = {"process": process_engine.stats.as_dict(), "inline": inline_engine.stats.as_dict()}
    await process_engine.aclose()
    inline_engine.close()
    print(json.dumps(stats), flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class TargetProcess:
    def __init__(self, workers: int, block_size: int) -> None:
        self.port = free_port()
        cmd = [sys.executable, __file__, "--serve", "--port", str(self.port), "--workers", str(workers),
               "--block-size", str(block_size)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()      # bounded by the run's alarm
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"target did not start (said {line!r}, exit {self.proc.poll()})")

    def stop(self) -> dict[str, Any]:
        """Close its stdin (``communicate`` does), collect the stats it prints, make sure it is gone."""
        try:
            out, _ = self.proc.communicate(timeout=STOP_TIMEOUT_S)
            return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except (subprocess.TimeoutExpired, ValueError):
            return {}
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


# -- the host -------------------------------------------------------------------------------------

async def timed(duration: float, qd: int, op: Callable[[int], Awaitable[None]]) -> float:
    """GB/s of ``qd`` workers issuing ``op(sequence number)`` (128 KiB each) for ``duration``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    counter = iter(range(1 << 62))
    done = [0]

    async def worker() -> None:
        while loop.time() < end:
            await op(next(counter))
            done[0] += 1

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(qd)))
    return done[0] * SEQ_IO / (loop.time() - start) / GB


async def measure(port: int, duration: float, qd: int, block_size: int,
                  rounds: int) -> dict[str, tuple[float, float]]:
    """Median over ``rounds`` of (write, read) GB/s per variant; variants interleave in each
    round, so a burst of load from elsewhere on the machine hits all of them alike."""
    payload = os.urandom(SEQ_IO)
    nblk = SEQ_IO // block_size
    slots = REGION_BYTES // SEQ_IO
    samples: dict[str, list[tuple[float, float]]] = {v.name: [] for v in VARIANTS}
    async with await connect(LOOPBACK, port, SUBNQN, nr_io_queues=1, queue_size=qd * 2, timeout=30.0,
                             disable_sqflow=True) as ctrl:
        ops = {}
        for v in VARIANTS:
            async def write(i: int, nsid: int = v.nsid) -> None:
                await ctrl.write(nsid, (i % slots) * nblk, payload)

            async def read(i: int, nsid: int = v.nsid, name: str = v.name) -> None:
                data = await ctrl.read(nsid, (i % slots) * nblk, nblk)
                if i % slots == 0 and data != payload:
                    raise AssertionError(f"{name}: read back different data")

            await asyncio.gather(*(write(i) for i in range(slots)))   # all written: reads never hit holes
            ops[v.name] = (write, read)
        for _ in range(rounds):
            for name, (write, read) in ops.items():
                samples[name].append((await timed(duration, qd, write), await timed(duration, qd, read)))
    return {name: (statistics.median(w for w, _ in got), statistics.median(r for _, r in got))
            for name, got in samples.items()}


def openssl_speed(nbytes: int) -> float | None:
    """``openssl speed -evp aes-256-xts`` (one core) in GB/s."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    cmd = [exe, "speed", "-evp", "aes-256-xts", "-bytes", str(nbytes), "-seconds", str(OPENSSL_SECONDS)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=OPENSSL_SECONDS * 4 + 30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _OPENSSL_LINE.search(out)
    return float(match.group(1)) * 1000 / GB if match else None


def table(results: dict[str, tuple[float, float]], openssl: dict[int, float | None], block_size: int) -> str:
    base_w, base_r = results["plain"]
    rows = [("namespace", "write GB/s", "cost", "read GB/s", "cost")]
    for name, (w, r) in results.items():
        cost_w = "" if name == "plain" else f"{(1 - w / base_w) * 100:+.0f}%".replace("+", "")
        cost_r = "" if name == "plain" else f"{(1 - r / base_r) * 100:+.0f}%".replace("+", "")
        rows.append((name, f"{w:.2f}", cost_w, f"{r:.2f}", cost_r))
    for nbytes, gbps in openssl.items():
        label = f"openssl speed aes-256-xts, {nbytes // KIB} KiB units, 1 core"
        figure = "n/a" if gbps is None else f"{gbps:.2f}"
        rows.append((label, figure, "", figure, ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                              strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = f"cost = throughput lost against 'plain' (128 KiB I/O, {block_size}-byte blocks)"
    return "\n".join([*lines, note])


def deadline_passed(signum: int, frame: object) -> None:
    raise TimeoutError("benchmark deadline passed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds; the median is shown")
    parser.add_argument("--qd", type=int, default=DEFAULT_QD, help="commands in flight")
    parser.add_argument("--workers", type=int, default=default_workers(), help="pipeline worker processes")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK, choices=(512, 4096))
    parser.add_argument("--deadline", type=float, default=300.0, help="abort the whole run after this many s")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.port, args.workers, args.block_size))
        return 0
    signal.signal(signal.SIGALRM, deadline_passed)
    signal.alarm(int(args.deadline))
    started = time.monotonic()
    target = TargetProcess(args.workers, args.block_size)
    try:
        results = asyncio.run(measure(target.port, args.duration, args.qd, args.block_size, args.rounds))
    finally:
        stats = target.stop()
    openssl = {SEQ_IO: openssl_speed(SEQ_IO), args.block_size: openssl_speed(args.block_size)}
    signal.alarm(0)
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.workers} pipeline worker(s), "
          f"QD {args.qd}, median of {args.rounds} x {args.duration:g} s per phase, target in a subprocess, "
          f"{time.monotonic() - started:.0f} s in all")
    print(table(results, openssl, args.block_size))
    process = stats.get("process", {})
    if process:
        print(f"process engine: {process.get('completed', 0)} jobs, {process.get('failed', 0)} failed, "
              f"{process.get('worker_restarts', 0)} worker restarts, "
              f"{process.get('backpressure_waits', 0)} waits for a slot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
