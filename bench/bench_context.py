"""Context-tier benchmark: time to first token with the prompt's context restored from
dpu-emu over NVMe-KV, from a local redis-server and from local files, against a full
prefill, for a range of context lengths, on a transformer with seeded random weights.

    python bench/bench_context.py [--model small|tiny] [--lengths 64,128,...,4096]
                                  [--block-tokens 64] [--out bench/results/context.png]

Each request is ``context + --query-tokens`` new tokens (a follow-up question on a long
document or conversation).  The context's KV blocks were stored by an earlier request;
the request's time to first token (TTFT) is then

* full: one prefill of context + query;
* nvme / redis / files: hash the prompt into block keys, Exist (longest cached prefix),
  retrieve the blocks (all pipelined: 4 NVMe I/O queues / 4 redis connections), check and
  decode them, rebuild the model's cache, prefill only the query.

dpu-emu runs as a subprocess (its default in-memory, cache-mode KV namespace; capacity
raised when the working set needs it), redis-server likewise (no persistence), files are
one per part in a temporary directory (page cache, no fsync).  All three use the same
ContextTier with the same 1 MiB parts.  Restore throughput counts the bytes of KV
restored over the lookup + retrieve time.  The break-even context length is where the
restored TTFT falls below the full prefill's (interpolated on a log scale).  Nothing is
asserted; numbers are for comparing runs on the same machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_io import LOOPBACK, free_port, stop_process, wait_accepting  # noqa: E402

from context_tier import BlockHasher, BlockingContextTier, namespace_salt  # noqa: E402
from dpu_emu import config as cfgmod  # noqa: E402

MIB = 1 << 20
KV_NSID = 2
DEFAULT_CAPACITY = 256 * MIB
CAPACITY_HEADROOM = 1.25
DEFAULT_LENGTHS = "64,128,256,512,1024,2048,4096,8192"
DEFAULT_OUT = ROOT / "bench" / "results" / "context.png"
DEFAULT_BUDGET_S = 300.0
GROWTH_GUESS = 3.0  # next length's cost over this one's, to stay inside the budget
QUERY_TOKENS = 16
VOCAB = 1000
SEED = 1234
QUEUES = 4
START_TIMEOUT_S = 20.0
MIN_MEASURE_S = 2.0  # keep repeating short points until this much was measured
MAX_REPEATS = 15
EVICTION_PROMPTS = 6
EVICTION_CONTEXT = 512
EVICTION_PRESSURE = 3  # working set / namespace capacity
EVICTION_SEED = 99
NICE_TICKS = [m * 10.0 ** e for e in range(-1, 6) for m in (1, 2, 5)]
METHODS = ("nvme", "redis", "files")
LABELS = {"full": "full prefill", "nvme": "dpu-emu NVMe-KV", "redis": "redis-server", "files": "local files"}
MODELS: dict[str, dict[str, Any]] = {
    # Llama-style with grouped-query attention: 8 KiB of fp32 KV per token.
    "small": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 2},
    # The test model: 4 layers, 4 heads, hidden 256 (also 8 KiB per token, 10x less compute).
    "tiny": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 4},
}


@dataclass
class Restore:
    ttft_s: float
    wire_s: float  # lookup + retrieve
    restored_tokens: int
    max_logit_diff: float
    same_token: bool


@dataclass
class Row:
    length: int
    full_s: float
    restores: dict[str, Restore] = field(default_factory=dict)
    store_s: dict[str, float] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--lengths", default=DEFAULT_LENGTHS, help="context lengths, comma separated")
    parser.add_argument("--block-tokens", type=int, default=64)
    parser.add_argument("--query-tokens", type=int, default=QUERY_TOKENS)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per point (the median is shown)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds: longer contexts are skipped once this would be exceeded")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG plot path")
    return parser.parse_args()


# -- services --------------------------------------------------------------------------

def start_dpu_emu(workdir: Path, capacity: int, *, exact: bool = False,
                  name: str = "dpu-emu") -> tuple[subprocess.Popen[bytes], int, str]:
    """dpu-emu with a cache-mode KV namespace of at least ``capacity`` bytes (exactly that
    many with ``exact``, for the eviction phase)."""
    cfg = cfgmod.default_config()
    subsystem = cfg["subsystems"][0]
    for ns in subsystem["namespaces"]:
        if ns["nsid"] == KV_NSID:
            ns["capacity_bytes"] = capacity if exact else max(ns["capacity_bytes"], capacity)
            ns["mode"] = "cache"
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(cfg))
    io_port, disc_port = free_port(), free_port()
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
    cmd = [sys.executable, "-m", "dpu_emu", "serve", "--config", str(config_path), "--address", LOOPBACK,
           "--port", str(io_port), "--discovery-port", str(disc_port), "--no-rest", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_accepting(io_port, proc, START_TIMEOUT_S)
    return proc, io_port, subsystem["nqn"]


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_accepting(port, proc, START_TIMEOUT_S)
    return proc, port


# -- measurements ----------------------------------------------------------------------

def build_model(name: str) -> Any:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, max_position_embeddings=1 << 16, **MODELS[name])
    torch.manual_seed(SEED)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, Any]]:
    """Median time of each function, run round-robin (so a load change on a shared machine
    hits every method alike): at least ``repeats`` rounds, more (up to MAX_REPEATS) while
    a round is short."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    last: dict[str, Any] = {}
    spent = 0.0
    rounds = 0
    while rounds < repeats or (spent < MIN_MEASURE_S and rounds < MAX_REPEATS):
        for name, fn in fns.items():
            started = time.perf_counter()
            last[name] = fn()
            elapsed = time.perf_counter() - started
            times[name].append(elapsed)
            spent += elapsed
        rounds += 1
    return {name: (statistics.median(times[name]), last[name]) for name in fns}


