"""A real Linux NVMe/TCP host in qemu, assembled from Debian packages, for interop tests.

See testbeds/linux_host/README.md. Public API: testbeds.linux_host.vm (ensure_image, run_guest).
"""

from .vm import (
    GuestBootError,
    GuestResult,
    GuestTimeoutError,
    ImagePaths,
    QemuNotFoundError,
    TestbedBuildError,
    ensure_image,
    run_guest,
)

__all__ = [
    "GuestBootError", "GuestResult", "GuestTimeoutError", "ImagePaths", "QemuNotFoundError",
    "TestbedBuildError", "ensure_image", "run_guest",
]
