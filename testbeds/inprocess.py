"""A real dpu-emu device served from a background event loop thread, for tests and
benchmarks that talk to it over 127.0.0.1 exactly as an external host would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dpu_emu.device import Device

T = TypeVar("T")
START_TIMEOUT_S = 10.0


class RunningDevice:
    """A started :class:`Device` (built from ``cfg`` with ``device_kwargs``) on its own loop."""

    def __init__(self, cfg: dict[str, Any], **device_kwargs: Any) -> None:
        self.device = Device(cfg, **device_kwargs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dpu-emu-device", daemon=True)
        self._thread.start()
        try:
            self.call(self.device.start())
        except BaseException:
            self.stop()
            raise

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT_S) -> T:
        """Run a coroutine on the device's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the device's loop (the device is not thread-safe)."""
        async def wrapper() -> T:
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
        """Stop the device and its loop (idempotent: a test may stop one early to restart it)."""
        if self.loop.is_closed():
            return
        try:
            self.call(self.device.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(START_TIMEOUT_S)
            self.loop.close()
