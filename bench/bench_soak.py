"""Soak benchmark: 64 connections x QD32 of verified mixed I/O against `dpu-emu serve`, RSS watched.

Starts ``python -m dpu_emu serve --no-rest`` on free loopback ports with two NVM namespaces
(a RAM one and a file-backed one under a temporary directory) and the process pipeline engine,
then spreads the load over ``--procs`` host processes (so both cores work), each opening
``--ctrls`` controllers of ``--queues`` I/O queues (one TCP connection each): 4 x 2 x 8 = 64
connections by default, every queue with ``--qd`` (32) commands in flight::

    python bench/bench_soak.py [--seconds 600] [--warmup 30] [--sample 10] [--procs 4]

Every in-flight slot owns a few LBAs of each namespace, so it can check what it reads: a write
puts (namespace, LBA, sequence) into every 16 bytes of the block, a read must return the
slot's last acknowledged write of those LBAs (or zeroes before the first), and Flushes go to
each namespace (or to all of them, NSID FFFFFFFFh) now and then.  Mix per command: 45 % write
(10 % of them FUA), 45 % read + verify, 10 % flush.

Phases: the idle server's RSS is the first baseline; a fill writes every LBA once (so the RAM
namespace has allocated all it ever will), then ``--warmup`` seconds of load, whose throughput
is the second baseline; then ``--seconds`` of load with the server's RSS (the server process and
every descendant: pipeline workers, the resource tracker) sampled every ``--sample`` seconds.
Criteria: zero errors, zero verify failures, RSS at the end within 5 % of RSS after warm-up.
The exit status is 0 only if they hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nvmeof.host import HostController, connect  # noqa: E402

LOOPBACK = "127.0.0.1"
SUBNQN = "nqn.2026-11.io.dpu-emu:soak"
NSIDS = (1, 2)
NSID_ALL = 0xFFFFFFFF
BLOCK_SIZE = 4096
LBAS_PER_SLOT = 4
MAX_WRITE_BLOCKS = 2
WRITE_FRACTION = 0.45
FLUSH_FRACTION = 0.10
FUA_FRACTION = 0.10
RSS_TOLERANCE_PCT = 5.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0
REPORT_EVERY_S = 1.0
POLL_S = 0.1
_STAMP = struct.Struct("<IIQ")  # namespace, LBA, sequence: repeated through the block

# counters each host process publishes (shared array index)
OPS, ERRORS, VERIFY_FAILURES, READS, WRITES, FLUSHES, NBYTES = range(7)
COUNTERS = 7


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def block(nsid: int, lba: int, seq: int) -> bytes:
    return _STAMP.pack(nsid, lba, seq) * (BLOCK_SIZE // _STAMP.size)


ZERO_BLOCK = bytes(BLOCK_SIZE)


# -- the target and its RSS ------------------------------------------------------------------


def tree_rss_bytes(pid: int) -> int:
    """RSS of *pid* plus every descendant (VmRSS from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [c for c, p in parents.items() if p == parent]
        tree += kids
        frontier += kids
    total = 0
    for member in tree:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def start_target(workdir: Path, ns_bytes: int, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    io_port, disc_port = free_port(), free_port()
    ports = [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": LOOPBACK, "trsvcid": str(io_port)},
              "discovery": True, "io": True},
             {"portid": 2, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": LOOPBACK,
                                    "trsvcid": str(disc_port)}, "discovery": True, "io": False}]
    namespaces = [{"nsid": NSIDS[0], "size_bytes": ns_bytes, "block_size": BLOCK_SIZE, "backend": {"kind": "ram"}},
                  {"nsid": NSIDS[1], "size_bytes": ns_bytes, "block_size": BLOCK_SIZE,
                   "backend": {"kind": "file", "path": str(workdir / "soak.img")}}]
    config = {"ports": ports, "pipeline": {"engine": "process", "workers": workers}, "transport": {},
              "subsystems": [{"nqn": SUBNQN, "serial": "SOAK0001", "model": "dpu-emu-soak", "allow_any_host": True,
                              "hosts": [], "namespaces": namespaces}]}
    (workdir / "config.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "dpu_emu", "serve", "--address", LOOPBACK, "--port", str(io_port),
           "--discovery-port", str(disc_port), "--no-rest", "--log-level", "WARNING",
           "--config", str(workdir / "config.json")]
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - lives as long as the target
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"target exited {proc.returncode}: {(workdir / 'serve.log').read_text()[-2000:]}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(POLL_S)
            if sock.connect_ex((LOOPBACK, io_port)) == 0:
                return proc, io_port
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("target did not listen in time")
        time.sleep(POLL_S)