def measure_length(length: int, args: argparse.Namespace, model: Any, hasher: BlockHasher,
                   tiers: dict[str, BlockingContextTier]) -> Row:
    import torch

    from context_tier.hf import PrefixCachingLM, blocks_from_layers, cache_layers, forward_with_cache

    gen = torch.Generator().manual_seed(length)
    context = torch.randint(0, VOCAB, (length,), generator=gen).tolist()
    prompt = context + torch.randint(0, VOCAB, (args.query_tokens,), generator=gen).tolist()

    with torch.no_grad():  # an earlier request computed the context and stored its blocks
        _, cache = forward_with_cache(model, torch.tensor([context]), None)
        blocks = blocks_from_layers(cache_layers(cache), hasher.block_keys(context), hasher.block_tokens)
    row = Row(length, 0.0)
    for name, tier in tiers.items():
        started = time.perf_counter()
        tier.put(blocks)
        row.store_s[name] = time.perf_counter() - started

    def full() -> Any:
        with torch.no_grad():
            logits, _ = forward_with_cache(model, torch.tensor([prompt]), None)
            return logits[0, -1]

    wire_times: dict[str, list[float]] = {name: [] for name in tiers}

    def restore_with(name: str, tier: BlockingContextTier) -> Callable[[], Any]:
        lm = PrefixCachingLM(model, tier, hasher)

        def restored() -> Any:
            result = lm.prefill(prompt, store=False)
            int(result.logits.argmax())  # the first token
            wire_times[name].append(result.timings.get("lookup", 0.0) + result.timings.get("retrieve", 0.0))
            return result
        return restored

    fns: dict[str, Callable[[], Any]] = {"full": full}
    fns.update({name: restore_with(name, tier) for name, tier in tiers.items()})
    measured = interleaved_medians(fns, args.repeats)
    row.full_s, reference = measured.pop("full")
    for name, (ttft, result) in measured.items():
        wire = statistics.median(wire_times[name][1:] or wire_times[name])  # without the warm-up
        diff = float((result.logits - reference).abs().max())
        row.restores[name] = Restore(ttft, wire, result.restored_tokens, diff,
                                     int(result.logits.argmax()) == int(reference.argmax()))
    return row


# -- report ----------------------------------------------------------------------------

