"""Hypothesis drives the structured mutator of tests/corpus/fuzz.py over three layers.

A CI-sized run (a few thousand inputs in all): framing (PduReader), the controller-side
connection, and QueueSession + controller over synchronous backends.  The invariants are
checked by the layer runners (they raise ``Crash``): only typed protocol outcomes, whole
well-formed C2H PDUs out, nothing after a C2HTermReq and its FES equal to the error's, no
internal error in a command handler, bounded buffers, no controller outliving its
connections.  bench/fuzz_target.py runs the same mutator for 100,000+ seeded inputs.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corpus import fuzz  # noqa: E402

EXAMPLES = 1000
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GENERATOR = fuzz.Generator()


@pytest.fixture(scope="module")
def sessions() -> Iterator[fuzz.SessionFuzzer]:
    s = fuzz.SessionFuzzer()
    yield s
    s.close()


@SETTINGS
@given(rnd=st.randoms(use_true_random=False))
def test_fuzz_framing(rnd: random.Random) -> None:
    inp, _ = GENERATOR.draw(rnd)
    fuzz.run_framing(inp, rnd)


@SETTINGS
@given(rnd=st.randoms(use_true_random=False))
def test_fuzz_connection(rnd: random.Random) -> None:
    inp, _ = GENERATOR.draw(rnd)
    fuzz.run_connection(inp, rnd)


@SETTINGS
@given(rnd=st.randoms(use_true_random=False))
def test_fuzz_session(sessions: fuzz.SessionFuzzer, rnd: random.Random) -> None:
    inp, patches = GENERATOR.draw(rnd)
    sessions.run(inp, rnd, patches)


def test_fuzz_seeded_loop_matches_bench() -> None:
    """The seeded loop of bench/fuzz_target.py on a small count: no crash, no hang."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import fuzz_target

    for layer in fuzz_target.LAYER_NAMES:
        row = fuzz_target.run_layer(layer, 300, 7, 5.0, GENERATOR)
        assert row["inputs"] == 300 and row["crashes"] == 0 and row["hangs"] == 0, (layer, row)