# -- one host process --------------------------------------------------------------------------


@dataclass
class HostArgs:
    index: int
    port: int
    ctrls: int
    queues: int
    qd: int
    slots_total: int
    first_slot: int
    seed: int


class Slot:
    """LBAs owned by one in-flight command stream, and the last acknowledged write of each."""

    def __init__(self, number: int) -> None:
        self.first = number * LBAS_PER_SLOT
        self.seq: dict[tuple[int, int], int] = {}  # (nsid, lba) -> last acknowledged sequence (0: zeroes)
        self.next = 1


async def host_main(args: HostArgs, counters: Any, ready: Any, go: Any, stop: Any) -> None:
    rng = random.Random(args.seed)
    local = [0] * COUNTERS
    ctrls: list[HostController] = []
    for _ in range(args.ctrls):
        ctrls.append(await connect(LOOPBACK, args.port, SUBNQN, nr_io_queues=args.queues,
                                   queue_size=args.qd * 2, timeout=COMMAND_TIMEOUT_S))
    streams = [(ctrl, q) for ctrl in ctrls for q in range(len(ctrl.io_queues))]
    if len(streams) != args.ctrls * args.queues:
        raise RuntimeError(f"got {len(streams)} I/O queues, asked for {args.ctrls * args.queues}")
    slots = [Slot(args.first_slot + i) for i in range(len(streams) * args.qd)]

    async def write(ctrl: HostController, q: int, slot: Slot, nsid: int, lba: int, n: int, fua: bool) -> None:
        seqs = [slot.next + i for i in range(n)]
        slot.next += n
        await ctrl.write(nsid, lba, b"".join(block(nsid, lba + i, s) for i, s in enumerate(seqs)), fua=fua, queue=q)
        for i, s in enumerate(seqs):
            slot.seq[(nsid, lba + i)] = s
        local[WRITES] += 1
        local[NBYTES] += n * BLOCK_SIZE

    async def fill(ctrl: HostController, q: int, slot: Slot) -> None:
        for nsid in NSIDS:
            await write(ctrl, q, slot, nsid, slot.first, LBAS_PER_SLOT, False)

    async def stream(ctrl: HostController, q: int, slot: Slot) -> None:
        while not stop.is_set():
            nsid = rng.choice(NSIDS)
            roll = rng.random()
            try:
                if roll < FLUSH_FRACTION:
                    await ctrl.flush(rng.choice((*NSIDS, NSID_ALL)), queue=q)
                    local[FLUSHES] += 1
                elif roll < FLUSH_FRACTION + WRITE_FRACTION:
                    n = rng.randint(1, MAX_WRITE_BLOCKS)
                    lba = slot.first + rng.randrange(LBAS_PER_SLOT - n + 1)
                    await write(ctrl, q, slot, nsid, lba, n, rng.random() < FUA_FRACTION)
                else:
                    n = rng.randint(1, LBAS_PER_SLOT)
                    lba = slot.first + rng.randrange(LBAS_PER_SLOT - n + 1)
                    data = await ctrl.read(nsid, lba, n, queue=q)
                    local[READS] += 1
                    local[NBYTES] += n * BLOCK_SIZE
                    for i in range(n):
                        seq = slot.seq.get((nsid, lba + i), 0)
                        want = block(nsid, lba + i, seq) if seq else ZERO_BLOCK
                        if data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] != want:
                            local[VERIFY_FAILURES] += 1
                local[OPS] += 1
            except Exception as exc:  # any failed command is an error of the soak
                local[ERRORS] += 1
                if local[ERRORS] <= 3:
                    print(f"host {args.index}: {exc!r}", file=sys.stderr)
                await asyncio.sleep(POLL_S)

    async def publish() -> None:
        while True:
            with counters.get_lock():
                for i in range(COUNTERS):
                    counters[args.index * COUNTERS + i] = local[i]
            await asyncio.sleep(REPORT_EVERY_S)

    reporter = asyncio.ensure_future(publish())
    try:
        await asyncio.gather(*(fill(ctrl, q, slots[i * args.qd + j])
                               for i, (ctrl, q) in enumerate(streams) for j in range(args.qd)))
        ready.release()
        while not go.is_set():
            await asyncio.sleep(POLL_S)
        await asyncio.gather(*(stream(ctrl, q, slots[i * args.qd + j])
                               for i, (ctrl, q) in enumerate(streams) for j in range(args.qd)))
    finally:
        reporter.cancel()
        with counters.get_lock():
            for i in range(COUNTERS):
                counters[args.index * COUNTERS + i] = local[i]
        for ctrl in ctrls:
            try:
                await asyncio.wait_for(ctrl.close(), 5)
            except Exception as exc:
                print(f"host {args.index}: close: {exc!r}", file=sys.stderr)


