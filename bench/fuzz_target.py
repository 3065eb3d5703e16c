"""Seeded fuzz run over the controller stack: framing, connection, session/controller.

    python bench/fuzz_target.py [--inputs 100000] [--seed 1] [--layers framing,connection,session]
    python bench/fuzz_target.py --layers session --seed 1 --only 4711     # replay one input

Every input is drawn from its own ``random.Random(seed, layer, index)``, so any crash is
replayed by its index.  Inputs come from tests/corpus (entries + valid sequences) through
the structured mutator of tests/corpus/fuzz.py.  A crash is any escaped exception other
than the protocol's typed outcomes or a broken invariant (see that module); a hang is an
input still running after --hang-seconds (interrupted with SIGALRM).  Prints one table row
per layer: inputs, crashes, hangs, elapsed, inputs/s.  Nothing is asserted on speed.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from corpus import fuzz  # noqa: E402

LAYER_NAMES = ("framing", "connection", "session")
MAX_REPORTED = 5


class Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang()


def input_rng(seed: int, layer: str, index: int) -> random.Random:
    return random.Random(f"{seed}:{layer}:{index}")


def run_layer(layer: str, inputs: int, seed: int, hang_s: float, gen: fuzz.Generator,
              only: int | None = None) -> dict[str, float]:
    sessions = fuzz.SessionFuzzer() if layer == "session" else None
    crashes = hangs = 0
    reported = 0
    indices = range(inputs) if only is None else [only]
    previous = signal.signal(signal.SIGALRM, _alarm)
    started = time.perf_counter()
    try:
        for i in indices:
            rnd = input_rng(seed, layer, i)
            inp, patches = gen.draw(rnd)
            signal.setitimer(signal.ITIMER_REAL, hang_s)
            try:
                if sessions is not None:
                    sessions.run(inp, rnd, patches)
                else:
                    fuzz.LAYERS[layer](inp, rnd)
            except Hang:
                hangs += 1
                print(f"HANG  {layer} input {i}: {inp.stream()[:64].hex()}...", file=sys.stderr)
            except Exception as exc:  # noqa: BLE001 - every escape is a finding
                crashes += 1
                if reported < MAX_REPORTED:
                    reported += 1
                    print(f"CRASH {layer} input {i} (replay: --layers {layer} --seed {seed} --only {i}): "
                          f"{exc!r}", file=sys.stderr)
                    traceback.print_exc(limit=4, file=sys.stderr)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if sessions is not None:
            sessions.close()
    elapsed = time.perf_counter() - started
    return {"inputs": len(indices), "crashes": crashes, "hangs": hangs, "elapsed": elapsed,
            "rate": len(indices) / elapsed if elapsed else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs per layer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", default=",".join(LAYER_NAMES))
    ap.add_argument("--hang-seconds", type=float, default=5.0)
    ap.add_argument("--only", type=int, default=None, help="replay this input index only")
    args = ap.parse_args(argv)
    logging.getLogger("nvmeof").setLevel(logging.ERROR)  # expected protocol warnings stay quiet
    gen = fuzz.Generator()
    layers = [name for name in args.layers.split(",") if name]
    rows = {layer: run_layer(layer, args.inputs, args.seed, args.hang_seconds, gen, args.only) for layer in layers}
    print(f"\nfuzz run, seed {args.seed}, {len(gen.seeds)} seed sequences")
    print(f"{'layer':<12}{'inputs':>10}{'crashes':>9}{'hangs':>7}{'elapsed s':>11}{'inputs/s':>10}")
    total = {"inputs": 0, "crashes": 0, "hangs": 0, "elapsed": 0.0}
    for layer, r in rows.items():
        print(f"{layer:<12}{r['inputs']:>10}{r['crashes']:>9}{r['hangs']:>7}{r['elapsed']:>11.1f}{r['rate']:>10.0f}")
        for k in total:
            total[k] += r[k]
    rate = total["inputs"] / total["elapsed"] if total["elapsed"] else 0.0
    print(f"{'total':<12}{total['inputs']:>10}{total['crashes']:>9}{total['hangs']:>7}"
          f"{total['elapsed']:>11.1f}{rate:>10.0f}")
    return 1 if total["crashes"] or total["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