def break_even(rows: Sequence[Row], method: str) -> str:
    """The context length from which restoring is faster than a full prefill: the last
    crossing of speed-up 1 (noise can make a short point cross twice), interpolated
    on log scales."""
    points = [(row.length, row.full_s / row.restores[method].ttft_s) for row in rows if method in row.restores]
    if not points:
        return "n/a"
    slower = [index for index, (_, speedup) in enumerate(points) if speedup < 1]
    if not slower:
        return f"<= {points[0][0]}"
    last = slower[-1]
    if last == len(points) - 1:
        return f"> {points[-1][0]}"
    (l0, s0), (l1, s1) = points[last], points[last + 1]
    t = -math.log(s0) / (math.log(s1) - math.log(s0))
    return f"~{round(math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0))))}"


def table(rows: Sequence[Row], kv_bytes_per_token: int) -> str:
    head = (f"{'context':>7} | {'full ms':>8} | " + " | ".join(f"{m + ' ms (x)':>17}" for m in METHODS)
            + " | " + " | ".join(f"{m + ' MB/s':>10}" for m in METHODS) + " | max|dlogit| | same token")
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = [f"{row.length:>7}", f"{row.full_s * 1e3:>8.1f}"]
        for m in METHODS:
            r = row.restores[m]
            cells.append(f"{r.ttft_s * 1e3:>8.1f} ({row.full_s / r.ttft_s:>5.1f}x)")
        for m in METHODS:
            r = row.restores[m]
            mbps = r.restored_tokens * kv_bytes_per_token / r.wire_s / 1e6 if r.wire_s else 0.0
            cells.append(f"{mbps:>10.0f}")
        worst = max(r.max_logit_diff for r in row.restores.values())
        same = all(r.same_token for r in row.restores.values())
        cells.append(f"{worst:>11.1e}")
        cells.append(f"{'yes' if same else 'NO':>10}")
        lines.append(" | ".join(cells))
    lines.append("")
    lines.append("break-even context length (restored TTFT < full prefill): "
                 + ", ".join(f"{m} {break_even(rows, m)}" for m in METHODS))
    return "\n".join(lines)


def plot(rows: Sequence[Row], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = [row.length for row in rows]
    fig, (ax_ttft, ax_speed) = plt.subplots(1, 2, figsize=(12, 4.8))
    ax_ttft.plot(lengths, [row.full_s * 1e3 for row in rows], "k-o", label=LABELS["full"])
    for m, style in zip(METHODS, ("C0-s", "C3-^", "C2-v"), strict=True):
        ax_ttft.plot(lengths, [row.restores[m].ttft_s * 1e3 for row in rows], style, label=f"restored: {LABELS[m]}")
        ax_speed.plot(lengths, [row.full_s / row.restores[m].ttft_s for row in rows], style,
                      label=f"{LABELS[m]} (break-even {break_even(rows, m)})")
    ax_speed.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="break-even")
    for ax in (ax_ttft, ax_speed):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    for ax in (ax_ttft, ax_speed):
        ax.set_yscale("log")
        ax.set_xticks(lengths)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_major_locator(FixedLocator(NICE_TICKS))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax_ttft.set_ylabel("time to first token (ms)")
    ax_ttft.set_title("TTFT")
    ax_speed.set_ylabel("speed-up over full prefill (x)")
    ax_speed.set_title("speed-up")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = sorted(int(x) for x in args.lengths.split(","))
    model = build_model(args.model)
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 4
    capacity = int(sum(lengths) * kv_per_token * CAPACITY_HEADROOM) + DEFAULT_CAPACITY
    hasher = BlockHasher(namespace_salt(f"bench-{args.model}", tenant="bench", dtype="float32"), args.block_tokens)

    with tempfile.TemporaryDirectory(prefix="bench-context-") as tmp:
        workdir = Path(tmp)
        dpu, io_port, subnqn = start_dpu_emu(workdir, capacity)
        redis_proc, redis_port = start_redis(workdir)
        tiers: dict[str, BlockingContextTier] = {}
        try:
            tiers["nvme"] = BlockingContextTier.connect_nvme(LOOPBACK, io_port, subnqn, nr_io_queues=QUEUES)
            tiers["redis"] = BlockingContextTier.connect_redis(LOOPBACK, redis_port, connections=QUEUES)
            tiers["files"] = BlockingContextTier.open_directory(workdir / "blocks")
            rows = run_lengths(lengths, args, model, hasher, tiers)
        finally:
            for tier in tiers.values():
                tier.close()
            stop_process(redis_proc)
            stop_process(dpu)

    with tempfile.TemporaryDirectory(prefix="bench-context-evict-") as tmp:
        eviction = eviction_phase(Path(tmp), args, model, hasher, kv_per_token)

    title = (f"{args.model} Llama-style model ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
             f"{cfg.num_key_value_heads} KV heads, fp32, {kv_per_token // 1024} KiB KV/token), "
             f"{args.block_tokens}-token blocks, +{args.query_tokens} query tokens, torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads")
    print(title)
    print(table(rows, kv_per_token))
    print(eviction)
    if rows:
        plot(rows, args.out, title)
        print(f"plot: {args.out}")


