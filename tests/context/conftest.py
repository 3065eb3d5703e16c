"""Context-tier fixtures: ``make_device`` starts real dpu-emu devices (see ``_support``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._support import RunningDevice, kv_config


@pytest.fixture
def make_device() -> Iterator[Callable[..., RunningDevice]]:
    """``make_device(capacity=.., max_value_size=.., mode=..)`` starts a device; all stop at teardown."""
    started: list[RunningDevice] = []

    def factory(**kv: Any) -> RunningDevice:
        dev = RunningDevice(kv_config(**kv))
        started.append(dev)
        return dev

    yield factory
    for dev in started:
        dev.stop()
