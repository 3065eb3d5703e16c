"""Named constants of the Linux-host testbed: packages, modules, paths, VM shape, markers."""

from __future__ import annotations

from pathlib import Path
from typing import Final

# --- Where things live -------------------------------------------------------------------------

PACKAGE_DIR: Final[Path] = Path(__file__).resolve().parent
REPO_ROOT: Final[Path] = PACKAGE_DIR.parent.parent
GUEST_DIR: Final[Path] = PACKAGE_DIR / "guest"
GUEST_INIT: Final[Path] = GUEST_DIR / "init.sh"
GUEST_LIB_DIR: Final[Path] = GUEST_DIR / "lib"

CACHE_ENV: Final[str] = "DPU_EMU_VM_CACHE"
"""Overrides the cache folder (default: <repo>/.cache/linux-host)."""
DEFAULT_CACHE_DIR: Final[Path] = REPO_ROOT / ".cache" / "linux-host"
IMAGES_SUBDIR: Final[str] = "images"
DEBS_SUBDIR: Final[str] = "debs"
LOGS_SUBDIR: Final[str] = "logs"
LOCK_FILE: Final[str] = "build.lock"
ACCEL_PROBE_FILE: Final[str] = "accel-probe.json"
MAX_KEPT_LOGS: Final[int] = 40
MAX_KEPT_IMAGES: Final[int] = 2

KERNEL_FILE: Final[str] = "vmlinuz"
INITRAMFS_FILE: Final[str] = "initramfs.cpio.gz"
MANIFEST_FILE: Final[str] = "manifest.json"

# --- Debian packages ---------------------------------------------------------------------------

KERNEL_SUITE: Final[str] = "bookworm-backports"
KERNEL_META_PACKAGE: Final[str] = "linux-image-amd64"
KERNEL_PACKAGE_ENV: Final[str] = "DPU_EMU_VM_KERNEL_PACKAGE"
"""Pins the kernel package, e.g. linux-image-6.12.95+deb12-amd64 (skips the meta package)."""

BUSYBOX_BINARY: Final[Path] = Path("/bin/busybox")
USERSPACE_BINARIES: Final[tuple[Path, ...]] = (
    Path("/usr/sbin/nvme"),
    Path("/usr/bin/fio"),
    Path("/usr/sbin/tc"),
)
"""Dynamically linked tools copied from the host's Debian install with their `ldd` closure."""

HOST_PACKAGES: Final[tuple[str, ...]] = ("busybox-static", "nvme-cli", "fio", "iproute2")
"""Host packages whose files go into the guest (their libraries are found with ldd)."""

# --- Kernel modules ----------------------------------------------------------------------------

GUEST_MODULES: Final[tuple[str, ...]] = (
    "configfs",
    "failover",
    "net_failover",
    "virtio_net",
    "nvme-keyring",
    "nvme-auth",
    "nvme-core",
    "nvme-fabrics",
    "nvme-tcp",
    "nvmet",
    "nvmet-tcp",
)
"""Loaded at boot by the guest init, in this order (modprobe pulls dependencies anyway)."""

ON_DEMAND_MODULES: Final[tuple[str, ...]] = (
    "null_blk",
    "loop",
    "crc32c_generic",
    "crc32c-intel",
    "libcrc32c",
    "tls",
    "sch_netem",
)
"""Shipped, not loaded at boot: guest scripts load null_blk/loop with their own parameters;
the kernel asks for the others itself (crypto-crc32c for digests, tls)."""

# --- The VM ------------------------------------------------------------------------------------

QEMU_BINARY: Final[str] = "qemu-system-x86_64"
DEFAULT_MEM_MB: Final[int] = 1024
DEFAULT_CPUS: Final[int] = 2
DEFAULT_TIMEOUT_S: Final[float] = 600.0
POWEROFF_GRACE_S: Final[float] = 15.0
"""After the exit marker, how long qemu gets to power off before it is killed."""

ACCEL_ENV: Final[str] = "DPU_EMU_VM_ACCEL"
ACCEL_TCG: Final[str] = "tcg"
ACCEL_KVM: Final[str] = "kvm"
ACCEL_AUTO: Final[str] = "auto"
KVM_DEVICE: Final[Path] = Path("/dev/kvm")
KVM_PROBE_TIMEOUT_S: Final[float] = 60.0
KVM_FAILURE_PATTERNS: Final[tuple[str, ...]] = (
    "KVM internal error",
    "emulation failure",
    "failed to initialize kvm",
    "Could not access KVM kernel module",
    "failed to set MSR",
)

KERNEL_CMDLINE: Final[str] = "console=ttyS0,115200 panic=-1 quiet loglevel=3 mitigations=off"

GUEST_IP_CIDR: Final[str] = "10.0.2.15/24"
HOST_ADDRESS_FROM_GUEST: Final[str] = "10.0.2.2"
DEFAULT_HOST_ID: Final[str] = "4f8e3a52-6c1d-4b7e-9a0f-2d5c8b1e7a36"
HOSTNQN_PREFIX: Final[str] = "nqn.2014-08.org.nvmexpress:uuid:"

# --- Guest <-> host protocol -------------------------------------------------------------------

GUEST_RUN_DIR: Final[str] = "guest"
"""Folder (in the appended cpio) that holds run.sh, params and lib/."""
GUEST_SCRIPT_NAME: Final[str] = "run.sh"
GUEST_PARAMS_NAME: Final[str] = "params"
EXIT_MARKER_PREFIX: Final[str] = "@@DPU-EMU-GUEST-EXIT"
"""The init prints `@@DPU-EMU-GUEST-EXIT nonce=<hex> status=<n>@@` once, then powers off."""
EXIT_MARKER_SUFFIX: Final[str] = "@@"
NONCE_BYTES: Final[int] = 8
