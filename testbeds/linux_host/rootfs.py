"""Assembles the guest root file system (a staging tree) and packs it into a gzip'd initramfs."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path
from typing import Final

from . import apt, config
from .cpio import CpioWriter

USRMERGE_LINKS: Final[dict[str, str]] = {
    "bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64",
}
EMPTY_DIRS: Final[tuple[str, ...]] = (
    "proc", "sys", "dev", "tmp", "run", "root", "mnt", "var/tmp", "etc/nvme", "usr/bin", "usr/sbin",
    "usr/lib", "usr/lib64",
)
STATIC_FILES: Final[dict[str, str]] = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/hostname": "dpu-emu-host\n",
    "etc/hosts": "127.0.0.1 localhost\n",
}
MODULE_SUFFIX_XZ: Final[str] = ".ko.xz"
MODULE_SUFFIX: Final[str] = ".ko"
MODULE_INDEX_FILES: Final[tuple[str, ...]] = (
    "modules.builtin", "modules.builtin.modinfo", "modules.order",
)
CONSOLE_DEVICE: Final[tuple[int, int]] = (5, 1)
GZIP_LEVEL: Final[int] = 6
SUBPROCESS_TIMEOUT_S: Final[float] = 300.0


def _check_call(argv: list[str], *, what: str) -> str:
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
        )
    except FileNotFoundError as exc:
        raise apt.TestbedBuildError(f"{what}: {argv[0]} is not installed") from exc
    if done.returncode != 0:
        raise apt.TestbedBuildError(f"{what} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _merged(path: str) -> str:
    """Maps an absolute host path onto the usrmerge'd guest tree (/lib/x -> usr/lib/x)."""
    relative = path.lstrip("/")
    top, _, rest = relative.partition("/")
    if top in USRMERGE_LINKS:
        return f"{USRMERGE_LINKS[top]}/{rest}" if rest else USRMERGE_LINKS[top]
    return relative


def _place(root: Path, guest_path: str, data: bytes, *, executable: bool) -> None:
    target = root / _merged(guest_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(0o755 if executable else 0o644)


def make_skeleton(root: Path) -> None:
    for name in EMPTY_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for link, target in USRMERGE_LINKS.items():
        (root / link).symlink_to(target)
    for name, text in STATIC_FILES.items():
        (root / name).write_text(text)
    boot_conf = root / "etc" / "dpu-emu" / "boot.conf"
    boot_conf.parent.mkdir(parents=True, exist_ok=True)
    boot_conf.write_text(
        f"BOOT_MODULES='{' '.join(config.GUEST_MODULES)}'\n"
        f"GUEST_IP_CIDR='{config.GUEST_IP_CIDR}'\n"
        f"DEFAULT_HOST_ID='{config.DEFAULT_HOST_ID}'\n"
    )
    init = config.GUEST_INIT.read_bytes()
    (root / "init").write_bytes(init)
    (root / "init").chmod(0o755)


def add_busybox(root: Path) -> None:
    binary = config.BUSYBOX_BINARY
    if not binary.exists():
        raise apt.TestbedBuildError(f"{binary} missing: apt-get install busybox-static")
    guest_binary = "/usr/bin/busybox"
    _place(root, guest_binary, binary.read_bytes(), executable=True)
    for applet in _check_call([str(binary), "--list-full"], what="busybox --list-full").split():
        link = root / _merged("/" + applet)
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(guest_binary)


def add_userspace(root: Path, libraries: list[Path]) -> None:
    """nvme-cli, fio and their shared libraries, at the paths the dynamic loader looks in."""
    for binary in config.USERSPACE_BINARIES:
        _place(root, str(binary), binary.read_bytes(), executable=True)
    for library in libraries:
        _place(root, str(library), library.resolve().read_bytes(), executable=True)


def extract_kernel(deb: Path, work: Path) -> tuple[Path, Path, str]:
    """Unpacks the kernel .deb; returns (vmlinuz, modules dir, kernel release)."""
    unpacked = work / "kernel-deb"
    unpacked.mkdir()
    _check_call(["dpkg-deb", "-x", str(deb), str(unpacked)], what=f"unpack {deb.name}")
    kernels = sorted((unpacked / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise apt.TestbedBuildError(f"expected one vmlinuz in {deb.name}, found {kernels}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    modules = unpacked / "lib" / "modules" / release
    if not modules.is_dir():
        raise apt.TestbedBuildError(f"{deb.name} has no lib/modules/{release}")
    return kernels[0], modules, release


def _module_index(modules: Path) -> dict[str, Path]:
    """Module name (dashes folded to underscores) -> its compressed file."""
    index: dict[str, Path] = {}
    for path in modules.rglob("*" + MODULE_SUFFIX_XZ):
        index[path.name.removesuffix(MODULE_SUFFIX_XZ).replace("-", "_")] = path
    return index


def module_closure(modules: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The wanted modules and everything they depend on (modinfo's depends field)."""
    index = _module_index(modules)
    pending = [name.replace("-", "_") for name in wanted]
    seen: dict[str, Path] = {}
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        if name not in index:
            raise apt.TestbedBuildError(f"kernel module {name} not in the kernel package")
        seen[name] = index[name]
        depends = _check_call(["modinfo", "-F", "depends", str(index[name])], what="modinfo")
        pending.extend(d.replace("-", "_") for d in depends.strip().split(",") if d)
    return sorted(seen.values())


def add_modules(root: Path, modules: Path, release: str, files: list[Path]) -> None:
    guest_modules = root / "usr" / "lib" / "modules" / release
    guest_modules.mkdir(parents=True)
    for name in MODULE_INDEX_FILES:
        if (modules / name).exists():
            shutil.copyfile(modules / name, guest_modules / name)
    for path in files:
        relative = path.relative_to(modules)
        target = guest_modules / str(relative).removesuffix(MODULE_SUFFIX_XZ)
        target = target.with_name(target.name + MODULE_SUFFIX)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lzma.decompress(path.read_bytes()))
    _check_call(["depmod", "-b", str(root), release], what="depmod")


def pack_initramfs(root: Path, output: Path) -> None:
    """root as a gzip'd newc archive, with /dev/console for the kernel's first open."""
    with gzip.open(output, "wb", compresslevel=GZIP_LEVEL) as stream:
        writer = CpioWriter(stream)  # type: ignore[arg-type]
        writer.tree(root)
        writer.char_device("dev/console", *CONSOLE_DEVICE)
        writer.close()
