"""Fixtures for the interop suite: a real Linux NVMe/TCP host booted in qemu.

Tests here carry the `interop` marker. Without qemu (or without what the image build needs) they
skip, unless the CI environment variable is set: then they fail, so CI cannot go green by
skipping them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import pytest

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `testbeds` lives at the repo root, beside `tests`
    sys.path.insert(0, str(REPO_ROOT))

from testbeds.linux_host import vm  # noqa: E402
from testbeds.linux_host.qemu import qemu_binary  # noqa: E402

from .support import unavailable  # noqa: E402

INTEROP_MARKER: Final[str] = (
    "interop: boots a real Linux NVMe/TCP host in qemu (slow; needs qemu-system-x86 and the "
    "packages in testbeds/linux_host/apt-packages.txt)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", INTEROP_MARKER)


@pytest.fixture(scope="session")
def linux_host_image() -> vm.ImagePaths:
    """The VM image, built on first use (about 10 s plus the kernel download)."""
    try:
        qemu_binary()
    except vm.QemuNotFoundError as exc:
        unavailable(str(exc))
    try:
        return vm.ensure_image()
    except vm.TestbedBuildError as exc:
        unavailable(f"cannot build the Linux host image: {exc}")
