"""Integration fixtures: a real dpu-emu device on 127.0.0.1 with ephemeral ports.

The device runs its own event loop in a background thread, so tests (sync or using
``asyncio.run``) talk to it over real sockets exactly as an external host would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dpu_emu import config as cfgmod
from dpu_emu.device import Device

START_TIMEOUT_S = 10.0


class RunningDevice:
    """A started :class:`Device` served from a background event loop thread."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.device = Device(cfg)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dpu-emu-device", daemon=True)
        self._thread.start()
        self.call(self.device.start())

    def call(self, coro: Any, timeout: float = START_TIMEOUT_S) -> Any:
        """Run a coroutine on the device's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return fn()
        return self.call(wrapper())

    @property
    def io_port(self) -> int:
        return self.device.io_port

    @property
    def discovery_port(self) -> int:
        return self.device.discovery_port

    @property
    def subnqn(self) -> str:
        return self.device.subnqn

    @property
    def target(self) -> Any:
        return self.device.target

    def stop(self) -> None:
        """Stop the device and its loop (idempotent: tests may stop one early to restart it)."""
        if self.loop.is_closed():
            return
        try:
            self.call(self.device.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(START_TIMEOUT_S)
            self.loop.close()


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
