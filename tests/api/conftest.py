"""API fixtures: a real Device with its REST frontend on 127.0.0.1 (ephemeral ports),
its event loop in a background thread, and httpx clients holding the admin's token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_api.frontend import RestFrontend
from dpu_emu import config as cfgmod
from dpu_emu.device import Device
from dpu_emu.frontends import FrontendOptions

START_TIMEOUT_S = 10.0
ADMIN_TOKEN = "dpuadm_test-token-0123456789abcdef"
LOOPBACK = "127.0.0.1"
SUBNQN = "nqn.2026-11.io.dpu-emu:test"
HOSTNQN_A = "nqn.2014-08.org.nvmexpress:uuid:11111111-1111-4111-8111-111111111111"
HOSTNQN_B = "nqn.2014-08.org.nvmexpress:uuid:22222222-2222-4222-8222-222222222222"


def small_config() -> dict[str, Any]:
    """Two listeners (ephemeral), no subsystems: tests build what they need over REST."""
    cfg = cfgmod.default_config()
    cfg["subsystems"] = []
    return cfgmod.with_overrides(cfg, address=LOOPBACK, port=0, discovery_port=0)


class ApiDevice:
    def __init__(self, cfg: dict[str, Any], workdir: Path, config_path: Path | None,
                 data_dir: Path | None = None) -> None:
        token_file = workdir / "admin-token"
        token_file.write_text(ADMIN_TOKEN + "\n")
        self.frontend = RestFrontend(FrontendOptions(address=LOOPBACK, port=0, admin_token_file=token_file))
        self.device = Device(cfg, config_path=config_path, frontends=[self.frontend], data_dir=data_dir)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dpu-emu-api", daemon=True)
        self._thread.start()
        self.call(self.device.start())
        self.url = f"http://{LOOPBACK}:{self.frontend.port}"
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                   timeout=START_TIMEOUT_S)

    def call(self, coro: Any, timeout: float = START_TIMEOUT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return fn()
        return self.call(wrapper())

    def client_with(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=START_TIMEOUT_S)

    @property
    def io_port(self) -> int:
        return self.device.io_port

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.client.close()
        try:
            self.call(self.device.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(START_TIMEOUT_S)
            self.loop.close()


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., ApiDevice]]:
    started: list[ApiDevice] = []

    def factory(cfg: dict[str, Any] | None = None, *, config_path: Path | None = None,
                data_dir: Path | None = None) -> ApiDevice:
        dev = ApiDevice(cfg if cfg is not None else small_config(), tmp_path, config_path, data_dir)
        started.append(dev)
        return dev

    yield factory
    for dev in started:
        dev.stop()


@pytest.fixture
def api(make_api: Callable[..., ApiDevice], tmp_path: Path) -> ApiDevice:
    return make_api(config_path=tmp_path / "device.json", data_dir=tmp_path)


def run(coro: Any, timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())
