"""Fixtures for the network-namespace tests (marker `netns`): they need root and `ip netns`.

Without them the tests skip with the reason, unless the CI environment variable is set: CI runs
as root, so a skip there would hide a broken setup and fails instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `testbeds` lives at the repo root, beside `tests`
    sys.path.insert(0, str(REPO_ROOT))


def netns_unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"netns testbed unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def netns_ready() -> None:
    try:
        from testbeds.netns import unavailable_reason
    except ImportError as exc:  # pyroute2 missing
        netns_unavailable(f"pyroute2 is not installed ({exc})")
        return
    reason = unavailable_reason()
    if reason is not None:
        netns_unavailable(reason)


@pytest.fixture
def topology(netns_ready: None) -> Iterator[object]:
    from testbeds.netns import Topology

    with Topology(paths=("host", "host")) as topo:
        yield topo