def eviction_phase(workdir: Path, args: argparse.Namespace, model: Any, hasher: BlockHasher,
                   kv_per_token: int) -> str:
    """Cache mode under pressure: EVICTION_PROMPTS distinct contexts whose KV is about three
    times the namespace's capacity are prefilled (storing their blocks), then prefilled
    again: evicted blocks are misses that get recomputed, and every result's logits are
    checked against a full prefill - misses cost time, never correctness."""
    import torch

    from context_tier.hf import PrefixCachingLM, forward_with_cache

    length = EVICTION_CONTEXT
    working_set = EVICTION_PROMPTS * length * kv_per_token
    capacity = working_set // EVICTION_PRESSURE
    dpu, io_port, subnqn = start_dpu_emu(workdir, capacity, exact=True, name="dpu-emu-small")
    try:
        tier = BlockingContextTier.connect_nvme(LOOPBACK, io_port, subnqn, nr_io_queues=QUEUES)
        try:
            lm = PrefixCachingLM(model, tier, hasher)
            gen = torch.Generator().manual_seed(EVICTION_SEED)
            prompts = [torch.randint(0, VOCAB, (length + args.query_tokens,), generator=gen).tolist()
                       for _ in range(EVICTION_PROMPTS)]
            for prompt in prompts:
                lm.prefill(prompt, store=True)
            restored = recomputed = wrong = 0
            worst = 0.0
            for prompt in reversed(prompts):  # newest first: some hits, then LRU misses
                result = lm.prefill(prompt, store=True)
                restored += result.restored_tokens
                recomputed += result.computed_tokens
                with torch.no_grad():
                    reference, _ = forward_with_cache(model, torch.tensor([prompt]), None)
                diff = float((result.logits - reference[0, -1]).abs().max())
                worst = max(worst, diff)
                wrong += int(int(result.logits.argmax()) != int(reference[0, -1].argmax()))
        finally:
            tier.close()
    finally:
        stop_process(dpu)
    return (f"eviction: {EVICTION_PROMPTS} contexts of {length} tokens ({working_set / MIB:.0f} MiB of KV) "
            f"through a {capacity / MIB:.0f} MiB cache-mode namespace: second pass (newest first) "
            f"restored {restored} tokens, "
            f"recomputed {recomputed} (misses); max |logit diff| vs full prefill {worst:.2e}, "
            f"next-token mismatches {wrong}")


def run_lengths(lengths: Sequence[int], args: argparse.Namespace, model: Any, hasher: BlockHasher,
                tiers: dict[str, BlockingContextTier]) -> list[Row]:
    measure_length(min(lengths), args, model, hasher, tiers)  # warm-up: first calls, first allocations
    rows: list[Row] = []
    started = time.monotonic()
    last_cost = 0.0
    for length in lengths:
        elapsed = time.monotonic() - started
        if rows and elapsed + last_cost * GROWTH_GUESS > args.budget:
            print(f"skipping contexts >= {length}: the {args.budget:.0f} s budget would be exceeded",
                  file=sys.stderr)
            break
        t0 = time.monotonic()
        rows.append(measure_length(length, args, model, hasher, tiers))
        last_cost = time.monotonic() - t0
        row = rows[-1]
        print(f"  context {length}: full {row.full_s * 1e3:.1f} ms, "
              + ", ".join(f"{m} {r.ttft_s * 1e3:.1f} ms" for m, r in row.restores.items()),
              file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