def host_entry(args: HostArgs, counters: Any, ready: Any, go: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    asyncio.run(host_main(args, counters, ready, go, stop))


# -- the run -------------------------------------------------------------------------------------


def totals(counters: Any, procs: int) -> list[int]:
    with counters.get_lock():
        return [sum(counters[p * COUNTERS + i] for p in range(procs)) for i in range(COUNTERS)]


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="measured load duration (default 600)")
    parser.add_argument("--warmup", type=float, default=30.0, help="load before the RSS reference sample")
    parser.add_argument("--sample", type=float, default=10.0, help="RSS sampling interval in seconds")
    parser.add_argument("--procs", type=int, default=4, help="host processes")
    parser.add_argument("--ctrls", type=int, default=2, help="controllers per host process")
    parser.add_argument("--queues", type=int, default=8, help="I/O queues (connections) per controller")
    parser.add_argument("--qd", type=int, default=32, help="commands in flight per queue")
    parser.add_argument("--workers", type=int, default=1, help="target pipeline worker processes")
    opts = parser.parse_args()
    connections = opts.procs * opts.ctrls * opts.queues
    slots = connections * opts.qd
    ns_bytes = slots * LBAS_PER_SLOT * BLOCK_SIZE
    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", opts.procs * COUNTERS)
    ready, go, stop = ctx.Semaphore(0), ctx.Event(), ctx.Event()
    with tempfile.TemporaryDirectory(prefix="dpu-emu-soak-") as tmp:
        server, port = start_target(Path(tmp), ns_bytes, opts.workers)
        try:
            time.sleep(2.0)
            idle_rss = tree_rss_bytes(server.pid)
            per_proc = slots // opts.procs
            hosts = [ctx.Process(target=host_entry, args=(HostArgs(p, port, opts.ctrls, opts.queues, opts.qd, slots,
                                                                   p * per_proc, 1000 + p),
                                                          counters, ready, go, stop)) for p in range(opts.procs)]
            for h in hosts:
                h.start()
            t0 = time.monotonic()
            for _ in hosts:
                if not ready.acquire(timeout=300):
                    raise RuntimeError("host processes did not finish the fill")
            fill_s = time.monotonic() - t0
            filled_rss = tree_rss_bytes(server.pid)
            go.set()
            t_warm = time.monotonic()
            time.sleep(opts.warmup)
            warm = totals(counters, opts.procs)
            warm_s = time.monotonic() - t_warm
            start_rss = tree_rss_bytes(server.pid)
            samples: list[tuple[float, int, int]] = []
            t_start = time.monotonic()
            print(f"{connections} connections x QD{opts.qd}; namespaces 2 x {mib(ns_bytes)}; idle RSS {mib(idle_rss)},"
                  f" after fill ({fill_s:.0f} s) {mib(filled_rss)}, after {warm_s:.0f} s warm-up {mib(start_rss)}",
                  flush=True)
            print(f"{'t (s)':>7} {'ops':>10} {'ops/s':>8} {'errors':>7} {'verify':>7} {'RSS':>12}", flush=True)
            last_ops, last_t = warm[OPS], t_start
            while (now := time.monotonic()) - t_start < opts.seconds:
                time.sleep(min(opts.sample, opts.seconds - (now - t_start)))
                if not all(h.is_alive() for h in hosts) or server.poll() is not None:
                    print("a host process or the target died", flush=True)
                    break
                cur, rss_now, now = totals(counters, opts.procs), tree_rss_bytes(server.pid), time.monotonic()
                samples.append((now - t_start, rss_now, cur[OPS]))
                rate = (cur[OPS] - last_ops) / max(now - last_t, 1e-9)
                last_ops, last_t = cur[OPS], now
                print(f"{now - t_start:7.0f} {cur[OPS] - warm[OPS]:10d} {rate:8.0f} {cur[ERRORS]:7d} "
                      f"{cur[VERIFY_FAILURES]:7d} {mib(rss_now):>12}", flush=True)
            measured_s = time.monotonic() - t_start
            stop.set()
            for h in hosts:
                h.join(60)
            final = totals(counters, opts.procs)
        finally:
            stop.set()
            server.send_signal(signal.SIGTERM)
            try:
                code = server.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                code = server.wait()
            problems = [ln for ln in (Path(tmp) / "serve.log").read_text(errors="replace").splitlines()
                        if "ERROR" in ln or "Traceback" in ln]
    rss = [s[1] for s in samples] or [start_rss]
    end_rss = rss[-1]
    drift = (end_rss - start_rss) / start_rss * 100
    spread = (max(rss) - start_rss) / start_rss * 100
    ops = final[OPS] - warm[OPS]
    print()
    print("| metric | value |\n|---|---|")
    rows = [
        ("duration measured", f"{measured_s:.0f} s (after {warm_s:.0f} s warm-up)"),
        ("connections x QD", f"{connections} x {opts.qd} ({opts.procs} host processes)"),
        ("ops (measured)", f"{ops} ({ops / measured_s:.0f}/s; reads {final[READS]}, writes {final[WRITES]}, "
                           f"flushes {final[FLUSHES]} in the whole run)"),
        ("baseline throughput (warm-up)", f"{warm[OPS] / warm_s:.0f} ops/s"),
        ("errors", str(final[ERRORS])),
        ("verify failures", str(final[VERIFY_FAILURES])),
        ("RSS idle server (baseline)", mib(idle_rss)),
        ("RSS start (after warm-up)", mib(start_rss)),
        ("RSS min / max", f"{mib(min(rss))} / {mib(max(rss))}"),
        ("RSS end", mib(end_rss)),
        ("RSS drift end vs start", f"{drift:+.2f} % (max {spread:+.2f} %)"),
        ("target exit / log errors", f"{code} / {len(problems)}"),
    ]
    for name, val in rows:
        print(f"| {name} | {val} |")
    for line in problems[:10]:
        print(f"  log: {line}")
    ok = (final[ERRORS] == 0 and final[VERIFY_FAILURES] == 0 and abs(drift) <= RSS_TOLERANCE_PCT
          and code == 0 and not problems and measured_s >= opts.seconds * 0.95)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
