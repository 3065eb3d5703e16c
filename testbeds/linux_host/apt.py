"""Debian package look-ups: the backports kernel, host package versions, shared-library closure."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from . import config

APT_TIMEOUT_S: Final[float] = 300.0
_DEPENDS_KERNEL = re.compile(r"(linux-image-[^\s,(]+)\s*\(=\s*([^)\s]+)\)")
_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


class TestbedBuildError(RuntimeError):
    """The VM image cannot be built on this machine (missing tool, package or apt source)."""


def _run(
    argv: list[str], *, what: str, cwd: Path | None = None, allow_failure: bool = False
) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, check=False, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C"},
        )
    except FileNotFoundError as exc:
        raise TestbedBuildError(f"{what}: {argv[0]} is not installed") from exc
    if done.returncode != 0 and not allow_failure:
        raise TestbedBuildError(
            f"{what}: `{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return done.stdout


@dataclass(frozen=True)
class KernelPackage:
    name: str
    version: str


def resolve_kernel_package() -> KernelPackage:
    """The linux-image package the bookworm-backports meta package points at (or the pinned one)."""
    pinned = os.environ.get(config.KERNEL_PACKAGE_ENV)
    if pinned:
        out = _run(["apt-cache", "show", pinned], what=f"look up pinned kernel {pinned}")
        versions = re.findall(r"^Version:\s*(\S+)", out, re.MULTILINE)
        if not versions:
            raise TestbedBuildError(f"apt-cache knows no version of {pinned}")
        return KernelPackage(pinned, versions[0])
    spec = f"{config.KERNEL_META_PACKAGE}/{config.KERNEL_SUITE}"
    hint = (
        f"add a deb822 source for suite {config.KERNEL_SUITE} (same URIs and Signed-By as "
        "/etc/apt/sources.list.d/debian.sources) and run apt-get update"
    )
    try:
        out = _run(["apt-cache", "show", spec], what=f"look up {spec}")
    except TestbedBuildError as exc:
        raise TestbedBuildError(f"{exc}; {hint}") from exc
    match = _DEPENDS_KERNEL.search(out)
    if match is None:
        raise TestbedBuildError(f"no linux-image dependency in `apt-cache show {spec}`; {hint}")
    return KernelPackage(match.group(1), match.group(2))


def download_kernel(package: KernelPackage, debs_dir: Path) -> Path:
    """apt-get download of the exact kernel package version into debs_dir (kept as a cache)."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    existing = _find_deb(package, debs_dir)
    if existing is not None:
        return existing
    _run(
        ["apt-get", "download", f"{package.name}={package.version}"],
        what=f"download {package.name}", cwd=debs_dir,
    )
    found = _find_deb(package, debs_dir)
    if found is None:
        raise TestbedBuildError(f"apt-get download left no .deb for {package.name} in {debs_dir}")
    return found


def _find_deb(package: KernelPackage, debs_dir: Path) -> Path | None:
    for deb in sorted(debs_dir.glob(f"{package.name}_*.deb")):
        fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], what="read .deb")
        if f"Version: {package.version}" in fields and f"Package: {package.name}" in fields:
            return deb
    return None


def shared_library_closure(binaries: tuple[Path, ...]) -> list[Path]:
    """Every library `ldd` lists for the binaries, including the dynamic loader; sorted."""
    libraries: set[Path] = set()
    for binary in binaries:
        if not binary.exists():
            raise TestbedBuildError(f"{binary} is missing: install the packages in apt-packages.txt")
        for match in _LDD_PATH.finditer(_run(["ldd", str(binary)], what=f"ldd {binary}")):
            libraries.add(Path(match.group(1)))
    return sorted(libraries)


def owning_package_versions(paths: list[Path], packages: tuple[str, ...]) -> dict[str, str]:
    """Version of each named package and of every package owning one of the paths."""
    names = set(packages)
    # dpkg -S exits 1 when one path is unknown (usrmerge aliases); the known ones still print.
    queries = sorted({str(p) for p in paths} | {os.path.realpath(p) for p in paths})
    owners = _run(["dpkg", "-S", *queries], what="find owners of libraries", allow_failure=True)
    for line in owners.splitlines():
        if ": " in line:
            for owner in line.split(": ", 1)[0].split(", "):
                names.add(owner.strip())
    listing = _run(
        ["dpkg-query", "-W", "-f", "${binary:Package} ${Version}\n", *sorted(names)],
        what="query package versions",
    )
    versions: dict[str, str] = {}
    for line in listing.splitlines():
        name, _, version = line.partition(" ")
        versions[name] = version
    missing = [n for n in packages if not any(k.split(":")[0] == n for k in versions)]
    if missing:
        raise TestbedBuildError(f"host packages not installed: {', '.join(missing)}")
    return versions
