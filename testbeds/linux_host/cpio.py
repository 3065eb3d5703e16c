"""A minimal writer of the cpio "newc" format the Linux kernel unpacks as an initramfs."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

NEWC_MAGIC: Final[bytes] = b"070701"
ALIGNMENT: Final[int] = 4
TRAILER_NAME: Final[str] = "TRAILER!!!"
HEADER_FIELDS: Final[int] = 13
DIR_MODE: Final[int] = stat.S_IFDIR | 0o755
FILE_MODE: Final[int] = stat.S_IFREG | 0o644
EXEC_MODE: Final[int] = stat.S_IFREG | 0o755
SYMLINK_MODE: Final[int] = stat.S_IFLNK | 0o777
CHARDEV_MODE: Final[int] = stat.S_IFCHR | 0o600
FIXED_MTIME: Final[int] = 0
"""Every entry gets the same mtime so that equal inputs give byte-equal archives."""


def _pad(length: int) -> bytes:
    return b"\0" * ((ALIGNMENT - length % ALIGNMENT) % ALIGNMENT)


class CpioWriter:
    """Writes newc entries to a binary stream; call close() to append the trailer."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._next_ino = 1
        self._names: set[str] = set()

    def _entry(
        self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0)
    ) -> None:
        name = name.strip("/")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name!r}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (
            self._next_ino, mode, 0, 0, nlink, FIXED_MTIME, len(data),
            0, 0, rdev[0], rdev[1], len(encoded), 0,
        )
        assert len(fields) == HEADER_FIELDS
        header = NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
        self._next_ino += 1
        self._stream.write(header + encoded + _pad(len(header) + len(encoded)))
        self._stream.write(data + _pad(len(data)))

    def directory(self, name: str) -> None:
        self._entry(name, DIR_MODE)

    def file(self, name: str, data: bytes, *, executable: bool = False) -> None:
        self._entry(name, EXEC_MODE if executable else FILE_MODE, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, SYMLINK_MODE, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, CHARDEV_MODE, rdev=(major, minor))

    def tree(self, root: Path) -> None:
        """Adds every entry below root (not root itself), parents before children, sorted."""
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            for entry in sorted(dirnames + filenames):
                path = base / entry
                name = str(path.relative_to(root))
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    self.symlink(name, os.readlink(path))
                elif stat.S_ISDIR(info.st_mode):
                    self.directory(name)
                elif stat.S_ISREG(info.st_mode):
                    self.file(name, path.read_bytes(), executable=bool(info.st_mode & 0o111))
                else:
                    raise ValueError(f"unsupported file type in initramfs tree: {path}")

    def close(self) -> None:
        self._entry(TRAILER_NAME, 0)
