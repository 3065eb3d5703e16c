"""Context-tier test helpers: a real dpu-emu device (background event loop thread, 127.0.0.1,
ephemeral ports) with a KV namespace sized per test, and the torch/transformers gate.

torch-dependent tests skip cleanly when torch or transformers is missing, except under CI
(env ``CI`` set), where a missing dependency fails: CI must install ``.[dev,context]``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Coroutine
from types import ModuleType
from typing import Any, TypeVar

import pytest

from dpu_emu import config as cfgmod
from testbeds.inprocess import RunningDevice

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
KV_NSID = 2
KIB = 1024
MIB = 1024 * KIB
TEST_TIMEOUT_S = 120.0

__all__ = ["RunningDevice", "kv_config", "need", "run"]


def need(module: str) -> ModuleType:
    """Import an optional dependency: skip without it, but fail under CI."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[context]')")


def kv_config(*, capacity: int = 64 * MIB, max_value_size: int = MIB, mode: str = "cache") -> dict[str, Any]:
    """The default config with namespace 2 an in-memory KV namespace of this size."""
    cfg = cfgmod.default_config()
    namespaces = cfg["subsystems"][0]["namespaces"]
    namespaces[1] = {"nsid": KV_NSID, "command_set": "kv", "capacity_bytes": capacity,
                     "max_value_size": max_value_size, "mode": mode, "backend": {"kind": "ram"}}
    return cfgmod.with_overrides(cfg, address=LOOPBACK, port=0, discovery_port=0)


def run(coro: Coroutine[Any, Any, T], timeout: float = TEST_TIMEOUT_S) -> T:
    """Run ``coro`` in a fresh event loop, bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())
