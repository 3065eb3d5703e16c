"""Integration fixtures: a real dpu-emu device on 127.0.0.1 with ephemeral ports.

The device runs its own event loop in a background thread, so tests (sync or using
``asyncio.run``) talk to it over real sockets exactly as an external host would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dpu_emu import config as cfgmod
from testbeds.inprocess import RunningDevice

__all__ = ["RunningDevice", "device", "ephemeral_config", "make_device"]


def ephemeral_config(cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """``cfg`` (default: the embedded default) on 127.0.0.1 with ephemeral ports."""
    return cfgmod.with_overrides(cfg or cfgmod.default_config(), address="127.0.0.1", port=0,
                                 discovery_port=0)


@pytest.fixture
def make_device() -> Iterator[Callable[[dict[str, Any] | None], RunningDevice]]:
    started: list[RunningDevice] = []

    def factory(cfg: dict[str, Any] | None = None) -> RunningDevice:
        dev = RunningDevice(ephemeral_config(cfg))
        started.append(dev)
        return dev

    yield factory
    for dev in started:
        dev.stop()


@pytest.fixture
def device(make_device: Callable[[dict[str, Any] | None], RunningDevice]) -> RunningDevice:
    """The embedded default configuration: one subsystem, 1 GiB RAM namespace (512 B blocks)."""
    return make_device(None)
