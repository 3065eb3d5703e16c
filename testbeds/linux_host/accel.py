"""KVM or TCG: forced by DPU_EMU_VM_ACCEL, else KVM if a probe boot under it works (cached)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from typing import Final

from . import config
from .image import ImagePaths, cache_dir
from .qemu import qemu_binary

VERSION_TIMEOUT_S: Final[float] = 30.0
_VALID: Final[tuple[str, ...]] = (config.ACCEL_AUTO, config.ACCEL_KVM, config.ACCEL_TCG)

Probe = Callable[[ImagePaths], tuple[bool, str]]


def kvm_device_usable() -> bool:
    return config.KVM_DEVICE.exists() and os.access(config.KVM_DEVICE, os.R_OK | os.W_OK)


def _qemu_version() -> str:
    done = subprocess.run(
        [qemu_binary(), "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S,
        check=False,
    )
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


def requested_accel(explicit: str | None = None) -> str:
    value = (explicit or os.environ.get(config.ACCEL_ENV) or config.ACCEL_AUTO).strip().lower()
    if value not in _VALID:
        raise ValueError(f"{config.ACCEL_ENV}={value!r}: expected one of {', '.join(_VALID)}")
    return value


def choose_accel(image: ImagePaths, explicit: str | None, *, probe: Probe) -> str:
    """The accelerator to boot `image` with. In auto mode the probe result is cached per image,
    qemu version and host kernel, so the (slow, failing) KVM attempt happens once."""
    requested = requested_accel(explicit)
    if requested != config.ACCEL_AUTO:
        return requested
    if not kvm_device_usable():
        return config.ACCEL_TCG
    cache_file = cache_dir() / config.ACCEL_PROBE_FILE
    key = f"{image.key}|{_qemu_version()}|{platform.release()}"
    cached: dict[str, dict[str, object]] = {}
    if cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
        except json.JSONDecodeError:
            cached = {}
    if key in cached:
        return str(cached[key]["accel"])
    works, reason = probe(image)
    chosen = config.ACCEL_KVM if works else config.ACCEL_TCG
    print(f"[linux_host] accelerator probe: {reason} -> using {chosen}", file=sys.stderr)
    cached[key] = {"accel": chosen, "reason": reason}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(cached, indent=2, sort_keys=True) + "\n")
    return chosen
