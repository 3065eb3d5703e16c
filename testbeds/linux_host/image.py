"""The cached VM image: kernel + base initramfs, rebuilt only when its inputs change."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import apt, config, rootfs

KEY_HEX_CHARS: Final[int] = 16
BUILD_SOURCES: Final[tuple[str, ...]] = ("apt.py", "config.py", "cpio.py", "image.py", "rootfs.py")
"""Python modules whose code shapes the image (their text is part of the cache key)."""


@dataclass(frozen=True)
class ImagePaths:
    """A built image: boot `kernel` with `initramfs` (plus an appended per-run cpio)."""

    directory: Path
    kernel: Path
    initramfs: Path
    kernel_release: str
    key: str


@dataclass(frozen=True)
class _Inputs:
    kernel: apt.KernelPackage
    libraries: list[Path]
    package_versions: dict[str, str]
    key: str


def cache_dir() -> Path:
    override = os.environ.get(config.CACHE_ENV)
    return Path(override).resolve() if override else config.DEFAULT_CACHE_DIR


def _inputs() -> _Inputs:
    kernel = apt.resolve_kernel_package()
    libraries = apt.shared_library_closure(config.USERSPACE_BINARIES)
    versions = apt.owning_package_versions(
        [*libraries, config.BUSYBOX_BINARY, *config.USERSPACE_BINARIES], config.HOST_PACKAGES
    )
    digest = hashlib.sha256()
    digest.update(f"{kernel.name}={kernel.version}\n".encode())
    for name in sorted(versions):
        digest.update(f"{name}={versions[name]}\n".encode())
    for library in libraries:
        digest.update(f"lib {library}\n".encode())
    for source in BUILD_SOURCES:
        digest.update((config.PACKAGE_DIR / source).read_bytes())
    digest.update(config.GUEST_INIT.read_bytes())
    return _Inputs(kernel, libraries, versions, digest.hexdigest()[:KEY_HEX_CHARS])


@contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / config.LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _paths(directory: Path, manifest: dict[str, object]) -> ImagePaths:
    return ImagePaths(
        directory=directory,
        kernel=directory / config.KERNEL_FILE,
        initramfs=directory / config.INITRAMFS_FILE,
        kernel_release=str(manifest["kernel_release"]),
        key=str(manifest["key"]),
    )


def _load(directory: Path) -> ImagePaths | None:
    manifest = directory / config.MANIFEST_FILE
    if not manifest.is_file():
        return None
    paths = _paths(directory, json.loads(manifest.read_text()))
    return paths if paths.kernel.is_file() and paths.initramfs.is_file() else None


def ensure_image(*, rebuild: bool = False) -> ImagePaths:
    """The image for the current inputs, building it (a minute or so) if it is not cached.

    Raises apt.TestbedBuildError with the reason when this machine cannot build it.
    """
    base = cache_dir()
    inputs = _inputs()
    images = base / config.IMAGES_SUBDIR
    target = images / inputs.key
    with _build_lock(base):
        found = None if rebuild else _load(target)
        if found is not None:
            return found
        if target.exists():
            shutil.rmtree(target)
        images.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="build-", dir=images) as work:
            built = _build(inputs, base, Path(work))
            built.rename(target)
        _prune(images, keep=target)
        _prune_debs(base / config.DEBS_SUBDIR, keep=inputs.kernel)
        loaded = _load(target)
        assert loaded is not None, f"image just built in {target} is incomplete"
        return loaded


def _build(inputs: _Inputs, base: Path, work: Path) -> Path:
    started = time.monotonic()
    deb = apt.download_kernel(inputs.kernel, base / config.DEBS_SUBDIR)
    vmlinuz, modules, release = rootfs.extract_kernel(deb, work)
    root = work / "root"
    root.mkdir()
    rootfs.make_skeleton(root)
    rootfs.add_userspace(root, inputs.libraries)
    rootfs.add_busybox(root)
    wanted = (*config.GUEST_MODULES, *config.ON_DEMAND_MODULES)
    rootfs.add_modules(root, modules, release, rootfs.module_closure(modules, wanted))
    out = work / "image"
    out.mkdir()
    shutil.copyfile(vmlinuz, out / config.KERNEL_FILE)
    rootfs.pack_initramfs(root, out / config.INITRAMFS_FILE)
    manifest: dict[str, object] = {
        "key": inputs.key,
        "kernel_package": f"{inputs.kernel.name}={inputs.kernel.version}",
        "kernel_release": release,
        "packages": inputs.package_versions,
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / config.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def _prune(images: Path, *, keep: Path) -> None:
    """Keeps the newest few images so that switching branches does not always rebuild."""
    built = sorted(
        (d for d in images.iterdir() if d.is_dir() and d != keep and not d.name.startswith("build-")),
        key=lambda d: d.stat().st_mtime, reverse=True,
    )
    for old in built[config.MAX_KEPT_IMAGES - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _prune_debs(debs: Path, *, keep: apt.KernelPackage) -> None:
    """Drops downloaded kernel packages other than the one in use (about 100 MB each)."""
    wanted = f"{keep.name}_{keep.version.replace(':', '%3a')}_"
    for deb in debs.glob("*.deb"):
        if not deb.name.startswith(wanted):
            deb.unlink(missing_ok=True)
