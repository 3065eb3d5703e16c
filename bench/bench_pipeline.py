"""Offload pipeline throughput beside its baselines, all measured in the same run.

Prints one table of GB/s for jobs of 4 KiB and 128 KiB (4 KiB logical blocks, chain
CRC_GENERATE + ENCRYPT unless the row says otherwise):

* baselines on one core: ``openssl speed -evp aes-256-xts`` (parsed), the ``crc32c``
  package, ``crcmod``, and ``cryptography``'s XTS with a new context per sector;
* the stages: :class:`XtsCipher` (one reused OpenSSL context, IV reset per unit) with
  4 KiB and 512-byte units;
* the engines: inline, then the process engine with 1..N workers, closed loop at a fixed
  queue depth (startup excluded).

Bounded in time: every row runs for ``--seconds`` (default 1.5; openssl for 3), and an
alarm aborts the whole run after ``--deadline`` seconds.  Usage::

    python bench/bench_pipeline.py [--seconds 1.5] [--depth 32] [--max-workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpu_emu.pipeline import (  # noqa: E402
    PROTECT_AND_ENCRYPT,
    Completion,
    InlineEngine,
    Job,
    ProcessEngine,
    XtsCipher,
    crc32c_value,
    generate_xts_key,
)

SIZES = (4 * 1024, 128 * 1024)
BLOCK = 4096
OPENSSL_SECONDS = 3
GB = 1e9
_OPENSSL_LINE = re.compile(r"^aes-256-xts\s+([\d.]+)k\s*$", re.IGNORECASE | re.MULTILINE)


def rate(fn: Callable[[], object], nbytes: int, seconds: float) -> float:
    """GB/s of calling ``fn`` (which processes ``nbytes``) repeatedly for ``seconds``."""
    fn()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(8):
            fn()
        count += 8
        now = time.perf_counter()
        if now >= deadline:
            return count * nbytes / (now - start) / GB


def openssl_speed(nbytes: int, seconds: int, multi: int = 1) -> float | None:
    """``openssl speed -evp aes-256-xts`` in GB/s (its figure is in 1000s of bytes/s)."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    cmd = [exe, "speed", "-evp", "aes-256-xts", "-bytes", str(nbytes), "-seconds", str(seconds)]
    if multi > 1:
        cmd[2:2] = ["-multi", str(multi)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 30).stdout
    match = _OPENSSL_LINE.search(out)
    return float(match.group(1)) * 1000 / GB if match else None


def stage_rows(seconds: float) -> list[tuple[str, list[float | None]]]:
    import crcmod.predefined
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    reference = crcmod.predefined.mkCrcFun("crc-32c")
    key = generate_xts_key()
    rows: list[tuple[str, list[float | None]]] = []
    buffers = {size: bytearray(os.urandom(size)) for size in SIZES}
    rows.append(("crc32c package, 1 core", [rate(lambda b=b: crc32c_value(b), n, seconds)
                                             for n, b in buffers.items()]))
    rows.append(("crcmod crc-32c (C ext), 1 core", [rate(lambda b=bytes(b): reference(b), n, seconds / 2)
                                                     for n, b in buffers.items()]))

    def per_sector_context(data: bytes) -> None:
        for index, offset in enumerate(range(0, len(data), BLOCK)):
            enc = Cipher(algorithms.AES(key), modes.XTS(index.to_bytes(16, "little"))).encryptor()
            enc.update(data[offset:offset + BLOCK])

    rows.append(("cryptography XTS, new context per 4 KiB", [rate(lambda b=bytes(b): per_sector_context(b), n, seconds)
                                                             for n, b in buffers.items()]))
    with XtsCipher(key) as cipher:
        for unit in (BLOCK, 512):
            rows.append((f"XtsCipher reused ctx, {unit} B units", [
                rate(lambda b=b, u=unit: cipher.encrypt_into(b, u, 1000), n, seconds) for n, b in buffers.items()]))
    return rows


def inline_row(seconds: float) -> list[float | None]:
    engine = InlineEngine()
    key_id = engine.register_key(generate_xts_key())
    job = Job.block(PROTECT_AND_ENCRYPT, lba=0, block_size=BLOCK, key_id=key_id)
    out = []
    for size in SIZES:
        payload = os.urandom(size)
        out.append(rate(lambda p=payload: engine.submit_cb(job, p, _ignore), size, seconds))
    engine.close()
    return out


def _ignore(_: Completion) -> None:
    pass


async def process_rate(workers: int, size: int, depth: int, seconds: float) -> float:
    async with ProcessEngine(workers=workers) as engine:
        key_id = engine.register_key(generate_xts_key())
        job = Job.block(PROTECT_AND_ENCRYPT, lba=0, block_size=BLOCK, key_id=key_id)
        payload = os.urandom(size)
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        state = {"done": 0, "inflight": 0, "failed": 0}
        deadline = 0.0

        def done(completion: Completion) -> None:
            state["inflight"] -= 1
            state["done"] += 1
            state["failed"] += not completion.ok
            if time.perf_counter() < deadline:
                state["inflight"] += 1
                engine.submit_cb(job, payload, done)
            elif state["inflight"] == 0 and not finished.done():
                finished.set_result(None)

        # warm up (first jobs pay page faults in the fresh shared memory)
        for _ in range(depth):
            await engine.submit(job, payload)
        start = time.perf_counter()
        deadline = start + seconds
        for _ in range(depth):
            state["inflight"] += 1
            engine.submit_cb(job, payload, done)
        await finished
        elapsed = time.perf_counter() - start
        if state["failed"]:
            raise RuntimeError(f"{state['failed']} jobs failed")
        return state["done"] * size / elapsed / GB


def fmt(value: float | None) -> str:
    return "      n/a" if value is None else f"{value:9.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring time per row and size")
    parser.add_argument("--depth", type=int, default=32, help="jobs in flight for the process engine")
    parser.add_argument("--max-workers", type=int, default=max(2, os.cpu_count() or 1))
    parser.add_argument("--deadline", type=int, default=300, help="abort the whole run after this many seconds")
    args = parser.parse_args()
    signal.alarm(args.deadline)

    cpus = len(os.sched_getaffinity(0))
    started = time.perf_counter()
    rows: list[tuple[str, list[float | None]]] = []
    rows.append(("openssl speed -evp aes-256-xts, 1 core", [openssl_speed(n, OPENSSL_SECONDS) for n in SIZES]))
    if cpus > 1:
        rows.append((f"openssl speed ... -multi {cpus} (total)",
                     [openssl_speed(n, OPENSSL_SECONDS, cpus) for n in SIZES]))
    rows += stage_rows(args.seconds)
    rows.append(("InlineEngine [CRC_GENERATE, ENCRYPT]", inline_row(args.seconds)))
    for workers in range(1, args.max_workers + 1):
        rows.append((f"ProcessEngine {workers} worker(s), depth {args.depth}",
                     [asyncio.run(process_rate(workers, n, args.depth, args.seconds)) for n in SIZES]))

    print(f"\ndpu-emu offload pipeline, GB/s per job size ({cpus} CPUs, {ssl.OPENSSL_VERSION}, "
          f"Python {sys.version.split()[0]}; 4 KiB blocks)")
    width = max(len(name) for name, _ in rows)
    print(f"{'':{width}}  {'4 KiB':>9}  {'128 KiB':>9}")
    for name, values in rows:
        print(f"{name:{width}}  " + "  ".join(fmt(v) for v in values))
    print(f"(measured in {time.perf_counter() - started:.0f} s; other load on the host skews every row alike)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
