"""I/O benchmark: the nvmeof.host library against the dpu-emu target, next to iperf3.

Starts ``python -m dpu_emu serve`` as a subprocess on free loopback ports (fairer than
in-process on a 2-core machine: host and target each get a core), runs four phases
of ``--duration`` seconds each with one host event loop, and measures iperf3's loopback
TCP figure in the same run as the baseline::

    python bench/bench_io.py [--duration 3] [--queues 1] [--sqflow] [--target HOST:PORT:SUBNQN]

Phases: 128 KiB sequential write (QD 32), 128 KiB sequential read (QD 32), 4 KiB random
read at QD 1 and QD 32 over the region written first.  The host connects with SQ flow
control disabled (reads then end with C2HData SUCCESS, one PDU fewer per read) unless
``--sqflow`` is given.  Numbers are for comparing runs on the same machine, never
asserted anywhere; on a shared machine compare against the iperf3 column of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nvmeof.host import HostController, connect  # noqa: E402

LOOPBACK = "127.0.0.1"
DEFAULT_SUBNQN = "nqn.2026-11.io.dpu-emu:default"
NSID = 1
KIB = 1024
MIB = 1024 * KIB
SEQ_IO = 128 * KIB
RAND_IO = 4 * KIB
SEQ_QD = 32
RAND_QDS = (1, 32)
REGION_BYTES = 256 * MIB  # written by the sequential write phase, read by the others
DEFAULT_DURATION_S = 3.0
SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0
IPERF_EXTRA_S = 10.0
POLL_S = 0.05
GB = 1e9
LOG_TAIL_LINES = 20


@dataclass
class Result:
    name: str
    ops: int
    nbytes: int
    seconds: float

    @property
    def iops(self) -> float:
        return self.ops / self.seconds

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / GB


# -- target and baseline ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_accepting(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"target exited with status {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(POLL_S)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(POLL_S)
    raise TimeoutError(f"target not accepting on port {port} within {timeout} s")


def start_target(log: IO[bytes]) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m dpu_emu serve`` on free ports, its output going to ``log``."""
    io_port, disc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "dpu_emu", "serve", "--address", LOOPBACK, "--port", str(io_port),
           "--discovery-port", str(disc_port), "--log-level", "WARNING", "--no-rest"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_accepting(io_port, proc, SERVER_START_TIMEOUT_S)
    except BaseException as exc:
        stop_process(proc)
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-LOG_TAIL_LINES:]
        raise RuntimeError(f"{exc}; target output:\n" + "\n".join(tail)) from None
    return proc, io_port


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def iperf3_loopback(duration: float) -> float | None:
    """One-stream loopback TCP throughput in GB/s, or None when iperf3 is unavailable."""
    exe = shutil.which("iperf3")
    if exe is None:
        return None
    port = free_port()
    server = subprocess.Popen([exe, "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    client = [exe, "-c", LOOPBACK, "-p", str(port), "-t", str(max(1, round(duration))), "-J"]
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        # No probe connection: "-s -1" would serve the probe as its only client.
        while True:
            out = subprocess.run(client, capture_output=True, timeout=duration + IPERF_EXTRA_S)
            report = json.loads(out.stdout or b"{}")
            if out.returncode == 0 and "error" not in report:
                return float(report["end"]["sum_received"]["bits_per_second"]) / 8 / GB
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(report.get("error", f"iperf3 exited with {out.returncode}"))
            time.sleep(POLL_S)
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"iperf3 failed: {exc}", file=sys.stderr)
        return None
    finally:
        stop_process(server)


# -- workloads --------------------------------------------------------------------------


async def timed(name: str, duration: float, qd: int,
                op: Callable[[int], Awaitable[int]]) -> Result:
    """Run ``qd`` workers calling ``op(sequence number)`` (returns bytes moved) until the
    deadline; the sequence numbers are shared so sequential workloads stay sequential."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    counter = iter(range(1 << 62))
    totals = [0, 0]

    async def worker() -> None:
        while loop.time() < end:
            moved = await op(next(counter))
            totals[0] += 1
            totals[1] += moved

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(qd)))
    return Result(name, totals[0], totals[1], loop.time() - start)


async def run_phases(ctrl: HostController, duration: float) -> list[Result]:
    info = await ctrl.namespace(NSID)
    bs = info.block_size
    region = min(REGION_BYTES, info.size_bytes)
    seq_blocks = SEQ_IO // bs
    seq_slots = region // SEQ_IO
    payload = os.urandom(SEQ_IO)
    written = [0]

    async def seq_write(i: int) -> int:
        slot = i % seq_slots
        await ctrl.write(NSID, slot * seq_blocks, payload)
        written[0] = max(written[0], slot + 1)
        return SEQ_IO

    async def seq_read(i: int) -> int:
        await ctrl.read(NSID, (i % max(written[0], 1)) * seq_blocks, seq_blocks)
        return SEQ_IO

    results = [await timed("128 KiB sequential write", duration, SEQ_QD, seq_write),
               await timed("128 KiB sequential read", duration, SEQ_QD, seq_read)]
    rand_blocks = RAND_IO // bs
    rand_slots = max(written[0] * SEQ_IO // RAND_IO, 1)
    rng = random.Random(1)

    async def rand_read(_: int) -> int:
        await ctrl.read(NSID, rng.randrange(rand_slots) * rand_blocks, rand_blocks)
        return RAND_IO

    for qd in RAND_QDS:
        results.append(await timed(f"4 KiB random read QD{qd}", duration, qd, rand_read))
    return results


async def bench(address: str, port: int, subnqn: str, duration: float, queues: int,
                sqflow_off: bool) -> list[Result]:
    async with await connect(address, port, subnqn, nr_io_queues=queues, timeout=30.0,
                             disable_sqflow=sqflow_off) as ctrl:
        return await run_phases(ctrl, duration)


# -- report -----------------------------------------------------------------------------


def table(results: list[Result], iperf: float | None, target: str) -> str:
    baseline = f"{iperf:.2f} GB/s" if iperf is not None else "n/a"
    rows = [("workload", f"nvmeof.host -> {target}", "iperf3 loopback", "ratio")]
    for r in results:
        if r.name.startswith("4 KiB"):
            rows.append((r.name, f"{r.iops:,.0f} IOPS ({r.gbps * 1000:.0f} MB/s)", "", ""))
        else:
            ratio = f"{r.gbps / iperf:.0%}" if iperf else "n/a"
            rows.append((r.name, f"{r.gbps:.2f} GB/s ({r.iops:,.0f} IOPS)", baseline, ratio))
    rows.append(("TCP one stream (iperf3 -t)", "", baseline, ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds per phase")
    parser.add_argument("--queues", type=int, default=1, help="I/O queues (TCP connections)")
    parser.add_argument("--sqflow", action="store_true",
                        help="keep SQ flow control (default: disabled, so reads end with C2HData SUCCESS)")
    parser.add_argument("--target", help="HOST:PORT[:SUBNQN] of a running target instead of a subprocess")
    args = parser.parse_args(argv)
    proc = None
    with tempfile.TemporaryFile() as target_log:
        if args.target:
            host, port_s, *nqn = args.target.split(":", 2)
            address, port, subnqn, label = host, int(port_s), nqn[0] if nqn else DEFAULT_SUBNQN, args.target
        else:
            proc, port = start_target(target_log)
            address, subnqn, label = LOOPBACK, DEFAULT_SUBNQN, "dpu-emu (subprocess)"
        try:
            results = asyncio.run(bench(address, port, subnqn, args.duration, args.queues,
                                          not args.sqflow))
        finally:
            if proc is not None:
                stop_process(proc)
    iperf = iperf3_loopback(args.duration)
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.queues} I/O queue(s), "
          f"SQ flow control {'on' if args.sqflow else 'off'}, {args.duration:g} s per phase")
    print(table(results, iperf, label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
