"""KV benchmark: NVMe-KV Store/Retrieve through nvmeof.host against dpu-emu, beside
redis-benchmark SET/GET against a local redis-server, same value sizes and depth, same run.

    python bench/bench_kv.py [--duration 3] [--queues 2]

dpu-emu runs as a subprocess with its default configuration (namespace 2 is an in-memory
NVMe-KV namespace in cache mode).  QD1 is one command at a time; QD32 keeps 32 commands
in flight over the I/O queues.  redis-benchmark uses one client with ``-P 1`` / ``-P 32``
(pipeline depth) and ``-d`` = the value size.  Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_io import (  # noqa: E402
    DEFAULT_SUBNQN,
    LOOPBACK,
    free_port,
    start_target,
    stop_process,
    timed,
    wait_accepting,
)

from nvmeof.host import KvNamespace, connect  # noqa: E402

KV_NSID = 2
KIB = 1024
MIB = 1024 * KIB
VALUE_SIZES = (4 * KIB, MIB)
DEPTHS = (1, 32)
KEYS = 64
REDIS_REQUESTS = {4 * KIB: 50_000, MIB: 1_000}
REDIS_TIMEOUT_S = 120.0


async def kv_phase(kv: KvNamespace, size: int, depth: int, duration: float) -> tuple[float, float]:
    value = os.urandom(size)
    keys = [f"bench-{i:04d}".encode() for i in range(KEYS)]

    async def store(i: int) -> int:
        await kv.store(keys[i % KEYS], value)
        return size

    async def retrieve(i: int) -> int:
        await kv.retrieve(keys[i % KEYS], buffer_size=size)
        return size

    stored = await timed("store", duration, depth, store)
    retrieved = await timed("retrieve", duration, depth, retrieve)
    return stored.iops, retrieved.iops


def redis_phase(port: int, size: int, depth: int) -> tuple[float, float]:
    exe = shutil.which("redis-benchmark")
    assert exe is not None
    cmd = [exe, "-h", LOOPBACK, "-p", str(port), "-c", "1", "-P", str(depth), "-d", str(size),
           "-n", str(REDIS_REQUESTS[size]), "-t", "set,get", "--csv", "-r", str(KEYS)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=REDIS_TIMEOUT_S, check=True).stdout
    rates = {row[0].split()[0].upper(): float(row[1]) for row in csv.reader(io.StringIO(out)) if len(row) > 1
             and row[0] != "test"}
    return rates["SET"], rates["GET"]


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], int] | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_accepting(port, proc, 10.0)  # type: ignore[arg-type]
    return proc, port


async def run_kv(port: int, queues: int, duration: float) -> dict[tuple[int, int], tuple[float, float]]:
    results: dict[tuple[int, int], tuple[float, float]] = {}
    async with await connect(LOOPBACK, port, DEFAULT_SUBNQN, nr_io_queues=queues) as ctrl:
        kv = await KvNamespace.open(ctrl, KV_NSID)
        for size in VALUE_SIZES:
            for depth in DEPTHS:
                results[(size, depth)] = await kv_phase(kv, size, depth, duration)
    return results


def fmt(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:,.0f}/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--queues", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as workdir:
        target, port = start_target(log)
        try:
            kv_results = asyncio.run(run_kv(port, args.queues, args.duration))
        finally:
            stop_process(target)
        redis_results: dict[tuple[int, int], tuple[float, float]] = {}
        redis = start_redis(workdir)
        if redis is not None:
            try:
                for key in kv_results:
                    redis_results[key] = redis_phase(redis[1], *key)
            finally:
                stop_process(redis[0])
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.queues} I/O queue(s), "
          f"{args.duration:g} s per dpu-emu phase, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    header = f"{'value':>7}  {'QD':>3}  {'NVMe-KV Store':>14}  {'NVMe-KV Retrieve':>16}  " \
             f"{'redis SET':>12}  {'redis GET':>12}"
    print(header)
    print("-" * len(header))
    for (size, depth), (store, retrieve) in kv_results.items():
        rset, rget = redis_results.get((size, depth), (None, None))
        label = f"{size // KIB} KiB" if size < MIB else f"{size // MIB} MiB"
        print(f"{label:>7}  {depth:>3}  {fmt(store):>14}  {fmt(retrieve):>16}  {fmt(rset):>12}  {fmt(rget):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
